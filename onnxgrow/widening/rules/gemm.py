"""Gemm: ``Y = alpha·A'·B' + beta·C`` with ``A' = A`` or ``Aᵀ`` (transA), ``B'`` likewise.

- Producer: widening the output axis N gathers B's N axis (rows of B when transB=1,
  columns when transB=0) and C along N when C spans it.
- Contractor: when A carries the channels on its K axis, B's K axis is gathered and
  scaled by the shares.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxgrow.constants import find_constant
from onnxgrow.graph import const_shape
from onnxgrow.widening.context import GroupContext, Known
from onnxgrow.widening.layout import Embedding
from onnxgrow.widening.rules.common import contracting, gathering, producing, weight_problem
from onnxgrow.widening.rules.matmul import spans
from onnxgrow.widening.rules.registry import Producer, producer, rule


def _b_axes(node: ir.Node) -> tuple[int, int]:
    """(K axis, N axis) of B."""
    return (1, 0) if node.attributes.get_int("transB", 0) else (0, 1)


@producer("Gemm")
def describe_gemm(node: ir.Node) -> Producer | str:
    b = node.inputs[1]
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    problem = weight_problem(b, "weight B") or weight_problem(bias, "bias C")
    if problem:
        return problem
    shape = const_shape(b)
    assert shape is not None
    width = shape[_b_axes(node)[1]]
    return Producer(node, width, Embedding(-1, 2), b, bias)  # type: ignore[arg-type]


@rule("Gemm")
class GemmRule:
    """Gemm produces channels on N and contracts them on K."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        a, b = node.inputs[0], node.inputs[1]
        y = node.outputs[0]
        if b in known or (len(node.inputs) > 2 and node.inputs[2] in known):
            ctx.refuse(node, "the channels would reach Gemm's weight or bias input")
        if y in known:
            found = describe_gemm(node)
            if isinstance(found, str):
                ctx.refuse(node, found)
            if known[y].axis != -1 or not spans(known[y], ctx.width, found.width):
                ctx.refuse(node, "output channels do not match the group")
            ctx.mark_producer(node)
        if a in known:
            k_axis = -2 if node.attributes.get_int("transA", 0) else -1
            if known[a].axis != k_axis:
                ctx.refuse(node, "the channels reach Gemm's M axis, which it does not contract")
            if find_constant(b) is None:
                ctx.refuse(node, weight_problem(b, "weight B"))
            ctx.mark_contractor(node)

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        k_axis, n_axis = _b_axes(node)
        a, y = node.inputs[0], node.outputs[0]
        if y in known:
            idx = ctx.index(y)
            ctx.edit(node, 1, producing(n_axis, idx, ctx.rng))
            c_shape = const_shape(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
            if c_shape and c_shape[-1] == known[y].layout.old_size(ctx.width) and c_shape[-1] > 1:
                ctx.edit(node, 2, gathering(len(c_shape) - 1, idx))
        if a in known:
            idx = ctx.index(a)
            ctx.edit(node, 1, contracting(k_axis, idx, ctx.channel_map.init, ctx.rng))
