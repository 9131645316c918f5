"""Names users type resolve to the layer they mean, on both exporters' graphs."""

from __future__ import annotations

import onnx_ir as ir
import pytest
from conftest import REFERENCE_MODELS, fixture_path

import onnxgrow
from onnxgrow.names import dynamo_module_path, legacy_module_path, names_of, resolve, scope_path, weight_prefix
from onnxgrow.widening.layers import find_layer, find_layers


@pytest.mark.parametrize(("node_name", "path"), [
    ("/fc1/Gemm", "fc1"),
    ("/layer1/layer1.0/conv1/Conv", "layer1.0.conv1"),
    ("/encoder/layers.0/self_attn/MatMul_1", "encoder.layers.0.self_attn"),
    ("/Relu", None),
    ("node_linear_3", None),
])
def test_legacy_module_path(node_name: str, path: str | None) -> None:
    assert legacy_module_path(node_name) == path


def test_dynamo_module_path_from_metadata() -> None:
    node = ir.Node("", "Gemm", [], name="node_linear_3")
    node.metadata_props["pkg.torch.onnx.name_scopes"] = "['', 'layer1', 'layer1.0', 'layer1.0.fc', 'linear']"
    assert dynamo_module_path(node) == "layer1.0.fc"


@pytest.mark.parametrize(("name", "prefix"), [
    ("fc1.weight", "fc1"), ("layer1.0.conv1.bias", "layer1.0.conv1"), ("dense/kernel", "dense"),
    ("onnx::MatMul_12", None), ("val_0", None),
])
def test_weight_prefix(name: str, prefix: str | None) -> None:
    assert weight_prefix(name) == prefix


def test_tf2onnx_scope() -> None:
    assert scope_path("sequential/dense_1/MatMul") == "sequential/dense_1"
    node = ir.Node("", "MatMul", [], name="sequential/dense_1/MatMul")
    names = names_of(node)
    assert "sequential/dense_1" in names.full and names.full[0] == "dense_1"  # the Keras layer name


@pytest.mark.parametrize("model_name", REFERENCE_MODELS)
def test_reference_layer_names_resolve(model_name: str) -> None:
    model = onnxgrow.load_model(fixture_path(model_name))
    layers, _ = find_layers(model)
    expected = ["layer_1", "layer_2", "layer_3"] if "mlp" in model_name else ["conv1", "conv2", "fc1", "fc2"]
    assert [layer.display for layer in layers] == expected
    for layer in layers:
        for alias in (layer.display, layer.node.name, f"{layer.display}.weight"):
            assert find_layer(model, alias, *find_layers(model)).node is layer.node


def test_ambiguous_short_name_lists_candidates() -> None:
    nodes = [ir.Node("", "Conv", [], name=f"/layer{i}/conv1/Conv") for i in (1, 2)]
    candidates = [names_of(n) for n in nodes]
    assert resolve("layer1.conv1", candidates).node is nodes[0]
    with pytest.raises(onnxgrow.GrowError, match="ambiguous.*layer1.conv1.*layer2.conv1"):
        resolve("conv1", candidates)


def test_unknown_name_suggests_closest() -> None:
    model = onnxgrow.load_model(fixture_path("mnist_cnn_dynamo"))
    with pytest.raises(onnxgrow.GrowError, match="no layer named 'fc_1'; closest: fc1"):
        find_layer(model, "fc_1")


def test_non_layer_node_is_explained() -> None:
    model = onnxgrow.load_model(fixture_path("mnist_cnn_legacy"))
    with pytest.raises(onnxgrow.GrowError, match="is a Relu node, not a growable layer"):
        find_layer(model, "/Relu")
