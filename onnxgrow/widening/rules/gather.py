"""Gather: an embedding lookup produces channels; gathering another axis carries them.

- Embedding lookup: ``Gather(table, ids)`` with a constant 2-D ``table [V, D]`` on axis 0
  (``nn.Embedding``, token and position embeddings) produces ``D`` channels on the last
  axis of its output. Widening ``D`` copies table columns (``produce`` along axis 1),
  exactly like the rows of a Gemm weight; the indices are untouched.
- Carrier: gathering a tracked tensor along another axis (``x[:, 0]``, the CLS token)
  keeps the channels; the channel axis shifts by ``rank(indices) - 1`` when the gathered
  axis comes after it. Gathering along the channel axis is refused.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxgrow.graph import const_shape, rank_of
from onnxgrow.widening.context import GroupContext, Known
from onnxgrow.widening.layout import Embedding
from onnxgrow.widening.rules.common import producing
from onnxgrow.widening.rules.registry import Producer, producer, rule


@producer("Gather")
def describe_embedding(node: ir.Node) -> Producer | str | None:
    """An embedding lookup as a layer; None for a Gather that is no lookup in a constant table."""
    table = const_shape(node.inputs[0])
    if table is None or node.attributes.get_int("axis", 0) != 0:
        return None
    if len(table) != 2:
        return f"its table has rank {len(table)}; only 2-D embedding tables [vocabulary, width] are widened"
    return Producer(node, table[1], Embedding(-1, rank_of(node.outputs[0])), node.inputs[0])  # type: ignore[arg-type]


@rule("Gather")
class GatherRule:
    """Embedding lookups produce channels; other gathers carry them along another axis."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        data, indices, y = node.inputs[0], node.inputs[1], node.outputs[0]
        if indices in known:
            ctx.refuse(node, "the channels reach Gather's indices")
        if data not in known:
            self._propagate_lookup(ctx, node, known)
            return
        embedding = known[data]
        rank = embedding.rank or rank_of(data)
        index_rank = rank_of(indices)
        if rank is None or index_rank is None:
            ctx.refuse(node, "the rank of its data or indices is unknown")
        axis = node.attributes.get_int("axis", 0) % rank
        t = rank + embedding.axis
        if axis == t:
            ctx.refuse(node, "it gathers along the widened axis")
        new_axis = embedding.axis if axis < t else embedding.axis - (index_rank - 1)
        ctx.track(y, embedding.with_axis(new_axis, rank - 1 + index_rank), node)

    @staticmethod
    def _propagate_lookup(ctx: GroupContext, node: ir.Node, known: Known) -> None:
        found = describe_embedding(node)
        if found is None:
            ctx.refuse(node, "the channels reach a Gather from a tensor computed at run time")
        if isinstance(found, str):
            ctx.refuse(node, found)
        if known[node.outputs[0]].axis != -1 or not known[node.outputs[0]].layout.is_plain or found.width != ctx.width:
            ctx.refuse(node, "its embedding width does not match the group")
        ctx.mark_producer(node)

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        """A lookup table gets its columns copied; a carried gather needs nothing."""
        y = node.outputs[0]
        if node.inputs[0] not in known and y in known:
            idx = ctx.index(y)
            ctx.edit(node, 0, producing(1, idx, ctx.rng))
