"""Ops that move axes around: Transpose, Squeeze, Unsqueeze, Split, Slice, Concat.

They carry the channels to a new axis position without touching values:

- Transpose: the channel axis follows ``perm``.
- Squeeze/Unsqueeze: the axis index shifts by the axes removed/inserted before it (traced
  both ways).
- Split, Slice on other axes: every output carries the channels. Slicing the channel
  axis is refused unless the slice keeps it whole (an end equal to the old size is
  rewritten to the new one). Splitting it is allowed for a fused projection whose
  channels are equal blocks (q, k, v heads), one block per part.
- Concat along the channel axis: the other inputs become fixed segments before/after the
  channels (offsets). Along another axis: every input must carry the same channels.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxgrow.graph import dim_at, rank_of
from onnxgrow.widening.context import GroupContext, Known, any_embedding, embedding_rank
from onnxgrow.widening.layout import AxisLayout, Channel, Embedding, Fixed, Segment
from onnxgrow.widening.rules.registry import rule
from onnxgrow.widening.rules.shape_values import Const, Entry, constant_ints, entries, rewrite_entry, shared_path


def _axes_input(node: ir.Node, index: int = 1) -> list[int] | None:
    """Axes from the ``axes`` attribute (old opsets) or a constant input."""
    axes = node.attributes.get_ints("axes", None)
    if axes is not None:
        return list(axes)
    if len(node.inputs) > index and node.inputs[index] is not None:
        return constant_ints(node, index)
    return None


class _NoRewrite:
    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        """Nothing to change: values only move."""


@rule("Transpose")
class TransposeRule(_NoRewrite):
    """``y`` axis ``i`` is ``x`` axis ``perm[i]``."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        x, y = node.inputs[0], node.outputs[0]
        embedding = any_embedding(known)
        rank = embedding_rank(embedding, x, y)
        perm = node.attributes.get_ints("perm", None)
        if perm is None:
            if rank is None:
                ctx.refuse(node, "unknown rank")
            perm = list(range(rank))[::-1]
        rank = len(perm)
        perm = list(perm)
        if x in known:
            t = rank + known[x].axis
            ctx.track(y, known[x].with_axis(perm.index(t) - rank, rank), node)
        else:
            u = rank + known[y].axis
            assert x is not None
            ctx.track(x, known[y].with_axis(perm[u] - rank, rank), node)


@rule("Squeeze", "Unsqueeze")
class SqueezeRule(_NoRewrite):
    """Removing or inserting size-1 axes shifts the channel axis' index (both directions)."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        x, y = node.inputs[0], node.outputs[0]
        assert x is not None
        backward = x not in known
        embedding = known[y] if backward else known[x]
        rank = rank_of(x) if backward else embedding_rank(embedding, x)
        axes = _axes_input(node)
        if rank is None or axes is None:
            ctx.refuse(node, "its axes or input rank are unknown")
        squeeze = node.op_type == "Squeeze"
        removed = sorted(a % rank for a in axes) if squeeze else []
        inserted = [] if squeeze else sorted(a % (rank + len(axes)) for a in axes)
        new_rank = rank - len(removed) + len(inserted)
        kept_in = [k for k in range(rank) if k not in removed]
        kept_out = [k for k in range(new_rank) if k not in inserted]
        if backward:
            u = new_rank + embedding.axis
            if u in inserted:
                ctx.refuse(node, "the channels sit on an axis it inserts")
            t = kept_in[kept_out.index(u)]
            ctx.track(x, embedding.with_axis(t - rank, rank), node)
            return
        t = rank + embedding.axis
        if t in removed:
            ctx.refuse(node, "it would squeeze the channel axis")
        new_t = kept_out[kept_in.index(t)]
        ctx.track(y, embedding.with_axis(new_t - new_rank, new_rank), node)


@rule("Split")
class SplitRule:
    """Splitting along another axis: every output carries the channels.

    Along the channel axis, a fused projection (``qkv`` split into q, k, v) is allowed when
    the channels are ``outer`` equal blocks (``Channel(outer, inner)``, the heads of q, k
    and v) and the split cuts them into equal parts: each part carries
    ``Channel(outer / parts, inner)``. Split sizes stored as constants are rewritten.
    """

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        embedding = ctx.forward_only(node, known, "Split")
        rank = embedding_rank(embedding, node.inputs[0])
        if ctx.negative_axis(node, node.attributes.get_int("axis", 0), rank) != embedding.axis:
            ctx.carry(node, embedding, node.outputs, rank)
            return
        part = self._part_layout(ctx, node, embedding)
        if isinstance(part, str):
            ctx.refuse(node, part)
        for out in node.outputs:
            ctx.track(out, Embedding(embedding.axis, rank, part), node)

    @staticmethod
    def _part_layout(ctx: GroupContext, node: ir.Node, embedding: Embedding) -> AxisLayout | str:
        parts = len(node.outputs)
        sizes = constant_ints(node, 1) if len(node.inputs) > 1 and node.inputs[1] is not None else None
        shown = f" into parts {sizes}" if sizes else f" into {parts} parts"
        segments = embedding.layout.segments
        old = embedding.layout.old_size(ctx.width)
        equal = sizes is None or all(s * parts == old for s in sizes)
        if (len(segments) != 1 or not isinstance(segments[0], Channel) or segments[0].outer % parts
                or not equal):
            return (f"it splits the widened axis{shown} (a fused projection, for instance); "
                    "copied units would land in the wrong part")
        seg = segments[0]
        return AxisLayout((Channel(seg.outer // parts, seg.inner),))

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        """Constant split sizes along the channel axis become the parts' new sizes."""
        x = node.inputs[0]
        embedding = known[x]
        if len(node.inputs) < 2 or node.inputs[1] is None:
            return
        if ctx.negative_axis(node, node.attributes.get_int("axis", 0), embedding_rank(embedding, x)) != embedding.axis:
            return
        new = known[node.outputs[0]].layout.new_size(ctx.channel_map.q)
        found = entries(node.inputs[1], (node, 1))
        for entry in found or []:
            if isinstance(entry, Const) and entry.value != new:
                rewrite_entry(ctx, entry, new)


