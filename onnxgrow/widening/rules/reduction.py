"""Reductions and softmax.

- A reduction over other axes carries the channels (the axis index shifts when
  ``keepdims=0`` removes axes after it).
- ReduceMean over the channels is unchanged when every unit is copied equally often
  (uniform duplication, as for LayerNormalization); ReduceMax/ReduceMin likewise need
  no fresh units, which uniform duplication guarantees. The result no longer carries
  the channels. Any other reduction over the channels (sum, norms, product) is refused.
- Softmax/LogSoftmax/Hardmax over the channels is refused: duplicated units change the
  normaliser; except Softmax/LogSoftmax over grown output classes (``--new-outputs``),
  whose new logits are then set so they do not move the old probabilities. Over other
  axes they carry the channels.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxgrow.widening.context import GroupContext, Known, any_embedding, embedding_rank
from onnxgrow.widening.layout import Channel
from onnxgrow.widening.rules.registry import rule
from onnxgrow.widening.rules.shape_values import constant_ints

_UNIFORM_OK = {"ReduceMean", "ReduceMax", "ReduceMin"}


def _reduced_axes(node: ir.Node, rank: int | None) -> list[int] | None:
    """Reduced axes counted from the end; None when they cannot be known."""
    axes = node.attributes.get_ints("axes", None)
    if axes is None and len(node.inputs) > 1 and node.inputs[1] is not None:
        axes = constant_ints(node, 1)
        if axes is None:
            return None
    if not axes:
        if node.attributes.get_int("noop_with_empty_axes", 0):
            return []
        if rank is None:
            return None
        axes = list(range(rank))
    if any(a >= 0 for a in axes) and rank is None:
        return None
    return sorted(a - rank if a >= 0 else a for a in axes)  # type: ignore[operator]


@rule("ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2",
      "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")
class ReduceRule:
    """Reduce over axes other than the channels (or mean/max/min over them, uniformly)."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        x, y = node.inputs[0], node.outputs[0]
        embedding = ctx.forward_only(node, known, "a reduction")
        rank = embedding_rank(embedding, x)
        axes = _reduced_axes(node, rank)
        if axes is None:
            ctx.refuse(node, "its reduced axes are unknown")
        keep = node.attributes.get_int("keepdims", 1)
        if embedding.axis in axes:
            if node.op_type not in _UNIFORM_OK:
                ctx.refuse(node, f"{node.op_type} over the widened axis changes with duplicated units")
            if not all(isinstance(s, Channel) for s in embedding.layout.segments):
                ctx.refuse(node, "it reduces over channels of which only some are widened")
            ctx.require_uniform(node, f"{node.op_type} over the widened axis")
            return
        shift = 0 if keep else sum(1 for a in axes if a > embedding.axis)
        new_rank = None if rank is None else (rank if keep else rank - len(axes))
        ctx.track(y, embedding.with_axis(embedding.axis + shift, new_rank), node)

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        """Nothing to change."""


@rule("Softmax", "LogSoftmax", "Hardmax")
class SoftmaxRule:
    """Softmax over another axis carries the channels; over them it is refused."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        x, y = node.inputs[0], node.outputs[0]
        embedding = any_embedding(known)
        rank = embedding_rank(embedding, x, y)
        opset = (node.graph.opset_imports.get("", 13) if node.graph is not None else 13)
        axis = ctx.negative_axis(node, node.attributes.get_int("axis", -1 if opset >= 13 else 1), rank)
        covers = embedding.axis >= axis if opset < 13 else embedding.axis == axis
        if covers and ctx.new_outputs and node.op_type != "Hardmax":
            ctx.mark_normaliser(node)  # new classes: see onnxgrow.widening.new_outputs
        elif covers:
            hint = (" (to add output classes to the last layer, pass --new-outputs)"
                    if y.is_graph_output() and node.op_type != "Hardmax" else "")
            ctx.refuse(node, f"{node.op_type} over the widened axis changes its normalisation{hint}")
        ctx.carry(node, embedding, (x, y), rank)

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        """Nothing to change."""
