"""Deepening real PyTorch exports (:mod:`tests.helpers.deepen_zoo`): ResNet block, MobileNetV2 inverted
residual (ReLU6), VGG, BERT and GPT-2 feed-forwards (erf and tanh GELU, as ops and written
out), 1-D/3-D convs and one MLP per activation, each exported three ways (legacy with and
without constant folding, dynamo). After every growable layer, in ``auto`` and in every
mode where it is exact, onnxruntime must agree within 1e-5; ``identity`` after a
non-idempotent activation must be refused.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

pytest.importorskip("torch")

from onnxgrow import deepen_file, load_model
from onnxgrow.deepening.activation import find_insertion_point
from onnxgrow.errors import RefusedError
from onnxgrow.shapes import infer_shapes
from onnxgrow.widening.layers import find_layer, find_layers
from tests.helpers import deepen as h
from tests.helpers import deepen_zoo

pytestmark = pytest.mark.torch

#: What ``auto`` inserts after each layer: identity (+ the idempotent activation copied) or residual.
AUTO = {
    "resnet_block": {"stem": "identity+Relu", "conv1": "identity+Relu", "conv2": "identity", "fc": "identity"},
    "mobilenet_v2": {"stem.0": "identity+Clip", "expand.0": "identity+Clip", "project.0": "identity"},
    "vgg": {"features.0": "identity+Relu", "features.3": "identity+Relu", "classifier.0": "identity+Relu",
            "classifier.3": "identity+Relu", "classifier.6": "identity"},
    "bert_ffn": {"intermediate": "residual", "output": "identity"},
    "gpt2_ffn": {"c_fc": "residual", "c_proj": "identity"},
    "gpt2_gelu_new": {"c_fc": "residual", "c_proj": "identity"},
    "conv1d": {"conv1": "residual", "conv2": "residual", "fc": "identity"},
    "conv3d": {"conv1": "identity+Clip", "conv2": "residual", "fc": "identity"},
    **{f"act_mlp_{act}": {"fc1": "identity+Clip" if act == "hardtanh" else "residual", "fc2": "identity"}
       for act in deepen_zoo.ACTIVATIONS},
}


def _auto(mode: str, activation: str | None) -> str:
    return "residual" if mode == "residual" else "identity" + (f"+{activation}" if activation else "")


@pytest.mark.parametrize("exporter", deepen_zoo.EXPORTERS)
@pytest.mark.parametrize("name", list(AUTO))
def test_every_layer_in_every_exact_mode(name: str, exporter: str, tmp_path: Path) -> None:
    source = deepen_zoo.export(name, exporter)
    assert [layer.display for layer in find_layers(load_model(source))[0]] == list(AUTO[name])
    for layer, auto in AUTO[name].items():
        out = tmp_path / f"{layer}.onnx"
        report = deepen_file(source, out, layer)
        assert _auto(report.mode, report.activation) == auto, layer
        assert h.max_rel_error(source, out) <= h.RTOL, (layer, "auto")
        other = "residual" if report.mode == "identity" else "identity"
        if other == "identity":
            with pytest.raises(RefusedError, match=f"--mode identity after '{layer}' is not exact"):
                deepen_file(source, out, layer, mode="identity")
            continue
        deepen_file(source, out, layer, mode=other)
        assert h.max_rel_error(source, out) <= h.RTOL, (layer, other)


@pytest.mark.parametrize(("name", "exporter", "ops"), [
    ("bert_ffn", "legacy", ["Div", "Erf", "Add", "Mul", "Mul"]),
    ("bert_ffn", "dynamo", ["Gelu"]),
    ("gpt2_ffn", "legacy_nofold", ["Mul", "Mul", "Mul", "Add", "Mul", "Tanh", "Add", "Mul", "Mul"]),
    ("gpt2_ffn", "dynamo", ["Gelu"]),
    ("gpt2_gelu_new", "dynamo", ["Mul", "Pow", "Mul", "Add", "Mul", "Tanh", "Add", "Mul"]),
])
def test_gelu_is_copied_whole_into_the_residual_branch(name: str, exporter: str, ops: list[str],
                                                       tmp_path: Path) -> None:
    source = deepen_zoo.export(name, exporter)
    model = load_model(source)
    infer_shapes(model)
    layer = "intermediate" if name == "bert_ffn" else "c_fc"
    point = find_insertion_point(find_layer(model, layer).node)
    assert [node.op_type for node in point.activation] == ops
    out = tmp_path / "out.onnx"
    report = deepen_file(source, out, layer, mode="residual")
    grown = {n.name: n for n in onnx.load(str(out)).graph.node}
    copied = [grown[n] for n in report.new_nodes[2:2 + len(ops)]]
    assert [n.op_type for n in copied] == ops
    original = {n.name: n for n in onnx.load(str(source)).graph.node}
    for source_node, copy in zip(point.activation, copied):
        assert copy.attribute == original[source_node.name].attribute
    assert h.max_rel_error(source, out) <= h.RTOL


@pytest.mark.parametrize(("name", "exporter", "layer", "width"), [
    ("resnet_block", "dynamo", "conv1", 12),
    ("resnet_block", "legacy_nofold", "conv2", 12),  # joins the residual stream's channel group
    ("mobilenet_v2", "legacy", "expand.0", 40),
    ("vgg", "dynamo", "classifier.3", 24),
    ("bert_ffn", "legacy", "intermediate", 48),  # residual branch on [batch, tokens, hidden]
    ("gpt2_gelu_new", "dynamo", "c_fc", 40),
    ("conv1d", "legacy", "conv2", 9),
    ("conv3d", "dynamo", "conv1", 6),
    ("act_mlp_prelu", "dynamo", "fc1", 11),  # the copied PRelu's own slope is widened too
])
def test_width(name: str, exporter: str, layer: str, width: int, tmp_path: Path) -> None:
    source = deepen_zoo.export(name, exporter)
    out = tmp_path / "out.onnx"
    report = deepen_file(source, out, layer, width=width)
    assert report.widened is not None
    assert find_layer(load_model(out), f"{layer}_deep").width == width
    assert h.max_rel_error(source, out) <= h.RTOL


def test_refuses_a_depthwise_conv(tmp_path: Path) -> None:
    source = tmp_path / "mobilenet.onnx"
    source.write_bytes(deepen_zoo.export("mobilenet_v2", "dynamo").read_bytes())
    h.assert_refused(source, "--after", "depthwise.0",
                     message="cannot deepen after 'depthwise.0': Conv node 'node_Conv_70' is not a growable layer "
                             "(depthwise convolution")


def test_refuses_a_width_that_would_reach_the_output(tmp_path: Path) -> None:
    """project.0's new layer feeds the skip Add, which is the model output."""
    source = tmp_path / "mobilenet.onnx"
    source.write_bytes(deepen_zoo.export("mobilenet_v2", "legacy").read_bytes())
    h.assert_refused(source, "--after", "project.0", "--width", "12",
                     message="cannot deepen after 'project.0' with --width 12: cannot widen 'project.0_deep'")


