"""Pad carries the channels when the channel axis gets no padding.

Padding other axes (tf2onnx's ZeroPadding2D before a stride-2 conv pads H and W) copies,
reflects or fills values within each channel, so ``y[..., c, ...]`` depends on
``x[..., c, ...]`` alone, in every mode. Padding the channel axis would add channels of
its own and is refused. The pads are the ``pads`` attribute before opset 11 and the
``pads`` input after, with an optional ``axes`` input (the axes the pads apply to) from
opset 18; unknown pads or axes are refused.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxgrow.widening.context import GroupContext, Known, any_embedding, embedding_rank
from onnxgrow.widening.rules.registry import rule
from onnxgrow.widening.rules.shape_values import constant_ints


def _pads(node: ir.Node) -> list[int] | None:
    """The pads, ``[begin_0, ..., begin_k, end_0, ..., end_k]``."""
    attribute = node.attributes.get_ints("pads", None)
    if attribute is not None:
        return list(attribute)
    return constant_ints(node, 1)


def _axes(node: ir.Node, rank: int) -> list[int] | None:
    """The axes the pads apply to (all axes without an ``axes`` input), non-negative."""
    if len(node.inputs) <= 3 or node.inputs[3] is None:
        return list(range(rank))
    axes = constant_ints(node, 3)
    return None if axes is None else [a % rank for a in axes]


@rule("Pad")
class PadRule:
    """``y = pad(x)`` with zero pads on the channel axis: ``y[:, c] = pad(x[:, c])``."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        x, y = node.inputs[0], node.outputs[0]
        embedding = any_embedding(known)
        rank = embedding_rank(embedding, x, y)
        pads = _pads(node)
        if rank is None or pads is None:
            ctx.refuse(node, "its pads or input rank are unknown")
        axes = _axes(node, rank)
        if axes is None or len(pads) != 2 * len(axes):
            ctx.refuse(node, "its pad axes are unknown")
        channel = rank + embedding.axis
        if channel in axes:
            k = axes.index(channel)
            if pads[k] or pads[k + len(axes)]:
                ctx.refuse(node, f"it pads the widened axis ({pads[k]} before, {pads[k + len(axes)]} after)")
        ctx.carry(node, embedding, (x, y), rank)

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        """Nothing to change: the pads do not depend on the number of channels."""
