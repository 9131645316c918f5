"""The transfer experiment's pipeline, shortened: teacher → ONNX → widen/deepen → state dict →
strict load into the wider/deeper class, students starting at the teacher's loss."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.torch
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "net2net_experiment.py"


def _experiment() -> ModuleType:
    """The script as a module (registered first: its dataclasses look themselves up there)."""
    if "net2net_experiment" not in sys.modules:
        spec = importlib.util.spec_from_file_location("net2net_experiment", SCRIPT)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules["net2net_experiment"] = module
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    return sys.modules["net2net_experiment"]


@pytest.mark.parametrize("family_name", ["MLP", "CNN"])
def test_grown_students_start_at_the_teachers_loss(family_name: str, tmp_path: Path) -> None:
    experiment = _experiment()
    family = next(f for f in experiment.FAMILIES if f.name == family_name)
    family = dataclasses.replace(family, teacher_epochs=3)
    curves = experiment.run_family(family, experiment.load_data(), [0], 1, tmp_path)
    teacher_end = curves.runs["teacher"][0][-1]
    assert set(curves.runs) == {"teacher", "teacher (trained on)", "net2wider", "random-pad", "net2deeper",
                                "random-init", "random new layers"}
    for name in ("teacher (trained on)", "net2wider", "net2deeper"):
        assert abs(curves.runs[name][0][0] - teacher_end) <= experiment.START_TOLERANCE
    assert abs(curves.runs["random-pad"][0][0] - teacher_end) > experiment.START_TOLERANCE


def test_report_and_plot_are_written(tmp_path: Path) -> None:
    experiment = _experiment()
    curves = experiment.Curves()
    names = ["teacher", "teacher (trained on)", "net2wider", "random-pad", "net2deeper", "random-init",
             "random new layers"]
    for seed in range(3):
        for k, name in enumerate(names):
            curves.add(name, [1.0 / (k + 1) + 0.01 * seed + 0.001 * e for e in range(3)])
    experiment.plot({"MLP": curves}, tmp_path / "transfer.png")
    experiment.write_report({"MLP": curves}, [0, 1, 2], 2, 1.0, tmp_path)
    text = (tmp_path / "transfer.md").read_text()
    # net2wider: 1/3 + 0.01·seed + 0.001·epoch → mean 1/3 + 0.01, population std 0.0082
    assert "| net2wider | 0.3433 ± 0.0082 | 0.3443 ± 0.0082 | 0.3453 ± 0.0082 |" in text
    assert "after epoch 1: net2wider 0.3443, random-pad 0.2610; random-pad is lower by 0.0833" in text
    assert (tmp_path / "transfer.png").stat().st_size > 10_000
