"""Graphs written to the patterns of models nobody here made (``onnx.helper``, seeded weights).

- The Caffe2-era model zoo (ResNet-50, Inception v1/v2, DenseNet-121 ``*-caffe2`` files):
  opset 9, IR version 3, unnamed nodes, weights named ``gpu_0/<layer>_w_0``, and every
  initializer listed as a graph input, as IR 3 requires (the ``Reshape`` target too).
  Caffe2 wrote some BatchNorms as a ``BatchNormalization`` node and others folded into a
  scale and a shift, ``Mul(x, Unsqueeze(scale, axes=[1, 2]))`` then
  ``Add(., Unsqueeze(shift, axes=[1, 2]))`` (DenseNet-121, Inception v2): ``bn="affine"``.
- paddle2onnx's convolution bias: the Conv has no bias input; its bias is a ``Constant``
  reshaped at run time to ``[1, C, 1, 1]`` (a second ``Constant`` holds the target) and
  added (the PP-OCR classifier): :func:`paddle_conv_net`.

Each builder returns the saved path; the weights are seeded, BatchNorm variances positive.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: The input of every graph here: one 3-channel 8x8 image.
IMAGE = [1, 3, 8, 8]


class ZooGraph:
    """Nodes and weights written the way the old exporters wrote them (see the module docstring)."""

    def __init__(self, seed: int, bn: str = "op", prefix: str = "gpu_0/") -> None:
        self.rng = np.random.default_rng(seed)
        self.bn_style = bn
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.weights: dict[str, np.ndarray] = {}
        self.count = 0

    def fresh(self, stem: str) -> str:
        self.count += 1
        return f"{self.prefix}{stem}_{self.count}"

    def weight(self, name: str, array: np.ndarray) -> str:
        full = f"{self.prefix}{name}"
        self.weights[full] = array
        return full

    def normal(self, name: str, *shape: int, scale: float = 0.5) -> str:
        return self.weight(name, (self.rng.standard_normal(shape) * scale).astype(np.float32))

    def node(self, op: str, inputs: list[str], stem: str, **attrs: object) -> str:
        out = self.fresh(stem)
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def conv(self, x: str, cin: int, cout: int, k: int, name: str, *, bias: bool = True, stride: int = 1) -> str:
        inputs = [x, self.normal(f"{name}_w_0", cout, cin, k, k, scale=1.0 / np.sqrt(cin * k * k))]
        if bias:
            inputs.append(self.normal(f"{name}_b_0", cout, scale=0.1))
        return self.node("Conv", inputs, name, kernel_shape=[k, k], pads=[k // 2] * 4, strides=[stride, stride])

    def batch_norm(self, x: str, c: int, name: str) -> str:
        scale = self.weight(f"{name}_s_0", self.rng.uniform(0.5, 1.5, c).astype(np.float32))
        shift = self.normal(f"{name}_b_0", c, scale=0.1)
        if self.bn_style == "affine":  # Caffe2's folded SpatialBN: Mul/Add over Unsqueeze(constant)
            scaled = self.node("Mul", [x, self.node("Unsqueeze", [scale], f"{name}_s_u", axes=[1, 2])], f"{name}_m")
            return self.node("Add", [scaled, self.node("Unsqueeze", [shift], f"{name}_b_u", axes=[1, 2])], name)
        mean = self.normal(f"{name}_rm_0", c, scale=0.1)
        var = self.weight(f"{name}_riv_0", self.rng.uniform(0.5, 1.5, c).astype(np.float32))
        return self.node("BatchNormalization", [x, scale, shift, mean, var], name, epsilon=1e-5)

    def conv_bn_relu(self, x: str, cin: int, cout: int, k: int, name: str) -> str:
        return self.node("Relu", [self.batch_norm(self.conv(x, cin, cout, k, name, bias=False), cout,
                                                  f"{name}_bn")], f"{name}_relu")

    def classifier(self, x: str, c: int, classes: int = 5) -> str:
        """GlobalAveragePool → Reshape to [1, C] (target an initializer) → Gemm → Softmax."""
        pooled = self.node("GlobalAveragePool", [x], "pool")
        flat = self.node("Reshape", [pooled, self.weight("OC2_DUMMY_1", np.array([1, -1], np.int64))], "flat")
        logits = self.node("Gemm", [flat, self.normal("pred_w_0", classes, c), self.normal("pred_b_0", classes)],
                           "pred", transB=1)
        return self.node("Softmax", [logits], "softmax")

    def save(self, path: Path, output: str, *, ir_version: int = 3, opset: int = 9, listed: bool = True) -> Path:
        """Write the model; ``listed``: every initializer is also a graph input (IR 3 requires it)."""
        data = helper.make_tensor_value_info(f"{self.prefix}data_0", TensorProto.FLOAT, IMAGE)
        inits = [numpy_helper.from_array(a, n) for n, a in self.weights.items()]
        listed_inputs = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits if listed]
        graph = helper.make_graph(self.nodes, "zoo", [data, *listed_inputs],
                                  [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="caffe2")
        model.ir_version = ir_version
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, str(path))
        return path


def _bottleneck(g: ZooGraph, x: str, cin: int, mid: int, cout: int, name: str) -> str:
    """ResNet's bottleneck: 1x1 → 3x3 → 1x1 (each with BN), a projection when the width changes, Sum, Relu."""
    h = g.conv_bn_relu(x, cin, mid, 1, f"{name}_branch2a")
    h = g.conv_bn_relu(h, mid, mid, 3, f"{name}_branch2b")
    h = g.batch_norm(g.conv(h, mid, cout, 1, f"{name}_branch2c", bias=False), cout, f"{name}_branch2c_bn")
    shortcut = x
    if cin != cout:
        shortcut = g.batch_norm(g.conv(x, cin, cout, 1, f"{name}_branch1", bias=False), cout, f"{name}_branch1_bn")
    return g.node("Relu", [g.node("Sum", [h, shortcut], f"{name}_sum")], f"{name}_relu")


