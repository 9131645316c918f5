"""`onnxgrow verify` and onnxgrow.verify: outputs compared on onnxruntime, exit 0/1/2."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import jsonschema
import numpy as np
import onnx_ir as ir
import onnxruntime
import pytest
from click.testing import CliRunner, Result

from onnxgrow.cli import main
from onnxgrow.model_io import load_model
from onnxgrow.options import VerifyOptions
from onnxgrow.verification import VerifyReport, compare_outputs, input_specs, random_inputs, verify
from tests.helpers.paths import REPO
from tests.helpers.verify_graphs import (
    cnn,
    embedding,
    mlp,
    mlp_weights,
    perturbed,
    save,
    widened_pair,
)


def run(*args: object) -> Result:
    return CliRunner().invoke(main, ["verify", *map(str, args)])


def schema_for(definition: str) -> dict:
    schema = json.loads(files("onnxgrow").joinpath("schemas/diff.schema.json").read_text())
    return {"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"}


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    """An MLP and the same MLP with W2 perturbed by noise of std 1e-3."""
    weights = mlp_weights()
    return (save(mlp(weights), tmp_path / "ref.onnx"),
            save(mlp(perturbed(weights, "W2", 1e-3)), tmp_path / "noisy.onnx"))


def test_identical_models_pass(tmp_path: Path) -> None:
    a = save(mlp(), tmp_path / "a.onnx")
    b = save(mlp(), tmp_path / "b.onnx")
    result = run(a, b)
    assert result.exit_code == 0, result.output
    assert re.search(r"^PASSED  y \[2, 2\] FLOAT: max abs error 0,", result.stdout, re.M)
    assert "provider: CPUExecutionProvider" in result.stdout


def test_widened_model_passes(tmp_path: Path) -> None:
    old, new = widened_pair()
    result = run(save(old, tmp_path / "old.onnx"), save(new, tmp_path / "new.onnx"))
    assert result.exit_code == 0, result.output
    assert "PASSED: 1 output(s) within tolerance" in result.stdout


def test_perturbed_weight_fails_and_minimum_tolerance_passes(pair: tuple[Path, Path]) -> None:
    result = run(*pair)
    assert result.exit_code == 1, result.output
    assert "FAILED  y" in result.stdout
    assert "FAILED: 1 of 1 output(s) differ beyond tolerance" in result.stdout
    atol = float(re.search(r"min atol to pass ([0-9.e+-]+)", result.stdout).group(1))
    rtol = float(re.search(r"min rtol to pass ([0-9.e+-]+)", result.stdout).group(1))
    # the printed minimum passes; a tenth of it does not
    assert run(*pair, "--atol", atol).exit_code == 0
    assert run(*pair, "--atol", atol / 10).exit_code == 1
    assert run(*pair, "--rtol", rtol).exit_code == 0
    assert run(*pair, "--rtol", rtol / 10).exit_code == 1


def test_report_errors_match_numpy(pair: tuple[Path, Path]) -> None:
    report = verify(*pair, VerifyOptions(seed=3))
    x = random_inputs(input_specs(load_model(pair[0])), 3)["x"]
    outs = []
    for path in pair:
        sess = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        outs.append(sess.run(None, {"x": x})[0].astype(np.float64))
    expected = np.abs(outs[0] - outs[1]).max()
    assert report.outputs[0].max_abs_error == pytest.approx(expected)
    assert report.max_rel_error == pytest.approx(expected / np.abs(outs[0]).max())


def test_different_signatures_fail_with_reason(tmp_path: Path) -> None:
    a = save(mlp(), tmp_path / "a.onnx")
    result = run(a, save(cnn(), tmp_path / "cnn.onnx"))
    assert result.exit_code == 1
    assert "FAILED: inputs differ: the reference has x, the candidate has img" in result.stdout
    three = save(mlp(mlp_weights(n_out=3)), tmp_path / "three.onnx")
    result = run(a, three)
    assert result.exit_code == 1
    assert "output 'y' has shape [N, 2] in the reference but [N, 3] in the candidate" in result.stdout


def test_dynamic_batch_uses_input_shapes(tmp_path: Path) -> None:
    a = save(mlp(batch="N"), tmp_path / "a.onnx")
    assert "x [2, 4] float32" in run(a, a).stdout
    result = run(a, a, "--input-shapes", "x:[5,4]", "--samples", 3)
    assert result.exit_code == 0, result.output
    assert "3 sample(s): x [5, 4] float32" in result.stdout
    assert "PASSED  y [5, 2]" in result.stdout
    result = run(a, a, "--input-shapes", "ids:[5,4]")
    assert result.exit_code == 2
    assert "--input-shapes names ids" in result.stderr


def test_token_ids_stay_inside_the_embedding_table(tmp_path: Path) -> None:
    model = embedding(vocab=50)
    ids = random_inputs(input_specs(ir.serde.deserialize_model(model), {"ids": [8, 64]}), 0)["ids"]
    assert ids.dtype == np.int64
    assert ids.min() >= 0 and ids.max() < 50
    assert ids.max() >= 10  # the table size, not the default bound, limits them
    path = save(model, tmp_path / "emb.onnx")
    # out-of-range ids would make onnxruntime's Gather fail (exit 2)
    result = run(path, path, "--input-shapes", "ids:[8,64]")
    assert result.exit_code == 0, result.output
    assert "ids [8, 64] int64" in result.stdout
    other = save(embedding(vocab=50, seed=1), tmp_path / "other.onnx")
    assert run(path, other).exit_code == 1


def test_npz_inputs(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    good = tmp_path / "good.npz"
    np.savez(good, x=np.ones((3, 4), np.float32))
    result = run(pair[0], pair[0], "--inputs", good)
    assert result.exit_code == 0, result.output
    assert "inputs:   given: x [3, 4] float32" in result.stdout
    assert run(*pair, "--inputs", good).exit_code == 1


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"z": np.ones((3, 4), np.float32)}, "missing x; unknown z (the model's inputs: x)"),
        ({"x": np.ones((3, 5), np.float32)}, "input 'x' has shape [3, 5], the model wants [N, 4]"),
        ({"x": np.ones((3, 4, 1), np.float32)}, "input 'x' has shape [3, 4, 1], the model wants [N, 4]"),
        ({"x": np.ones((3, 4), np.float64)}, "input 'x' has dtype float64, the model wants float32"),
    ],
)
def test_npz_that_does_not_fit_is_a_usage_error(
    tmp_path: Path, pair: tuple[Path, Path], arrays: dict, message: str
) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    result = run(*pair, "--inputs", bad)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.output


def test_bad_npz_files(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    result = run(*pair, "--inputs", garbage)
    assert result.exit_code == 2
    assert "not a readable .npz file" in result.stderr
    result = run(*pair, "--inputs", tmp_path / "absent.npz")
    assert result.exit_code == 2 and "no such file" in result.stderr
    good = tmp_path / "good.npz"
    np.savez(good, x=np.ones((3, 4), np.float32))
    result = run(*pair, "--inputs", good, "--samples", 2)
    assert result.exit_code == 2 and "leave out --input-shapes and --samples" in result.stderr


def test_missing_and_garbled_models(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    result = run(pair[0], tmp_path / "absent.onnx")
    assert result.exit_code == 2 and "absent.onnx: no such file" in result.stderr
    garbled = tmp_path / "garbled.onnx"
    garbled.write_bytes(pair[0].read_bytes()[:40])
    result = run(garbled, pair[0])
    assert result.exit_code == 2 and "garbled.onnx: not" in result.stderr
    assert "Traceback" not in result.output


def test_cuda_provider_runs_or_fails_loudly(pair: tuple[Path, Path]) -> None:
    result = run(pair[0], pair[0], "--providers", "cuda,cpu")
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        assert result.exit_code == 0, result.output
        assert "provider: CUDAExecutionProvider" in result.stdout
    else:
        assert result.exit_code == 2
        assert "'cuda' (CUDAExecutionProvider) is not available" in result.stderr
    assert run(pair[0], pair[0], "--providers", " , ").exit_code == 2


def test_nan_at_the_same_place_is_equal() -> None:
    ref = np.array([1.0, np.nan, 3.0], np.float32)
    same = compare_outputs({"y": ref}, {"y": ref.copy()}, None, None, {"y": ir.DataType.FLOAT})[0]
    assert same.passed and same.max_abs_error == 0
    moved = np.array([np.nan, 2.0, 3.0], np.float32)
    other = compare_outputs({"y": ref}, {"y": moved}, None, None, {"y": ir.DataType.FLOAT})[0]
    assert not other.passed and other.nan_mismatch == 2
    assert "no tolerance passes" in other.line()


def test_external_data_model(tmp_path: Path) -> None:
    a = save(cnn(), tmp_path / "a.onnx", external=True)
    b = save(cnn(), tmp_path / "b.onnx", external=True)
    assert (tmp_path / "b.onnx.data").exists()
    result = run(a, b, "--input-shapes", "img:[1,3,8,8]")
    assert result.exit_code == 0, result.output
    assert run(a, save(cnn(seed=1), tmp_path / "c.onnx", external=True)).exit_code == 1


def test_json_report_validates(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    result = run(*pair, "--json", "-")
    assert result.exit_code == 1
    data = json.loads(result.stdout)  # stdout holds only the JSON; the text went to stderr
    assert "FAILED  y" in result.stderr
    jsonschema.validate(data, schema_for("verify_document"))
    assert data["passed"] is False and data["outputs"][0]["name"] == "y"
    assert data["outputs"][0]["max_abs_error"] > data["outputs"][0]["atol"]
    out = tmp_path / "report.json"
    assert run(pair[0], pair[0], "--json", out).exit_code == 0
    written = json.loads(out.read_text())
    jsonschema.validate(written, schema_for("verify_document"))
    assert written["passed"] is True and written["providers"] == ["CPUExecutionProvider"]


def test_json_replaces_infinite_errors_with_null(tmp_path: Path) -> None:
    ref = np.array([1.0, np.nan], np.float32)
    comp = compare_outputs({"y": ref}, {"y": np.array([np.nan, 1.0], np.float32)}, None, None,
                           {"y": ir.DataType.FLOAT})[0]
    data = VerifyReport(False, [comp], ["CPUExecutionProvider"], {}, 1, 0, "x").to_dict()
    json.dumps(data, allow_nan=False)
    assert data["outputs"][0]["min_rtol"] is None


def test_subprocess_exit_codes(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    def cli(*args: object) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "onnxgrow", "verify", *map(str, args)],
                              cwd=REPO, capture_output=True, text=True, timeout=120)

    assert cli(pair[0], pair[0]).returncode == 0
    failed = cli(*pair)
    assert failed.returncode == 1 and "FAILED  y" in failed.stdout
    missing = cli(pair[0], tmp_path / "absent.onnx")
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: ") and "Traceback" not in missing.stderr
