"""Pooling acts on spatial axes per channel, so it carries the channel axis (axis 1).

MaxPool's optional Indices output encodes flat positions including the channel and is
refused when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import onnx_ir as ir

from onnxgrow.graph import rank_of
from onnxgrow.widening.rules.registry import Known, rule

if TYPE_CHECKING:
    from onnxgrow.widening.planner import GroupContext


@rule("MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
class PoolRule:
    """``y[:, c] = pool(x[:, c])``."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        x, y = node.inputs[0], node.outputs[0]
        embedding = next(iter(known.values()))
        rank = embedding.rank or rank_of(x) or rank_of(y)
        if rank is None or rank + embedding.axis != 1:
            ctx.refuse(node, "pooling carries the channels only on axis 1")
        if len(node.outputs) > 1 and node.outputs[1].uses():
            ctx.refuse(node, "MaxPool indices depend on the number of channels")
        assert x is not None
        ctx.track(x, embedding.with_axis(embedding.axis, rank), node)
        ctx.track(y, embedding.with_axis(embedding.axis, rank), node)

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        """Nothing to change."""
