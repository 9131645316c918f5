"""Names users type resolve to the layer they mean, on both exporters' graphs."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

import onnxgrow
from onnxgrow.errors import GrowError
from onnxgrow.names import (
    CONVENTIONS,
    dynamo_module_path,
    keras_layer_of,
    keras_layer_path,
    legacy_module_path,
    names_of,
    resolve,
    scope_path,
    weight_prefix,
)
from onnxgrow.widening.layers import find_layer, find_layers
from tests.helpers.paths import REFERENCE_MODELS, fixture_path


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


# ----- the registered naming conventions, one test each ----------------------------------------


def test_conventions_are_registered_in_display_order() -> None:
    assert list(CONVENTIONS) == ["skl2onnx", "flax", "keras", "caffe2", "weight-prefix", "dynamo", "legacy", "scope",
                                 "weights"]


@pytest.mark.parametrize(("name", "keras3", "path"), [
    ("mnist_cnn_1/fc1_1/MatMul", True, "mnist_cnn/fc1"),
    ("StatefulPartitionedCall/seed_mlp_1/layer_2_1/Cast/ReadVariableOp:0", True, "seed_mlp/layer_2"),
    ("mobilenetv2_1.00_64_1/block_1_expand_1/convolution/merged_input:0", True, "mobilenetv2_1.00_64/block_1_expand"),
    ("td_mlp_1/td_fc1_1/Tensordot/MatMul", True, "td_mlp/td_fc1"),
    ("mobilenetv2_1.00_64/block_1_expand/Conv2D_weights_fused_bn", False, "mobilenetv2_1.00_64/block_1_expand"),
    ("seed_mlp/layer_1/MatMul/ReadVariableOp:0", False, "seed_mlp/layer_1"),  # tf.keras 2 keeps layer_1
    ("/fc1/Gemm", False, None), ("MatMul", False, None), ("coefficient", False, None),
])
def test_keras_layer_path(name: str, keras3: bool, path: str | None) -> None:
    assert keras_layer_path(name, keras3) == path


def _tf_graph(*node_names: str, keras3: bool = True) -> tuple[ir.Graph, list[ir.Node]]:
    """MatMul nodes named as tf2onnx names them, each with its kernel initializer."""
    nodes, inits = [], []
    x = ir.Value(name="x")
    for name in node_names:
        tail = "/Cast/ReadVariableOp:0" if keras3 else "/MatMul/ReadVariableOp:0"
        kernel = ir.Value(name=name.rsplit("/", 1)[0] + tail, const_value=ir.tensor(np.ones((2, 2), np.float32)))
        inits.append(kernel)
        nodes.append(ir.Node("", "MatMul", [x, kernel], name=name))
    graph = ir.Graph([x], [n.outputs[0] for n in nodes], nodes=nodes, initializers=inits)
    return graph, nodes


def test_keras_convention_strips_the_keras3_suffix_once() -> None:
    """Keras 3 layers ``dense`` and ``dense_1`` (scopes ``dense_1``, ``dense_1_1``) keep their names."""
    graph, nodes = _tf_graph("functional_1/dense_1/MatMul", "functional_1/dense_1_1/MatMul")
    candidates = [names_of(n, [n.inputs[1].name]) for n in nodes]
    assert [c.display for c in candidates] == ["dense", "dense_1"]
    assert resolve("dense_1", candidates).node is nodes[1]
    assert resolve("dense", candidates).node is nodes[0]


def test_keras_convention_keeps_tf_keras2_names() -> None:
    graph, nodes = _tf_graph("model/dense/MatMul", "model/dense_1/MatMul", keras3=False)
    candidates = [names_of(n, [n.inputs[1].name]) for n in nodes]
    assert [c.display for c in candidates] == ["dense", "dense_1"]


def test_a_keras_name_two_layers_share_is_ambiguous_and_lists_both() -> None:
    """Two nested models with a layer ``fc`` each."""
    graph, nodes = _tf_graph("outer_1/left_1/fc_1/MatMul", "outer_1/right_1/fc_1/MatMul")
    candidates = [names_of(n, [n.inputs[1].name]) for n in nodes]
    with pytest.raises(GrowError, match=r"'fc' is ambiguous; it matches: .*left.*right"):
        resolve("fc", candidates)
    assert resolve("outer/right/fc", candidates).node is nodes[1]


def test_skl2onnx_convention_follows_sklearn_attributes() -> None:
    x = ir.Value(name="x")
    inits = [ir.Value(name=n, const_value=ir.tensor(np.ones((2, 2), np.float32)))
             for n in ("coefficient", "coefficient1", "coefficient2")]
    nodes = [ir.Node("", "MatMul", [x, w], name=f"MatMul{i or ''}") for i, w in enumerate(inits)]
    ir.Graph([x], [n.outputs[0] for n in nodes], nodes=nodes, initializers=inits)
    names = [names_of(n, [n.inputs[1].name]) for n in nodes]
    assert [n.display for n in names] == ["coefs_[0]", "coefs_[1]", "coefs_[2]"]
    assert "hidden_1" in names[1].full and not any(name.startswith("hidden") for name in names[2].full)


def test_an_unscoped_tf2onnx_node_takes_the_scope_feeding_it() -> None:
    """tf2onnx's fused ``LSTM__33`` reads the Transpose of its Keras layer's scope."""
    x = ir.Value(name="x")
    kernel = ir.Value(name="lstm_1/proj_1/Cast/ReadVariableOp:0", const_value=ir.tensor(np.ones((2, 2), np.float32)))
    transpose = ir.Node("", "Transpose", [x], name="lstm_1/rnn_1/transpose")
    lstm = ir.Node("", "LSTM", [transpose.outputs[0], ir.Value(name="W0__30")], name="LSTM__33")
    ir.Graph([x], [lstm.outputs[0]], nodes=[transpose, lstm], initializers=[kernel])
    assert names_of(lstm).display == "rnn"
    assert keras_layer_of(lstm) == "rnn"
