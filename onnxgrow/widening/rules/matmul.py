"""MatMul with a constant 2-D weight ``B [K, N]``: ``Y = A @ B``.

- Producer: widening N gathers B's columns (a following bias Add is a per-channel
  constant of the broadcasting rule).
- Contractor: when A carries the channels on its last axis, B's rows are gathered and
  scaled by the shares.
- Producer and contractor also take channels laid out in blocks (attention heads: a unit
  is a block of head_dim columns, ``Channel(1, head_dim)``), when the blocks span B's axis.

A MatMul of two computed tensors (attention scores ``q @ kᵀ``, ``probs @ v``) carries
channels that sit on a batch axis (the head axis of ``[B, heads, T, d]``): both operands
that span it must carry the same channels (they join the group), and the output carries
them. Channels on A's rows (axis -2) or B's columns (axis -1) reach the output's rows or
columns. Channels on the contracted axis would mix with the other operand: refused.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxgrow.graph import const_shape, model_input_behind, rank_of
from onnxgrow.widening.context import GroupContext, Known
from onnxgrow.widening.layout import Channel, Embedding
from onnxgrow.widening.rules.common import computing_node, contracting, is_quantization, producing, weight_problem
from onnxgrow.widening.rules.known_dims import known_dim, known_rank
from onnxgrow.widening.rules.registry import Producer, producer, rule


@producer("MatMul")
def describe_matmul(node: ir.Node) -> Producer | str:
    b = node.inputs[1]
    shape = const_shape(b)
    if shape is None:
        if model_input_behind(b) is not None or is_quantization(computing_node(b)):
            return weight_problem(b, "weight")
        return "both operands are computed at run time (no constant weight)"
    if len(shape) != 2:
        return f"its constant operand has rank {len(shape)}; only 2-D weights are supported"
    return Producer(node, shape[1], Embedding(-1, rank_of(node.outputs[0])), b)  # type: ignore[arg-type]


@rule("MatMul")
class MatMulRule:
    """MatMul with a constant weight produces channels on N and contracts them on K."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        a, b = node.inputs[0], node.inputs[1]
        y = node.outputs[0]
        if const_shape(b) is None and model_input_behind(b) is None:
            _propagate_batched(ctx, node, known)
            return
        found = describe_matmul(node)
        if b in known or isinstance(found, str):
            ctx.refuse(node, found if isinstance(found, str) else "the channels reach its weight input")
        if y in known:
            if known[y].axis != -1 or not spans(known[y], ctx.width, found.width):
                ctx.refuse(node, "output channels do not match the group")
            ctx.mark_producer(node)
        if a in known:
            if known[a].axis != -1:
                ctx.refuse(node, "the channels reach an axis MatMul does not contract")
            ctx.mark_contractor(node)

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        a, y = node.inputs[0], node.outputs[0]
        if const_shape(node.inputs[1]) is None:
            return  # two computed operands: values only move
        if y in known:
            idx = ctx.index(y)
            ctx.edit(node, 1, producing(1, idx, ctx.rng))
        if a in known:
            idx = ctx.index(a)
            ctx.edit(node, 1, contracting(0, idx, ctx.channel_map.init, ctx.rng))


def _propagate_batched(ctx: GroupContext, node: ir.Node, known: Known) -> None:
    """``A @ B`` of two computed tensors: channels on a batch axis, A's rows or B's columns."""
    a, b, y = node.inputs[0], node.inputs[1], node.outputs[0]
    assert a is not None and b is not None
    ranks = [known_rank(v, ctx.dims_memo) for v in (a, b, y)]
    if any(r is None or r < 2 for r in ranks):
        ctx.refuse(node, "it multiplies two tensors computed at run time whose ranks are unknown")
    value, embedding = next(iter(known.items()))
    axis = embedding.axis
    if axis <= -3:
        old = embedding.layout.old_size(ctx.width)
        for operand in (a, b):
            rank = known_rank(operand, ctx.dims_memo)
            broadcasts = (rank or 0) < -axis or (known_dim(operand, axis, ctx.dims_memo) == 1 and old != 1)
            if not broadcasts:
                ctx.track(operand, embedding.with_axis(axis, rank), node)
        ctx.track(y, embedding.with_axis(axis, ranks[2]), node)
        return
    row = (value is a and axis == -2) or (value is b and axis == -1) or (value is y and axis in (-2, -1))
    if not row:
        ctx.refuse(node, "it multiplies two tensors computed at run time along the widened axis, which "
                         "mixes the channels with the other operand")
    if value is y:
        ctx.track(a if axis == -2 else b, embedding.with_axis(axis, ranks[0 if axis == -2 else 1]), node)
    ctx.track(y, embedding.with_axis(axis, ranks[2]), node)


def spans(embedding: Embedding, width: int, size: int) -> bool:
    """Whether ``embedding``'s channels, one block of units, fill an axis of ``size`` (a plain
    channel axis, or the heads of a projection: ``Channel(outer, head_dim)``)."""
    segments = embedding.layout.segments
    return len(segments) == 1 and isinstance(segments[0], Channel) and embedding.layout.old_size(width) == size
