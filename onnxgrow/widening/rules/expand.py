"""Expand: broadcasting a tensor to a target shape.

- The input spans the channel axis: input and output carry the same channels (either
  direction); the target's entry for that axis is 1, the input's own size read at run
  time, or the old size as a constant (rewritten to the new size).
- The input has size 1 there (or lacks the axis): the output's copies along that axis are
  all the same tensor, so the channels *arise* here without weights (``repeat_kv`` of
  grouped-query attention, growing the number of query heads per key/value head). The
  target's entry must be the old size as a constant; it is rewritten, the input is not
  tracked.

A constant entry is rewritten in the node input that stores it; when that store is
shared, only with other Expand nodes (``repeat_kv`` of keys and values reads one
target shape).
"""

from __future__ import annotations

import onnx_ir as ir

from onnxgrow.graph import dim_at, rank_of
from onnxgrow.widening.context import GroupContext, Known
from onnxgrow.widening.rules.registry import rule
from onnxgrow.widening.rules.shape_values import Const, DimOf, Entry, entries, rewrite_entry


def _channel_entry(node: ir.Node, axis: int) -> Entry | str:
    """The target shape's entry aligned with negative ``axis``, or why it cannot be found."""
    target = entries(node.inputs[1], (node, 1))
    if target is None:
        return "its target shape is computed at run time in a way onnxgrow cannot follow"
    if len(target) < -axis:
        return ""  # the target does not reach the axis: the input's size is kept
    return target[axis]


@rule("Expand")
class ExpandRule:
    """Expand carries the channels, or creates them from a size-1 axis."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        x, y = node.inputs[0], node.outputs[0]
        assert x is not None
        if node.inputs[1] in known:
            ctx.refuse(node, "the channels reach the target shape")
        embedding = known[x] if x in known else known[y]
        rank = rank_of(y)
        old = embedding.layout.old_size(ctx.width)
        size = dim_at(x, embedding.axis)
        broadcasts = (rank_of(x) or 0) < -embedding.axis or (size == 1 and old != 1)
        entry = _channel_entry(node, embedding.axis)
        if isinstance(entry, str) and entry:
            ctx.refuse(node, entry)
        if broadcasts:
            if x in known:
                ctx.refuse(node, "the channels reach an axis of size 1 that it broadcasts")
            if not (isinstance(entry, Const) and entry.value == old):
                ctx.refuse(node, "the entry of its target shape that creates the channels is not a constant")
            if _shared_elsewhere(node, entry):
                ctx.refuse(node, "its target shape is computed by nodes that other nodes use as well")
        else:
            fits = (entry == "" or (isinstance(entry, Const) and entry.value in (1, old))
                    or (isinstance(entry, DimOf) and entry.value is x and entry.axis == embedding.axis))
            if not fits:
                ctx.refuse(node, "the channel entry of its target shape would not follow the widening")
            ctx.track(x, embedding.with_axis(embedding.axis, rank_of(x)), node)
        ctx.track(y, embedding.with_axis(embedding.axis, rank), node)

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        embedding = known[node.outputs[0]]
        old, new = embedding.layout.old_size(ctx.width), embedding.layout.new_size(ctx.channel_map.q)
        entry = _channel_entry(node, embedding.axis)
        if not isinstance(entry, Const) or entry.value != old or old == new:
            return
        rewrite_entry(ctx, entry, new)  # a store shared with another Expand is then already new


def _shared_elsewhere(node: ir.Node, entry: Const) -> bool:
    """True when the store of ``entry`` also reaches nodes other than Expands."""
    values = [n.outputs[0] for n in entry.path] + [node.inputs[1]]
    return any(use.node.op_type != "Expand" and use.node not in entry.path
               for value in values if value is not None for use in value.uses())
