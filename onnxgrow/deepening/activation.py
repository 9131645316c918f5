"""Where a new layer goes after layer X, and what X's activation is (docs/design.md §5).

The insertion point: X's output, then over a bias ``Add`` (one constant operand), a
``BatchNormalization``, a per-channel scale ``Mul`` by a constant followed by such an
``Add`` (tf2onnx leaves a Keras 3 BatchNormalization as that pair; a lone constant Mul
may be part of a decomposed activation, ``0.5·x`` in GELU) and, after a MatMul, a ``Reshape``
that keeps the last axis (tf2onnx's Dense over 3-D input: MatMul on ``[N·T, in]``,
Reshape back to ``[N, T, out]``, then the bias), while the value has that node as its
only consumer, then over X's activation. The new layer reads the tensor found there, and its output
replaces that tensor for every consumer.

X's activation is the largest *elementwise region* that starts at the value after the
bias/BatchNorm and ends in a single tensor:

- every node is an elementwise op (:mod:`onnxgrow.widening.rules.elementwise` lists
  them) or a Softmax/LogSoftmax, in the main graph;
- every input is the start value, a value of the region, or a constant that does not
  broadcast the shape up (so the region keeps the shape of its input);
- every value of the region but its last, and the start value, is read only inside
  the region (and is no model output); the last one has the start value's dtype.

Decomposed activations (GELU as ``Div/Erf/Add/Mul``, the tanh GELU as
``Mul/Pow/Tanh``, SiLU as ``x·Sigmoid(x)``, dynamo's Softplus with its ``Where``) are
regions of several nodes; a residual ``Add``, a pool, a Reshape or the next layer end
the region because they read other tensors or are not elementwise.

The region is *idempotent* (``a(a(v)) = a(v)``, so an identity layer followed by a
copy of ``a`` is exact) when it is a chain of clamps: ``Relu``, ``Clip`` (ReLU6,
HardTanh), ``Max``/``Min`` with a constant, with ``Identity``, a ``Cast`` to the type
it has or an inference ``Dropout`` in between. A composition of clamps is a clamp onto an
interval (or a constant), hence idempotent. Every other region (LeakyRelu, Sigmoid, Tanh, GELU,
Softplus, PRelu, Softmax ...) is not.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from onnxgrow.constants import constant_array, find_constant
from onnxgrow.graph import BINARY_OPS, UNARY_OPS, const_shape, static_dims

#: Ops an activation region may contain.
REGION_OPS = frozenset(UNARY_OPS) | frozenset(BINARY_OPS) | {"Softmax", "LogSoftmax"}
#: Clamps: each maps the real line onto an interval and is the identity on it.
CLAMP_OPS = frozenset({"Relu", "Clip", "Max", "Min"})
#: Ops that pass values through unchanged at inference.
PASS_OPS = frozenset({"Identity", "Dropout"})


class ActivationKind(enum.Enum):
    """What follows a layer, as far as deepening is concerned."""

    NONE = "none"
    IDEMPOTENT = "idempotent"
    OTHER = "other"


@dataclass
class InsertionPoint:
    """Where a layer inserted after X reads, and the activation it may copy."""

    start: ir.Value  # X's output after its bias Add / BatchNorm: the activation's input
    tensor: ir.Value  # the tensor the new layer reads; its consumers get the new output
    activation: list[ir.Node] = field(default_factory=list)  # graph order; empty: none
    kind: ActivationKind = ActivationKind.NONE

    @property
    def label(self) -> str | None:
        """``Relu``, ``Gelu``, or ``5-op Div/Erf/Add/Mul`` for a decomposed one; None without."""
        ops = [node.op_type for node in self.activation]
        if not ops:
            return None
        if len(ops) == 1:
            return ops[0]
        return f"{len(ops)}-op " + "/".join(dict.fromkeys(ops))


def node_positions(graph: ir.Graph) -> dict[int, int]:
    """Each node's index in ``graph`` by ``id``: built once by a caller that looks at many layers."""
    return {id(node): i for i, node in enumerate(graph)}


def find_insertion_point(layer_node: ir.Node, positions: Mapping[int, int] | None = None) -> InsertionPoint:
    """The insertion point after ``layer_node`` (a Gemm, MatMul or Conv).

    ``positions`` (:func:`node_positions` of its graph) orders the activation's nodes; without
    it the graph is walked once.
    """
    start = layer_node.outputs[0]
    while True:
        step = _single_consumer(start)
        if step is None or not (is_bias_add(step, start) or _is_scale_mul(step, start)
                                or _is_batch_norm(step, start) or _keeps_last_axis(step, start, layer_node)):
            break
        start = step.outputs[0]
    found = _region(start, positions)
    if found is None:
        return InsertionPoint(start, start)
    nodes, end = found
    kind = ActivationKind.IDEMPOTENT if is_clamp_chain(nodes, start) else ActivationKind.OTHER
    return InsertionPoint(start, end, nodes, kind)


def _single_consumer(value: ir.Value) -> ir.Node | None:
    consumers = value.consumers()
    if len(consumers) != 1 or value.is_graph_output():
        return None
    node = consumers[0]
    return node if node.graph is value.graph and node.domain in ("", "ai.onnx") else None


