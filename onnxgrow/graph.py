"""The graph vocabulary every growth shares: node labels, ranks and dims, constants' shapes.

These read an onnx-ir graph and change nothing. Widening, deepening, export and inspect
all use them, so they live outside any one of those packages.
"""

from __future__ import annotations

from collections.abc import Collection

import onnx_ir as ir

from onnxgrow.constants import PASS_THROUGH_OPS, find_constant
from onnxgrow.names import generated_name, keras_layer_of

#: Elementwise ops of one tensor input (extra inputs are scalars: Clip's bounds).
UNARY_OPS = (
    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Softplus", "Softsign", "Elu", "Selu",
    "Celu", "Gelu", "HardSigmoid", "HardSwish", "Mish", "ThresholdedRelu", "Neg", "Abs", "Exp",
    "Log", "Sqrt", "Reciprocal", "Erf", "Sin", "Cos", "Floor", "Ceil", "Round", "Sign", "Not",
    "IsNaN", "IsInf", "Clip", "Identity", "Dropout", "Cast", "Shrink",
)
#: Elementwise ops whose operands broadcast against each other.
BINARY_OPS = (
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "PRelu", "Where",
    "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Mod",
    "BitShift",
)


def node_label(node: ir.Node) -> str:
    """``Relu node '/Relu_1'``; an unnamed node by its generated name, ``unnamed Relu node 'Relu_3'``;
    a tf2onnx node with its Keras layer, ``LSTM node 'LSTM__33' (Keras layer 'rnn')``."""
    if node.name:
        layer = keras_layer_of(node)
        keras = f" (Keras layer {layer!r})" if layer and layer != node.name else ""
        return f"{node.op_type} node {node.name!r}{keras}"
    generated = generated_name(node)
    return f"unnamed {node.op_type} node" + (f" {generated!r}" if generated else "")


def subgraph_owner(graph: ir.Graph, subgraph: ir.Graph) -> ir.Node | None:
    """The node of ``graph`` (If, Loop, Scan...) holding ``subgraph`` in an attribute, at any depth."""
    for node in graph:
        for attr in node.attributes.values():
            if attr.type == ir.AttributeType.GRAPH:
                inner = [attr.as_graph()]
            elif attr.type == ir.AttributeType.GRAPHS:
                inner = list(attr.as_graphs())
            else:
                continue
            if any(g is subgraph or subgraph_owner(g, subgraph) is not None for g in inner):
                return node
    return None


def rank_of(value: ir.Value | None) -> int | None:
    """The rank of ``value`` when its shape is known."""
    if value is None or value.shape is None:
        return None
    return len(value.shape)


def dim_at(value: ir.Value | None, axis: int) -> int | str | None:
    """The size of ``value`` along negative ``axis``: int, symbol, or None if unknown/absent."""
    if value is None or value.shape is None:
        return None
    dims = value.shape.dims
    if -axis > len(dims):
        return None
    dim = dims[axis]
    return dim if isinstance(dim, int) else str(dim)


def static_dims(value: ir.Value | None) -> list[int | None] | None:
    """The dimensions of ``value`` (None for symbolic ones), or None without a shape."""
    if value is None or value.shape is None:
        return None
    return [d if isinstance(d, int) else None for d in value.shape.dims]


def model_input_behind(value: ir.Value | None, through: Collection[str] = PASS_THROUGH_OPS) -> ir.Value | None:
    """The graph input that ``value`` is, through the ops named in ``through`` (their first
    input; by default Identity/Transpose), if any."""
    while value is not None and not value.is_graph_input():
        producer = value.producer()
        if producer is None or producer.op_type not in through or not producer.inputs:
            return None
        value = producer.inputs[0]
    return value


def const_shape(value: ir.Value | None) -> tuple[int, ...] | None:
    """The shape of a constant input as the node sees it, or None if not constant."""
    ref = find_constant(value)
    if ref is None:
        return None
    if not ref.chain:
        return tuple(ref.tensor.shape.numpy())
    return tuple(ref.array().shape)
