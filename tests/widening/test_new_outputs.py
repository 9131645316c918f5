"""New output classes (``widen --new-outputs``): old outputs exact, refusals, export, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import onnxgrow
from onnxgrow.errors import RefusedError
from onnxgrow.options import VerifyOptions, VerifyScope
from onnxgrow.widening.new_outputs import NEW_CLASS_BIAS
from tests.helpers.cli import assert_refused, run
from tests.helpers.paths import REFERENCE_MODELS, fixture_path

MNIST = [m for m in REFERENCE_MODELS if m.startswith("mnist")]
MLPS = [m for m in REFERENCE_MODELS if m.startswith("mlp")]


def _run(model: ir.Model | Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    path = model
    if isinstance(model, ir.Model):
        path = Path(f"/tmp/onnxgrow-new-outputs-{id(model)}.onnx")
        onnxgrow.save_model(model, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("model_name", MNIST)
@pytest.mark.parametrize("init", ["zero-pad", "random-pad"])
def test_mnist_classes_old_probabilities_exact(model_name: str, init: str, tmp_path: Path) -> None:
    """fc2 10 → 12 under a Softmax: old probabilities bit-for-bit, new classes at probability 0."""
    path = fixture_path(model_name)
    grown, report = onnxgrow.widen(path, {"fc2": 12}, new_outputs=True, init=init, seed=4)
    check = onnxgrow.verify(path, grown, VerifyOptions(samples=3), scope=report.scope)
    assert check.passed and check.max_abs_error == 0.0, check.summary()
    assert "old probabilities exact (new classes start at probability 0)" in check.summary()
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    old, new = _run(path, {"x": x}), _run(grown, {"x": x})
    assert new.shape == (3, 12)
    np.testing.assert_allclose(new[:, :10], old, rtol=0, atol=1e-7)
    assert np.all(new[:, 10:] == 0.0)
    bias = grown.graph.initializers["fc2.bias"].const_value.numpy()
    assert np.all(bias[10:] == NEW_CLASS_BIAS)
    weight = grown.graph.initializers["fc2.weight"].const_value.numpy()
    assert (np.all(weight[10:] == 0) if init == "zero-pad" else np.std(weight[10:]) > 0)


@pytest.mark.parametrize("model_name", MNIST)
def test_mnist_classes_renormalised(model_name: str) -> None:
    """Renormalised: new classes take mass; the check renormalises the old ones and they match."""
    path = fixture_path(model_name)
    grown, report = onnxgrow.widen(path, {"fc2": 13}, new_outputs=True, old_probabilities="renormalised",
                                   init="random-pad", seed=1)
    check = onnxgrow.verify(path, grown, VerifyOptions(samples=2), scope=report.scope)
    assert check.passed and check.max_rel_error <= 1e-5, check.summary()
    assert "old probabilities renormalised" in check.summary()
    x = np.random.default_rng(1).standard_normal((2, 1, 28, 28)).astype(np.float32)
    new = _run(grown, {"x": x})
    assert np.all(new[:, 10:] > 0)  # the new classes took probability mass
    # the same scope without renormalising fails: the check is not blind
    plain = VerifyScope(report.scope.outputs)  # type: ignore[union-attr]
    assert not onnxgrow.verify(path, grown, scope=plain).passed


@pytest.mark.torch
def test_exact_softmax_bias_in_float16(tmp_path: Path) -> None:
    """exp(-1e4 - max) underflows to 0 in float16 too: the old probabilities stay exact."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4),
                                torch.nn.Softmax(-1)).half().eval()
    path = tmp_path / "fp16.onnx"
    torch.onnx.export(model, (torch.randn(2, 5).half(),), str(path), dynamo=False, input_names=["x"],
                      output_names=["p"], dynamic_axes={"x": {0: "b"}, "p": {0: "b"}})
    grown, report = onnxgrow.widen(path, {"2": 6}, new_outputs=True)
    check = onnxgrow.verify(path, grown, VerifyOptions(samples=3), scope=report.scope)
    assert check.passed and check.max_abs_error <= 1e-7, check.summary()
    x = np.random.default_rng(2).standard_normal((4, 5)).astype(np.float16)
    new = _run(grown, {"x": x})
    assert new.dtype == np.float16 and np.all(new[:, 4:] == 0)


@pytest.mark.parametrize("model_name", MLPS)
@settings(max_examples=6, deadline=None)
@given(extra=st.integers(1, 40), init=st.sampled_from(["zero-pad", "random-pad"]))
def test_mlp_logits_any_class_count(model_name: str, extra: int, init: str) -> None:
    """No Softmax: old logits exact for any number of new classes."""
    path = fixture_path(model_name)
    grown, report = onnxgrow.widen(path, {"layer_3": 2 + extra}, new_outputs=True, init=init)
    check = onnxgrow.verify(path, grown, scope=report.scope)
    assert check.passed and check.max_rel_error <= 1e-5, check.summary()
    assert "old logits exact" in check.summary()
    assert isinstance(report, onnxgrow.NewOutputsReport) and report.groups[0].new_width == 2 + extra


