"""Projections: the nodes that apply a constant weight to the tensor they read.

- MatMul with a constant 2-D weight ``B [K, N]``: ``N`` outputs;
- Gemm with a constant ``B`` (and a constant bias ``C`` or none): ``N`` outputs
  (``B``'s rows when ``transB=1``);
- Conv with a constant weight ``W [M, C/group, k...]``: ``M`` output channels.

They are what a block's attention, FFN and convolutions are made of. Whether one can be
widened is the widening rules' question (``onnxgrow.widening.layers``), not this one's.
Each carries the names it answers to (:func:`onnxgrow.graph.node_names`).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from onnxgrow.constants import find_constant
from onnxgrow.graph import const_shape, node_names
from onnxgrow.names import NamingContext, NodeNames, generated_names, naming_context

PROJECTION_OPS = frozenset({"MatMul", "Gemm", "Conv"})


@dataclass(frozen=True)
class Projection:
    """A node applying a constant weight: its weight, output units and names."""

    node: ir.Node
    weight: ir.Value
    width: int
    names: NodeNames

    @property
    def name(self) -> str:
        """The name to print: the module path when the graph has one, else the node name."""
        return self.names.display

    @property
    def op_type(self) -> str:
        return self.node.op_type

    @property
    def input(self) -> ir.Value:
        """The tensor the weight is applied to."""
        value = self.node.inputs[0]
        assert value is not None
        return value

    @property
    def output(self) -> ir.Value:
        return self.node.outputs[0]


def projection_width(node: ir.Node) -> int | None:
    """The output units of ``node`` when it is a projection (see the module rules), else None."""
    if node.domain not in ("", "ai.onnx") or node.op_type not in PROJECTION_OPS or len(node.inputs) < 2:
        return None
    if node.inputs[0] is None:
        return None
    shape = const_shape(node.inputs[1])
    if shape is None:
        return None
    if node.op_type == "MatMul":
        return shape[1] if len(shape) == 2 else None
    if node.op_type == "Gemm":
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        if len(shape) != 2 or (bias is not None and find_constant(bias) is None):
            return None
        return shape[0] if node.attributes.get_int("transB", 0) else shape[1]
    return shape[0] if len(shape) >= 3 else None


def find_projections(graph: ir.Graph, context: NamingContext | None = None) -> dict[ir.Node, Projection]:
    """Every projection of ``graph`` (not of its subgraphs), in graph order (``context``:
    the graph's naming context, when already computed)."""
    generated = generated_names(graph)
    context = context if context is not None else naming_context(graph)
    found: dict[ir.Node, Projection] = {}
    for node in graph:
        width = projection_width(node)
        if width is not None:
            weight = node.inputs[1]
            assert weight is not None
            found[node] = Projection(node, weight, width, node_names(node, generated.get(node), context))
    return found
