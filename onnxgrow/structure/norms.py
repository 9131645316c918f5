"""Normalisations: fused norm ops, and LayerNorm/RMSNorm decomposed into elementwise ops.

A *fused* normalisation is one node: LayerNormalization, RMSNormalization (opset 23),
BatchNormalization, GroupNormalization, InstanceNormalization, or onnxruntime's
SimplifiedLayerNormalization (an RMSNorm). Its scale and bias are its inputs 1 and 2.

A *decomposed* one is what exporters write for an RMSNorm (``x·rsqrt(mean(x²) + ε)·w``)
or, below opset 17, a LayerNorm (``(x - mean(x)) / sqrt(var + ε)·w + b``): starting from
the normalised tensor ``x``, the largest set of elementwise ops and ReduceMeans that read
only ``x``, each other and constants, holding at least one ReduceMean. It is a LayerNorm
when it subtracts (the mean), else an RMSNorm. Its scale is the constant of the Mul that
ends it (before a bias Add), its bias the constant of that Add.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import onnx_ir as ir

from onnxgrow.names import module_path
from onnxgrow.structure.flow import DataFlow

#: Fused normalisation ops, by kind.
NORM_OPS = {
    "LayerNormalization": "layer", "RMSNormalization": "rms", "SimplifiedLayerNormalization": "rms",
    "BatchNormalization": "batch", "GroupNormalization": "group", "InstanceNormalization": "instance",
}
#: The ops a decomposed LayerNorm or RMSNorm is written with.
DECOMPOSED_OPS = frozenset({"ReduceMean", "Sub", "Pow", "Mul", "Div", "Add", "Sqrt", "Reciprocal", "Cast",
                            "Identity"})


@dataclass(frozen=True)
class Norm:
    """A normalisation of ``input``: its kind (``layer``, ``rms``, ``batch``, ``group``,
    ``instance``), its nodes in graph order (one when fused), output, scale and bias."""

    kind: str
    nodes: tuple[ir.Node, ...]
    input: ir.Value
    output: ir.Value
    scale: ir.Value | None
    bias: ir.Value | None

    @property
    def decomposed(self) -> bool:
        return len(self.nodes) > 1

    @property
    def name(self) -> str | None:
        """Its module path (``model.layers.0.input_layernorm``), from its first node."""
        return next((path for node in self.nodes if (path := module_path(node))), None)

    @property
    def op(self) -> str:
        """``LayerNormalization``, or ``RMSNorm (7 ops)`` for a decomposed one."""
        if not self.decomposed:
            return self.nodes[0].op_type
        return f"{'LayerNorm' if self.kind == 'layer' else 'RMSNorm'} ({len(self.nodes)} ops)"


def is_fused_norm(node: ir.Node) -> bool:
    return node.op_type in NORM_OPS and node.domain in ("", "ai.onnx", "com.microsoft")


def fused_norm(node: ir.Node) -> Norm:
    """The :class:`Norm` of a fused normalisation node."""
    inputs = list(node.inputs) + [None, None, None]
    x = inputs[0]
    assert x is not None
    return Norm(NORM_OPS[node.op_type], (node,), x, node.outputs[0], inputs[1], inputs[2])


def find_norm(nodes: Sequence[ir.Node], start: ir.Value, flow: DataFlow) -> Norm | None:
    """The normalisation of ``start`` among ``nodes`` (graph order): a fused norm reading it,
    else a decomposed one (see the module rules); None when there is neither."""
    for node in nodes:
        if is_fused_norm(node) and node.inputs and node.inputs[0] is start:
            return fused_norm(node)
    members: list[ir.Node] = []
    reached = {start}
    for node in nodes:
        inputs = flow.computed_inputs(node)
        if (node.op_type in DECOMPOSED_OPS and node.domain in ("", "ai.onnx") and inputs
                and all(value in reached for value in inputs)):
            members.append(node)
            reached.update(node.outputs)
    if not any(node.op_type == "ReduceMean" for node in members):
        return None
    kind = "layer" if any(node.op_type == "Sub" for node in members) else "rms"
    output = members[-1].outputs[0]
    scale, bias = _affine(members, flow)
    return Norm(kind, tuple(members), start, output, scale, bias)


def _affine(members: list[ir.Node], flow: DataFlow) -> tuple[ir.Value | None, ir.Value | None]:
    """The scale and bias constants ending a decomposed normalisation."""
    scale = bias = None
    node: ir.Node | None = members[-1]
    inside = set(members)
    if node is not None and node.op_type == "Add":
        bias = _constant_operand(node, flow)
        node = _computed_producer(node, flow, inside)
    if node is not None and node.op_type == "Mul":
        scale = _constant_operand(node, flow)
    return scale, bias


def _constant_operand(node: ir.Node, flow: DataFlow) -> ir.Value | None:
    return next((v for v in node.inputs if v is not None and not flow.is_computed(v)), None)


def _computed_producer(node: ir.Node, flow: DataFlow, inside: set[ir.Node]) -> ir.Node | None:
    inputs = flow.computed_inputs(node)
    producer = inputs[0].producer() if len(inputs) == 1 else None
    return producer if producer in inside else None
