"""Dims derived where shape inference left them unknown (onnxgrow/widening/rules/known_dims.py).

:data:`CASES` holds a small graph for every op in :data:`~onnxgrow.widening.rules.known_dims.DERIVATIONS`
(``tests/test_registry_contract.py`` fails when one is missing): its output ``y`` carries no
shape annotation, its inputs have symbolic axes, and sizes are read at run time the way
the exporters build them (``Shape → Gather → Unsqueeze → Concat``). The derived dims must be
the expected symbols, and, with the symbols given numbers, the shape onnxruntime computes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from onnxgrow.shape_values import DimOf, entries
from onnxgrow.widening.rules.dims import Dim
from onnxgrow.widening.rules.known_dims import DERIVATIONS, known_dims

#: The sizes the symbols take when onnxruntime runs a case.
SIZES = {"batch": 2, "seq": 5, "past": 3, "kv": 2}
X = ["batch", "seq", 8]
REDUCTIONS = ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceLogSumExp", "ReduceSumSquare")


@dataclass
class Case:
    """``nodes`` computing ``y`` from ``inputs`` (symbolic shapes) and constant ``inits``;
    ``annotated``: integer values whose shape the graph states (as inference would)."""

    nodes: list[onnx.NodeProto]
    expected: list[Dim]
    inputs: dict[str, list[Dim]] = field(default_factory=lambda: {"x": X})
    inits: dict[str, np.ndarray] = field(default_factory=dict)
    annotated: dict[str, list[Dim]] = field(default_factory=dict)

    def proto(self) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes, "case",
            [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in self.inputs.items()],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [onnx.numpy_helper.from_array(v, k) for k, v in self.inits.items()],
            value_info=[helper.make_tensor_value_info(k, TensorProto.INT64, v) for k, v in self.annotated.items()])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def n(op: str, inputs: list[str], output: str, **attrs: object) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], **attrs)


def ints(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


def size(tensor: str, axis: int, out: str) -> list[onnx.NodeProto]:
    """``out = [tensor.shape[axis]]``, read at run time (a one-element vector)."""
    return [n("Shape", [tensor], f"{out}_shape"), n("Gather", [f"{out}_shape", f"axis{axis}"], f"{out}_scalar"),
            n("Unsqueeze", [f"{out}_scalar", "zero"], out)]


AXES = {"axis0": np.array(0, np.int64), "axis1": np.array(1, np.int64), "axis2": np.array(2, np.int64),
        "zero": ints(0)}


def reshape() -> Case:
    """A target of sizes read at run time, a constant, and ``-1`` (the rest)."""
    return Case([*size("x", 0, "b"), *size("x", 1, "s"), n("Concat", ["b", "s", "four", "minus"], "t", axis=0),
                 n("Reshape", ["x", "t"], "y")], ["batch", "seq", 4, 2],
                inits={**AXES, "four": ints(4), "minus": ints(-1)})


def reshape_merging() -> Case:
    """``[0, -1]``: the batch kept, the rest merged into a product of symbols."""
    return Case([n("Reshape", ["x", "t"], "y")], ["batch", "8*seq"], inits={"t": ints(0, -1)})


def expand() -> Case:
    """A ``[batch, 1, 1, seq]`` mask expanded to ``[batch, 4, seq, seq]`` from run-time sizes."""
    return Case([*size("x", 0, "b"), *size("x", 1, "s"), n("Concat", ["b", "four", "s", "s"], "t", axis=0),
                 n("Expand", ["m", "t"], "y")], ["batch", 4, "seq", "seq"],
                {"x": X, "m": ["batch", 1, 1, "seq"]}, {**AXES, "four": ints(4)})


def matmul() -> Case:
    """Scores ``q·kᵀ`` with the batch axes broadcast."""
    return Case([n("Transpose", ["k"], "kt", perm=[0, 1, 3, 2]), n("MatMul", ["q", "kt"], "y")],
                ["batch", 4, "seq", "past"], {"q": ["batch", 4, "seq", 8], "k": ["batch", 1, "past", 8]})


def slice_tail() -> Case:
    """``x[:, -past:]``: the bound is a negated size read at run time."""
    return Case([*size("c", 1, "p"), n("Neg", ["p"], "start"), n("Slice", ["x", "start", "end", "one"], "y")],
                ["batch", "past", 8], {"x": X, "c": ["batch", "past"]}, {**AXES, "end": ints(2**62), "one": ints(1)},
                {"start": [1]})


def repeat_kv() -> Case:
    """TorchScript's ``repeat_kv`` view: ``[batch, kv * 2, seq, 8]`` with the key/value head count
    read at run time times the repeat (a constant)."""
    return Case([*size("x", 0, "b"), *size("k", 1, "kv"), *size("x", 2, "s"), n("Mul", ["kv", "two"], "heads"),
                 n("Concat", ["b", "heads", "s", "eight"], "t", axis=0), n("Reshape", ["x", "t"], "y")],
                ["batch", "2*kv", "seq", 8], {"x": ["batch", "2*kv", "seq", 8], "k": ["batch", "kv", "seq", 8]},
                {**AXES, "two": ints(2), "eight": ints(8)}, {"heads": [1]})


def slice_constant() -> Case:
    return Case([n("Slice", ["x", "starts", "ends", "axes"], "y")], ["batch", "seq", 3],
                inits={"starts": ints(1), "ends": ints(4), "axes": ints(2)})


def range_() -> Case:
    """``Range(past, past + seq)`` has ``seq`` elements (positions after a cache)."""
    return Case([n("Shape", ["c"], "cs"), n("Gather", ["cs", "axis1"], "past"), n("Shape", ["x"], "xs"),
                 n("Gather", ["xs", "axis1"], "seq"), n("Add", ["past", "seq"], "end"),
                 n("Range", ["past", "end", "step"], "r"), n("Cast", ["r"], "y", to=TensorProto.FLOAT)],
                ["seq"], {"x": X, "c": ["batch", "past"]}, {**AXES, "step": np.array(1, np.int64)})


def constant_of_shape() -> Case:
    return Case([*size("x", 1, "s"), n("Concat", ["one", "s"], "t", axis=0),
                 n("ConstantOfShape", ["t"], "y", value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0]))],
                [1, "seq"], inits={**AXES, "one": ints(1)})


def reduction(op: str) -> Callable[[], Case]:
    return lambda: Case([n(op, ["x", "axes"], "y", keepdims=1)], ["batch", "seq", 1], inits={"axes": ints(-1)})


CASES: dict[str, Callable[[], Case]] = {
    "Reshape": reshape,
    "Expand": expand,
    "Transpose": lambda: Case([n("Transpose", ["x"], "y", perm=[1, 0, 2])], ["seq", "batch", 8]),
    "Unsqueeze": lambda: Case([n("Unsqueeze", ["x", "axes"], "y")], ["batch", 1, "seq", 8],
                              inits={"axes": ints(1)}),
    "Squeeze": lambda: Case([n("Squeeze", ["m", "axes"], "y")], ["batch", "seq"], {"m": ["batch", 1, "seq"]},
                            {"axes": ints(1)}),
    "MatMul": matmul,
    "Slice": slice_tail,
    "Concat": lambda: Case([n("Concat", ["a", "b"], "y", axis=1)], ["batch", 7],
                           {"a": ["batch", 3], "b": ["batch", 4]}),
    "Gather": lambda: Case([n("Gather", ["x", "idx"], "y", axis=1)], ["batch", 4, 8], inits={"idx": ints(0, 2, 1, 0)}),
    "Range": range_,
    "ConstantOfShape": constant_of_shape,
    **{op: reduction(op) for op in REDUCTIONS},
}
MORE = {"Reshape-merging": reshape_merging, "Reshape-times-a-constant": repeat_kv, "Slice-constant": slice_constant,
        "elementwise-broadcast": lambda: Case([*size("x", 1, "s"), n("Concat", ["b", "s", "eight"], "t", axis=0),
                                               n("Reshape", ["x", "t"], "r"), n("Add", ["r", "bias"], "y")],
                                              [1, "seq", 8], {"x": [1, "seq", 8]},
                                              {**AXES, "b": ints(1), "eight": ints(8),
                                               "bias": np.zeros((1, 1, 8), np.float32)})}


def evaluate(dim: Dim) -> int:
    """A derived dim with the symbols given their :data:`SIZES` (``8*seq``, ``past + seq``)."""
    return dim if isinstance(dim, int) else int(eval(dim, {}, dict(SIZES)))  # noqa: S307  # our own symbols


def test_every_derivation_has_a_case() -> None:
    assert set(CASES) == set(DERIVATIONS)


@pytest.mark.parametrize("name", [*CASES, *MORE])
def test_derived_dims_are_the_symbols_and_the_shape_onnxruntime_computes(name: str) -> None:
    case = {**CASES, **MORE}[name]()
    proto = case.proto()
    model = ir.from_proto(proto)
    (y,) = model.graph.outputs
    assert y.shape is None
    assert known_dims(y, {}) == case.expected

    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {k: rng.standard_normal([evaluate(d) for d in v]).astype(np.float32) for k, v in case.inputs.items()}
    (out,) = session.run(None, feeds)
    assert list(out.shape) == [evaluate(d) for d in case.expected]


def test_an_unknown_annotation_is_derived_and_a_named_one_kept() -> None:
    """``unk__N`` (what inference writes when it gives up) is replaced; a name the model
    gives is kept even where the derivation would say otherwise."""
    case = reshape()
    proto = case.proto()
    del proto.graph.output[:]
    proto.graph.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, ["unk__7", "tokens", 4, None]))
    (y,) = ir.from_proto(proto).graph.outputs
    assert known_dims(y, {}) == ["batch", "tokens", 4, 2]


def test_a_size_nobody_knows_keeps_a_name_of_its_own() -> None:
    """A Reshape whose target entry is computed in a way the derivation does not follow: that
    axis is named after the value and axis (``y[1]``), never guessed."""
    case = Case([*size("x", 0, "b"), n("Shape", ["x"], "s"), n("ReduceMax", ["s"], "m", keepdims=1),
                 n("Concat", ["b", "m"], "t", axis=0), n("Reshape", ["x2", "t"], "y")], [],
                {"x": X, "x2": ["batch", 8]}, AXES, {"m": [1]})
    (y,) = ir.from_proto(case.proto()).graph.outputs
    assert known_dims(y, {}) == ["batch", "y[1]"]


def test_a_size_read_at_run_time_times_a_constant_keeps_the_constant_to_rewrite() -> None:
    """``kv * 2`` is the size of ``k``'s axis 1 with factor 2, and says which constant holds the 2
    (growing the query heads per key/value head rewrites it)."""
    graph = ir.from_proto(repeat_kv().proto()).graph
    reshape_node = graph.node(len(graph) - 1)
    found = entries(reshape_node.inputs[1], (reshape_node, 1))
    assert found is not None and len(found) == 4
    heads = found[1]
    assert isinstance(heads, DimOf) and heads.value.name == "k" and heads.axis == -3 and heads.factor == 2
    assert heads.multiplier is not None and heads.multiplier.value == 2
    assert heads.multiplier.holder is not None and heads.multiplier.holder[0].op_type == "Mul"
