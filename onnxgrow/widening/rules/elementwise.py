"""Elementwise ops carry the channels unchanged (docs/design.md §1, carriers).

Unary ops (activations, Identity, Dropout, Cast, ...): output unit ``j`` is ``f`` of input
unit ``j``, so copies stay copies. Clip's min/max must be scalars (constants, possibly
cast at run time). CastLike casts its input 0 like a carrier; its input 1 only lends its
element type, so a tracked input 1 touches nothing.

Binary and variadic ops (Add, Mul, Pow, Max, PRelu, Where, ...) broadcast their operands:
- a constant operand that does not span the axis (scalar, size 1) stays as it is;
- a constant that spans it is per-channel: it is gathered with the map;
- a computed operand that spans it must carry the same channels: it joins the group
  (a residual Add ties both producers into one channel group; a decomposed GELU
  ``x * 0.5 * (1 + tanh(...x...))`` joins ``x`` with itself).
"""

from __future__ import annotations

import onnx_ir as ir

from onnxgrow.graph import BINARY_OPS, UNARY_OPS, const_shape, rank_of
from onnxgrow.widening.context import GroupContext, Known, any_embedding
from onnxgrow.widening.rules.common import broadcast_axis, constant_through_casts, gather_per_channel
from onnxgrow.widening.rules.known_dims import known_dim, known_rank
from onnxgrow.widening.rules.registry import rule

#: Ops whose output keeps the rank of input 0 and can only shrink its axes.
_SHRINKING = frozenset({"Slice", "Cast", "Not", "Identity"})


def _size_along(ctx: GroupContext, value: ir.Value, axis: int) -> int | str | None:
    """``value``'s size along negative ``axis`` (as :mod:`known_dims` derives it); when still
    unknown (or a symbol), 1 if ``value`` is a slice (or cast) of a tensor of size 1 there (a
    causal mask cut to the sequence length: ``bias[:, :, :t, :t]``)."""
    size = known_dim(value, axis, ctx.dims_memo)
    node = value.producer()
    while (not isinstance(size, int) and node is not None and node.op_type in _SHRINKING
           and node.domain in ("", "ai.onnx")):
        source = node.inputs[0]
        if source is None or rank_of(source) != rank_of(value):
            return size
        before = known_dim(source, axis, ctx.dims_memo)
        if isinstance(before, int):
            return 1 if before == 1 else size
        node = source.producer()
    return size


@rule(*UNARY_OPS)
class UnaryRule:
    """``y[j] = f(x[j])``: input 0 and the outputs carry the same channels."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        for extra in node.inputs[1:]:
            value = constant_through_casts(extra) if extra is not None else None
            if extra is not None and (value is None or value.size > 1):
                ctx.refuse(node, f"input {extra.name!r} must be a scalar constant")
        used = [out for out in node.outputs if out.uses() or out.is_graph_output()]
        ctx.carry(node, any_embedding(known), [node.inputs[0], *used])

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        """Nothing to change: the op acts per element."""


@rule(*BINARY_OPS)
class BroadcastRule:
    """Elementwise ops with broadcasting: per-channel constants gathered, operands joined."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        out = node.outputs[0]
        embedding = known.get(out) or any_embedding(known)
        axis = embedding.axis
        old = embedding.layout.old_size(ctx.width)
        for i, operand in enumerate(node.inputs):
            if operand is None:
                continue
            shape = const_shape(operand)
            if shape is not None:
                const_axis = broadcast_axis(shape, axis)
                if const_axis is not None and shape[const_axis] not in (1, old):
                    ctx.refuse(node, f"constant {operand.name!r} of shape {list(shape)} does not "
                                     f"broadcast over {old} channels")
                continue
            size, rank = _size_along(ctx, operand, axis), known_rank(operand, ctx.dims_memo)
            broadcasts = size == 1 or (rank is not None and rank < -axis)
            if not broadcasts:
                ctx.carry(node, embedding, (operand,))
        ctx.carry(node, embedding, (out,))

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        """Constant operands that span the channels are gathered with the map."""
        gather_per_channel(ctx, node, node.outputs[0], range(len(node.inputs)))


@rule("CastLike")
class CastLikeRule:
    """``CastLike(x, like)``: ``x`` carries the channels to the output; ``like`` gives a type."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        x, y = node.inputs[0], node.outputs[0]
        if x not in known and y not in known:
            return  # only ``like`` carries the channels: the output does not depend on them
        ctx.carry(node, known.get(x) or known[y], (x, y))

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        """Nothing to change: the op acts per element."""