def resnet_like(path: Path, *, bn: str = "op", ir_version: int = 3, listed: bool = True, seed: int = 0) -> Path:
    """Stem conv 3→8, MaxPool, two bottleneck blocks (8→[4,4]→12 with a projection, 12→[4,4]→12), classifier."""
    g = ZooGraph(seed, bn)
    h = g.conv_bn_relu(f"{g.prefix}data_0", 3, 8, 3, "conv1")
    h = g.node("MaxPool", [h], "pool1", kernel_shape=[2, 2], strides=[2, 2])
    h = _bottleneck(g, h, 8, 4, 12, "res2_0")
    h = _bottleneck(g, h, 12, 4, 12, "res2_1")
    return g.save(path, g.classifier(h, 12), ir_version=ir_version, listed=listed)


def inception_like(path: Path, *, bn: str = "op", seed: int = 0) -> Path:
    """Stem conv 3→6, two inception modules (1x1 | 1x1→3x3 | 1x1→5x5 | pool→1x1, concatenated), Dropout, classifier."""
    g = ZooGraph(seed, bn)
    h = g.conv_bn_relu(f"{g.prefix}data_0", 3, 6, 3, "conv1")
    cin = 6
    for m, (b1, b2r, b2, b3r, b3, b4) in enumerate([(2, 3, 4, 2, 3, 2), (3, 2, 4, 2, 2, 3)]):
        name = f"inception_{m}"
        one = g.conv_bn_relu(h, cin, b1, 1, f"{name}_1x1")
        three = g.conv_bn_relu(g.conv_bn_relu(h, cin, b2r, 1, f"{name}_3x3_reduce"), b2r, b2, 3, f"{name}_3x3")
        five = g.conv_bn_relu(g.conv_bn_relu(h, cin, b3r, 1, f"{name}_5x5_reduce"), b3r, b3, 5, f"{name}_5x5")
        pooled = g.node("MaxPool", [h], f"{name}_pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1])
        proj = g.conv_bn_relu(pooled, cin, b4, 1, f"{name}_pool_proj")
        h = g.node("Concat", [one, three, five, proj], f"{name}_output", axis=1)
        cin = b1 + b2 + b3 + b4
    h = g.node("Dropout", [h], "drop", ratio=0.4)
    return g.save(path, g.classifier(h, cin))


def densenet_like(path: Path, *, seed: int = 0) -> Path:
    """DenseNet-121's pattern with Caffe2's folded BatchNorms: stem, a dense block of two layers
    (BN-ReLU-1x1 conv, BN-ReLU-3x3 conv, concatenated to the input), a transition (BN-ReLU-1x1 conv,
    AveragePool), a final BN-ReLU, classifier."""
    g = ZooGraph(seed, "affine")
    h = g.conv(f"{g.prefix}data_0", 3, 6, 3, "conv0", bias=False)
    c = 6
    for k in range(2):
        name = f"conv2_{k + 1}"
        a = g.node("Relu", [g.batch_norm(h, c, f"{name}_x1_bn")], f"{name}_x1_relu")
        b = g.conv(a, c, 8, 1, f"{name}_x1", bias=False)
        b = g.node("Relu", [g.batch_norm(b, 8, f"{name}_x2_bn")], f"{name}_x2_relu")
        new = g.conv(b, 8, 3, 3, f"{name}_x2", bias=False)
        h = g.node("Concat", [h, new], f"concat_2_{k + 1}", axis=1)
        c += 3
    t = g.node("Relu", [g.batch_norm(h, c, "conv2_blk_bn")], "conv2_blk_relu")
    t = g.conv(t, c, 6, 1, "conv2_blk", bias=False)
    t = g.node("AveragePool", [t], "pool2", kernel_shape=[2, 2], strides=[2, 2])
    t = g.node("Relu", [g.batch_norm(t, 6, "conv5_blk_bn")], "conv5_blk_relu")
    return g.save(path, g.classifier(t, 6))


def paddle_conv_net(path: Path, *, seed: int = 0, opset: int = 11) -> Path:
    """paddle2onnx 2.1's graph of ``Conv2D(bias) → BatchNorm2D → ReLU → Conv2D(bias) → ReLU →
    AdaptiveAvgPool2D(1) → flatten → Linear`` with its optimizer off (``--optimize_tool None``),
    node for node: every weight an unnamed ``Constant`` node; each conv bias
    ``Reshape(Constant b [C], Identity(Constant [1, -1, 1, 1]))`` added to a Conv without bias;
    the flatten target built from ``Shape → Slice → Concat``; IR version 6."""
    g = ZooGraph(seed, prefix="")
    weights: list[onnx.NodeProto] = []

    def constant(name: str, array: np.ndarray) -> str:
        weights.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name)))
        return name

    def named(op: str, inputs: list[str], out: str, name: str, **attrs: object) -> str:
        g.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    h = "x"
    for k, (cin, cout) in enumerate([(3, 6), (6, 8)]):
        w = constant(f"conv2d_{k}.w_0", (g.rng.standard_normal((cout, cin, 3, 3)) * 0.3).astype(np.float32))
        b = constant(f"conv2d_{k}.b_0", (g.rng.standard_normal(cout) * 0.1).astype(np.float32))
        conv = named("Conv", [h, w], f"p2o.pd_op.conv2d.{k}.0", f"Conv.{k}", dilations=[1, 1], kernel_shape=[3, 3],
                     strides=[1, 1], group=1, pads=[1, 1, 1, 1])
        g.nodes.append(helper.make_node("Constant", [], [f"p2o.pd_op.full_int_array.{k}.0"],
                                        value=numpy_helper.from_array(np.array([1, -1, 1, 1], np.int64))))
        target = named("Identity", [f"p2o.pd_op.full_int_array.{k}.0"], f"auto.cast.{k}", f"Identity.{2 * k}")
        bias = named("Reshape", [b, target], f"p2o.pd_op.reshape.{k}.0", f"Reshape.{k}")
        added = named("Add", [conv, bias], f"Add.{2 * k + 1}", f"Add.{2 * k}")
        h = named("Identity", [added], f"p2o.pd_op.add.{k}.0", f"Identity.{2 * k + 1}")
        if k == 0:
            bn = [constant(f"batch_norm2d_0.{p}", array.astype(np.float32)) for p, array in (
                ("w_0", g.rng.uniform(0.5, 1.5, cout)), ("b_0", g.rng.standard_normal(cout) * 0.1),
                ("w_1", g.rng.standard_normal(cout) * 0.1), ("w_2", g.rng.uniform(0.5, 1.5, cout)))]
            h = named("BatchNormalization", [h, *bn], "p2o.pd_op.batch_norm_.0.0", "BatchNormalization.0",
                      epsilon=1e-5, momentum=0.9)
        h = named("Relu", [h], f"p2o.pd_op.relu.{k}.0", f"Relu.{k}")
    pooled = named("GlobalAveragePool", [h], "p2o.pd_op.pool2d.0.0", "GlobalAveragePool.0")
    helpers = [constant(f"helper.constant.{k}", np.array([v], np.int64)) for k, v in enumerate([-1, 0, 0, 1])]
    shape = named("Shape", [pooled], "Shape.1", "Shape.0")
    batch = named("Slice", [shape, helpers[2], helpers[3], helpers[1]], "helper.slice.0", "Slice.0")
    flat_shape = named("Concat", [batch, helpers[0]], "Concat.1", "Concat.0", axis=0)
    flat = named("Reshape", [pooled, flat_shape], "p2o.pd_op.flatten.0.0", "Reshape.2")
    w = constant("linear_0.w_0", (g.rng.standard_normal((8, 2)) * 0.5).astype(np.float32))
    b = constant("linear_0.b_0", (g.rng.standard_normal(2) * 0.1).astype(np.float32))
    logits = named("MatMul", [flat, w], "p2o.pd_op.matmul.0.0", "MatMul.0")
    out = named("Identity", [named("Add", [logits, b], "Add.5", "Add.4")], "fetch_name_0", "Identity.4")
    data = helper.make_tensor_value_info("x", TensorProto.FLOAT, IMAGE)
    graph = helper.make_graph([*weights, *g.nodes], "paddle", [data],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 6
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path
