"""Splicing a new layer's nodes in after one tensor (onnxgrow/deepening/splice.py): fresh
names, graph order, the hand-over of the tensor's consumers (and of its model-output name),
and copied activations that share their scalars but own their parameters. Every spliced
graph is saved and run in onnxruntime against the original or a numpy reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest

from onnxgrow import load_model, save_model
from onnxgrow.deepening.splice import Splice, fresh_scope
from tests.helpers.graphs import save_text, weights

FLOAT = ir.DataType.FLOAT
X = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)


def run(path: Path) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": X})[0]  # type: ignore[no-any-return]


def relu_then_sigmoid(path: Path) -> Path:
    """``x → Relu (a) → h → Sigmoid (b) → y``."""
    return save_text(path, """
        g (float[4, 3] x) => (float y) {
            [a] h = Relu (x)
            [b] y = Sigmoid (h)
        }""", {})


def node_named(graph: ir.Graph, name: str) -> ir.Node:
    return next(node for node in graph if node.name == name)


def test_fresh_scope_skips_every_name_in_use(tmp_path: Path) -> None:
    path = save_text(tmp_path / "m.onnx", """
        g (float[4, 3] x, float[4, 3] deep) => (float y) {
            ["fc1_deep/Gemm"] h = Gemm <transB = 1> (x, "fc1.weight")
            "fc1_deeper" = Add (h, deep)
            y = Relu ("fc1_deeper")
        }""", {"fc1.weight": weights(np.random.default_rng(0), 3, 3),
               "fc1_deep_2.bias": weights(np.random.default_rng(1), 3)})
    graph = load_model(path).graph
    assert fresh_scope(graph, "fc1") == "fc1_2"  # fc1.weight
    assert fresh_scope(graph, "fc1_deep") == "fc1_deep_3"  # fc1_deep/Gemm, then fc1_deep_2.bias
    assert fresh_scope(graph, "deep") == "deep_2"  # a graph input
    assert fresh_scope(graph, "fc1_dee") == "fc1_dee"  # fc1_deeper does not start with fc1_dee + a separator
    assert fresh_scope(graph, "conv1_deep") == "conv1_deep"


def test_new_nodes_follow_the_producer_and_take_the_consumers(tmp_path: Path) -> None:
    src = relu_then_sigmoid(tmp_path / "m.onnx")
    model = load_model(src, infer_shapes=True)
    h = node_named(model.graph, "a").outputs[0]
    splice = Splice(model.graph, h, FLOAT)
    first = splice.node("Neg", [h], "s/Neg", like=h)
    second = splice.node("Neg", [first], "s/Neg", like=h)
    assert [n.name for n in model.graph] == ["a", "s/Neg", "s/Neg_1", "b"]
    assert [n.name for n in splice.nodes] == ["s/Neg", "s/Neg_1"]
    assert (first.name, second.name) == ("s/Neg_output", "s/Neg_1_output")
    assert (second.dtype, second.shape) == (h.dtype, h.shape)
    assert node_named(model.graph, "b").inputs[0] is h  # nothing handed over before connect
    splice.connect(second, "s")
    assert node_named(model.graph, "b").inputs[0] is second
    assert splice.nodes[0].inputs[0] is h  # the new layer still reads the tensor
    out = save_model(model, tmp_path / "spliced.onnx")
    np.testing.assert_array_equal(run(out), run(src))  # Neg twice is the identity


def test_a_model_output_keeps_its_name(tmp_path: Path) -> None:
    src = relu_then_sigmoid(tmp_path / "m.onnx")
    model = load_model(src, infer_shapes=True)
    y = model.graph.outputs[0]
    splice = Splice(model.graph, y, FLOAT)
    new = splice.node("Neg", [splice.node("Neg", [y], "s/Neg", like=y)], "s/Neg", like=y)
    splice.connect(new, "s")
    assert model.graph.outputs[0] is new and new.name == "y"
    assert y.name == "s_input" and not y.is_graph_output()
    out = save_model(model, tmp_path / "spliced.onnx")
    np.testing.assert_array_equal(run(out), run(src))


def test_weights_get_unique_names_in_the_layer_dtype(tmp_path: Path) -> None:
    src = save_text(tmp_path / "m.onnx", """
        g (float[4, 3] x) => (float y) {
            [fc] h = MatMul (x, "s.weight")
            y = Relu (h)
        }""", {"s.weight": weights(np.random.default_rng(0), 3, 3)})
    model = load_model(src, infer_shapes=True)
    h = node_named(model.graph, "fc").outputs[0]
    splice = Splice(model.graph, h, FLOAT)
    weight = splice.weight("s.weight", np.eye(3))  # float64 in, the layer's float32 out
    assert weight.name == "s.weight_1" and model.graph.initializers["s.weight_1"] is weight
    assert weight.const_value is not None and weight.const_value.numpy().dtype == np.float32
    assert splice.weights == [weight]
    splice.connect(splice.node("MatMul", [h, weight], "s/MatMul", like=h), "s")
    out = save_model(model, tmp_path / "spliced.onnx")
    np.testing.assert_allclose(run(out), run(src), rtol=1e-6)


def test_copied_activation_shares_scalars_and_owns_its_parameters(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    slope = rng.uniform(0.1, 0.5, 3).astype(np.float32)
    src = save_text(tmp_path / "m.onnx", """
        g (float[4, 3] x) => (float y) {
            [fc] h = MatMul (x, w)
            p = PRelu (h, slope)
            y = Clip (p, lo, hi)
        }""", {"w": weights(rng, 3, 3), "slope": slope, "lo": np.array(-0.5, np.float32),
               "hi": np.array(0.8, np.float32)})
    model = load_model(src, infer_shapes=True)
    graph = model.graph
    h = node_named(graph, "fc").outputs[0]
    prelu, clip = (node for node in graph if node.op_type in ("PRelu", "Clip"))
    y = graph.outputs[0]
    splice = Splice(graph, y, FLOAT)
    end = splice.copy_region([prelu, clip], h, clip.outputs[0], y, "act_deep")
    splice.connect(end, "act_deep")
    new_prelu, new_clip = splice.nodes
    assert [n.name for n in splice.nodes] == ["act_deep/PRelu", "act_deep/Clip"]
    assert new_clip.inputs[1] is clip.inputs[1] and new_clip.inputs[2] is clip.inputs[2]  # scalars shared
    own_slope = new_prelu.inputs[1]
    assert own_slope is not prelu.inputs[1] and own_slope.name == "act_deep_act.slope"
    assert own_slope.const_value is not None
    np.testing.assert_array_equal(own_slope.const_value.numpy(), slope)
    out = save_model(model, tmp_path / "spliced.onnx")

    def activation(v: np.ndarray) -> np.ndarray:
        return np.clip(np.where(v < 0, slope * v, v), -0.5, 0.8)

    np.testing.assert_allclose(run(out), activation(run(src)), rtol=1e-6, atol=1e-7)


def test_a_region_input_computed_outside_it_is_refused(tmp_path: Path) -> None:
    path = save_text(tmp_path / "m.onnx", """
        g (float[4, 3] x) => (float y) {
            h = Relu (x)
            g = Sigmoid (x)
            y = Mul (h, g)
        }""", {})
    graph = load_model(path).graph
    relu, sigmoid, mul = graph
    splice = Splice(graph, mul.outputs[0], FLOAT)
    with pytest.raises(ValueError, match="neither in the copied region nor a constant"):
        splice.copy_region([mul], relu.outputs[0], mul.outputs[0], mul.outputs[0], "s")


def test_a_graph_input_has_no_producer_to_splice_after(tmp_path: Path) -> None:
    graph = load_model(relu_then_sigmoid(tmp_path / "m.onnx")).graph
    with pytest.raises(ValueError, match="tensor 'x' has no producing node"):
        Splice(graph, graph.inputs[0], FLOAT)
