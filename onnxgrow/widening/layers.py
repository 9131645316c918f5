"""The growable layers of a model: producers with constant weights, and their names.

A layer is a node some registered producer rule accepts (Gemm, MatMul with a constant
weight, Conv with group 1, Gather from a constant embedding table). Nodes of those op
types that are not growable are listed with the reason (nodes that are no candidate at
all, like a Gather reading a shape, are skipped), and so are the recurrent and loop ops
that carry weights no rule can grow (:data:`UNGROWABLE_OPS`: tf2onnx's LSTM and GRU).
Each layer gets the names users can type (see :mod:`onnxgrow.names`) and a display name
that resolves to it alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from onnxgrow.constants import find_constant
from onnxgrow.errors import GrowError
from onnxgrow.names import (
    NameIndex,
    NamingContext,
    NodeNames,
    generated_names,
    names_of,
    naming_context,
    resolve,
    weight_prefix,
)
from onnxgrow.widening.rules import PRODUCERS, Producer

#: Ops that count as "the activation after a layer".
ACTIVATIONS = frozenset({
    "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Softplus", "Softsign", "Elu", "Selu", "Celu", "Gelu",
    "HardSigmoid", "HardSwish", "Mish", "ThresholdedRelu", "Clip", "PRelu", "Softmax", "LogSoftmax",
})
#: Ops that hold a layer's weights but that no rule grows, and why.
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


def _weight_names(node: ir.Node) -> list[str | None]:
    """The parameter names of ``node``: the name its input carries when that is a weight
    name (exporters that share one deduplicated initializer keep each parameter's own
    name on an Identity), else the name of the constant behind it."""
    names = []
    for value in node.inputs[1:]:
        ref = find_constant(value)
        if ref is not None:
            names.append(value.name if weight_prefix(value.name) else ref.root.name)  # type: ignore[union-attr]
    return names


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


def node_names(node: ir.Node, generated: str | None = None, context: NamingContext | None = None) -> NodeNames:
    """The names ``node`` answers to, its weights' names (and generated name) included."""
    return names_of(node, _weight_names(node), generated, context)


def find_layers(model: ir.Model) -> tuple[list[Layer], list[NotGrowable]]:
    """All growable layers of the main graph, and producer-type nodes that are not."""
    layers: list[Layer] = []
    refused: list[NotGrowable] = []
    generated = generated_names(model.graph)
    context = naming_context(model.graph)
    for node in model.graph:
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
    index = NameIndex(layer.names for layer in layers)
    for layer in layers:
        layer.display = _unique_display(layer.names, index)
    return layers, refused


def _unique_display(names: NodeNames, everyone: NameIndex) -> str:
    for candidate in (*names.full, *names.short, *names.exact):
        try:
            if everyone.resolve(candidate).node is names.node:
                return candidate
        except GrowError:
            continue
    return names.exact[0] if names.exact else names.node.op_type


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
        generated = generated_names(model.graph)
        context = naming_context(model.graph)
        other = [names for n in model.graph if name in (names := node_names(n, generated.get(n), context)).all()]
        if other:
            node = other[0].node
            raise GrowError(f"{name!r} is a {node.op_type} node, not a growable layer "
                            "(Gemm, MatMul with a constant weight, Conv, embedding Gather)") from None
        raise not_a_layer
