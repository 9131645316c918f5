"""Normalisations.

- BatchNormalization, InstanceNormalization: per-channel statistics over the other
  axes; they carry the channel axis (1) and their per-channel inputs are gathered.
- LayerNormalization, RMSNormalization over axes that do not include the channels:
  plain carriers. Over the channels: the mean and variance are unchanged only when
  every unit is copied the same number of times (``q = k·n``) and no fresh unit is
  added, so the group requires uniform duplication; scale and bias are gathered.
- LRN divides channel ``c`` (axis 1) by ``(bias + alpha/size · Σ x²)^beta`` over the ``size``
  channels around ``c``. Widened channels on axis 1 are refused: a copy appended after the
  old channels has other neighbours than its unit, and the last old channels gain new
  neighbours, so copies (net2wider) and new random units (zero-pad) both change the sums
  of squares. Widened channels on another axis (a spatial one) are carried: LRN acts on
  each of their positions alike.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxgrow.widening.context import GroupContext, Known, any_embedding, embedding_rank
from onnxgrow.widening.layout import Channel, Embedding
from onnxgrow.widening.rules.common import gather_per_channel, gathering
from onnxgrow.widening.rules.registry import rule


def _carry(ctx: GroupContext, node: ir.Node, embedding: Embedding, rank: int | None) -> None:
    """Input 0 and output 0 carry the channels; the extra outputs (BN's running statistics,
    LayerNorm's mean and inverse deviation) must be unused."""
    for out in node.outputs[1:]:
        if out.uses() or out.is_graph_output():
            ctx.refuse(node, f"its extra output {out.name!r} depends on the channels")
    ctx.carry(node, embedding, (node.inputs[0], node.outputs[0]), rank)


@rule("BatchNormalization", "InstanceNormalization")
class ChannelNormRule:
    """Per-channel normalisation on axis 1: scale, bias (and BN's mean, var) gathered."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        embedding = any_embedding(known)
        rank = embedding_rank(embedding, node.inputs[0], node.outputs[0])
        if rank is None or rank + embedding.axis != 1:
            ctx.refuse(node, f"{node.op_type} normalises per channel on axis 1, not on the widened axis")
        ctx.require_constant(node, node.inputs[1:])
        _carry(ctx, node, embedding, rank)

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        idx = ctx.index(node.outputs[0])
        for i in range(1, len(node.inputs)):
            if node.inputs[i] is not None:
                ctx.edit(node, i, gathering(0, idx))


@rule("LayerNormalization", "RMSNormalization")
class LayerNormRule:
    """Normalisation over the trailing axes from ``axis``."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        embedding = any_embedding(known)
        rank = embedding_rank(embedding, node.inputs[0])
        first = ctx.negative_axis(node, node.attributes.get_int("axis", -1), rank)
        if embedding.axis >= first:
            if not all(isinstance(s, Channel) for s in embedding.layout.segments):
                ctx.refuse(node, "it normalises over channels of which only some are widened")
            ctx.require_uniform(node, f"{node.op_type} normalising over the widened axis")
            ctx.require_constant(node, node.inputs[1:])
        _carry(ctx, node, embedding, rank)

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        """Scale and bias that span the channels are gathered with the map."""
        gather_per_channel(ctx, node, node.outputs[0], range(1, len(node.inputs)))


@rule("LRN")
class LocalResponseNormRule:
    """LRN normalises across axis 1: refused when the channels are there, carried otherwise."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        embedding = any_embedding(known)
        rank = embedding_rank(embedding, node.inputs[0], node.outputs[0])
        if rank is None or rank + embedding.axis == 1:
            size = node.attributes.get_int("size", 0)
            ctx.refuse(node, f"LRN divides each channel by the squares of its {size} neighbouring channels; a "
                             "copy appended after the old channels has other neighbours than its unit and the "
                             "last old channels gain new ones, so neither copies (net2wider) nor new random "
                             "units (zero-pad) keep its output")
        ctx.carry(node, embedding, (node.inputs[0], node.outputs[0]), rank)

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        """Nothing to change: the channels lie on an axis LRN acts on elementwise."""
