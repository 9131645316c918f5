"""Conv (1-D/2-D/3-D): ``W [M, C/group, k...]``, bias ``[M]``.

- group 1, producer: output channels M gathered (filters and bias).
- group 1, contractor: input channels C of the filters gathered and scaled by the shares.
- depthwise (group = C, M = m·C): each output channel reads one input channel, so the op
  *carries* the channels: output channel ``c·m + r`` follows input channel ``c``; filters
  and bias are gathered with the output's map and ``group`` becomes the new C.
- other grouped convs mix channels within groups: refused.

The bias may also be a scalar broadcast at run time to the number of filters (the dynamo
exporter without its optimizer writes ``Expand(CastLike(0.0, x), Shape(W)[:1])`` for
``bias=False``): it becomes a constant of the new length with that value.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxgrow.constants import find_constant
from onnxgrow.graph import const_shape
from onnxgrow.names import weight_prefix
from onnxgrow.widening.context import GroupContext, Known
from onnxgrow.widening.layout import AxisIndex, Embedding
from onnxgrow.widening.rules.common import contracting, gathering, producing, uniform_fill, weight_problem
from onnxgrow.widening.rules.registry import Producer, producer, rule


def _weight_shape(node: ir.Node) -> tuple[int, ...] | None:
    return const_shape(node.inputs[1])


def _channel_embedding(rank: int) -> Embedding:
    return Embedding(-(rank - 1), rank)


def _bias_problem(node: ir.Node) -> str:
    """Why the bias cannot be rewritten ('' when it is absent, constant or a uniform fill)."""
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    if uniform_fill(bias) is not None:
        return ""
    return weight_problem(bias, "bias")


def _is_depthwise(node: ir.Node, w: tuple[int, ...]) -> bool:
    group = node.attributes.get_int("group", 1)
    return group > 1 and w[1] == 1 and w[0] % group == 0


@producer("Conv")
def describe_conv(node: ir.Node) -> Producer | str:
    w = _weight_shape(node)
    if w is None:
        return weight_problem(node.inputs[1], "filter tensor")
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    problem = _bias_problem(node)
    if problem:
        return problem
    group = node.attributes.get_int("group", 1)
    if group != 1:
        kind = "depthwise" if _is_depthwise(node, w) else "grouped"
        return (f"{kind} convolution (group={group}) ties its output channels to its input "
                "channels; widen the layer that feeds it")
    return Producer(node, w[0], _channel_embedding(len(w)), node.inputs[1], bias)  # type: ignore[arg-type]


@rule("Conv")
class ConvRule:
    """Conv produces and contracts channels (group 1) or carries them (depthwise)."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        x, y = node.inputs[0], node.outputs[0]
        w = _weight_shape(node)
        if w is None:
            ctx.refuse(node, weight_problem(node.inputs[1], "filter tensor"))
        if any(v in known for v in node.inputs[1:]):
            ctx.refuse(node, "the channels would reach the filters or bias")
        if y in known and _bias_problem(node):
            ctx.refuse(node, _bias_problem(node))
        channel = _channel_embedding(len(w))
        for v in (x, y):
            if v in known and known[v].axis != channel.axis:
                ctx.refuse(node, "the channels reach a spatial or batch axis of Conv")
        group = node.attributes.get_int("group", 1)
        if group == 1:
            if y in known:
                if not known[y].layout.is_plain or w[0] != ctx.width:
                    ctx.refuse(node, "output channels do not match the group")
                ctx.mark_producer(node)
            if x in known:
                ctx.mark_contractor(node)
            return
        if not _is_depthwise(node, w):
            ctx.refuse(node, f"grouped convolution (group={group}) mixes channels within groups")
        multiplier = w[0] // group
        if x in known:
            ctx.track(y, channel.with_layout(known[x].layout.scaled(multiplier)), node)
        elif y in known:
            if multiplier != 1:
                ctx.refuse(node, "cannot trace channels backward through a depthwise conv with multiplier > 1")
            assert x is not None
            ctx.track(x, channel.with_layout(known[y].layout), node)

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        x, y = node.inputs[0], node.outputs[0]
        if node.attributes.get_int("group", 1) == 1:
            if y in known:
                idx = ctx.index(y)
                _rewrite_bias(ctx, node, idx)
                ctx.edit(node, 1, producing(0, idx, ctx.rng))
            if x in known:
                idx = ctx.index(x)
                ctx.edit(node, 1, contracting(1, idx, ctx.channel_map.init, ctx.rng))
            return
        idx = ctx.index(y)
        _rewrite_bias(ctx, node, idx)
        ctx.edit(node, 1, gathering(0, idx))
        node.attributes["group"] = ir.AttrInt64("group", len(ctx.index(x)))


def _rewrite_bias(ctx: GroupContext, node: ir.Node, idx: AxisIndex) -> None:
    """Gather a constant bias; a uniform fill becomes a constant of the new length.

    Done before the filters are edited, so a filter tensor that only the fill's
    ``Shape`` also read is then rewritten in place under its own name.
    """
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    if bias is None:
        return
    if const_shape(bias) is not None:
        ctx.edit(node, 2, gathering(0, idx))
        return
    fill = uniform_fill(bias)
    assert fill is not None and bias.dtype is not None
    weight = find_constant(node.inputs[1])
    name = f"{weight_prefix(weight.root.name if weight else None) or node.name or 'conv'}.bias"
    old = ctx.tracked[node.outputs[0]].layout.old_size(ctx.width)
    ctx.replace_with_constant(node, 2, np.full(len(idx), fill, dtype=bias.dtype.numpy()), name, (old,))
