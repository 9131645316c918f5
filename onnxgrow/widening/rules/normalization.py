"""Normalisations.

- BatchNormalization, InstanceNormalization: per-channel statistics over the other
  axes; they carry the channel axis (1) and their per-channel inputs are gathered.
- LayerNormalization, RMSNormalization over axes that do not include the channels:
  plain carriers. Over the channels: the mean and variance are unchanged only when
  every unit is copied the same number of times (``q = k·n``) and no fresh unit is
  added, so the group requires uniform duplication; scale and bias are gathered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx_ir as ir

from onnxgrow.constants import find_constant
from onnxgrow.graph import const_shape, rank_of
from onnxgrow.widening.layout import Channel
from onnxgrow.widening.rules.common import broadcast_axis, gather
from onnxgrow.widening.rules.registry import Known, rule

if TYPE_CHECKING:
    from onnxgrow.widening.planner import GroupContext


def _carry(ctx: GroupContext, node: ir.Node, known: Known, rank: int | None) -> None:
    embedding = next(iter(known.values()))
    for out in node.outputs[1:]:
        if out.uses() or out.is_graph_output():
            ctx.refuse(node, f"its extra output {out.name!r} depends on the channels")
    x = node.inputs[0]
    assert x is not None
    ctx.track(x, embedding.with_axis(embedding.axis, rank), node)
    ctx.track(node.outputs[0], embedding.with_axis(embedding.axis, rank), node)


@rule("BatchNormalization", "InstanceNormalization")
class ChannelNormRule:
    """Per-channel normalisation on axis 1: scale, bias (and BN's mean, var) gathered."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        embedding = next(iter(known.values()))
        rank = embedding.rank or rank_of(node.inputs[0]) or rank_of(node.outputs[0])
        if rank is None or rank + embedding.axis != 1:
            ctx.refuse(node, f"{node.op_type} normalises per channel on axis 1, not on the widened axis")
        for param in node.inputs[1:]:
            if param is not None and find_constant(param) is None:
                ctx.refuse(node, f"its parameter {param.name!r} is computed at run time")
        _carry(ctx, node, known, rank)

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        idx = ctx.index(node.outputs[0])
        for i in range(1, len(node.inputs)):
            if node.inputs[i] is not None:
                ctx.edit(node, i, lambda a: gather(a, 0, idx))


def _normalized_axis(node: ir.Node, rank: int | None) -> int | None:
    """The first normalised axis, counted from the end (negative), or None if unknown."""
    axis = node.attributes.get_int("axis", -1)
    if axis < 0:
        return axis
    return None if rank is None else axis - rank


@rule("LayerNormalization", "RMSNormalization")
class LayerNormRule:
    """Normalisation over the trailing axes from ``axis``."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        embedding = next(iter(known.values()))
        rank = embedding.rank or rank_of(node.inputs[0])
        first = _normalized_axis(node, rank)
        if first is None:
            ctx.refuse(node, "its normalised axes are unknown (no rank)")
        if embedding.axis >= first:
            if not all(isinstance(s, Channel) for s in embedding.layout.segments):
                ctx.refuse(node, "it normalises over channels of which only some are widened")
            ctx.require_uniform(node, f"{node.op_type} normalising over the widened axis")
            for param in node.inputs[1:]:
                if param is not None and find_constant(param) is None:
                    ctx.refuse(node, f"its parameter {param.name!r} is computed at run time")
        _carry(ctx, node, known, rank)

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        embedding = known[node.outputs[0]]
        old = embedding.layout.old_size(ctx.width)
        idx = ctx.index(node.outputs[0])
        for i in range(1, len(node.inputs)):
            shape = const_shape(node.inputs[i]) if node.inputs[i] is not None else None
            if shape is None:
                continue
            axis = broadcast_axis(shape, embedding.axis)
            if axis is not None and shape[axis] == old and old > 1:
                ctx.edit(node, i, lambda a, ax=axis: gather(a, ax, idx))
