"""``onnxgrow export``: what it writes and lists, and every bad input.

Bad input: one line on stderr, exit 2, nothing written, input untouched. A PyTorch or
Keras model that does not compute what onnxruntime computes: exit 1, nothing written.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.cli import assert_refused, run, tree_hashes

pytest.importorskip("torch")

import torch
from safetensors.torch import load_file

from onnxgrow.export.torch_ops import TORCH_OPS, TorchOp
from tests.helpers.export import MLP, ResNetish, assert_close, export_onnx, ort_run, random_input, seeded, torch_run
from tests.helpers.export_op_graphs import _Spec, graph, node, x
from tests.helpers.paths import REPO

pytestmark = pytest.mark.torch




def test_state_dict_default_output_loads_strictly(fixture_copy) -> None:  # type: ignore[no-untyped-def]
    src = fixture_copy("mlp_dynamo")
    code, stdout, stderr = run("export", str(src), "--to", "state-dict")
    assert code == 0, stderr
    out = src.with_name("mlp_dynamo.pt")
    assert stdout.splitlines()[0] == f"wrote {out}: 6 tensors (PyTorch state dict)"
    torch.manual_seed(0)
    expected = MLP().state_dict()
    model = MLP()
    model.load_state_dict(torch.load(out), strict=True)
    for key, value in expected.items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)


def test_state_dict_lists_folded_batchnorms(tmp_path: Path) -> None:
    src = export_onnx(seeded(ResNetish), (torch.randn(2, 3, 8, 8),), tmp_path / "res.onnx", dynamo=False, fold=True)
    code, stdout, stderr = run("export", str(src), "--to", "state-dict", "-o", str(tmp_path / "w.safetensors"))
    assert code == 0, stderr
    assert ("note: conv1's weights were computed by the legacy exporter's constant folding (a BatchNorm folded "
            "into it, whose name the model does not keep). Re-export with do_constant_folding=False") in stdout
    assert "note: conv2's weights were computed" in stdout
    assert set(load_file(tmp_path / "w.safetensors")) == {
        "stem.weight", "stem.bias", "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc.weight", "fc.bias"}


def test_state_dict_lists_entries_added_for_strict_loading(tmp_path: Path) -> None:
    src = export_onnx(seeded(ResNetish), (torch.randn(2, 3, 8, 8),), tmp_path / "res.onnx", dynamo=False, fold=False)
    code, stdout, _ = run("export", str(src), "--to", "state-dict", "-o", str(tmp_path / "w.pt"))
    assert code == 0
    assert "note: bn1.num_batches_tracked: not in the ONNX model; set to 0 so strict loading works" in stdout
    ResNetish().load_state_dict(torch.load(tmp_path / "w.pt"), strict=True)


def test_torch_module_is_checked_and_loads(fixture_copy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src = fixture_copy("mnist_cnn_dynamo")
    out = tmp_path / "cnn.torch.pt"
    code, stdout, stderr = run("export", str(src), "--to", "torch", "-o", str(out), "--samples", "2")
    assert code == 0, stderr
    assert f"wrote {out}: 8 trainable parameters" in stdout
    assert "PASSED" in stdout and "on 2 sample(s)" in stdout and "CPUExecutionProvider" in stdout
    module = torch.load(out, weights_only=False)
    images = random_input((3, 1, 28, 28))
    assert_close(ort_run(src, {"x": images}), torch_run(module, images))
    load = ("import sys, torch; m = torch.load(sys.argv[1], weights_only=False); "
            "print(type(m).__module__, sum(p.numel() for p in m.parameters()))")
    fresh = subprocess.run([sys.executable, "-c", load, str(out)], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    assert fresh.stdout.split() == ["onnxgrow.export.torch_module", str(sum(p.numel() for p in module.parameters()))], \
        fresh.stderr


def test_a_torch_module_that_computes_something_else_is_not_written(fixture_copy, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    src = fixture_copy("mlp_legacy")
    monkeypatch.setitem(TORCH_OPS, "Relu", TorchOp(lambda call, inputs: inputs[0]))  # a wrong Relu
    out = tmp_path / "mlp.torch.pt"
    stderr = assert_refused(src.parent, ["export", str(src), "--to", "torch", "-o", str(out)],
                            "error: the PyTorch module does not compute what the ONNX model computes; "
                            "nothing written. FAILED", out, code=1)
    assert "max rel error" in stderr


def test_unsupported_op_is_refused_naming_the_node(tmp_path: Path) -> None:
    case = graph("Einsum", _Spec([node("Einsum", ["a", "b"], equation="ij,jk->ik")], {"a": x(2, 3), "b": x(3, 4)}))
    src = case.save(tmp_path)
    out = tmp_path / "einsum.torch.pt"
    assert_refused(tmp_path, ["export", str(src), "--to", "torch", "-o", str(out)],
                   "error: cannot export to PyTorch: op Einsum (node 'einsum_node') is not supported", out)


@pytest.mark.parametrize("args, message", [
    (["--to", "state-dict", "-o", "{dir}/missing/w.pt"], "output folder does not exist"),
    (["--to", "state-dict", "-o", "{dir}"], "is a directory"),
    (["--to", "state-dict", "-o", "{src}"], "refusing to overwrite the input"),
    (["--to", "keras", "-o", "{dir}/model.h5"], "--to keras writes .keras files"),
])
def test_bad_outputs_are_refused(fixture_copy, args: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    src = fixture_copy("mlp_legacy")
    filled = [a.format(dir=src.parent, src=src) for a in args]
    out = Path(filled[-1])
    before = tree_hashes(src.parent)
    exit_code, stdout, stderr = run("export", str(src), *filled)
    assert exit_code == 2, (stdout, stderr)
    assert message in stderr and stderr.count("\n") == 1
    assert tree_hashes(src.parent) == before
    assert out.is_dir() or out == src or not out.exists()


def test_missing_model_is_refused(tmp_path: Path) -> None:
    assert_refused(tmp_path, ["export", str(tmp_path / "nope.onnx"), "--to", "torch"], "nope.onnx: no such file",
                   tmp_path / "nope.torch.pt")


def test_unknown_format_is_a_usage_error(fixture_copy) -> None:  # type: ignore[no-untyped-def]
    code, _, stderr = run("export", str(fixture_copy("mlp_legacy")), "--to", "tflite")
    assert code == 2 and "Invalid value for '--to'" in stderr


def test_keras_export_through_the_installed_entry_point(fixture_copy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A subprocess, since Keras reads KERAS_BACKEND when imported; the file loads back."""
    src = fixture_copy("mnist_cnn_legacy")
    out = tmp_path / "cnn.keras"
    env = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "onnxgrow", "export", str(src), "--to", "keras", "-o", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}: 8 trainable variables" in proc.stdout and "PASSED" in proc.stdout
    check = ("import keras, numpy as np, sys; m = keras.saving.load_model(sys.argv[1]); "
             "print([l.name for l in m.layers if l.weights])")
    layers = subprocess.run([sys.executable, "-c", check, str(out)], capture_output=True, text=True, env=env,
                            timeout=300)
    assert layers.stdout.strip() == "['conv1', 'conv2', 'fc1', 'fc2']", layers.stderr
