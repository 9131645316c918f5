"""The growable layers of a model: producers with constant weights, and their names.

A layer is a node some registered producer rule accepts (Gemm, MatMul with a constant
weight, Conv or ConvTranspose that is not depthwise, Gather from a constant embedding table), in the
main graph or inside an If branch or a Loop/Scan body. Nodes of those op
types that are not growable are listed with the reason (nodes that are no candidate at
all, like a Gather reading a shape, are skipped), and so are the recurrent and loop ops
that carry weights no rule can grow (:data:`UNGROWABLE_OPS`: tf2onnx's LSTM and GRU).
Each layer gets the names users can type (see :mod:`onnxgrow.names`) and a display name
that resolves to it alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from onnxgrow.errors import GrowError
from onnxgrow.graph import holder_of, node_names, subgraphs_of
from onnxgrow.names import (
    NameIndex,
    NodeNames,
    distinct_display,
    generated_names,
    naming_context,
    resolve,
)
from onnxgrow.widening.rules import PRODUCERS, Producer

#: Ops that count as "the activation after a layer".
ACTIVATIONS = frozenset({
    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Softplus", "Softsign", "Elu", "Selu", "Celu", "Gelu",
    "HardSigmoid", "HardSwish", "Mish", "ThresholdedRelu", "Clip", "PRelu", "Softmax", "LogSoftmax",
})
#: Ops that hold a layer's weights but that no rule grows, and why (a Loop or Scan only when no
#: layer inside its body can grow: then it is a recurrent layer, like tf2onnx's ``tf.while_loop``).
UNGROWABLE_OPS = {
    "LSTM": "a recurrent LSTM has no widening or deepening rule",
    "GRU": "a recurrent GRU has no widening or deepening rule",
    "RNN": "a recurrent RNN has no widening or deepening rule",
    "Loop": "a Loop (a recurrent layer or tf.while_loop) has no widening or deepening rule",
    "Scan": "a Scan has no widening or deepening rule",
}
#: Ops looked through when finding the activation: a bias Add, a BatchNorm (or the Mul then
#: Add tf2onnx leaves of one), the Reshape after a MatMul on flattened leading axes.
_LOOK_THROUGH = frozenset({"Add", "BatchNormalization", "Reshape"})


@dataclass
class Layer:
    """A growable layer."""

    producer: Producer
    names: NodeNames
    display: str
    activation: ir.Node | None

    @property
    def node(self) -> ir.Node:
        return self.producer.node

    @property
    def width(self) -> int:
        return self.producer.width

    @property
    def op_type(self) -> str:
        return self.node.op_type


@dataclass
class NotGrowable:
    """A node of a producer op type that cannot be widened, and why."""

    node: ir.Node
    names: NodeNames
    reason: str


def activation_after(value: ir.Value) -> ir.Node | None:
    """The activation applied to ``value``, looking through a bias Add, a BatchNorm (a Mul
    counts when an Add follows it), a Reshape."""
    seen = 0
    while seen < 4:
        consumers = value.consumers()
        if len(consumers) != 1:
            return None
        node = consumers[0]
        if node.op_type in ACTIVATIONS:
            return node
        then = node.outputs[0].consumers()
        scale_shift = node.op_type == "Mul" and len(then) == 1 and then[0].op_type == "Add"
        if node.op_type not in _LOOK_THROUGH and not scale_shift:
            return None
        value = node.outputs[0]
        seen += 1
    return None


def all_generated_names(graph: ir.Graph) -> dict[ir.Node, str]:
    """The generated name of every unnamed node of ``graph`` and of its subgraphs: the graph's
    own (:func:`onnxgrow.names.generated_names`), and inside a subgraph the holding node's
    name, the attribute's and the subgraph's own generated name (``If_0/then_branch/Conv_0``)."""
    names = dict(generated_names(graph))
    for node in graph:
        for attribute, subgraph in subgraphs_of(node):
            holder = node.name or names[node]
            for inner, name in all_generated_names(subgraph).items():
                names[inner] = f"{holder}/{attribute}/{name}"
    return names


def find_layers(model: ir.Model) -> tuple[list[Layer], list[NotGrowable]]:
    """All growable layers of the model, inside If/Loop/Scan subgraphs too (in graph order, a
    subgraph's after the node holding it), and producer-type nodes that are not."""
    layers: list[Layer] = []
    refused: list[NotGrowable] = []
    generated = all_generated_names(model.graph)
    context = naming_context(model.graph)
    for node in model.graph.all_nodes():
        standard = node.domain in ("", "ai.onnx")
        describe = PRODUCERS.get(node.op_type) if standard else None
        if describe is None:
            if standard and node.op_type in UNGROWABLE_OPS:
                refused.append(NotGrowable(node, node_names(node, generated.get(node), context),
                                           UNGROWABLE_OPS[node.op_type]))
            continue
        found = describe(node)
        if found is None:
            continue
        names = node_names(node, generated.get(node), context)
        if isinstance(found, str):
            refused.append(NotGrowable(node, names, found))
        else:
            layers.append(Layer(found, names, "", activation_after(node.outputs[0])))
    inside = {id(node) for layer in layers for node in _holders_of(layer.node)}
    refused = [item for item in refused  # a loop whose body has growable layers is no layer itself
               if item.node.op_type not in ("Loop", "Scan") or id(item.node) not in inside]
    index = NameIndex(layer.names for layer in layers)
    for layer in layers:
        layer.display = distinct_display(layer.names, index)
    return layers, refused


def _holders_of(node: ir.Node) -> list[ir.Node]:
    """The If/Loop/Scan nodes holding ``node``, innermost first (for a loaded model, see
    :func:`onnxgrow.graph.holder_of`)."""
    holders = []
    while (holder := holder_of(node.graph)) is not None:
        holders.append(holder)
        node = holder
    return holders


def find_layer(model: ir.Model, name: str, layers: list[Layer] | None = None,
               refused: list[NotGrowable] | None = None) -> Layer:
    """The layer ``name`` designates; a GrowError explains unknown, ambiguous and non-growable names."""
    if layers is None or refused is None:
        layers, refused = find_layers(model)
    try:
        found = resolve(name, [layer.names for layer in layers])
        return next(layer for layer in layers if layer.node is found.node)
    except GrowError as not_a_layer:
        for item in refused:
            if name in item.names.all():
                node_name = item.names.exact[0] if item.names.exact else ""
                raise GrowError(f"{name!r} ({item.node.op_type} node {node_name!r}) cannot be "
                                f"widened: {item.reason}") from None
        generated = all_generated_names(model.graph)
        context = naming_context(model.graph)
        other = [names for n in model.graph.all_nodes()
                 if name in (names := node_names(n, generated.get(n), context)).all()]
        layer_nodes = {id(layer.node) for layer in layers}
        other = [names for names in other if id(names.node) not in layer_nodes]  # layers: the name is ambiguous
        if other:
            node = other[0].node
            raise GrowError(f"{name!r} is a {node.op_type} node, not a growable layer "
                            "(Gemm, MatMul with a constant weight, Conv, ConvTranspose, embedding Gather)") from None
        raise not_a_layer