#: A Slice end at or beyond this keeps an axis whole whatever its size.
_TO_THE_END = 2**31 - 1


def _slice_params(node: ir.Node, rank: int | None) -> list[tuple[int, int, Entry, Entry, Entry]] | None:
    """(input index of starts/ends/steps position k, axis from the end, start, end, step) per sliced axis."""
    starts = entries(node.inputs[1], (node, 1)) if len(node.inputs) > 1 else None
    ends = entries(node.inputs[2], (node, 2)) if len(node.inputs) > 2 else None
    if starts is None or ends is None or len(starts) != len(ends):
        return None
    axes = _axes_input(node, 3)
    has_steps = len(node.inputs) > 4 and node.inputs[4] is not None
    steps = entries(node.inputs[4], (node, 4)) if has_steps else [Const(1, None, 0)] * len(starts)
    if steps is None or len(steps) != len(starts):
        return None
    axes = list(range(len(starts))) if axes is None else axes
    if len(axes) != len(starts) or (rank is None and any(a >= 0 for a in axes)):
        return None
    return [(k, a - rank if a >= 0 else a, starts[k], ends[k], steps[k])  # type: ignore[operator]
            for k, a in enumerate(axes)]


@rule("Slice")
class SliceRule:
    """Slicing other axes carries the channels (either way: input and output carry them on the
    same axis); the channel axis must be kept whole.

    Keeping it whole means start 0, step 1 and an end "to the end" (at least 2**31-1),
    or an end equal to the old size, which is then rewritten to the new size.
    """

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        x, y = node.inputs[0], node.outputs[0]
        if any(v in known for v in node.inputs[1:]):
            ctx.refuse(node, "the channels reach the starts, ends, axes or steps of Slice")
        embedding = known[x] if x is not None and x in known else known[y]
        rank = embedding_rank(embedding, x, y)
        params = _slice_params(node, rank)
        if params is None:
            ctx.refuse(node, "its axes or the number of its starts/ends are unknown")
        old = embedding.layout.old_size(ctx.width)
        for _, axis, start, end, step in params:
            if axis != embedding.axis:
                continue
            whole = (isinstance(start, Const) and start.value == 0 and isinstance(step, Const)
                     and step.value == 1 and isinstance(end, Const)
                     and (end.value >= _TO_THE_END or end.value == old))
            if not whole:
                ctx.refuse(node, "it slices the widened axis")
            if isinstance(end, Const) and end.value == old and shared_path(end):
                ctx.refuse(node, "its end on the widened axis is computed by nodes that other nodes use as well")
        ctx.carry(node, embedding, (x, y), rank)

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        """An end equal to the old size of the channel axis becomes the new size."""
        embedding = known[node.inputs[0]]
        old, new = embedding.layout.old_size(ctx.width), embedding.layout.new_size(ctx.channel_map.q)
        for _, axis, _, end, _ in _slice_params(node, embedding_rank(embedding, node.inputs[0])) or []:
            if axis == embedding.axis and isinstance(end, Const) and end.value == old and old != new:
                rewrite_entry(ctx, end, new)


@rule("Concat")
class ConcatRule(_NoRewrite):
    """Concatenation: along the channel axis other inputs become fixed segments."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        y = node.outputs[0]
        embedding = next(v for k, v in known.items() if k is not y) if any(
            k is not y for k in known) else known[y]
        rank = embedding_rank(embedding, y, *node.inputs)
        axis = ctx.negative_axis(node, node.attributes.get_int("axis", 0), rank)
        if axis != embedding.axis:
            ctx.carry(node, embedding, [*(x for x in node.inputs if x is not None), y], rank)
            return
        if all(x not in known for x in node.inputs):
            ctx.refuse(node, "cannot trace channels backward through a Concat along them")
        segments: list[Segment] = []
        for x in node.inputs:
            if x is None:
                continue
            if x in known:
                segments.extend(known[x].layout.segments)
                continue
            size = dim_at(x, axis)
            if not isinstance(size, int):
                ctx.refuse(node, f"input {x.name!r} has an unknown size along the concatenated axis")
            segments.append(Fixed(size))
        ctx.track(y, Embedding(axis, rank, AxisLayout(tuple(segments))), node)
