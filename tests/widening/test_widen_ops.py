"""Every registered widening rule and layer type, each on one small graph (``onnx.helper``).

:data:`WIDEN_CASES` maps every op type with a widening rule that keeps the function to a
case: a graph in which the channel group of layer ``fc`` (or ``conv``, ``emb``) passes
through a node of that op. :func:`test_op_widens_exactly` widens the layer and has
onnxruntime compare the result with the original (max relative error ≤ 1e-5); it first
checks that the group really reaches a node of that op. :data:`REFUSED_CASES` does the
same for rules that refuse (quantization, the element count): the refusal must name the
node. :data:`LAYER_CASES` maps every producer op type (a layer that can be named) to a
case whose named layer is of that type. ``tests/test_registry_contract.py`` fails when a
registered op type is missing from these tables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxgrow import GrowError, RefusedError, load_model, widen
from onnxgrow.widening import find_layer, plan_group
from tests.helpers.graphs import assert_widens_exactly, save_graph, weights

#: Channels of the widened layer in every case, and the width it grows to (not a multiple:
#: net2wider copies some units twice and others once). Cases that normalise or average
#: over the channels need a multiple, :data:`UNIFORM`.
C, WIDER, UNIFORM = 3, 5, 6
RNG = np.random.default_rng(0)


@dataclass
class OpCase:
    """A graph around layer ``layer`` whose channel group reaches the nodes of op ``op``."""

    op: str
    nodes: list[onnx.NodeProto]
    inputs: dict[str, list[int]]
    initializers: dict[str, np.ndarray]
    layer: str = "fc"
    width: int = WIDER
    opset: int = 18
    outputs: list[str] = field(default_factory=lambda: ["y"])

    def save(self, folder: Path) -> Path:
        return save_graph(folder / f"{self.op}.onnx", self.nodes, self.inputs, self.outputs, self.initializers,
                          self.opset)


def n(op: str, inputs: list[str], outputs: list[str] | str, name: str = "", **attrs: object) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [outputs] if isinstance(outputs, str) else outputs, name=name or None,
                            **attrs)


def per_channel(low: float = 0.5, high: float = 2.0, size: int = C) -> np.ndarray:
    """A per-channel constant (gathered with the channel map), away from zero."""
    return (RNG.uniform(low, high, size) * RNG.choice([-1, 1], size)).astype(np.float32)


def scalar(value: float, dtype: type = np.float32) -> np.ndarray:
    return np.array(value, dtype=dtype)


def dense(op: str, middle: list[onnx.NodeProto], inits: dict[str, np.ndarray] | None = None, *,
          rank: int = 2, width: int = WIDER, opset: int = 18) -> OpCase:
    """``x → MatMul fc (C channels) → h → middle → m → MatMul out``; input rank 2 or 3."""
    shape = [2, 4] if rank == 2 else [2, 4, 4]
    nodes = [n("MatMul", ["x", "w1"], "h", "fc"), *middle, n("MatMul", ["m", "w2"], "y", "out")]
    return OpCase(op, nodes, {"x": shape}, {"w1": weights(RNG, 4, C), "w2": weights(RNG, C, 2), **(inits or {})},
                  width=width, opset=opset)


def spatial(op: str, middle: list[onnx.NodeProto], inits: dict[str, np.ndarray] | None = None, *,
            width: int = WIDER, opset: int = 18) -> OpCase:
    """``x → Conv conv (C channels) → h → middle → m [N, C, H', W'] → 1x1 Conv out``."""
    nodes = [n("Conv", ["x", "w1", "b1"], "h", "conv", pads=[1, 1, 1, 1]), *middle,
             n("Conv", ["m", "w2"], "y", "out")]
    return OpCase(op, nodes, {"x": [2, 3, 4, 4]},
                  {"w1": weights(RNG, C, 3, 3, 3), "b1": weights(RNG, C), "w2": weights(RNG, 2, C, 1, 1),
                   **(inits or {})}, layer="conv", width=width, opset=opset)


def unary(op: str, **attrs: object) -> OpCase:
    return dense(op, [n(op, ["h"], "m", "under_test", **attrs)])


def positive_unary(op: str) -> OpCase:
    """Ops defined for positive inputs only read a Sigmoid of the channels."""
    return dense(op, [n("Sigmoid", ["h"], "s"), n(op, ["s"], "m", "under_test")])


def to_float(op: str, middle: list[onnx.NodeProto], inits: dict[str, np.ndarray] | None = None) -> OpCase:
    """``middle`` ends in ``b`` of another type (bool, int), cast back to float for the contracting layer."""
    return dense(op, [*middle, n("Cast", ["b"], "m", to=TensorProto.FLOAT)], inits)


def binary(op: str, **attrs: object) -> OpCase:
    """``op(h, k)`` with a per-channel constant ``k``."""
    return dense(op, [n(op, ["h", "k"], "m", "under_test", **attrs)], {"k": per_channel()})


def comparison(op: str) -> OpCase:
    return to_float(op, [n(op, ["h", "k"], "b", "under_test")], {"k": per_channel(0.0, 0.5)})


def logical(op: str) -> OpCase:
    """``op(h > k0, h < k1)``: two computed operands that both carry the channels."""
    return to_float(op, [n("Greater", ["h", "k0"], "p"), n("Less", ["h", "k1"], "q"),
                         n(op, ["p", "q"], "b", "under_test")],
                    {"k0": per_channel(-0.5, 0.0), "k1": per_channel(0.0, 0.5)})


def pool(op: str, **attrs: object) -> OpCase:
    return spatial(op, [n(op, ["h"], "m", "under_test", **attrs)])


def reduce(op: str) -> OpCase:
    """A reduction over the spatial axes (kept); ReduceLogSum reads a Sigmoid (positive)."""
    source = "h"
    middle = []
    if op == "ReduceLogSum":
        middle, source = [n("Sigmoid", ["h"], "s")], "s"
    return spatial(op, [*middle, n(op, [source, "axes"], "m", "under_test", keepdims=1)],
                   {"axes": np.array([2, 3], np.int64)})


def softmax(op: str) -> OpCase:
    """Over axis 1 of ``[2, 4, C]``: not the channels."""
    return dense(op, [n(op, ["h"], "m", "under_test", axis=1)], rank=3)


def layer_norm(op: str) -> OpCase:
    """Over the channels (the last axis): exact for a uniform widening only."""
    inputs = ["h", "scale"] + (["bias"] if op == "LayerNormalization" else [])
    return dense(op, [n(op, inputs, "m", "under_test", axis=-1)], {"scale": per_channel(), "bias": per_channel()},
                 rank=3, width=UNIFORM, opset=23 if op == "RMSNormalization" else 18)


def channel_norm(op: str) -> OpCase:
    params = {"scale": per_channel(), "bias": per_channel()}
    if op == "BatchNormalization":
        params.update(mean=per_channel(), var=RNG.uniform(0.5, 2.0, C).astype(np.float32))
    return spatial(op, [n(op, ["h", *params], "m", "under_test")], params)


def _cases() -> dict[str, Callable[[], OpCase]]:
    cases: dict[str, Callable[[], OpCase]] = {}
    plain = ("Relu", "Sigmoid", "Tanh", "Softplus", "Softsign", "Elu", "Selu", "Celu", "HardSigmoid", "HardSwish",
             "Mish", "Neg", "Abs", "Exp", "Erf", "Sin", "Cos", "Floor", "Ceil", "Round", "Sign", "Identity",
             "Dropout")
    for op in plain:
        cases[op] = lambda op=op: unary(op)
    cases["LeakyRelu"] = lambda: unary("LeakyRelu", alpha=0.2)
    cases["ThresholdedRelu"] = lambda: unary("ThresholdedRelu", alpha=0.1)
    cases["Shrink"] = lambda: unary("Shrink", lambd=0.3, bias=0.1)
    cases["Gelu"] = lambda: dense("Gelu", [n("Gelu", ["h"], "m", "under_test", approximate="tanh")], opset=20)
    for op in ("Log", "Sqrt", "Reciprocal"):
        cases[op] = lambda op=op: positive_unary(op)
    cases["Clip"] = lambda: dense("Clip", [n("Clip", ["h", "lo", "hi"], "m", "under_test")],
                                  {"lo": scalar(-0.5), "hi": scalar(0.7)})
    cases["Cast"] = lambda: dense("Cast", [n("Cast", ["h"], "d", "under_test", to=TensorProto.DOUBLE),
                                           n("Cast", ["d"], "m", to=TensorProto.FLOAT)])
    cases["CastLike"] = lambda: dense("CastLike", [n("CastLike", ["h", "like_double"], "d", "under_test"),
                                                   n("CastLike", ["d", "like_float"], "m")],
                                      {"like_double": scalar(0.0, np.float64), "like_float": scalar(0.0)})
    cases["Not"] = lambda: to_float("Not", [n("Greater", ["h", "zero"], "g"), n("Not", ["g"], "b", "under_test")],
                                    {"zero": scalar(0.0)})
    for op in ("IsNaN", "IsInf"):
        cases[op] = lambda op=op: dense(op, [n(op, ["h"], "b", "under_test"),
                                             n("Cast", ["b"], "f", to=TensorProto.FLOAT), n("Add", ["h", "f"], "m")])
    for op in ("Add", "Sub", "Mul", "Div", "PRelu"):
        cases[op] = lambda op=op: binary(op)
    cases["Mod"] = lambda: dense("Mod", [n("Mod", ["h", "k"], "m", "under_test", fmod=1)],
                                 {"k": np.abs(per_channel())})
    cases["Pow"] = lambda: dense("Pow", [n("Sigmoid", ["h"], "s"), n("Pow", ["s", "k"], "m", "under_test")],
                                 {"k": per_channel()})
    for op in ("Max", "Min", "Sum", "Mean"):
        cases[op] = lambda op=op: dense(op, [n(op, ["h", "k", "one"], "m", "under_test")],
                                        {"k": per_channel(), "one": np.ones(1, np.float32)})
    cases["Where"] = lambda: dense("Where", [n("Greater", ["h", "zero"], "g"),
                                             n("Where", ["g", "h", "k"], "m", "under_test")],
                                   {"zero": scalar(0.0), "k": per_channel()})
    for op in ("Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"):
        cases[op] = lambda op=op: comparison(op)
    for op in ("And", "Or", "Xor"):
        cases[op] = lambda op=op: logical(op)
    cases["BitShift"] = lambda: to_float("BitShift", [
        n("Abs", ["h"], "a"), n("Mul", ["a", "sixteen"], "s"), n("Cast", ["s"], "u", to=TensorProto.UINT32),
        n("BitShift", ["u", "k"], "b", "under_test", direction="RIGHT")],
        {"sixteen": scalar(16.0), "k": np.array([1, 2, 3], np.uint32)})
    for op, attrs in (("MaxPool", {"kernel_shape": [2, 2]}), ("AveragePool", {"kernel_shape": [2, 2]}),
                      ("LpPool", {"kernel_shape": [2, 2], "p": 2}), ("GlobalAveragePool", {}),
                      ("GlobalMaxPool", {}), ("GlobalLpPool", {"p": 2})):
        cases[op] = lambda op=op, attrs=attrs: pool(op, **attrs)
    cases["Pad"] = lambda: spatial("Pad", [n("Pad", ["h", "pads"], "m", "under_test", mode="reflect")],
                                   {"pads": np.array([0, 0, 1, 0, 0, 0, 0, 1], np.int64)})  # H and W only
    for op in ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2",
               "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"):
        cases[op] = lambda op=op: reduce(op)
    for op in ("Softmax", "LogSoftmax", "Hardmax"):
        cases[op] = lambda op=op: softmax(op)
    for op in ("LayerNormalization", "RMSNormalization"):
        cases[op] = lambda op=op: layer_norm(op)
    for op in ("BatchNormalization", "InstanceNormalization"):
        cases[op] = lambda op=op: channel_norm(op)
    cases["Gemm"] = lambda: OpCase("Gemm", [n("Gemm", ["x", "w1", "b1"], "h", "fc", transB=1), n("Relu", ["h"], "m"),
                                            n("Gemm", ["m", "w2", "b2"], "y", "out")],
                                   {"x": [2, 4]}, {"w1": weights(RNG, C, 4), "b1": weights(RNG, C),
                                                   "w2": weights(RNG, C, 2), "b2": weights(RNG, 2)})
    cases["MatMul"] = lambda: dense("MatMul", [n("Relu", ["h"], "m")])
    cases["Conv"] = lambda: spatial("Conv", [n("Relu", ["h"], "m")])
    cases["Gather"] = lambda: dense("Gather", [n("Gather", ["h", "idx"], "m", "under_test", axis=1)],
                                    {"idx": np.array([3, 0], np.int64)}, rank=3)
    cases["Transpose"] = lambda: spatial("Transpose", [n("Transpose", ["h"], "t", "under_test", perm=[0, 2, 3, 1]),
                                                       n("Transpose", ["t"], "m", perm=[0, 3, 1, 2])])
    for op in ("Squeeze", "Unsqueeze"):
        cases[op] = lambda op=op: dense(op, [n("Unsqueeze", ["h", "axis"], "u", "unsqueeze"),
                                             n("Squeeze", ["u", "axis"], "m", "squeeze")],
                                        {"axis": np.array([1], np.int64)})
    cases["Split"] = lambda: dense("Split", [n("Split", ["h", "sizes"], ["p", "q"], "under_test", axis=1),
                                             n("Concat", ["q", "p"], "m", axis=1)],
                                   {"sizes": np.array([1, 3], np.int64)}, rank=3)
    cases["Expand"] = lambda: dense("Expand", [n("Unsqueeze", ["h", "axis"], "u"),
                                               n("Expand", ["u", "to"], "e", "under_test"),
                                               n("ReduceMean", ["e", "axis"], "m", keepdims=0)],
                                    {"axis": np.array([1], np.int64), "to": np.array([2, 2, 4, C], np.int64)}, rank=3)
    cases["ConstantOfShape"] = lambda: dense("ConstantOfShape", [
        n("ConstantOfShape", ["shape"], "twos", "under_test",
          value=helper.make_tensor("v", TensorProto.FLOAT, [1], [2.0])),
        n("Mul", ["h", "twos"], "m")], {"shape": np.array([1, 1, C], np.int64)}, rank=3)
    cases["Slice"] = lambda: dense("Slice", [n("Slice", ["h", "starts", "ends", "axes"], "m", "under_test")],
                                   {"starts": np.array([1], np.int64), "ends": np.array([3], np.int64),
                                    "axes": np.array([1], np.int64)}, rank=3)
    cases["Concat"] = lambda: _concat_along_the_channels()
    cases["Flatten"] = lambda: OpCase("Flatten", [n("Conv", ["x", "w1"], "h", "conv", pads=[1, 1, 1, 1]),
                                                  n("Flatten", ["h"], "f", "under_test", axis=1),
                                                  n("MatMul", ["f", "w2"], "y", "out")],
                                      {"x": [2, 3, 4, 4]}, {"w1": weights(RNG, C, 3, 3, 3),
                                                            "w2": weights(RNG, C * 16, 2)}, layer="conv")
    cases["Reshape"] = lambda: spatial("Reshape", [n("Reshape", ["h", "flat"], "r", "under_test"),
                                                   n("Reshape", ["r", "back"], "m")],
                                       {"flat": np.array([0, 0, -1], np.int64),
                                        "back": np.array([0, 0, 4, 4], np.int64)})
    cases["Shape"] = lambda: dense("Shape", [n("Shape", ["h"], "s", "under_test"), n("Reshape", ["h", "s"], "m")])
    for op in ("If", "Loop", "Scan"):
        cases[op] = lambda op=op: _through_subgraph(op)
    cases["ConvTranspose"] = lambda: _transposed_conv()
    cases["Resize"] = lambda: spatial("Resize", [n("Resize", ["h", "", "scales"], "m", "under_test", mode="linear")],
                                      {"scales": np.array([1, 1, 2, 2], np.float32)})
    cases["Upsample"] = lambda: spatial("Upsample", [n("Upsample", ["h", "scales"], "m", "under_test")],
                                        {"scales": np.array([1, 1, 2, 2], np.float32)}, opset=9)
    return cases


def _through_subgraph(op: str) -> OpCase:
    """The channels pass through an If (captured by both branches), a Loop's state or a Scan's rows."""
    def body(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[str]) -> onnx.GraphProto:
        return helper.make_graph(nodes, f"{op}_body", inputs,
                                 [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs])

    flag = helper.make_tensor_value_info("cond_in", TensorProto.BOOL, [])
    if op == "If":
        then_branch = body([n("Relu", ["h"], "t")], [], ["t"])
        else_branch = body([n("Neg", ["h"], "e")], [], ["e"])
        return dense(op, [n("If", ["yes"], "m", "under_test", then_branch=then_branch, else_branch=else_branch)],
                     {"yes": np.array(True)})
    if op == "Loop":  # a state, and a scan output of it that the graph averages over the iterations
        state = [2, C]
        loop_body = helper.make_graph(
            [n("Identity", ["cond_in"], "cond_out"), n("Relu", ["state"], "next"), n("Neg", ["next"], "each")],
            "Loop_body", [helper.make_tensor_value_info("i", TensorProto.INT64, []), flag,
                          helper.make_tensor_value_info("state", TensorProto.FLOAT, state)],
            [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
             helper.make_tensor_value_info("next", TensorProto.FLOAT, state),
             helper.make_tensor_value_info("each", TensorProto.FLOAT, state)])
        return dense(op, [n("Loop", ["trips", "yes", "h"], ["last", "stacked"], "under_test", body=loop_body),
                          n("ReduceMean", ["stacked", "first"], "m", keepdims=0)],
                     {"trips": np.array(2, np.int64), "yes": np.array(True), "first": np.array([0], np.int64)})
    scan_body = body([n("Relu", ["row"], "row_out")], [helper.make_tensor_value_info("row", TensorProto.FLOAT, None)],
                     ["row_out"])
    return dense(op, [n("Scan", ["h"], "m", "under_test", body=scan_body, num_scan_inputs=1)], rank=3)


def _concat_along_the_channels() -> OpCase:
    """``Concat([h, x], axis=1)``: the model input becomes a fixed segment after the channels."""
    case = spatial("Concat", [n("Concat", ["h", "x"], "m", "under_test", axis=1)])
    case.initializers["w2"] = weights(RNG, 2, C + 3, 1, 1)
    return case


def _transposed_conv() -> OpCase:
    """A strided ConvTranspose contracts the channels (its ``W [C, M, k, k]`` rows)."""
    case = spatial("ConvTranspose", [n("ConvTranspose", ["h", "wt", "bt"], "m", "under_test", strides=[2, 2],
                                       pads=[1, 1, 1, 1])], {"wt": weights(RNG, C, 4, 3, 3), "bt": weights(RNG, 4)})
    case.initializers["w2"] = weights(RNG, 2, 4, 1, 1)
    return case


def _upsampling_layer() -> OpCase:
    """``x → ConvTranspose up (C channels, stride 2) → Relu → 1x1 Conv out``: the layer widened."""
    nodes = [n("ConvTranspose", ["x", "wt", "bt"], "h", "up", strides=[2, 2], pads=[1, 1, 1, 1]),
             n("Relu", ["h"], "m"), n("Conv", ["m", "w2"], "y", "out")]
    return OpCase("ConvTranspose", nodes, {"x": [2, 3, 4, 4]},
                  {"wt": weights(RNG, 3, C, 3, 3), "bt": weights(RNG, C), "w2": weights(RNG, 2, C, 1, 1)}, layer="up")


def _quantized(op: str) -> OpCase:
    """The channels cast to uint8 (or quantized) reach ``op``: refused at that node."""
    scale, zero = scalar(0.05), np.array(128, np.uint8)
    to_uint8 = [n("Cast", ["h"], "u", to=TensorProto.UINT8)]
    qconv = {"w_scale": scalar(0.05), "w_zero": np.array(128, np.uint8),
             "wq": RNG.integers(0, 255, (2, C, 1, 1)).astype(np.uint8)}
    qmatmul = {"w_scale": scalar(0.05), "w_zero": np.array(128, np.uint8),
               "wq": RNG.integers(0, 255, (C, C)).astype(np.uint8)}
    params = {"scale": scale, "zero": zero}
    if op == "QuantizeLinear":
        return dense(op, [n(op, ["h", "scale", "zero"], "q", "under_test"),
                          n("DequantizeLinear", ["q", "scale", "zero"], "m")], params)
    if op == "DequantizeLinear":
        return dense(op, [*to_uint8, n(op, ["u", "scale", "zero"], "m", "under_test")], params)
    if op == "DynamicQuantizeLinear":
        return dense(op, [n(op, ["h"], ["q", "s", "z"], "under_test"), n("DequantizeLinear", ["q", "s", "z"], "m")])
    if op == "MatMulInteger":
        return to_float(op, [*to_uint8, n(op, ["u", "wq", "zero", "w_zero"], "b", "under_test")],
                        {**params, **qmatmul})
    if op == "QLinearMatMul":
        return to_float(op, [*to_uint8, n(op, ["u", "scale", "zero", "wq", "w_scale", "w_zero", "scale", "zero"],
                                         "b", "under_test")], {**params, **qmatmul})
    if op == "ConvInteger":
        case = spatial(op, [*to_uint8, n(op, ["u", "wq", "zero", "w_zero"], "i", "under_test"),
                            n("Cast", ["i"], "m", to=TensorProto.FLOAT)], {**params, **qconv})
    else:
        case = spatial(op, [*to_uint8, n(op, ["u", "scale", "zero", "wq", "w_scale", "w_zero", "scale", "zero"],
                                         "i", "under_test"), n("Cast", ["i"], "m", to=TensorProto.FLOAT)],
                       {**params, **qconv})
    case.initializers["w2"] = weights(RNG, 2, 2, 1, 1)
    return case


#: op type -> the case whose widening must be exact.
WIDEN_CASES = _cases()
#: op type -> the case whose widening must be refused at a node of that op.
REFUSED_CASES: dict[str, Callable[[], OpCase]] = {
    op: (lambda op=op: _quantized(op))
    for op in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "QLinearMatMul",
               "ConvInteger", "QLinearConv")
}
REFUSED_CASES["LRN"] = lambda: spatial("LRN", [n("LRN", ["h"], "m", "under_test", size=3)])
REFUSED_CASES["Size"] = lambda: dense("Size", [n("Size", ["h"], "count", "under_test"),
                                                n("Cast", ["count"], "f", to=TensorProto.FLOAT),
                                                n("Add", ["h", "f"], "m")])
#: layer op type -> a case whose named layer has that op (quantized layers: one that cannot be widened).
LAYER_CASES: dict[str, Callable[[], OpCase]] = {
    "Gemm": WIDEN_CASES["Gemm"], "MatMul": WIDEN_CASES["MatMul"], "Conv": WIDEN_CASES["Conv"],
    "ConvTranspose": lambda: _upsampling_layer(),
    "Gather": lambda: _embedding_lookup(),
    **{op: REFUSED_CASES[op] for op in ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger")},
}


def _embedding_lookup() -> OpCase:
    """``Gather(table [10, C], ids)`` with ids computed from the input, read by a MatMul."""
    nodes = [n("Sigmoid", ["x"], "s"), n("Mul", ["s", "nine"], "t"), n("Floor", ["t"], "f"),
             n("Cast", ["f"], "ids", to=TensorProto.INT64), n("Gather", ["table", "ids"], "h", "emb"),
             n("MatMul", ["h", "w2"], "y", "out")]
    inits = {"nine": scalar(9.0), "table": weights(RNG, 10, C), "w2": weights(RNG, C, 2)}
    return OpCase("Gather", nodes, {"x": [2, 3]}, inits, layer="emb")


def _node_of(case: OpCase, name: str) -> onnx.NodeProto:
    return next(node for node in case.nodes if node.name == name)


@pytest.mark.parametrize("op", sorted(WIDEN_CASES))
def test_op_widens_exactly(op: str, tmp_path: Path) -> None:
    case = WIDEN_CASES[op]()
    path = case.save(tmp_path)
    model = load_model(path, infer_shapes=True)
    layer = find_layer(model, case.layer)
    group = plan_group(model.graph, case.layer, layer.node, layer.width, layer.producer.embedding)
    assert op in {node.op_type for node in group.touched_nodes()}, f"the channel group never reaches a {op} node"
    assert_widens_exactly(path, case.layer, case.width)


@pytest.mark.parametrize("op", sorted(REFUSED_CASES))
def test_op_refuses_naming_the_node(op: str, tmp_path: Path) -> None:
    case = REFUSED_CASES[op]()
    path = case.save(tmp_path)
    assert _node_of(case, "under_test").op_type == op
    with pytest.raises(RefusedError, match=f"at {op} node 'under_test': "):
        widen(load_model(path), {case.layer: case.width})


@pytest.mark.parametrize("op", sorted(LAYER_CASES))
def test_layer_op_is_named_and_widened_or_refused(op: str, tmp_path: Path) -> None:
    case = LAYER_CASES[op]()
    path = case.save(tmp_path)
    layer_name = "under_test" if op in REFUSED_CASES else case.layer
    assert _node_of(case, layer_name).op_type == op
    if op in REFUSED_CASES:
        with pytest.raises(GrowError, match=rf"'under_test' \({op} node 'under_test'\) cannot be widened: "
                                            "it is a quantized layer"):
            widen(load_model(path), {"under_test": 8})
        return
    assert_widens_exactly(path, case.layer, case.width)
