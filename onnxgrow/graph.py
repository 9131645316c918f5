"""The graph vocabulary every growth shares: node labels, ranks and dims, constants' shapes.

These read an onnx-ir graph and change nothing. Widening, deepening, export and inspect
all use them, so they live outside any one of those packages.
"""

from __future__ import annotations

from collections.abc import Collection

import onnx_ir as ir

from onnxgrow.constants import PASS_THROUGH_OPS, find_constant
from onnxgrow.names import NamingContext, NodeNames, generated_name, keras_layer_of, names_of, weight_prefix

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


#: Ops of the default domain that hold subgraphs (If branches, Loop and Scan bodies).
CONTROL_FLOW_OPS = frozenset({"If", "Loop", "Scan"})


def subgraphs_of(node: ir.Node) -> list[tuple[str, ir.Graph]]:
    """The subgraphs ``node`` holds in its attributes, with the attribute's name."""
    found: list[tuple[str, ir.Graph]] = []
    for name, attr in node.attributes.items():
        if attr.type == ir.AttributeType.GRAPH:
            found.append((name, attr.as_graph()))
        elif attr.type == ir.AttributeType.GRAPHS:
            found += [(name, g) for g in attr.as_graphs()]
    return found


#: Key in a subgraph's ``meta``: the node holding it (:func:`mark_holders`, when a model is loaded).
HOLDER_KEY = "onnxgrow.holder"


def mark_holders(graph: ir.Graph) -> None:
    """Record in every subgraph of ``graph`` (at any depth) the node holding it (:func:`holder_of`)."""
    for node in graph.all_nodes():
        for _, subgraph in subgraphs_of(node):
            subgraph.meta[HOLDER_KEY] = node


def holder_of(graph: ir.Graph | None) -> ir.Node | None:
    """The If/Loop/Scan node holding ``graph`` (None for the main graph, or a model not loaded by
    :func:`onnxgrow.model_io.load_model`)."""
    holder = graph.meta.get(HOLDER_KEY) if graph is not None else None
    return holder if isinstance(holder, ir.Node) else None


def subgraph_holders(graph: ir.Graph) -> dict[ir.Value, list[ir.Node]]:
    """Every input and output of a subgraph of ``graph`` (at any depth), with the nodes holding
    a subgraph that has it as an input or output (a captured value a branch returns as it is
    may be the output of several)."""
    holders: dict[ir.Value, list[ir.Node]] = {}
    for node in graph.all_nodes():
        for _, subgraph in subgraphs_of(node):
            for value in (*subgraph.inputs, *subgraph.outputs):
                holders.setdefault(value, []).append(node)
    return holders


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


def weight_names(node: ir.Node) -> list[str | None]:
    """The parameter names of ``node``: the name its input carries when that is a weight
    name (exporters that share one deduplicated initializer keep each parameter's own
    name on an Identity), else the name of the constant behind it."""
    names = []
    for value in node.inputs[1:]:
        ref = find_constant(value)
        if ref is not None:
            names.append(value.name if weight_prefix(value.name) else ref.root.name)  # type: ignore[union-attr]
    return names


def node_names(node: ir.Node, generated: str | None = None, context: NamingContext | None = None) -> NodeNames:
    """The names ``node`` answers to, its weights' names (and generated name) included."""
    return names_of(node, weight_names(node), generated, context)
