"""Expand: broadcasting a tensor to a target shape.

- The input spans the channel axis: input and output carry the same channels (either
  direction); the target's entry for that axis is 1, the old size as a constant (rewritten
  to the new size), or a size read at run time that grows with the channels (the input's
  own, or another tracked tensor's: :func:`~onnxgrow.widening.rules.shape_values.follows`).
  A constant input (ViT's class token ``cls_token.expand(B, -1, -1)``, a position
  embedding) is a per-channel parameter: it is gathered with the map instead.
- The input has size 1 there (or lacks the axis): the output's copies along that axis are
  all the same tensor, so the channels *arise* here without weights (``repeat_kv`` of
  grouped-query attention, growing the number of query heads per key/value head; a mask
  expanded to every head). The target's entry must grow to the new size: the old size as
  a constant (rewritten), a run-time read of a channel count that follows, or a size read
  outside the group times a constant (TorchScript's ``expand``), whose constant is
  rewritten. The input is not tracked.

A constant entry is rewritten in the node input that stores it; where the vector is
computed for other nodes too (``repeat_kv`` of keys and values, of every layer, reads one
target shape; TorchScript's ``Where(Equal(t, -1), 1, t)`` reads it twice), this Expand gets
its own copy of it first.
Sizes are read as :mod:`known_dims` derives them (a mask expanded from run-time sizes keeps
its size-1 head axis).
"""

from __future__ import annotations

import onnx_ir as ir

from onnxgrow.constants import find_constant
from onnxgrow.graph import const_shape
from onnxgrow.widening.context import GroupContext, Known
from onnxgrow.widening.layout import Embedding
from onnxgrow.widening.rules.common import gathering
from onnxgrow.widening.rules.known_dims import known_dim, known_rank
from onnxgrow.widening.rules.registry import rule
from onnxgrow.widening.rules.shape_values import (
    Const,
    DimOf,
    Entry,
    channel_count,
    entries,
    rewrite_size_entry,
    size_entry_problem,
)


def _channel_entry(node: ir.Node, axis: int) -> Entry | str:
    """The target shape's entry aligned with negative ``axis``, or why it cannot be found."""
    target = entries(node.inputs[1], (node, 1))
    if target is None:
        return "its target shape is computed at run time in a way onnxgrow cannot follow"
    if len(target) < -axis:
        return ""  # the target does not reach the axis: the input's size is kept
    return target[axis]


def _broadcasts(ctx: GroupContext, x: ir.Value | None, embedding: Embedding) -> bool:
    """The input lacks the channel axis or has size 1 there: the Expand creates the channels."""
    size = known_dim(x, embedding.axis, ctx.dims_memo)
    return (known_rank(x, ctx.dims_memo) or 0) < -embedding.axis or (
        size == 1 and embedding.layout.old_size(ctx.width) != 1)


def _entry_problem(ctx: GroupContext, node: ir.Node, embedding: Embedding, entry: Entry | str, creates: bool) -> str:
    """Why the target's entry for the channel axis would not give the widened size ('' when
    it does, or is rewritten to). Asked once the group is closed: the entry may read the size
    of a tensor the group reaches later (the keys that ``repeat_kv`` expands)."""
    target = entries(node.inputs[1], (node, 1)) or []
    for k, other in enumerate(target):
        if k - len(target) != embedding.axis and isinstance(other, DimOf) and channel_count(ctx, other) is not None:
            return f"entry {k} of its target shape is the channel count read at run time"
    if _kept(node, embedding, entry, creates):
        return ""
    assert not isinstance(entry, str)
    problem = size_entry_problem(ctx, entry, embedding.layout, "its target shape")
    if not problem and isinstance(entry, Const) and entry.value != embedding.layout.old_size(ctx.width):
        problem = f"the channel entry of its target shape is {entry.value}, not the channel count"
    return problem


def _kept(node: ir.Node, embedding: Embedding, entry: Entry | str, creates: bool) -> bool:
    """The entry keeps the input's size by itself: the target does not reach the axis, is 1
    there, or reads the input's own size (not when the Expand creates the channels)."""
    if creates:
        return False
    return entry == "" or (isinstance(entry, Const) and entry.value == 1) or entry == DimOf(
        node.inputs[0], embedding.axis)  # type: ignore[arg-type]


@rule("Expand")
class ExpandRule:
    """Expand carries the channels, or creates them from a size-1 axis."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        x, y = node.inputs[0], node.outputs[0]
        assert x is not None
        if node.inputs[1] in known:
            ctx.refuse(node, "the channels reach the target shape")
        embedding = known[x] if x in known else known[y]
        broadcasts = _broadcasts(ctx, x, embedding)
        entry = _channel_entry(node, embedding.axis)
        if isinstance(entry, str) and entry:
            ctx.refuse(node, entry)
        if broadcasts and x in known:
            ctx.refuse(node, "the channels reach an axis of size 1 that it broadcasts")
        ctx.check_when_closed(node, lambda: _entry_problem(ctx, node, embedding, entry, broadcasts))
        if not broadcasts and find_constant(x) is None:
            ctx.track(x, embedding.with_axis(embedding.axis, known_rank(x, ctx.dims_memo)), node)
        ctx.track(y, embedding.with_axis(embedding.axis, known_rank(y, ctx.dims_memo)), node)

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        x, y = node.inputs[0], node.outputs[0]
        embedding = known[y]
        old = embedding.layout.old_size(ctx.width)
        shape = const_shape(x)
        if shape is not None and len(shape) >= -embedding.axis and shape[embedding.axis] == old and old > 1:
            ctx.edit(node, 0, gathering(len(shape) + embedding.axis, ctx.index(y)))
        entry = _channel_entry(node, embedding.axis)
        if not isinstance(entry, str) and not _kept(node, embedding, entry, _broadcasts(ctx, x, embedding)):
            rewrite_size_entry(ctx, entry, embedding.layout, node)
