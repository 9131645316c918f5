"""The widen command through the CLI: success output and every bad-input case.

Bad input: one line on stderr, exit 2, no output file, input bytes unchanged.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import onnxgrow
from onnxgrow.model_io import written_files
from tests.helpers.cli import assert_refused, run, tree_hashes
from tests.helpers.graphs import mlp, save


def test_widen_writes_default_output(fixture_copy) -> None:  # type: ignore[no-untyped-def]
    src = fixture_copy("mnist_cnn_dynamo")
    before = tree_hashes(src.parent)
    code, stdout, stderr = run("widen", str(src), "--node", "fc1", "--to", "128")
    assert code == 0, stderr
    out = src.with_name("mnist_cnn_dynamo.grown.onnx")
    assert out.exists() and len(written_files(out)) == 2
    assert f"wrote {out} (weights in {written_files(out)[1].name})" in stdout
    assert "PASSED" in stdout and "CPUExecutionProvider" in stdout
    assert "fc1.weight: [64, 3136] → [128, 3136]" in stdout
    assert {k: v for k, v in tree_hashes(src.parent).items() if k in before} == before
    onnx.checker.check_model(str(out), full_check=True)
    history = onnxgrow.lineage.read_history(onnxgrow.load_model(out))
    assert history[-1]["node"] == "fc1" and history[-1]["new_width"] == 128
    assert history[-1]["max_rel_error"] <= 1e-5


def test_widen_subprocess_entry_point(tmp_path: Path, fixture_copy) -> None:  # type: ignore[no-untyped-def]
    src = fixture_copy("mlp_legacy")
    out = tmp_path / "wide.onnx"
    proc = subprocess.run([sys.executable, "-m", "onnxgrow", "widen", str(src), "--node", "layer_1",
                           "--to", "6", "--node", "layer_2", "--to", "9", "-o", str(out)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert out.exists() and "PASSED" in proc.stdout


def test_random_pad_is_written_and_flagged(fixture_copy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = fixture_copy("mlp_legacy")
    out = tmp_path / "rp.onnx"
    code, stdout, _ = run("widen", str(src), "--node", "layer_2", "--to", "9", "--init", "random-pad",
                          "-o", str(out))
    assert code == 0 and out.exists()
    assert "not function-preserving" in stdout


@pytest.mark.parametrize(("args", "message"), [
    (["--node", "nope", "--to", "9"], "no layer named 'nope'; closest:"),
    (["--node", "layer2", "--to", "9"], "closest: layer_2"),
    (["--node", "layer_2", "--to", "5"], "must be larger than its current 5"),
    (["--node", "layer_2", "--to", "3"], "must be larger than its current 5"),
    (["--node", "layer_2", "--to", "-4"], "must be a positive integer, got -4"),
    (["--node", "layer_3", "--to", "4"], "reach model output 'y'"),
    (["--node", "layer_2"], "--to"),
    (["--node", "layer_2", "--to", "9", "--init", "zero-pad", "--noise", "0.1"], "--noise"),
])
def test_bad_requests(fixture_copy, args: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    src = fixture_copy("mlp_legacy")
    out = src.with_name("out.onnx")
    before = tree_hashes(src.parent)
    code, stdout, stderr = run("widen", str(src), *args, "-o", str(out))
    assert code == 2, (stdout, stderr)
    assert message in stderr
    assert not out.exists() and tree_hashes(src.parent) == before


def test_non_integer_width(fixture_copy) -> None:  # type: ignore[no-untyped-def]
    src = fixture_copy("mlp_legacy")
    code, _, stderr = run("widen", str(src), "--node", "layer_2", "--to", "7.5")
    assert code == 2 and "7.5" in stderr


@pytest.mark.parametrize("content", [b"", b"this is not a model", b"\x08\x07\x12\x04junk" * 10])
def test_not_onnx(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(content)
    assert_refused(tmp_path, ["widen", str(bad), "--node", "x", "--to", "4", "-o", str(tmp_path / "o.onnx")],
                   str(bad), tmp_path / "o.onnx")


def test_missing_file(tmp_path: Path) -> None:
    code, _, stderr = run("widen", str(tmp_path / "missing.onnx"), "--node", "x", "--to", "4")
    assert code == 2 and "no such file" in stderr


def test_truncated_file(tmp_path: Path, fixture_copy) -> None:  # type: ignore[no-untyped-def]
    src = fixture_copy("mnist_cnn_legacy")
    data = src.read_bytes()
    bad = tmp_path / "trunc.onnx"
    bad.write_bytes(data[: len(data) // 2])
    assert_refused(tmp_path, ["widen", str(bad), "--node", "fc1", "--to", "80", "-o", str(tmp_path / "o.onnx")],
                   "trunc.onnx", tmp_path / "o.onnx")


def test_truncated_external_data(fixture_copy) -> None:  # type: ignore[no-untyped-def]
    src = fixture_copy("mnist_cnn_dynamo")
    data = src.with_name(src.name + ".data")
    data.write_bytes(data.read_bytes()[:1000])
    out = src.with_name("o.onnx")
    assert_refused(src.parent, ["widen", str(src), "--node", "fc1", "--to", "80", "-o", str(out)],
                   "too short for tensor", out)


def test_output_over_input_refused(fixture_copy) -> None:  # type: ignore[no-untyped-def]
    src = fixture_copy("mlp_legacy")
    before = tree_hashes(src.parent)
    code, _, stderr = run("widen", str(src), "--node", "layer_2", "--to", "9", "-o", str(src))
    assert code == 2 and "refusing to overwrite the input" in stderr
    assert tree_hashes(src.parent) == before


def test_op_without_rule_is_named(tmp_path: Path) -> None:
    """A custom-domain op on the path stops the plan with its name."""
    rng = np.random.default_rng(0)
    inits = {"w1": rng.standard_normal((4, 3)).astype(np.float32), "w2": rng.standard_normal((2, 4)).astype(np.float32)}
    nodes = [helper.make_node("Gemm", ["x", "w1"], ["h"], name="fc1", transB=1),
             helper.make_node("Mystery", ["h"], ["a"], name="weird_op", domain="custom.ops"),
             helper.make_node("Gemm", ["a", "w2"], ["y"], name="fc2", transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
                              [onnx.numpy_helper.from_array(a, n) for n, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom.ops", 1)])
    path = tmp_path / "custom.onnx"
    onnx.save(model, str(path))
    out = tmp_path / "o.onnx"
    stderr = assert_refused(tmp_path, ["widen", str(path), "--node", "fc1", "--to", "6", "-o", str(out)],
                            "Mystery node 'weird_op'", out)
    assert "no widening rule" in stderr


def test_shared_weight_is_copied(tmp_path: Path) -> None:
    """Two Gemms read one bias initializer: widening one must not change the other."""
    rng = np.random.default_rng(1)
    inits = {"w1": rng.standard_normal((4, 3)).astype(np.float32), "w2": rng.standard_normal((4, 4)).astype(np.float32),
             "w3": rng.standard_normal((2, 4)).astype(np.float32), "zero_bias": np.zeros(4, np.float32)}
    nodes = [helper.make_node("Gemm", ["x", "w1", "zero_bias"], ["h1"], name="fc1", transB=1),
             helper.make_node("Relu", ["h1"], ["a1"]),
             helper.make_node("Gemm", ["a1", "w2", "zero_bias"], ["h2"], name="fc2", transB=1),
             helper.make_node("Relu", ["h2"], ["a2"]),
             helper.make_node("Gemm", ["a2", "w3"], ["y"], name="fc3", transB=1)]
    path = save(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])], inits, tmp_path / "shared.onnx")
    grown, report = onnxgrow.widen(path, {"fc1": 7})
    fc2 = next(n for n in grown.graph if n.name == "fc2")
    assert tuple(fc2.inputs[2].const_value.shape.numpy()) == (4,)
    assert onnxgrow.verify(path, grown).passed


def test_mlp_matmul_style_layers_by_weight_prefix(tmp_path: Path) -> None:
    path = mlp(tmp_path / "m.onnx", [3, 4, 5, 2], ["Relu"], styles=["matmul", "gemm", "matmul"])
    code, stdout, stderr = run("widen", str(path), "--node", "dense_1.weight", "--to", "8",
                               "-o", str(tmp_path / "o.onnx"))
    assert code == 0, stderr
    assert "PASSED" in stdout