@pytest.mark.torch
@pytest.mark.parametrize("dynamo", [False, True])
def test_resnet_10_to_12_classes(dynamo: bool, tmp_path: Path) -> None:
    """A ResNet (basic blocks, BatchNorm, global pooling) with 10 classes grows to 12; export loads
    strictly into the same class built with 12 (BatchNorm kept: folding and optimizer off)."""
    torch = pytest.importorskip("torch")
    from tests.helpers.torch_zoo import TinyResNet, randomise_batchnorm

    torch.manual_seed(0)
    model = TinyResNet(classes=10)
    randomise_batchnorm(model, torch.Generator().manual_seed(1))
    model.eval()
    path = tmp_path / "resnet.onnx"
    x = torch.randn(2, 3, 8, 8)
    if dynamo:
        torch.onnx.export(model, (x,), dynamo=True, input_names=["x"], output_names=["y"],  # type: ignore[union-attr]
                          optimize=False).save(str(path), external_data=False)
    else:
        torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                          do_constant_folding=False)
    out = tmp_path / "resnet12.onnx"
    report = onnxgrow.widen_file(path, out, {"fc": 12}, new_outputs=True)
    assert report.verification is not None and report.verification.passed  # type: ignore[attr-defined]
    assert report.verification.max_rel_error <= 1e-5  # type: ignore[attr-defined]
    state = onnxgrow.state_dict(out).tensors
    assert state["fc.weight"].shape == (12, 16) and state["fc.bias"].shape == (12,)
    wider = TinyResNet(classes=12).eval()
    wider.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=True)
    with torch.no_grad():
        np.testing.assert_allclose(wider(x)[:, :10].numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
        assert torch.all(wider(x)[:, 10:] == 0)  # zero rows, zero bias


@pytest.mark.torch
@pytest.mark.parametrize("model_name", MNIST)
def test_export_carries_the_larger_head(model_name: str, tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from tests.helpers.export import MnistCNN

    grown, _ = onnxgrow.widen(fixture_path(model_name), {"fc2": 12}, new_outputs=True)
    state = onnxgrow.state_dict(grown).tensors
    assert state["fc2.weight"].shape == (12, 64)
    cnn = MnistCNN(classes=12)
    cnn.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=True)
    reference = MnistCNN()
    reference.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in
                               onnxgrow.state_dict(fixture_path(model_name)).tensors.items()})
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(cnn(x)[:, :10], reference(x), rtol=1e-5, atol=1e-7)


def test_not_the_last_layer_is_refused_naming_it() -> None:
    with pytest.raises(RefusedError, match="'fc1' is not the last layer: its outputs feed") as info:
        onnxgrow.widen(fixture_path("mnist_cnn_legacy"), {"fc1": 80}, new_outputs=True)
    assert "/fc2/Gemm" in str(info.value)


def test_without_the_flag_the_output_is_refused_with_a_hint() -> None:
    with pytest.raises(RefusedError, match="pass --new-outputs"):
        onnxgrow.widen(fixture_path("mnist_cnn_dynamo"), {"fc2": 12})
    with pytest.raises(RefusedError, match="pass --new-outputs"):
        onnxgrow.widen(fixture_path("mlp_legacy"), {"layer_3": 4})


def test_net2wider_is_refused_for_new_classes() -> None:
    with pytest.raises(RefusedError, match="--new-outputs takes --init zero-pad"):
        onnxgrow.widen(fixture_path("mlp_legacy"), {"layer_3": 4}, new_outputs=True, init="net2wider")


@pytest.mark.torch
def test_exact_probabilities_need_a_bias(tmp_path: Path) -> None:
    """A bias-free classifier under a Softmax: exact is refused naming the layer, renormalised works."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3, bias=False),
                                torch.nn.Softmax(-1)).eval()
    path = tmp_path / "nobias.onnx"
    torch.onnx.export(model, (torch.randn(2, 3),), str(path), dynamo=False, input_names=["x"], output_names=["p"])
    with pytest.raises(RefusedError, match="use --old-probabilities renormalised"):
        onnxgrow.widen(path, {"2": 5}, new_outputs=True)
    grown, report = onnxgrow.widen(path, {"2": 5}, new_outputs=True, old_probabilities="renormalised")
    assert onnxgrow.verify(path, grown, scope=report.scope).passed


@pytest.mark.torch
def test_cli_new_outputs_verify_diff_and_map(fixture_copy, tmp_path: Path) -> None:
    pytest.importorskip("torch")  # the last step exports a PyTorch module
    src = fixture_copy("mnist_cnn_dynamo")
    out, map_out = tmp_path / "c12.onnx", tmp_path / "c12.json"
    code, stdout, stderr = run("widen", str(src), "--node", "fc2", "--to", "12", "--new-outputs", "-o", str(out),
                               "--map-out", str(map_out), "-q")
    assert code == 0, stderr
    assert "fc2: 10 → 12 classes" in stdout and "old probabilities exact" in stdout
    # verify of the original against the grown file reads the scope from the lineage
    code, stdout, _ = run("verify", str(src), str(out))
    assert code == 0 and "compared: softmax restricted to the old 10 of 12 classes" in stdout
    code, stdout, _ = run("diff", str(src), str(out))
    assert "fc2 outputs 10 → 12 classes" in stdout
    growth = json.loads(map_out.read_text())
    weights = {w["name"]: w for w in growth["weights"]}
    assert weights["fc2.weight"]["old_shape"] == [10, 64] and weights["fc2.weight"]["new_shape"] == [12, 64]
    assert weights["fc2.weight"]["axes"][0]["src"] == [*range(10), -1, -1]
    code, stdout, stderr = run("export", str(out), "--to", "torch", "-o", str(tmp_path / "c12.pt"))
    assert code == 0 and "PASSED" in stdout, stderr


def test_cli_refuses_new_outputs_on_hidden_layer(fixture_copy, tmp_path: Path) -> None:
    src = fixture_copy("mnist_cnn_legacy")
    out = tmp_path / "x.onnx"
    assert_refused(tmp_path, ["widen", str(src), "--node", "fc1", "--to", "80", "--new-outputs", "-o", str(out)],
                   "'fc1' is not the last layer", out)
