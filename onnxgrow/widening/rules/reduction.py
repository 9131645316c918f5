"""Reductions and softmax.

- A reduction over other axes carries the channels (the axis index shifts when
  ``keepdims=0`` removes axes after it).
- ReduceMean over the channels is unchanged when every unit is copied equally often
  (uniform duplication, as for LayerNormalization); ReduceMax/ReduceMin likewise need
  no fresh units, which uniform duplication guarantees. The result no longer carries
  the channels.
- ReduceSum over the channels whose every use divides it by the number of positions summed
  (``Div`` by that count, or ``Mul`` by its inverse, a constant) is a mean, as jax2tf writes
  LayerNorm's mean and variance: under uniform duplication (``q = k·n``) the sum is ``k``
  times larger and so is the count, which is rewritten (``n·r → q·r``). Any other
  reduction over the channels (a sum used otherwise, such as a decomposed softmax's
  normaliser; norms; product) changes with duplicated units and is refused.
- Softmax/LogSoftmax/Hardmax over the channels is refused: duplicated units change the
  normaliser; except Softmax/LogSoftmax over grown output classes (``--new-outputs``),
  whose new logits are then set so they do not move the old probabilities. Over other
  axes they carry the channels.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from onnxgrow.constants import find_constant
from onnxgrow.graph import dim_at
from onnxgrow.widening.context import GroupContext, Known, any_embedding, embedding_rank
from onnxgrow.widening.layout import Channel, Embedding
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
            mean = node.op_type == "ReduceSum" and _divisions(node, _count(ctx, node, embedding, axes)) is not None
            if node.op_type not in _UNIFORM_OK and not mean:
                ctx.refuse(node, f"{node.op_type} over the widened axis changes with duplicated units (only a sum "
                                 "that every use divides by the count it sums, a mean, is kept)")
            if not all(isinstance(s, Channel) for s in embedding.layout.segments):
                ctx.refuse(node, "it reduces over channels of which only some are widened")
            what = "a mean" if mean else node.op_type
            ctx.require_uniform(node, f"{what} over the widened axis")
            return
        shift = 0 if keep else sum(1 for a in axes if a > embedding.axis)
        new_rank = None if rank is None else (rank if keep else rank - len(axes))
        ctx.track(y, embedding.with_axis(embedding.axis + shift, new_rank), node)

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        """The count a sum over the channels is divided by becomes the new count."""
        x = node.inputs[0]
        embedding = known[x]
        axes = _reduced_axes(node, embedding_rank(embedding, x)) or []
        if node.op_type != "ReduceSum" or embedding.axis not in axes:
            return
        count = _count(ctx, node, embedding, axes)
        divisions = _divisions(node, count)
        assert count is not None and divisions is not None
        new = count // embedding.layout.old_size(ctx.width) * embedding.layout.new_size(ctx.channel_map.q)
        for user, index in divisions:
            ctx.edit(user, index, _filled(new if user.op_type == "Div" else 1.0 / new))


def _filled(value: float) -> Callable[[np.ndarray], np.ndarray]:
    """An edit that sets every element of a constant to ``value``."""
    return lambda array: np.full_like(array, value)


def _count(ctx: GroupContext, node: ir.Node, embedding: Embedding, axes: list[int]) -> int | None:
    """The number of positions a reduction over ``axes`` sums (None when an axis is dynamic)."""
    sizes = [embedding.layout.old_size(ctx.width) if a == embedding.axis else dim_at(node.inputs[0], a)
             for a in axes]
    return math.prod(sizes) if all(isinstance(s, int) for s in sizes) else None  # type: ignore[arg-type]


def _divisions(node: ir.Node, count: int | None) -> list[tuple[ir.Node, int]] | None:
    """The (node, input index) of the constant count or inverse count that every use of the
    sum divides it by (``Div(sum, count)``, ``Mul(sum, 1/count)``); None when some use does not."""
    y = node.outputs[0]
    if count is None or y.is_graph_output() or not y.uses():
        return None
    found = []
    for use in y.uses():
        user, other = use.node, 1 - use.idx
        if user.op_type not in ("Div", "Mul") or user.domain not in ("", "ai.onnx") or len(user.inputs) != 2:
            return None
        if user.op_type == "Div" and use.idx != 0:
            return None
        ref = find_constant(user.inputs[other])
        value = ref.array() if ref is not None else None
        wanted = count if user.op_type == "Div" else 1.0 / count
        if value is None or value.size != 1 or not np.isclose(float(value.reshape(-1)[0]), wanted, rtol=1e-6):
            return None
        found.append((user, other))
    return found


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
        if covers and ctx.classes is not None and node.op_type != "Hardmax":
            ctx.mark_normaliser(node)  # new classes: see onnxgrow.widening.new_outputs
        elif covers:
            hint = (" (to add output classes to the last layer, pass --new-outputs)"
                    if y.is_graph_output() and node.op_type != "Hardmax" else "")
            ctx.refuse(node, f"{node.op_type} over the widened axis changes its normalisation{hint}")
        ctx.carry(node, embedding, (x, y), rank)

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        """Nothing to change."""