def is_bias_add(node: ir.Node, value: ir.Value) -> bool:
    """``value + b`` (either order) with ``b`` a constant that keeps the shape."""
    if node.op_type != "Add" or len(node.inputs) != 2:
        return False
    other = node.inputs[1] if node.inputs[0] is value else node.inputs[0]
    return other is not value and _keeps_shape(other, value)


def _is_scale_mul(node: ir.Node, value: ir.Value) -> bool:
    """``value * s`` (either order) with ``s`` a constant that keeps the shape, followed by
    a bias Add: a BatchNorm written out."""
    if node.op_type != "Mul" or len(node.inputs) != 2:
        return False
    other = node.inputs[1] if node.inputs[0] is value else node.inputs[0]
    if other is value or find_constant(other) is None or not _keeps_shape(other, value):
        return False
    then = _single_consumer(node.outputs[0])
    return then is not None and is_bias_add(then, node.outputs[0])


def _keeps_last_axis(node: ir.Node, value: ir.Value, layer_node: ir.Node) -> bool:
    """A Reshape of a MatMul layer's output that keeps its (static) last axis, so a layer
    acting on the last axis commutes with it."""
    if node.op_type != "Reshape" or layer_node.op_type != "MatMul" or node.inputs[0] is not value:
        return False
    before, after = static_dims(value), static_dims(node.outputs[0])
    return bool(before and after) and before[-1] is not None and before[-1] == after[-1]  # type: ignore[index]


def _is_batch_norm(node: ir.Node, value: ir.Value) -> bool:
    """An inference BatchNormalization of ``value`` with constant parameters."""
    if node.op_type != "BatchNormalization" or node.inputs[0] is not value:
        return False
    if any(out.uses() or out.is_graph_output() for out in node.outputs[1:]):
        return False
    return all(p is not None and find_constant(p) is not None for p in node.inputs[1:5])


def _keeps_shape(constant: ir.Value | None, value: ir.Value) -> bool:
    """True when ``constant`` is a constant that broadcasts into ``value`` without growing it."""
    shape = const_shape(constant)
    if shape is None:
        return False
    dims = static_dims(value)
    if dims is None:
        return all(d == 1 for d in shape) and len(shape) <= 1
    if len(shape) > len(dims):
        return False
    return all(d == 1 or d == own for d, own in zip(shape, dims[len(dims) - len(shape):]))


def _admissible(node: ir.Node, inside: dict[ir.Value, None], start: ir.Value) -> bool:
    if node.graph is not start.graph or node.domain not in ("", "ai.onnx") or node.op_type not in REGION_OPS:
        return False
    if any(out.uses() or out.is_graph_output() for out in node.outputs[1:]):
        return False
    return all(v is None or v in inside or _keeps_shape(v, start) for v in node.inputs)


def _leaves(value: ir.Value, region: dict[ir.Node, None]) -> bool:
    return value.is_graph_output() or any(c not in region for c in value.consumers())


def _region(start: ir.Value, positions: Mapping[int, int] | None) -> tuple[list[ir.Node], ir.Value] | None:
    """The largest elementwise region from ``start`` with a single exit, or None.

    Grows by every admissible consumer of the values that still leave the region and
    keeps the last state in which exactly one value (not ``start``) leaves it.
    """
    region: dict[ir.Node, None] = {}
    inside: dict[ir.Value, None] = {start: None}
    best: tuple[list[ir.Node], ir.Value] | None = None
    while True:
        leaving = [v for v in inside if _leaves(v, region)]
        if len(leaving) == 1 and leaving[0] is not start and leaving[0].dtype == start.dtype:
            best = (list(region), leaving[0])
        added = list(dict.fromkeys(
            node for v in leaving for node in v.consumers()
            if node not in region and _admissible(node, inside, start)
        ))
        if not added:
            break
        for node in added:
            region[node] = None
            inside[node.outputs[0]] = None
    if best is None:
        return None
    if len(best[0]) == 1:
        return best
    if positions is None:
        positions = node_positions(start.graph) if start.graph is not None else {}
    return sorted(best[0], key=lambda n: positions.get(id(n), 0)), best[1]


def is_clamp_chain(nodes: list[ir.Node], start: ir.Value) -> bool:
    """True when ``nodes`` apply clamps (and pass-throughs) one after the other to ``start``."""
    current = start
    for node in nodes:
        computed = [v for v in node.inputs if v is not None and find_constant(v) is None]
        if computed != [current]:
            return False
        if node.op_type in ("Max", "Min"):
            if len(node.inputs) != 2:  # Max(x, c) and Min(x, c), in either order
                return False
        elif node.inputs[0] is not current or not (node.op_type in CLAMP_OPS or _passes_through(node)):
            return False
        current = node.outputs[0]
    return True


def _passes_through(node: ir.Node) -> bool:
    """Identity, a Cast to the type its input has, or a Dropout that is not in training mode."""
    if node.op_type == "Identity":
        return True
    if node.op_type == "Cast":
        source = node.inputs[0] if node.inputs else None
        return source is not None and source.dtype is not None and node.attributes.get_int("to", 0) == source.dtype
    if node.op_type != "Dropout":
        return False
    training = node.inputs[2] if len(node.inputs) > 2 else None
    if training is None:
        return True
    flag = constant_array(training)
    return flag is not None and not np.any(flag)
