"""Pooling acts on spatial axes per channel, so it carries the channel axis (axis 1).

MaxPool's optional Indices output encodes flat positions including the channel and is
refused when used.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxgrow.widening.context import GroupContext, Known, any_embedding, embedding_rank
from onnxgrow.widening.rules.registry import rule


@rule("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
class PoolRule:
    """``y[:, c] = pool(x[:, c])``."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        x, y = node.inputs[0], node.outputs[0]
        embedding = any_embedding(known)
        rank = embedding_rank(embedding, x, y)
        if rank is None or rank + embedding.axis != 1:
            ctx.refuse(node, "pooling carries the channels only on axis 1")
        if len(node.outputs) > 1 and node.outputs[1].uses():
            ctx.refuse(node, "MaxPool indices depend on the number of channels")
        ctx.carry(node, embedding, (x, y), rank)

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        """Nothing to change."""
