"""Widening every hidden layer of the reference fixtures (both exporters) stays exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest

import onnxgrow
from onnxgrow.model_io import written_files
from onnxgrow.widening.layers import find_layers
from tests.helpers.paths import REFERENCE_MODELS, fixture_path

HIDDEN = {"mlp": ["layer_1", "layer_2"], "mnist_cnn": ["conv1", "conv2", "fc1"]}
WEIGHTS = {  # layer -> (its weight, the contracting weight and its input axis in PyTorch layout)
    "layer_1": ("layer_1.weight", "layer_2.weight"),
    "layer_2": ("layer_2.weight", "layer_3.weight"),
    "conv1": ("conv1.weight", "conv2.weight"),
    "conv2": ("conv2.weight", "fc1.weight"),
    "fc1": ("fc1.weight", "fc2.weight"),
}
CASES = [(m, layer) for m in REFERENCE_MODELS for layer in HIDDEN[m.rsplit("_", 1)[0]]]


def _shape(model: ir.Model, name: str) -> tuple[int, ...]:
    return tuple(model.graph.initializers[name].const_value.shape.numpy())


@pytest.mark.parametrize(("model_name", "layer"), CASES)
@pytest.mark.parametrize("factor", ["plus_one", "double", "odd"])
def test_widen_each_hidden_layer_is_exact(model_name: str, layer: str, factor: str) -> None:
    path = fixture_path(model_name)
    n = {lay.display: lay.width for lay in find_layers(onnxgrow.load_model(path))[0]}[layer]
    q = {"plus_one": n + 1, "double": 2 * n, "odd": 2 * n + 3}[factor]
    grown, report = onnxgrow.widen(path, {layer: q}, seed=7)
    check = onnxgrow.verify(path, grown, onnxgrow.VerifyOptions(samples=2))
    assert check.passed, check.summary()
    assert check.max_rel_error <= 1e-5
    own, consumer = WEIGHTS[layer]
    assert _shape(grown, own)[0] == q
    spatial = 49 if layer == "conv2" else 1  # conv2 feeds fc1 through Flatten of 7x7 maps
    assert _shape(grown, consumer)[1] == q * spatial
    assert report.groups[0].old_width == n and report.groups[0].new_width == q


@pytest.mark.parametrize("model_name", REFERENCE_MODELS)
def test_several_layers_in_one_call(model_name: str) -> None:
    path = fixture_path(model_name)
    hidden = HIDDEN[model_name.rsplit("_", 1)[0]]
    widths = {name: 2 * 64 if "mnist" in model_name else 9 for name in hidden}
    grown, report = onnxgrow.widen(path, widths, seed=1)
    assert [g.requested for g in report.groups] == hidden
    assert onnxgrow.verify(path, grown).passed


@pytest.mark.parametrize("model_name", ["mlp_legacy", "mnist_cnn_dynamo"])
@pytest.mark.parametrize(("init", "noise", "exact"), [
    ("zero-pad", 0.0, True), ("net2wider", 0.3, True), ("random-pad", 0.0, False),
])
def test_init_variants(model_name: str, init: str, noise: float, exact: bool) -> None:
    path = fixture_path(model_name)
    layer = HIDDEN[model_name.rsplit("_", 1)[0]][-1]
    grown, report = onnxgrow.widen(path, {layer: 80 if "mnist" in model_name else 8}, init=init,
                                   noise=noise, seed=3)
    assert report.exact is exact
    check = onnxgrow.verify(path, grown)
    assert check.passed is exact, check.summary()
    if not exact:
        assert check.max_rel_error > 1e-3


def test_noise_makes_copies_differ() -> None:
    """--noise splits outgoing weights unequally: copies get different rows, function unchanged."""
    path = fixture_path("mlp_legacy")
    plain, _ = onnxgrow.widen(path, {"layer_2": 10}, seed=0)
    noisy, _ = onnxgrow.widen(path, {"layer_2": 10}, seed=0, noise=0.2)
    w_plain = plain.graph.initializers["layer_3.weight"].const_value.numpy()
    w_noisy = noisy.graph.initializers["layer_3.weight"].const_value.numpy()
    assert not np.allclose(w_plain, w_noisy)
    # per original unit, the shares of its copies still add up to the original column
    original = onnxgrow.load_model(path).graph.initializers["layer_3.weight"].const_value.numpy()
    for w in (w_plain, w_noisy):
        assert abs(w.sum() - original.sum()) < 1e-5


def test_same_command_gives_same_file(tmp_path: Path) -> None:
    src = fixture_path("mnist_cnn_dynamo")
    outs = []
    for k in range(2):
        out = tmp_path / f"w{k}.onnx"
        onnxgrow.widen_file(src, out, {"fc1": 100}, seed=5)
        outs.append(written_files(out)[1].read_bytes())
    assert outs[0] == outs[1]
