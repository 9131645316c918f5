"""Conv and ConvTranspose (1-D/2-D/3-D).

Conv: ``W [M, C/group, k...]``; ConvTranspose: ``W [C, M/group, k...]``; bias ``[M]``.

- Producer: output channels M gathered (filters and bias).
- Contractor: input channels C of the filters gathered and scaled by the shares.
- Grouped (``group = G``, not depthwise): group ``g`` reads input channels
  ``[g·C/G, (g+1)·C/G)`` and writes output channels ``[g·M/G, (g+1)·M/G)``. Its channels are
  a block map (docs/design.md §1): as a producer, the output's layout is cut into its G groups
  (:func:`cuts.cut`), which must be alike, so each group grows alike and copies stay in their
  unit's group; as a contractor, the input's layout likewise, and each group's filter rows
  are divided within the group. A layout that is not yet in blocks of the groups asks for
  finer blocks; a new width the group count does not divide is then refused, naming the node.
  ``group`` stays G.
- Depthwise (``G = C``, one input channel per group, ``m`` outputs each): each output channel
  reads one input channel, so the op *carries* the channels: output channel ``c·m + r``
  follows input channel ``c``; filters and bias are gathered with the output's map and
  ``group`` becomes the new C.

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
from onnxgrow.widening.layout import AxisIndex, AxisLayout, Embedding
from onnxgrow.widening.rules.common import contracting, gathering, producing, uniform_fill, weight_problem
from onnxgrow.widening.rules.cuts import cut
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


class _Shape:
    """The channel counts of a Conv or ConvTranspose and the axes of its filters."""

    def __init__(self, node: ir.Node, w: tuple[int, ...]) -> None:
        self.group = node.attributes.get_int("group", 1)
        self.transposed = node.op_type == "ConvTranspose"
        self.out_axis, self.in_axis = (1, 0) if self.transposed else (0, 1)
        self.inputs = w[0] if self.transposed else w[1] * self.group
        self.outputs = w[1] * self.group if self.transposed else w[0]

    @property
    def depthwise(self) -> bool:
        """One input channel per group (and a whole number of outputs per group)."""
        return self.group > 1 and self.inputs == self.group and self.outputs % self.group == 0


@producer("Conv", "ConvTranspose")
def describe_conv(node: ir.Node) -> Producer | str:
    w = _weight_shape(node)
    if w is None:
        return weight_problem(node.inputs[1], "filter tensor")
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    problem = _bias_problem(node)
    if problem:
        return problem
    shape = _Shape(node, w)
    if shape.depthwise:
        return (f"depthwise convolution (group={shape.group}) ties its output channels to its input "
                "channels; widen the layer that feeds it")
    return Producer(node, shape.outputs, _channel_embedding(len(w)), node.inputs[1], bias)  # type: ignore[arg-type]


def _groups(ctx: GroupContext, node: ir.Node, layout: AxisLayout, group: int, what: str) -> AxisLayout:
    """The layout of one of the ``group`` groups of a grouped conv's ``what`` channels (all
    alike); asks for finer blocks or refuses when they are not."""
    size = layout.old_size(ctx.width) // group
    parts = cut(layout, ctx.width, [size] * group)
    reason = (f"grouped convolution (group={group}) {what} in {group} groups of {size} channels, "
              "and a copy must stay in its unit's group")
    if isinstance(parts, int):
        ctx.require_blocks(node, parts, reason)
    if isinstance(parts, str):
        ctx.refuse(node, f"{reason}: {parts}")
    assert isinstance(parts, list)
    if len(set(parts)) > 1:
        ctx.refuse(node, f"{reason}: the widened channels would make its groups unequal")
    return parts[0]


@rule("Conv", "ConvTranspose")
class ConvRule:
    """Conv and ConvTranspose produce and contract channels (in blocks when grouped) or carry
    them (depthwise)."""

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
                ctx.refuse(node, f"the channels reach a spatial or batch axis of {node.op_type}")
        shape = _Shape(node, w)
        if shape.depthwise:
            self._carry(ctx, node, known, shape, channel)
            return
        if y in known:
            if known[y].layout.old_size(ctx.width) != shape.outputs:
                ctx.refuse(node, "output channels do not match the group")
            if shape.group > 1:
                _groups(ctx, node, known[y].layout, shape.group, "writes its output")
            ctx.mark_producer(node)
        if x in known:
            if shape.group > 1:
                _groups(ctx, node, known[x].layout, shape.group, "reads its input")
            ctx.mark_contractor(node)

    @staticmethod
    def _carry(ctx: GroupContext, node: ir.Node, known: Known, shape: _Shape, channel: Embedding) -> None:
        x, y = node.inputs[0], node.outputs[0]
        multiplier = shape.outputs // shape.group
        if x in known:
            ctx.track(y, channel.with_layout(known[x].layout.scaled(multiplier)), node)
        elif y in known:
            if multiplier != 1:
                ctx.refuse(node, "cannot trace channels backward through a depthwise conv with multiplier > 1")
            assert x is not None
            ctx.track(x, channel.with_layout(known[y].layout), node)

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        x, y = node.inputs[0], node.outputs[0]
        w = _weight_shape(node)
        assert w is not None
        shape = _Shape(node, w)
        if shape.depthwise:
            idx = ctx.index(y)
            _rewrite_bias(ctx, node, idx)
            ctx.edit(node, 1, gathering(0, ctx.index(x) if shape.transposed else idx))
            node.attributes["group"] = ir.AttrInt64("group", len(ctx.index(x)))
            return
        if y in known:
            idx = ctx.index(y)
            _rewrite_bias(ctx, node, idx)
            if shape.transposed and shape.group > 1:  # W's output axis is one group's
                idx = _groups(ctx, node, known[y].layout, shape.group, "writes its output").expand(ctx.channel_map)
            ctx.edit(node, 1, producing(shape.out_axis, idx, ctx.rng))
        if x in known:
            idx = ctx.index(x)
            if not shape.transposed and shape.group > 1:  # W's input axis is one group's
                idx = _groups(ctx, node, known[x].layout, shape.group, "reads its input").expand(ctx.channel_map)
            ctx.edit(node, 1, contracting(shape.in_axis, idx, ctx.channel_map.init, ctx.rng))


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
