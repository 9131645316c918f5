"""Resize and Upsample: interpolation along the spatial axes, channel by channel.

With a scale of 1 along the channel axis (or an output size equal to the input's), every
coordinate transformation maps output channel ``c`` to input coordinate ``c`` exactly, and
every mode (nearest, linear, cubic; with or without antialias) reads that one channel at an
integer coordinate, so output channel ``c`` is input channel ``c``: the op carries the
channels, both ways (FPN upsampling, ``nn.Upsample``). Before the channel count changes:

- ``scales`` (Resize, or Upsample's input/attribute) must be a constant 1 for the channel axis;
- ``sizes`` must give the channel axis its own size: a constant (rewritten to the new size)
  or the input's size read at run time;
- ``tf_crop_and_resize`` must crop nothing along it (a constant ROI of 0 to 1 there);
- an ``axes`` attribute (opset 18) that leaves the channel axis out leaves it alone.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxgrow.constants import find_constant
from onnxgrow.graph import rank_of
from onnxgrow.widening.context import GroupContext, Known, any_embedding, embedding_rank
from onnxgrow.widening.rules.registry import rule
from onnxgrow.widening.rules.shape_values import Const, DimOf, Entry, entries, rewrite_entry, shared_path


def _input(node: ir.Node, index: int) -> ir.Value | None:
    return node.inputs[index] if len(node.inputs) > index else None


def _position(node: ir.Node, axis: int, rank: int) -> int | None:
    """The index of negative ``axis`` among the axes that scales/sizes/roi list (None: not listed)."""
    axes = node.attributes.get_ints("axes", None)
    if axes is None:
        return rank + axis
    listed = [a % rank for a in axes]
    return listed.index(rank + axis) if rank + axis in listed else None


def _size_entry(node: ir.Node, position: int) -> Entry | str:
    """The ``sizes`` entry of the channel axis, or why it cannot be followed."""
    found = entries(_input(node, 3), (node, 3))
    if found is None or position >= len(found):
        return "its output sizes are computed at run time in a way onnxgrow cannot follow"
    return found[position]


@rule("Resize", "Upsample")
class ResizeRule:
    """Input 0 and the output carry the channels; the channel axis keeps scale 1."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        x, y = node.inputs[0], node.outputs[0]
        if any(v in known for v in node.inputs[1:]):
            ctx.refuse(node, "the channels reach its ROI, scales or sizes")
        embedding = any_embedding(known)
        rank = embedding_rank(embedding, x, y)
        if rank is None:
            ctx.refuse(node, "its input rank is unknown")
        problem = self._problem(ctx, node, rank, embedding.axis, embedding.layout.old_size(ctx.width))
        if problem:
            ctx.refuse(node, problem)
        ctx.carry(node, embedding, (x, y), rank)

    @staticmethod
    def _problem(ctx: GroupContext, node: ir.Node, rank: int, axis: int, old: int) -> str:
        """Why the op would not map each channel to itself once widened ('' when it does)."""
        position = _position(node, axis, rank)
        if position is None:
            return ""
        x = node.inputs[0]
        if node.op_type == "Upsample":
            attribute = node.attributes.get_floats("scales", None)
            scales = list(attribute) if attribute is not None else None
            stored = None if scales is not None else find_constant(_input(node, 1))
        else:
            scales, stored = None, find_constant(_input(node, 2))
        if stored is not None and stored.array().size:
            scales = [float(s) for s in stored.array().reshape(-1)]
        if scales is not None and (position >= len(scales) or scales[position] != 1.0):
            return "it scales the channel axis"
        sizes = _input(node, 3) if node.op_type == "Resize" else None
        if scales is None and sizes is None:
            return "its scales are computed at run time"
        if sizes is not None and scales is None:
            entry = _size_entry(node, position)
            if isinstance(entry, str):
                return entry
            follows = x is not None and entry == DimOf(x, axis)
            if not follows and not (isinstance(entry, Const) and entry.value == old):
                return "its output size for the channel axis would not follow the widening"
            if isinstance(entry, Const) and shared_path(entry):
                return "its output sizes are computed by nodes that other nodes use as well"
        if node.attributes.get_string("coordinate_transformation_mode", "") == "tf_crop_and_resize":
            roi = find_constant(_input(node, 1))
            listed = len(scales) if scales is not None else rank
            values = roi.array().reshape(-1) if roi is not None else None
            if values is None or values[position] != 0 or values[listed + position] != 1:
                return "it crops the channel axis (tf_crop_and_resize)"
        return ""

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        """A constant output size for the channel axis becomes the new channel count."""
        embedding = known[node.outputs[0]]
        rank = embedding_rank(embedding, node.outputs[0]) or rank_of(node.inputs[0])
        assert rank is not None
        position = _position(node, embedding.axis, rank)
        if node.op_type != "Resize" or position is None or _input(node, 3) is None:
            return
        entry = _size_entry(node, position)
        new = embedding.layout.new_size(ctx.channel_map.q)
        if isinstance(entry, Const) and entry.value != new:
            rewrite_entry(ctx, entry, new)