@pytest.mark.parametrize(("name", "layer", "kernel", "pads"), [
    ("conv1d", "conv1", [5], [2, 2]),
    ("conv1d", "conv2", [3], [1, 1]),  # the layer's even kernel 4 made odd
    ("conv3d", "conv1", [3, 3, 3], [1, 1, 1, 1, 1, 1]),
    ("conv3d", "conv2", [1, 3, 3], [0, 1, 1, 0, 1, 1]),
    ("mobilenet_v2", "expand.0", [1, 1], [0, 0, 0, 0]),
])
def test_conv_kernel_follows_the_layer(name: str, layer: str, kernel: list[int], pads: list[int],
                                       tmp_path: Path) -> None:
    source = deepen_zoo.export(name, "dynamo")
    out = tmp_path / "out.onnx"
    deepen_file(source, out, layer, mode="residual")
    new_convs = (f"{layer}_deep/Conv", f"{layer}_deep_out/Conv")
    convs = [n for n in onnx.load(str(out)).graph.node if n.name in new_convs]
    assert len(convs) == 2
    for conv in convs:
        attrs = {a.name: list(a.ints) if a.ints else a.i for a in conv.attribute}
        assert attrs == {"kernel_shape": kernel, "pads": pads, "strides": [1] * len(kernel),
                         "dilations": [1] * len(kernel), "group": 1}


@pytest.mark.parametrize(("layer", "tensor"), [
    ("stem", "/Relu_output_0"),  # after conv, BatchNorm and Relu; the Relu also feeds the skip Add
    ("conv1", "/Relu_1_output_0"),
    ("conv2", "/bn2/BatchNormalization_output_0"),  # after the BatchNorm, before the skip Add
])
def test_insertion_after_batch_norm(layer: str, tensor: str, tmp_path: Path) -> None:
    source = deepen_zoo.export("resnet_block", "legacy_nofold")
    out = tmp_path / "out.onnx"
    assert deepen_file(source, out, layer).tensor == tensor
    assert h.max_rel_error(source, out) <= h.RTOL
