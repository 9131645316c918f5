"""The growth pipeline's contract and what every command shares (docs/design.md §9).

- One driver: a growth operation that is not widen or deepen goes through ``grow_file``
  and gets the output checks, the onnxruntime check, the atomic save and the lineage.
- One checker: export answers bad verification options exactly as ``verify`` does, and
  checks bfloat16 models through the same float32 twins.
- Options declared once: every growth command has -o, --no-verify, --seed, -q,
  --max-shard-size; --json means PATH|- everywhere; --help answers without numpy.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto

import onnxgrow
from onnxgrow.cli.deepen_cmd import MODE_CHOICES
from onnxgrow.cli.widen_cmd import INIT_CHOICES
from onnxgrow.deepening import Mode
from onnxgrow.errors import RefusedError
from onnxgrow.lineage import read_history
from onnxgrow.model_io import written_files
from onnxgrow.options import GrowOptions, VerifyOptions, VerifyScope
from onnxgrow.verification import VerifyReport
from onnxgrow.widening import Init
from tests.helpers.cli import assert_refused, run, tree_hashes
from tests.helpers.fuzz_graphs import dtype_mlp
from tests.helpers.optional import needs
from tests.helpers.paths import fixture_path


@dataclass
class ScaleReport:
    exact: bool = True
    scope: VerifyScope = field(default_factory=VerifyScope)
    verification: VerifyReport | None = None
    written: list[Path] = field(default_factory=list)
    factor: float = 1.0


class ScaleOutputs:
    """A toy growth operation: multiply the last Gemm's weight and bias by ``factor``.

    Exact only for factor 1; it refuses a model without a Gemm, naming no node."""

    infer_shapes = False

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def plan(self, model: ir.Model) -> ir.Node:
        gemms = [node for node in model.graph if node.op_type == "Gemm"]
        if not gemms:
            raise RefusedError("no Gemm to scale")
        return gemms[-1]

    def apply(self, model: ir.Model, plan: ir.Node) -> ScaleReport:
        for value in plan.inputs[1:]:
            assert value is not None and value.const_value is not None
            value.const_value = ir.tensor(value.const_value.numpy() * np.float32(self.factor), name=value.name)
        return ScaleReport(exact=self.factor == 1.0, factor=self.factor)

    def history(self, report: ScaleReport) -> list[dict[str, Any]]:
        return [{"op": "scale", "factor": report.factor}]


def test_a_new_growth_operation_gets_the_whole_driver(tmp_path: Path) -> None:
    src = fixture_path("mlp_legacy")
    out = tmp_path / "scaled.onnx"
    report = onnxgrow.grow_file(src, out, ScaleOutputs(1.0))
    assert report.verification is not None and report.verification.passed
    assert report.written == [out]
    history = read_history(onnxgrow.load_model(out))
    assert history[-1]["op"] == "scale" and history[-1]["max_rel_error"] == 0.0


def test_an_inexact_operation_that_claims_exactness_writes_nothing(tmp_path: Path) -> None:
    class Lying(ScaleOutputs):
        def apply(self, model: ir.Model, plan: ir.Node) -> ScaleReport:
            report = super().apply(model, plan)
            report.exact = True
            return report

    out = tmp_path / "scaled.onnx"
    with pytest.raises(onnxgrow.NotEquivalentError, match="nothing written"):
        onnxgrow.grow_file(fixture_path("mlp_legacy"), out, Lying(2.0))
    assert list(tmp_path.iterdir()) == []


def test_a_refused_plan_leaves_the_model_and_folder_untouched(tmp_path: Path) -> None:
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
                                   [onnx.helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                                   [onnx.helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    src = tmp_path / "relu.onnx"
    onnx.save(onnx.helper.make_model(graph), str(src))
    before = tree_hashes(tmp_path)
    with pytest.raises(RefusedError, match="no Gemm"):
        onnxgrow.grow_file(src, tmp_path / "out.onnx", ScaleOutputs(1.0))
    assert tree_hashes(tmp_path) == before


@pytest.mark.parametrize("command", [
    ["export", "{src}", "--to", "torch", "-o", "{dir}/m.pt"],
    ["export", "{src}", "--to", "keras", "-o", "{dir}/m.keras"],
    ["verify", "{src}", "{src}"],
    ["widen", "{src}", "--node", "layer_1", "--to", "6", "-o", "{dir}/w.onnx"],
    ["deepen", "{src}", "--after", "layer_1", "-o", "{dir}/d.onnx"],
    ["diff", "{src}", "{src}", "--numeric"],
])
@pytest.mark.parametrize("bad, message", [
    (["--seed", "-5"], "--seed must be a non-negative integer, got -5"),
    (["--atol", "-1"], "--atol must be a finite number >= 0, got -1.0"),
    (["--rtol", "nan"], "--rtol must be a finite number >= 0, got nan"),
    (["--samples", "0"], "--samples must be an integer >= 1, got 0"),
    (["--input-shapes", "x:[0,3]"], "--input-shapes 'x:[0,3]': every dimension must be at least 1"),
])
def test_bad_verification_options_get_the_same_line_everywhere(fixture_copy, command: list[str], bad: list[str],
                                                               message: str) -> None:  # type: ignore[no-untyped-def]
    src = fixture_copy("mlp_legacy")
    args = [a.format(src=src, dir=src.parent) for a in command] + bad
    out = Path(args[args.index("-o") + 1]) if "-o" in args else src.parent / "none"
    assert_refused(src.parent, args, f"error: {message}", out)


@pytest.mark.parametrize("target, suffix, runner", [
    pytest.param("torch", ".pt", "PyTorch module", marks=needs("torch")),
    pytest.param("keras", ".keras", "Keras model", marks=needs("torch", "keras")),
])
def test_bfloat16_export_is_checked_through_float32_twins(tmp_path: Path, target: str, suffix: str,
                                                          runner: str) -> None:
    src = dtype_mlp(tmp_path / "bf16.onnx", TensorProto.BFLOAT16)
    out = tmp_path / f"model{suffix}"
    # a subprocess: Keras loads TensorFlow, which must not share a process with torch's dynamo exporter
    proc = subprocess.run([sys.executable, "-m", "onnxgrow", "export", str(src), "--to", target, "-o", str(out)],
                          capture_output=True, text=True, env={**os.environ, "KERAS_BACKEND": "torch"})
    code, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    assert code == 0, stderr
    assert "PASSED" in stdout and f"candidate: {runner}" in stdout and "float32 twins" in stdout
    assert out.is_file()


def test_export_refuses_a_suffix_of_another_format(fixture_copy) -> None:  # type: ignore[no-untyped-def]
    src = fixture_copy("mlp_legacy")
    out = src.parent / "m.keras"
    assert_refused(src.parent, ["export", str(src), "--to", "state-dict", "-o", str(out)],
                   "--to state-dict writes .pt or .pth or .safetensors files", out)


def test_deepen_has_the_growth_options(tmp_path: Path) -> None:
    out = tmp_path / "deep.onnx"
    code, stdout, stderr = run("deepen", str(fixture_path("mnist_cnn_dynamo")), "--after", "fc1", "-o", str(out),
                               "--max-shard-size", "200KB", "-q", "--seed", "3")
    assert code == 0, stderr
    data = sorted(p.name for p in tmp_path.iterdir() if p.name != out.name)
    assert len(data) > 1 and all(name.endswith(".onnx.data") for name in data)
    assert f"(weights in {', '.join(data)})" in stdout
    assert onnxgrow.verify(fixture_path("mnist_cnn_dynamo"), out).passed


def test_deepen_reports_progress_of_save_and_check(tmp_path: Path) -> None:
    calls: list[tuple[str, int, int]] = []
    onnxgrow.deepen_file(fixture_path("mnist_cnn_dynamo"), tmp_path / "d.onnx", "conv2",
                         options=GrowOptions(progress=lambda *a: calls.append(a)))
    stages = list(dict.fromkeys(stage for stage, _, _ in calls))
    assert stages == ["loading", "planning", "saving", "verifying"]
    assert calls[0] == ("loading", 0, 0)
    assert calls[-1][1] == calls[-1][2]


@pytest.mark.parametrize("command", [
    ["inspect", "{src}"],
    ["verify", "{src}", "{src}"],
    ["diff", "{src}", "{src}"],
])
def test_json_means_path_or_stdout_on_every_command(tmp_path: Path, command: list[str]) -> None:
    src = fixture_path("mlp_legacy")
    args = [a.format(src=src) for a in command]
    report = tmp_path / "report.json"
    code, stdout, _ = run(*args, "--json", str(report))
    assert code == 0 and json.loads(report.read_text())
    code, stdout, stderr = run(*args, "--json", "-")
    assert code == 0 and json.loads(stdout) == json.loads(report.read_text())
    assert stderr  # the text report went to stderr


@pytest.mark.parametrize("command", ["inspect", "widen", "deepen", "verify", "diff", "export"])
def test_every_command_help_has_an_example_and_the_exit_codes(command: str) -> None:
    code, stdout, _ = run(command, "--help")
    assert code == 0
    example = stdout[stdout.index("Example:"):].splitlines()[1].strip()
    assert example.startswith(f"onnxgrow {command} ") and "Exit status: 0" in stdout


def test_top_level_help_does_not_cut_descriptions() -> None:
    code, stdout, _ = run("--help")
    commands = stdout[stdout.index("Commands:"):stdout.index("Example:")].splitlines()[1:]
    assert code == 0 and len([c for c in commands if c.strip()]) == 6 and "Exit status:" in stdout
    assert not [c for c in commands if c.rstrip().endswith("...")]


def test_help_imports_nothing_heavy() -> None:
    script = ("import sys; from onnxgrow.cli import main\n"
              "try:\n    main(['widen', '--help'])\nexcept SystemExit:\n    pass\n"
              "heavy = sorted(m for m in ('numpy', 'onnx', 'onnx_ir', 'onnxruntime', 'torch') if m in sys.modules)\n"
              "print(heavy)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert proc.stdout.strip().endswith("[]"), proc.stdout


def test_argument_errors_come_before_the_model_is_read(tmp_path: Path) -> None:
    missing_model = tmp_path / "no_such.onnx"
    code, _, stderr = run("widen", str(missing_model), "--node", "a", "--to", "3", "--noise", "-1")
    assert code == 2 and "--noise" in stderr
    code, _, stderr = run("widen", str(missing_model), "--node", "a", "--to", "3", "-o", str(tmp_path / "x" / "o.onnx"))
    assert code == 2 and "output folder does not exist" in stderr
    code, _, stderr = run("widen", str(missing_model), "--node", "a", "--to", "0")
    assert code == 2 and "width for 'a' must be a positive integer, got 0" in stderr
    code, _, stderr = run("deepen", str(missing_model), "--after", "a", "--max-shard-size", "lots")
    assert code == 2 and "--max-shard-size 'lots'" in stderr


def test_choices_named_in_the_cli_are_the_library_s() -> None:
    assert INIT_CHOICES == tuple(i.value for i in Init)
    assert MODE_CHOICES == tuple(m.value for m in Mode)


def test_widen_report_speaks_of_layers_and_files(tmp_path: Path) -> None:
    out = tmp_path / "w.onnx"
    code, stdout, stderr = run("widen", str(fixture_path("mnist_cnn_dynamo")), "--node", "fc1.weight", "--to", "96",
                               "--node", "conv2", "--to", "80", "-o", str(out))
    assert code == 0, stderr
    assert "channel group also widened" not in stdout  # fc1.weight is fc1, not another layer
    assert "widened fc1.weight: 64 → 96" in stdout and "widened conv2: 64 → 80" in stdout
    assert not [line for line in stdout.splitlines() if "→" in line and line.split(": ", 1)[-1].split(" → ")[0]
                == line.split(" → ")[-1]]  # no "val_7: [2] → [2]"
    assert f"wrote {out} (weights in {written_files(out)[1].name})" in stdout
    assert re.fullmatch(r"w\.[0-9a-f]{8}\.onnx\.data", written_files(out)[1].name)
    seeds = {entry["seed"] for entry in read_history(onnxgrow.load_model(out))}
    assert seeds == {0}  # the seed the user (by default) gave, for both layers


def test_random_pad_is_reported_as_changed_by_design(tmp_path: Path) -> None:
    out = tmp_path / "r.onnx"
    code, stdout, _ = run("widen", str(fixture_path("mlp_legacy")), "--node", "layer_1", "--to", "9",
                          "--init", "random-pad", "-o", str(out))
    assert code == 0 and out.is_file()
    assert "FAILED" not in stdout
    assert "CHANGED: max abs error" in stdout and "not function-preserving by design" in stdout


def test_verify_options_validate_themselves() -> None:
    with pytest.raises(onnxgrow.GrowError, match="--inputs gives one sample"):
        VerifyOptions(inputs=[{}], samples=2)
    with pytest.raises(onnxgrow.GrowError, match="--providers"):
        VerifyOptions(providers=())
    with pytest.raises(onnxgrow.GrowError, match="maximum shard size"):
        GrowOptions(max_shard_bytes=0)
