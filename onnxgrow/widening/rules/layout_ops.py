"""Ops that move axes around: Transpose, Squeeze, Unsqueeze, Split, Slice, Concat.

They carry the channels to a new axis position without touching values:

- Transpose: the channel axis follows ``perm``.
- Squeeze/Unsqueeze: the axis index shifts by the axes removed/inserted before it (traced
  both ways).
- Split, Slice on other axes: every output carries the channels (traced both ways).
- Split, Slice and Concat along the channel axis cut the axis' layout into parts or join
  parts into one (:mod:`cuts`): a part without widened channels (another layer's channels,
  a constant) is a fixed segment and is not tracked. A cut inside a block of units asks for
  finer blocks (the halves of YOLOv8's C2f ``cv1``: each half widened alike; the three
  ``q, k, v`` blocks of a fused projection). Split sizes and Slice starts/ends stored as
  constants are rewritten to the new positions. Split and Concat are traced both ways
  (backward, a Split into equal parts without sizes, ``num_outputs``, widens every part alike);
  a join waits until the planner has tracked all it can, so that every input that carries
  the channels is known when the joined layout is made (SPPF concatenates one tensor and
  three poolings of it).
- Concat along another axis: every computed input carries the same channels; a constant
  input spanning the channel axis (a class token) is gathered with the map.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxgrow.constants import find_constant
from onnxgrow.graph import const_shape, dim_at, rank_of
from onnxgrow.widening.context import GroupContext, Known, any_embedding, embedding_rank
from onnxgrow.widening.layout import AxisLayout, Embedding, Fixed
from onnxgrow.widening.rules.common import gathering
from onnxgrow.widening.rules.cuts import cut, has_channels, joined, new_position
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


def _track_parts(ctx: GroupContext, node: ir.Node, outputs: list[ir.Value], axis: int, rank: int | None,
                 parts: list[AxisLayout] | int | str, what: str) -> None:
    """Track each output with its part of the cut axis (parts without widened channels stay
    untracked); ask for finer blocks, or refuse, when the cut says so."""
    if isinstance(parts, int):
        ctx.require_blocks(node, parts, what)
    if isinstance(parts, str):
        ctx.refuse(node, parts)
    assert not isinstance(parts, int)
    for out, part in zip(outputs, parts):
        if has_channels(part):
            ctx.track(out, Embedding(axis, rank_of(out) or rank, part), node)
        elif out in ctx.tracked:
            ctx.refuse(node, f"its part {out.name!r} would carry the channels, but holds none of them")


def _part_layout(value: ir.Value, axis: int, known: Known, size: int | None = None) -> AxisLayout | None:
    """The layout of a part of a joined axis: tracked, or fixed of its size (``size``, else
    its static size along ``axis``; None when unknown)."""
    if value in known:
        return known[value].layout
    if size is None:
        found = dim_at(value, axis)
        size = found if isinstance(found, int) else None
    return None if size is None else AxisLayout((Fixed(size),))


def _refuse_outer(ctx: GroupContext, node: ir.Node, layouts: list[AxisLayout | None]) -> None:
    """Parts joined along an axis that merges a dynamic size with the channels: refused."""
    merged = next((layout.outer for layout in layouts if layout is not None and layout.outer), None)
    if merged is not None:
        ctx.refuse(node, f"it joins parts along an axis where {merged} is merged with the channels")


def _computed(value: ir.Value | None) -> bool:
    """Whether ``value`` is computed by a node (so the planner may still track it)."""
    return value is not None and find_constant(value) is None and value.producer() is not None


@rule("Split")
class SplitRule:
    """Along another axis every output carries the channels; along the channel axis each
    output carries its part of the layout (:func:`cuts.cut`), and the input joins the parts."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        x = node.inputs[0]
        assert x is not None
        embedding = known.get(x) or any_embedding(known)
        rank = embedding_rank(embedding, x, *node.outputs)
        axis = ctx.negative_axis(node, node.attributes.get_int("axis", 0), rank)
        if axis != embedding.axis:
            ctx.carry(node, embedding, [x, *node.outputs], rank)
            return
        sizes = self._sizes(ctx, node, known)
        if isinstance(sizes, str):
            ctx.refuse(node, sizes)
        if x in known:
            parts = cut(embedding.layout, ctx.width, sizes)
            if not isinstance(parts, (int, str)) and not self._explicit(node) and len(set(parts)) > 1:
                ctx.refuse(node, "it splits the axis into equal parts, which the widening would make unequal")
            _track_parts(ctx, node, list(node.outputs), axis, rank, parts,
                         f"it splits the channels into parts {sizes}, each widened alike")
            return
        if ctx.wait_for_others(node):
            return
        if not self._explicit(node):  # equal parts stay equal: every part carries the channels alike
            part = next(e for v, e in known.items() if v is not x).layout
            _refuse_outer(ctx, node, [part])
            ctx.track(x, Embedding(axis, rank, joined([part] * len(node.outputs))), node)
            return
        layouts = [_part_layout(out, axis, known, size) for out, size in zip(node.outputs, sizes)]
        _refuse_outer(ctx, node, layouts)
        ctx.track(x, Embedding(axis, rank, joined(layout for layout in layouts if layout is not None)), node)

    @staticmethod
    def _explicit(node: ir.Node) -> bool:
        return len(node.inputs) > 1 and node.inputs[1] is not None

    def _sizes(self, ctx: GroupContext, node: ir.Node, known: Known) -> list[int] | str:
        """The old sizes of the parts along the channel axis, or why they are unknown."""
        if self._explicit(node):
            sizes = constant_ints(node, 1)
            return sizes if sizes is not None else "its split sizes are computed at run time"
        x = node.inputs[0]
        parts = len(node.outputs)
        if x in known:
            total = known[x].layout.old_size(ctx.width)
        else:
            total = next(e for v, e in known.items() if v is not x).layout.old_size(ctx.width) * parts
        if total % parts:
            return f"it splits {total} positions into {parts} parts of unequal size"
        return [total // parts] * parts

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        """Constant split sizes along the channel axis become the parts' new sizes."""
        x = node.inputs[0]
        embedding = known[x]
        if not self._explicit(node):
            return
        if ctx.negative_axis(node, node.attributes.get_int("axis", 0), embedding_rank(embedding, x)) != embedding.axis:
            return
        found = entries(node.inputs[1], (node, 1)) or []
        for out, entry in zip(node.outputs, found):
            new = known[out].layout.new_size(ctx.channel_map.q) if out in known else None
            if isinstance(entry, Const) and new is not None and entry.value != new:
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


def _bounds(start: Entry, end: Entry, step: Entry, total: int) -> tuple[int, int] | None:
    """The kept positions ``[begin, stop)`` of a step-1 slice of ``total`` positions with
    constant start and end (None otherwise)."""
    if not (isinstance(start, Const) and isinstance(end, Const) and isinstance(step, Const) and step.value == 1):
        return None
    begin = min(max(start.value + total if start.value < 0 else start.value, 0), total)
    stop = min(max(end.value + total if end.value < 0 else end.value, 0), total)
    return begin, max(stop, begin)


@rule("Slice")
class SliceRule:
    """Slicing other axes carries the channels (either way: input and output carry them on the
    same axis). On the channel axis a step-1 slice with constant bounds keeps its part of the
    layout (forward only); a slice that keeps the axis whole is traced both ways.

    Bounds are rewritten to the new positions; an end "to the end" (at least 2**31-1) stays.
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
            bounds = _bounds(start, end, step, old)
            if bounds is None:
                ctx.refuse(node, "it slices the widened axis with a step or at positions computed at run time")
            for entry in (start, end):
                if isinstance(entry, Const) and entry.value < _TO_THE_END and shared_path(entry):
                    ctx.refuse(node, "its bounds on the widened axis are computed by nodes that other nodes "
                                     "use as well")
            if bounds == (0, old):
                break
            if x not in known:
                ctx.refuse(node, "cannot trace channels backward through a Slice of them")
            begin, stop = bounds
            _track_parts(ctx, node, [node.outputs[0]], embedding.axis, rank,
                         self._middle(cut(embedding.layout, ctx.width, [begin, stop - begin, old - stop])),
                         f"it slices positions {begin} to {stop} of the channels")
            return
        ctx.carry(node, embedding, (x, y), rank)

    @staticmethod
    def _middle(parts: list[AxisLayout] | int | str) -> list[AxisLayout] | int | str:
        return [parts[1]] if isinstance(parts, list) else parts

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        """Bounds on the channel axis move to the new positions of the cuts they make."""
        embedding = known[node.inputs[0]]
        layout, n, q = embedding.layout, ctx.width, ctx.channel_map.q
        old, new = layout.old_size(n), layout.new_size(q)
        for _, axis, start, end, step in _slice_params(node, embedding_rank(embedding, node.inputs[0])) or []:
            bounds = _bounds(start, end, step, old)
            if axis != embedding.axis or bounds is None:
                continue
            for entry, position in zip((start, end), bounds):
                assert isinstance(entry, Const)
                if entry.value >= _TO_THE_END:
                    continue
                moved = new_position(layout, n, q, position) - (new if entry.value < 0 else 0)
                if moved != entry.value:
                    rewrite_entry(ctx, entry, moved)


@rule("Concat")
class ConcatRule:
    """Concatenation along the channel axis joins the inputs' layouts (other inputs become
    fixed segments) and is traced backward by cutting the output's; along another axis every
    computed input carries the same channels and constant inputs are gathered."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        y = node.outputs[0]
        embedding = next(v for k, v in known.items() if k is not y) if any(
            k is not y for k in known) else known[y]
        rank = embedding_rank(embedding, y, *node.inputs)
        axis = ctx.negative_axis(node, node.attributes.get_int("axis", 0), rank)
        inputs = [x for x in node.inputs if x is not None]
        if axis != embedding.axis:
            for x in inputs:
                if find_constant(x) is not None:
                    self._check_constant(ctx, node, x, embedding)
            ctx.carry(node, embedding, [*(x for x in inputs if find_constant(x) is None), y], rank)
            return
        if y in known:
            sizes = [dim_at(x, axis) for x in inputs]
            if not all(isinstance(size, int) for size in sizes):
                ctx.refuse(node, "an input has an unknown size along the concatenated axis")
            _track_parts(ctx, node, inputs, axis, rank, cut(known[y].layout, ctx.width, sizes),  # type: ignore[arg-type]
                         "it joins the channels with other positions")
            return
        if any(x not in known and _computed(x) for x in inputs) and ctx.wait_for_others(node):
            return
        layouts = [_part_layout(x, axis, known) for x in inputs]
        missing = next((x for x, layout in zip(inputs, layouts) if layout is None), None)
        if missing is not None:
            ctx.refuse(node, f"input {missing.name!r} has an unknown size along the concatenated axis")
        _refuse_outer(ctx, node, layouts)
        ctx.track(y, Embedding(axis, rank, joined(layout for layout in layouts if layout is not None)), node)

    @staticmethod
    def _check_constant(ctx: GroupContext, node: ir.Node, x: ir.Value, embedding: Embedding) -> None:
        shape = const_shape(x)
        old = embedding.layout.old_size(ctx.width)
        if embedding.layout.outer is not None:
            ctx.refuse(node, f"constant {x.name!r} cannot span an axis where {embedding.layout.outer} is merged "
                             "with the channels")
        if shape is None or len(shape) < -embedding.axis or shape[embedding.axis] != old:
            ctx.refuse(node, f"constant {x.name!r} would have to carry the channels")

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        """Constant inputs of a Concat along another axis are gathered with the map."""
        y = node.outputs[0]
        embedding = known[y]
        rank = embedding_rank(embedding, y)
        if ctx.negative_axis(node, node.attributes.get_int("axis", 0), rank) == embedding.axis:
            return
        idx = ctx.index(y)
        for i, x in enumerate(node.inputs):
            shape = const_shape(x) if x is not None else None
            if shape is not None:
                ctx.edit(node, i, gathering(len(shape) + embedding.axis, idx))
