"""Small hand-built ONNX graphs exercising each op the PyTorch and Keras exports support,
with attribute variants and opset-dependent forms. Weights are initializers with
framework names (``w.weight``), so they become parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(0)


@dataclass
class OpGraph:
    """A model with one or a few nodes, its inputs, and whether Keras should express it."""

    id: str
    model: onnx.ModelProto
    feeds: dict[str, np.ndarray]
    keras: bool = True

    def save(self, folder: Path) -> Path:
        path = folder / f"{self.id}.onnx"
        onnx.save(self.model, path)
        return path


@dataclass
class _Spec:
    nodes: list[onnx.NodeProto]
    inputs: dict[str, np.ndarray]
    outputs: list[str] = field(default_factory=lambda: ["y"])
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    opset: int = 17


def _values(names: dict[str, np.ndarray]) -> list[onnx.ValueInfoProto]:
    return [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape))
            for n, a in names.items()]


def graph(id: str, spec: _Spec, keras: bool = True) -> OpGraph:
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in spec.outputs]
    initializers = [numpy_helper.from_array(a, n) for n, a in spec.weights.items()]
    seen: set[str] = set()
    for k, n in enumerate(spec.nodes):  # node names must be unique: later repeats get a number
        if n.name in seen:
            n.name = f"{n.name}_{k}"
        seen.add(n.name)
    body = helper.make_graph(spec.nodes, id, _values(spec.inputs), outputs, initializers)
    model = helper.make_model(body, opset_imports=[helper.make_opsetid("", spec.opset)])
    return OpGraph(id, model, spec.inputs, keras)


def x(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def ints(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def node(op: str, inputs: list[str], outputs: list[str] | None = None, **attrs: object) -> onnx.NodeProto:
    return helper.make_node(op, inputs, outputs or ["y"], name=f"{op.lower()}_node", **attrs)


def unary(op: str, opset: int = 17, keras: bool = True, **attrs: object) -> OpGraph:
    return graph(f"{op}-{opset}" + "".join(f"-{k}{v}" for k, v in attrs.items()),
                 _Spec([node(op, ["x"], **attrs)], {"x": x(2, 3, 4)}, opset=opset), keras)


def op_types(cases: list[OpGraph]) -> set[str]:
    """The op types of every node of ``cases``: the ops a test running over them covers."""
    return {n.op_type for case in cases for n in case.model.graph.node}


def op_graphs() -> list[OpGraph]:
    """Every case, in a stable order."""
    cases: list[OpGraph] = []
    add = cases.append
    for op in ("Relu", "Sigmoid", "Tanh", "Erf", "Exp", "Abs", "Neg", "Floor", "Ceil", "Sin", "Cos",
               "Sign", "Softsign", "HardSwish", "Softplus", "Identity", "Round"):
        add(unary(op))
    add(unary("Mish", opset=18))
    add(unary("LeakyRelu", alpha=0.2))
    add(unary("Elu", alpha=0.5))
    add(unary("Selu"))
    add(unary("Celu", opset=12, alpha=2.0))
    add(unary("Gelu", opset=20))
    add(unary("Gelu", opset=20, approximate="tanh"))
    add(unary("HardSigmoid", alpha=0.3, beta=0.4))
    add(unary("ThresholdedRelu", alpha=0.5))
    add(unary("Clip", opset=6, min=-0.5, max=0.7))
    add(unary("Softmax", opset=13, axis=1))
    add(unary("Softmax", opset=11, axis=1))
    add(unary("LogSoftmax", opset=11))
    add(unary("Dropout", opset=13))
    add(graph("Log-Sqrt-Reciprocal", _Spec(
        [node("Exp", ["x"], ["e"]), node("Log", ["e"], ["l"]), node("Abs", ["x"], ["a"]),
         node("Sqrt", ["a"], ["s"]), node("Add", ["s", "one"], ["p"]), node("Reciprocal", ["p"], ["r"]),
         node("Add", ["l", "r"])],
        {"x": x(2, 5)}, weights={"one": np.ones(1, np.float32)})))
    add(graph("Clip-13-min-only", _Spec([node("Clip", ["x", "lo"])], {"x": x(3, 4)},
                                        weights={"lo": np.array(-0.2, np.float32)}, opset=13)))
    add(graph("PRelu", _Spec([node("PRelu", ["x", "act.weight"])], {"x": x(2, 3, 4, 4)},
                             weights={"act.weight": x(3, 1, 1)})))
    # linear algebra
    add(graph("Gemm-transA-transB0-alpha-beta", _Spec(
        [node("Gemm", ["x", "fc.weight", "fc.bias"], transA=1, alpha=0.5, beta=2.0)],
        {"x": x(4, 3)}, weights={"fc.weight": x(4, 5), "fc.bias": x(5)})))
    add(graph("Gemm-transB", _Spec([node("Gemm", ["x", "fc.weight", "fc.bias"], transB=1)],
                                   {"x": x(3, 4)}, weights={"fc.weight": x(5, 4), "fc.bias": x(5)})))
    add(graph("MatMul-Add-3d", _Spec([node("MatMul", ["x", "fc.weight"], ["m"]), node("Add", ["m", "fc.bias"])],
                                     {"x": x(2, 3, 4)}, weights={"fc.weight": x(4, 6), "fc.bias": x(6)})))
    add(graph("MatMul-two-inputs", _Spec([node("MatMul", ["a", "b"])], {"a": x(2, 3, 4), "b": x(2, 4, 5)})))
    # convolutions and pooling
    add(graph("Conv-same-upper-stride2", _Spec(
        [node("Conv", ["x", "conv.weight", "conv.bias"], auto_pad="SAME_UPPER", strides=[2, 2])],
        {"x": x(2, 3, 7, 7)}, weights={"conv.weight": x(4, 3, 3, 3), "conv.bias": x(4)})))
    add(graph("Conv-asymmetric-pads", _Spec([node("Conv", ["x", "conv.weight"], pads=[0, 1, 2, 1])],
                                            {"x": x(1, 2, 6, 6)}, weights={"conv.weight": x(3, 2, 3, 3)})))
    add(graph("Conv-group-dilation", _Spec(
        [node("Conv", ["x", "conv.weight", "conv.bias"], group=2, dilations=[2, 2], pads=[2, 2, 2, 2])],
        {"x": x(2, 4, 9, 9)}, weights={"conv.weight": x(6, 2, 3, 3), "conv.bias": x(6)})))
    add(graph("Conv-1d", _Spec([node("Conv", ["x", "conv.weight"], pads=[1, 1])], {"x": x(2, 3, 10)},
                               weights={"conv.weight": x(5, 3, 3)})))
    add(graph("Conv-3d", _Spec([node("Conv", ["x", "conv.weight"], strides=[1, 2, 2])], {"x": x(1, 2, 4, 6, 6)},
                               weights={"conv.weight": x(3, 2, 2, 3, 3)})))
    add(graph("ConvTranspose-asymmetric", _Spec(
        [node("ConvTranspose", ["x", "up.weight", "up.bias"], strides=[2, 2], pads=[1, 0, 0, 1],
              output_padding=[1, 1])],
        {"x": x(1, 3, 4, 4)}, weights={"up.weight": x(3, 2, 3, 3), "up.bias": x(2)}), keras=False))
    add(graph("MaxPool-pads-ceil", _Spec([node("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2],
                                               pads=[1, 1, 1, 1], ceil_mode=1)], {"x": x(1, 2, 8, 8)}),
              keras=False))
    add(graph("MaxPool-pads", _Spec([node("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2],
                                          pads=[1, 1, 1, 1])], {"x": x(1, 2, 9, 9)})))
    add(graph("AveragePool-uncounted-pads", _Spec(
        [node("AveragePool", ["x"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])], {"x": x(1, 2, 6, 6)}), keras=False))
    add(graph("AveragePool-counted-pads", _Spec(
        [node("AveragePool", ["x"], kernel_shape=[2, 2], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1)],
        {"x": x(1, 2, 6, 6)})))
    add(graph("LpPool", _Spec([node("LpPool", ["x"], kernel_shape=[2, 2], strides=[2, 2], p=2)],
                              {"x": x(1, 2, 6, 6)}, opset=18), keras=False))
    add(unary("GlobalAveragePool"))
    add(graph("GlobalMaxPool", _Spec([node("GlobalMaxPool", ["x"])], {"x": x(2, 3, 4, 5)})))
    # normalisation
    add(graph("BatchNormalization", _Spec(
        [node("BatchNormalization", ["x", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"],
              epsilon=1e-3)],
        {"x": x(2, 3, 4, 4)},
        weights={"bn.weight": x(3), "bn.bias": x(3), "bn.running_mean": x(3),
                 "bn.running_var": np.abs(x(3)) + 0.5})))
    add(graph("LayerNormalization-axis-2", _Spec(
        [node("LayerNormalization", ["x", "ln.weight", "ln.bias"], axis=-2)], {"x": x(2, 3, 4, 5)},
        weights={"ln.weight": x(4, 5), "ln.bias": x(4, 5)})))
    add(graph("InstanceNormalization", _Spec(
        [node("InstanceNormalization", ["x", "norm.weight", "norm.bias"])], {"x": x(2, 3, 5, 5)},
        weights={"norm.weight": x(3), "norm.bias": x(3)})))
    add(graph("GroupNormalization-21", _Spec(
        [node("GroupNormalization", ["x", "gn.weight", "gn.bias"], num_groups=2)], {"x": x(2, 4, 3, 3)},
        weights={"gn.weight": x(4), "gn.bias": x(4)}, opset=21)))
    # elementwise
    for op in ("Add", "Sub", "Mul", "Div"):
        add(graph(f"{op}-broadcast", _Spec([node(op, ["a", "b"])], {"a": x(2, 3, 4), "b": x(3, 1)})))
    add(graph("Pow-constant", _Spec([node("Pow", ["x", "two"])], {"x": x(3, 4)},
                                    weights={"two": np.array(2.0, np.float32)})))
    for op in ("Max", "Min", "Sum", "Mean"):
        add(graph(f"{op}-variadic", _Spec([node(op, ["a", "b", "c"])], {"a": x(3, 4), "b": x(4), "c": x(3, 1)}),
                  keras=op != "Mean"))
    add(graph("Where-Greater", _Spec([node("Greater", ["a", "b"], ["g"]), node("Where", ["g", "a", "b"])],
                                     {"a": x(3, 4), "b": x(3, 4)})))
    add(graph("Equal-Cast", _Spec([node("Sign", ["a"], ["s"]), node("Equal", ["s", "one"], ["e"]),
                                   node("Cast", ["e"], to=TensorProto.FLOAT)],
                                  {"a": x(3, 4)}, weights={"one": np.ones(1, np.float32)})))
    add(graph("Less-Not-And-Or-Xor", _Spec(
        [node("Less", ["a", "b"], ["lt"]), node("LessOrEqual", ["a", "b"], ["le"]),
         node("GreaterOrEqual", ["a", "b"], ["ge"]), node("Not", ["lt"], ["nlt"]), node("And", ["nlt", "le"], ["both"]),
         node("Or", ["both", "ge"], ["either"]), node("Xor", ["either", "lt"], ["one"]),
         node("Cast", ["one"], to=TensorProto.FLOAT)],
        {"a": x(3, 4), "b": x(3, 4)})))
    add(graph("CastLike", _Spec([node("CastLike", ["x", "like_double"], ["d"]), node("CastLike", ["d", "like_float"])],
                                {"x": x(3, 4)}, weights={"like_double": np.zeros(1, np.float64),
                                                         "like_float": np.zeros(1, np.float32)}), keras=False))
    add(graph("Mod-fmod", _Spec([node("Mod", ["a", "b"], fmod=1)],
                                {"a": x(3, 4), "b": np.full((3, 4), 0.3, np.float32)}),
              keras=False))
    # data movement
    add(graph("Flatten-axis2", _Spec([node("Flatten", ["x"], axis=2)], {"x": x(2, 3, 4, 5)})))
    add(graph("Reshape-zero-minus-one", _Spec([node("Reshape", ["x", "shape"])], {"x": x(2, 3, 4)},
                                              weights={"shape": ints(0, -1, 2)})))
    add(graph("Transpose", _Spec([node("Transpose", ["x"], perm=[0, 2, 3, 1])], {"x": x(2, 3, 4, 5)})))
    add(graph("Concat", _Spec([node("Concat", ["a", "b"], axis=1)], {"a": x(2, 3, 4), "b": x(2, 2, 4)})))
    add(graph("Split-13-sizes", _Spec([node("Split", ["x", "sizes"], ["y", "z"], axis=1),
                                       node("Mul", ["y", "z"], ["p"])],
                                      {"x": x(2, 6, 3)}, outputs=["p"], weights={"sizes": ints(3, 3)}, opset=13)))
    add(graph("Split-18-uneven", _Spec([node("Split", ["x"], ["a", "b", "c"], axis=1, num_outputs=3)],
                                       {"x": x(2, 7)}, outputs=["a", "b", "c"], opset=18)))
    add(graph("Slice-negative-step", _Spec(
        [node("Slice", ["x", "starts", "ends", "axes", "steps"])], {"x": x(2, 6, 5)},
        weights={"starts": ints(-1, 1), "ends": ints(-100, 4), "axes": ints(1, 2), "steps": ints(-2, 1)}),
        keras=False))
    add(graph("Slice-large-end", _Spec(
        [node("Slice", ["x", "starts", "ends", "axes"])], {"x": x(2, 6, 5)},
        weights={"starts": ints(1), "ends": ints(2**62), "axes": ints(2)})))
    add(graph("Squeeze-Unsqueeze-11", _Spec([node("Unsqueeze", ["x"], ["u"], axes=[0, 3]),
                                            node("Squeeze", ["u"], axes=[0])], {"x": x(2, 3)}, opset=11)))
    add(graph("Squeeze-Unsqueeze-13", _Spec([node("Unsqueeze", ["x", "ax"], ["u"]), node("Squeeze", ["u", "sq"])],
                                            {"x": x(2, 3)}, weights={"ax": ints(-1, 1), "sq": ints(1)}, opset=13)))
    add(graph("Shape-ConstantOfShape", _Spec(
        [node("Shape", ["x"], ["s"], start=1), node("ConstantOfShape", ["s"], ["c"],
                                                    value=numpy_helper.from_array(np.array([0.5], np.float32))),
         node("Mul", ["x", "c"])], {"x": x(2, 3, 4)}), keras=False))
    add(graph("Gather-axis1-negative", _Spec([node("Gather", ["x", "idx"], axis=1)], {"x": x(2, 5, 3)},
                                             weights={"idx": ints(-1, 0, 2)})))
    add(graph("Gather-embedding", _Spec([node("Gather", ["emb.weight", "t"])],
                                        {"t": np.array([[1, 4], [0, 9]], np.int64)}, weights={"emb.weight": x(10, 3)})))
    add(graph("Expand-Tile", _Spec([node("Expand", ["x", "shape"], ["e"]), node("Tile", ["e", "reps"])],
                                   {"x": x(3, 1)}, weights={"shape": ints(2, 3, 4), "reps": ints(1, 2, 1)}),
              keras=False))
    add(graph("Pad-reflect", _Spec([node("Pad", ["x", "pads"], mode="reflect")], {"x": x(1, 2, 4, 4)},
                                   weights={"pads": ints(0, 0, 1, 2, 0, 0, 2, 1)}, opset=13)))
    add(graph("Pad-constant-value", _Spec([node("Pad", ["x", "pads", "value"])], {"x": x(2, 3)},
                                          weights={"pads": ints(1, 0, 0, 2), "value": np.array(1.5, np.float32)})))
    add(graph("Range-Size", _Spec([node("Size", ["x"], ["n"]), node("Range", ["zero", "n", "one"], ["r"]),
                                   node("Cast", ["r"], ["f"], to=TensorProto.FLOAT),
                                   node("Reshape", ["f", "shape"], ["g"]),
                                   node("Add", ["x", "g"])],
                                  {"x": x(2, 3)}, weights={"zero": np.array(0, np.int64), "one": np.array(1, np.int64),
                                                           "shape": ints(2, 3)}), keras=False))
    add(graph("Trilu-upper", _Spec([node("Trilu", ["x"])], {"x": x(2, 4, 5)}), keras=False))
    add(graph("Trilu-lower-k", _Spec([node("Trilu", ["x", "k"], upper=0)], {"x": x(2, 4, 5)},
                                     weights={"k": np.array(-1, np.int64)}), keras=False))
    # reductions
    add(graph("ReduceMean-13-attr", _Spec([node("ReduceMean", ["x"], axes=[1, -1], keepdims=0)], {"x": x(2, 3, 4)},
                                          opset=13)))
    add(graph("ReduceMean-18-input", _Spec([node("ReduceMean", ["x", "axes"])], {"x": x(2, 3, 4)},
                                           weights={"axes": ints(2)}, opset=18)))
    add(graph("ReduceSum-13-input", _Spec([node("ReduceSum", ["x", "axes"], keepdims=0)], {"x": x(2, 3, 4)},
                                          weights={"axes": ints(0, 2)}, opset=13)))
    add(graph("ReduceMax-noop", _Spec([node("ReduceMax", ["x"], noop_with_empty_axes=1)], {"x": x(2, 3)}, opset=18)))
    add(graph("ReduceMin-all", _Spec([node("ReduceMin", ["x"], keepdims=0)], {"x": x(2, 3)}, opset=18)))
    for op in ("ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp"):
        add(graph(op, _Spec([node(op, ["x"], axes=[1])], {"x": x(2, 3, 4)}, opset=13), keras=False))
    add(graph("ArgMax-last", _Spec([node("Round", ["x"], ["r"]), node("ArgMax", ["r"], ["i"], axis=1,
                                                                      select_last_index=1),
                                    node("Cast", ["i"], to=TensorProto.FLOAT)], {"x": x(3, 6)}), keras=False))
    add(graph("ArgMin", _Spec([node("ArgMin", ["x"], ["i"], axis=0, keepdims=0),
                               node("Cast", ["i"], to=TensorProto.FLOAT)],
                              {"x": x(3, 6)}), keras=False))
    add(graph("CumSum", _Spec([node("CumSum", ["x", "axis"])], {"x": x(2, 5, 3)},
                              weights={"axis": np.array(1, np.int64)}), keras=False))
    add(graph("CumSum-exclusive-reverse-int", _Spec(
        [node("Cast", ["x"], ["i"], to=TensorProto.INT32), node("CumSum", ["i", "axis"], ["c"], exclusive=1, reverse=1),
         node("Cast", ["c"], to=TensorProto.FLOAT)],
        {"x": 10 * x(2, 5)}, weights={"axis": ints(-1)}), keras=False))
    # NaN and infinity tests: log of negatives is NaN, division by the zeros of ``d`` is ±inf
    add(graph("IsNaN-IsInf", _Spec(
        [node("Log", ["x"], ["l"]), node("IsNaN", ["l"], ["n"]), node("Div", ["x", "d"], ["q"]),
         node("IsInf", ["q"], ["i"]), node("IsInf", ["q"], ["p"], detect_negative=0),
         node("Cast", ["n"], ["nf"], to=TensorProto.FLOAT), node("Cast", ["i"], ["if"], to=TensorProto.FLOAT),
         node("Cast", ["p"], ["pf"], to=TensorProto.FLOAT), node("Sum", ["nf", "if", "pf"])],
        {"x": x(3, 4)}, weights={"d": np.array([0, 1, 0, 2], np.float32)}), keras=False))
    # local response normalisation (onnxruntime runs odd windows only)
    add(lrn_graph(3))
    add(graph("LRN-defaults", _Spec([node("LRN", ["x"], size=5)], {"x": x(2, 7, 5, 1)}), keras=False))
    # Resize: the upsampling of YOLO heads and U-Nets, every coordinate mode, opset 10's form
    resize_cases: list[tuple[str, dict[str, np.ndarray], dict[str, object], int]] = [
        ("nearest-asymmetric-floor-x2", {"scales": _f32(1, 1, 2, 2)},
         {"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}, 13),
        ("nearest-half-pixel-x1.5", {"scales": _f32(1, 1, 1.5, 1.5)}, {"mode": "nearest"}, 13),
        ("nearest-round-prefer-ceil-down", {"scales": _f32(1, 1, 0.6, 0.75)},
         {"mode": "nearest", "nearest_mode": "round_prefer_ceil"}, 13),
        ("nearest-ceil-sizes", {"sizes": ints(2, 3, 7, 3)}, {"mode": "nearest", "nearest_mode": "ceil"}, 13),
        ("nearest-tf-half-pixel", {"scales": _f32(1, 1, 2, 1.5)},
         {"mode": "nearest", "coordinate_transformation_mode": "tf_half_pixel_for_nn"}, 11),
        ("linear-half-pixel-x2", {"scales": _f32(1, 1, 2, 2)}, {"mode": "linear"}, 13),
        ("linear-align-corners-sizes", {"sizes": ints(2, 3, 9, 7)},
         {"mode": "linear", "coordinate_transformation_mode": "align_corners"}, 13),
        ("linear-pytorch-half-pixel-down", {"scales": _f32(1, 1, 0.5, 0.8)},
         {"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}, 13),
        ("linear-half-pixel-symmetric", {"scales": _f32(1, 1, 1.7, 2.5)},
         {"mode": "linear", "coordinate_transformation_mode": "half_pixel_symmetric"}, 19),
        ("cubic-half-pixel", {"scales": _f32(1, 1, 2, 1.5)}, {"mode": "cubic"}, 13),
        ("cubic-exclude-outside-a-0.5", {"sizes": ints(2, 3, 11, 6)},
         {"mode": "cubic", "exclude_outside": 1, "cubic_coeff_a": -0.5}, 13),
        ("cubic-asymmetric", {"scales": _f32(1, 1, 2, 2)},
         {"mode": "cubic", "coordinate_transformation_mode": "asymmetric"}, 13),
        ("axes-not-larger-18", {"sizes": ints(8, 9)},
         {"mode": "linear", "axes": [2, 3], "keep_aspect_ratio_policy": "not_larger"}, 18),
        ("axes-not-smaller-18", {"sizes": ints(8, 9)},
         {"mode": "nearest", "axes": [2, 3], "keep_aspect_ratio_policy": "not_smaller"}, 18),
    ]
    for name, given, attrs, opset in resize_cases:
        weights = dict(given)
        if opset < 13:  # roi and scales are required inputs, empty when unused
            weights = {"roi": np.zeros(0, np.float32), "scales": np.zeros(0, np.float32), **given}
        names = [n if n in weights else "" for n in ("roi", "scales", "sizes")]
        add(graph(f"Resize-{name}", _Spec([node("Resize", ["x", *names], **attrs)], {"x": x(2, 3, 5, 4)},
                                          weights=weights, opset=opset), keras=False))
    for direction, scales in (("up", _f32(1, 1, 2, 3)), ("down", _f32(1, 1, 0.5, 0.6))):
        add(graph(f"Resize-10-nearest-{direction}", _Spec([node("Resize", ["x", "scales"])], {"x": x(1, 2, 6, 5)},
                                                          weights={"scales": scales}, opset=10), keras=False))
    add(graph("Resize-10-linear", _Spec([node("Resize", ["x", "scales"], mode="linear")], {"x": x(1, 2, 4, 5)},
                                        weights={"scales": _f32(1, 1, 2, 1.5)}, opset=10), keras=False))
    # indexing: a scalar index into a shape (optimum's BERT and ViT), GatherElements, GatherND
    add(graph("Gather-scalar-of-shape", _Spec(
        [node("Shape", ["x"], ["s"]), node("Gather", ["s", "one"], ["n"]),
         node("Cast", ["n"], ["f"], to=TensorProto.FLOAT), node("Mul", ["x", "f"])],
        {"x": x(2, 3, 4)}, weights={"one": np.array(-2, np.int64)})))
    add(graph("GatherElements-negative", _Spec([node("GatherElements", ["x", "idx"], axis=1)], {"x": x(2, 5, 3)},
                                               weights={"idx": np.array([[[0, -1, 2], [4, 1, -5]]] * 2, np.int64)}),
              keras=False))
    add(graph("GatherND", _Spec([node("GatherND", ["x", "idx"])], {"x": x(3, 4, 5)},
                                weights={"idx": np.array([[[0, -1], [2, 3]], [[1, 0], [-3, 2]]], np.int64)}),
              keras=False))
    add(graph("GatherND-batch-dims", _Spec([node("GatherND", ["x", "idx"], batch_dims=1)], {"x": x(2, 4, 5, 3)},
                                           weights={"idx": np.array([[[1, -1], [0, 4]], [[3, 2], [2, 0]]], np.int64)}),
              keras=False))
    add(graph("GatherND-whole-rows", _Spec([node("GatherND", ["x", "idx"])], {"x": x(4, 3)},
                                           weights={"idx": np.array([[2], [-1], [0]], np.int64)}), keras=False))
    # If: a condition computed at run time (two Ifs on opposite conditions, subtracted, so one
    # run takes both kinds of branch and a swap changes the sign), and a constant condition
    # whose other branch holds an op with no converter
    add(graph("If-run-time-condition", _Spec(
        [node("ReduceSum", ["x"], ["total"], keepdims=0), node("Greater", ["total", "zero"], ["c"]),
         node("Not", ["c"], ["not_c"]), _if("c", "a"), _if("not_c", "b"), node("Sub", ["a", "b"])],
        {"x": x(2, 3)}, weights={"zero": np.array(0, np.float32), "w": x(3)}), keras=False))
    add(graph("If-constant-condition", _Spec(
        [_if("yes", "y", else_branch=_branch("else", [helper.make_node(
            "Einsum", ["x", "x"], ["e_else"], name="einsum_in_else", equation="ij,ij->ij")], "e_else"))],
        {"x": x(2, 3)}, weights={"yes": np.array([True]), "w": x(3)})))
    return cases


def _branch(name: str, nodes: list[onnx.NodeProto], output: str) -> onnx.GraphProto:
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)])


def _if(condition: str, output: str, else_branch: onnx.GraphProto | None = None) -> onnx.NodeProto:
    """``If(condition)``: then ``relu(x) * w`` (the outer input and weight read by name, a local
    constant), else ``-x + 1``; its value names are made unique by ``output``."""
    then_branch = _branch(f"then_{output}", [
        helper.make_node("Relu", ["x"], [f"r_{output}"], name=f"relu_{output}"),
        helper.make_node("Constant", [], [f"two_{output}"], name=f"two_{output}",
                         value=numpy_helper.from_array(np.array(2.0, np.float32))),
        helper.make_node("Mul", [f"r_{output}", "w"], [f"m_{output}"], name=f"mul_{output}"),
        helper.make_node("Mul", [f"m_{output}", f"two_{output}"], [f"t_{output}"], name=f"twice_{output}")],
        f"t_{output}")
    else_branch = else_branch or _branch(f"else_{output}", [
        helper.make_node("Neg", ["x"], [f"n_{output}"], name=f"neg_{output}"),
        helper.make_node("Constant", [], [f"one_{output}"], name=f"one_{output}",
                         value=numpy_helper.from_array(np.array(1.0, np.float32))),
        helper.make_node("Add", [f"n_{output}", f"one_{output}"], [f"e_{output}"], name=f"add_{output}")],
        f"e_{output}")
    return helper.make_node("If", [condition], [output], name="if_node", then_branch=then_branch,
                            else_branch=else_branch)


def lrn_graph(size: int) -> OpGraph:
    return graph(f"LRN-size{size}", _Spec([node("LRN", ["x"], size=size, alpha=0.01, beta=0.6, bias=1.5)],
                                          {"x": x(2, 6, 3, 4)}), keras=False)


def _f32(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def _named(op: str, name: str, inputs: list[str], output: str, **attrs: object) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], name=name, **attrs)


def tf_pattern_graphs() -> list[OpGraph]:
    """What tf2onnx writes for Keras layers (NHWC input, NCHW inside, Keras scopes in node
    names), for the Keras export only: each should come back with no Transpose."""
    c = 4
    block = _Spec([
        _named("Transpose", "m_1/conv_1/convolution__5", ["x"], "t", perm=[0, 3, 1, 2]),
        _named("Conv", "m_1/conv_1/BiasAdd", ["t", "m_1/conv_1/kernel", "m_1/conv_1/bias"], "c", pads=[1, 1, 1, 1]),
        _named("Mul", "m_1/bn_1/batchnorm/mul_1", ["c", "m_1/bn_1/batchnorm/mul"], "bm"),
        _named("Add", "m_1/bn_1/batchnorm/add_1", ["bm", "m_1/bn_1/batchnorm/sub"], "ba"),
        _named("Clip", "m_1/relu6_1/Relu6", ["ba", "zero", "six"], "r"),
        _named("Pad", "m_1/pad_1/Pad", ["r", "pads"], "p"),
        _named("Conv", "m_1/dw_1/depthwise", ["p", "m_1/dw_1/kernel"], "d", group=c, strides=[2, 2]),
        _named("MaxPool", "m_1/pool_1/MaxPool2d", ["d"], "mp", kernel_shape=[2, 2], strides=[2, 2]),
        _named("GlobalAveragePool", "m_1/gap_1/Mean", ["mp"], "g"),
        _named("Squeeze", "m_1/gap_1/Mean_Squeeze", ["g", "squeeze_axes"], "s"),
        _named("MatMul", "m_1/fc_1/MatMul", ["s", "m_1/fc_1/kernel"], "f"),
        _named("Add", "m_1/fc_1/BiasAdd", ["f", "m_1/fc_1/bias"], "fb"),
        _named("Softmax", "m_1/fc_1/Softmax", ["fb"], "y"),
    ], {"x": x(2, 8, 8, 3)}, weights={
        "m_1/conv_1/kernel": x(c, 3, 3, 3), "m_1/conv_1/bias": x(c), "m_1/bn_1/batchnorm/mul": x(1, c, 1, 1),
        "m_1/bn_1/batchnorm/sub": x(1, c, 1, 1), "zero": np.array(0, np.float32), "six": np.array(6, np.float32),
        "pads": ints(0, 0, 0, 1, 0, 0, 1, 1), "m_1/dw_1/kernel": x(2 * c, 1, 3, 3), "squeeze_axes": ints(2, 3),
        "m_1/fc_1/kernel": x(2 * c, 5), "m_1/fc_1/bias": x(5)})
    flatten = _Spec([
        _named("Reshape", "m_1/conv_1/BiasAdd__3", ["x", "nchw"], "t"),
        _named("Conv", "m_1/conv_1/BiasAdd", ["t", "m_1/conv_1/kernel"], "c", kernel_shape=[3, 3]),
        _named("Relu", "m_1/conv_1/Relu", ["c"], "r"),
        _named("Transpose", "Transpose__9", ["r"], "nhwc", perm=[0, 2, 3, 1]),
        _named("Shape", "Shape__10", ["r"], "shape"),
        _named("Gather", "Gather__11", ["shape", "order"], "dims"),
        _named("Cast", "m_1/flatten_1/Shape__12", ["dims"], "dims32", to=TensorProto.INT32),
        _named("Slice", "m_1/flatten_1/strided_slice", ["dims32", "begin", "end", "begin"], "batch"),
        _named("Concat", "m_1/flatten_1/Reshape/shape_Concat", ["batch", "rest"], "target32", axis=0),
        _named("Cast", "m_1/flatten_1/Reshape__13", ["target32"], "target", to=TensorProto.INT64),
        _named("Reshape", "m_1/flatten_1/Reshape", ["nhwc", "target"], "flat"),
        _named("MatMul", "m_1/fc_1/MatMul", ["flat", "m_1/fc_1/kernel"], "y"),
    ], {"x": x(3, 6, 6, 1)}, weights={
        "nchw": ints(-1, 1, 6, 6), "m_1/conv_1/kernel": x(c, 1, 3, 3), "order": ints(0, 2, 3, 1),
        "begin": np.array([0], np.int32), "end": np.array([1], np.int32), "rest": np.array([16 * c], np.int32),
        "m_1/fc_1/kernel": x(16 * c, 3)})
    pad_axes = _Spec([node("Pad", ["x", "pads", "value", "axes"])], {"x": x(2, 3, 4)},
                     weights={"pads": ints(1, 2), "value": np.array(0.5, np.float32), "axes": ints(-1)}, opset=18)
    cases = [graph("tf-conv-bn-relu6-pad-depthwise-pool-dense", block), graph("tf-flatten-dynamic-batch", flatten)]
    for case in cases:  # tf2onnx's batch size is dynamic
        case.model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    return [*cases, graph("Pad-axes-18", pad_axes)]
