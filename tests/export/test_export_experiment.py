"""The transfer experiment's pipeline, shortened: teacher → ONNX → widen/deepen → state dict →
strict load into the wider/deeper class (PyTorch), or → tf2onnx → Keras weights →
``load_weights`` (Keras), students starting at the teacher's loss; the from-scratch
controls and the epochs each route needs to reach their best."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers.paths import REPO

pytest.importorskip("torch")

pytestmark = pytest.mark.torch
SCRIPT = REPO / "scripts" / "net2net_experiment.py"


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
                                "random-init", "random new layers", "scratch (wider)", "scratch (deeper)"}
    assert len(curves.runs["scratch (wider)"][0]) == 3 + 1 + 1  # untrained, then teacher + student epochs
    for name in ("teacher (trained on)", "net2wider", "net2deeper"):
        assert abs(curves.runs[name][0][0] - teacher_end) <= experiment.START_TOLERANCE
    assert abs(curves.runs["random-pad"][0][0] - teacher_end) > experiment.START_TOLERANCE


_KERAS_RUN = textwrap.dedent("""
    import dataclasses, json, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    import net2net_experiment as experiment
    family = dataclasses.replace(experiment.FAMILIES[0], teacher_epochs=3)
    curves = experiment.run_family(family, experiment.load_data(), [0], 1, Path(sys.argv[2]),
                                   experiment.framework("keras"))
    print(json.dumps(curves.runs))
""")


@pytest.mark.skipif(importlib.util.find_spec("tf2onnx") is None, reason="needs tensorflow and tf2onnx")
def test_keras_students_start_at_the_teachers_loss(tmp_path: Path) -> None:
    """Keras MLP teacher → tf2onnx → onnxgrow → ``--to keras-weights`` → ``load_weights``, in a
    TensorFlow-backend subprocess (the script asserts the start to 1e-5; checked again here)."""
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1",
           "PYTHONPATH": str(SCRIPT.parent.parent)}
    run = subprocess.run([sys.executable, "-c", _KERAS_RUN, str(SCRIPT.parent), str(tmp_path)], check=False,
                         capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    runs = json.loads(run.stdout.strip().splitlines()[-1])
    teacher_end = runs["teacher"][0][-1]
    for name in ("teacher (trained on)", "net2wider", "net2deeper"):
        assert abs(runs[name][0][0] - teacher_end) <= 1e-5
    assert abs(runs["random-pad"][0][0] - teacher_end) > 1e-5
    assert len(runs["scratch (deeper)"][0]) == 5


def test_epochs_to_reach_the_from_scratch_best() -> None:
    """Teacher 2 epochs; the scratch run's best is 0.5 (epoch 3); net2wider reaches it in its
    first student epoch (2 + 1), random-pad never."""
    experiment = _experiment()
    curves = experiment.Curves()
    curves.add("teacher", [2.0, 1.0, 0.7])
    curves.add("scratch (wider)", [2.0, 1.2, 0.8, 0.5])
    curves.add("net2wider", [0.7, 0.5, 0.4])
    curves.add("random-pad", [1.5, 0.9, 0.6])
    assert experiment.epochs_to_reach(curves, "net2wider", "scratch (wider)") == [3]
    assert experiment.epochs_to_reach(curves, "scratch (wider)", "scratch (wider)") == [3]
    assert experiment.epochs_to_reach(curves, "random-pad", "scratch (wider)") == [None]
    table = "\n".join(experiment.reach_table(curves))
    assert "| net2wider | 3.0 ± 0.0 (1/1 seeds) | – |" in table
    assert "| random-pad | not reached (0/1 seeds) | – |" in table


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
