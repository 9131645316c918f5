"""Flatten and Reshape (DESIGN.md §3).

Both merge and split contiguous axes. Input and output dimensions are matched into
blocks of equal product. The block holding the channel axis decides:

- one axis on both sides: the channels stay, same layout;
- several input axes merged into one: the channels become ``Channel(outer, inner)``
  blocks of the merged axis (NCHW flattened: channel ``c`` owns ``[c·HW, (c+1)·HW)``);
- one merged axis split into several (the inverse, e.g. ``[N, C·H·W]`` back to
  ``[N, C, H, W]``): allowed when one output axis holds exactly the channels.

A Reshape's constant shape has the entry of the channel axis rewritten (old size →
new size); ``-1`` and ``0`` entries are kept. A shape computed at run time is accepted
only when its channel entry is a constant ``-1`` of a Concat.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from onnxgrow.constants import constant_array, find_constant
from onnxgrow.widen.layout import AxisLayout, Channel, Embedding
from onnxgrow.widen.rules.common import static_dims
from onnxgrow.widen.rules.registry import Known, rule

if TYPE_CHECKING:
    from onnxgrow.widen.planner import GroupContext

Dim = int | str


def _symbolic_dims(value: ir.Value | None) -> list[Dim] | None:
    if value is None or value.shape is None:
        return None
    return [d if isinstance(d, int) else str(d) for d in value.shape.dims]


def _blocks(src: list[Dim], dst: list[Dim]) -> list[tuple[range, range]] | None:
    """Pair the shortest contiguous runs of ``src`` and ``dst`` axes with equal products.

    Equal dimensions (a symbol included) pair one to one; trailing size-1 axes join the
    last block. None when the shapes cannot be matched (a symbol inside a merge).
    """
    blocks: list[tuple[range, range]] = []
    i = j = 0
    while i < len(src) and j < len(dst):
        if src[i] == dst[j]:
            blocks.append((range(i, i + 1), range(j, j + 1)))
            i, j = i + 1, j + 1
            continue
        if isinstance(src[i], str) or isinstance(dst[j], str):
            return None
        i0, j0 = i, j
        p, q = int(src[i]), int(dst[j])
        i, j = i + 1, j + 1
        while p != q:
            if p < q:
                if i >= len(src) or isinstance(src[i], str):
                    return None
                p *= int(src[i])
                i += 1
            else:
                if j >= len(dst) or isinstance(dst[j], str):
                    return None
                q *= int(dst[j])
                j += 1
        blocks.append((range(i0, i), range(j0, j)))
    if not blocks or any(d != 1 for d in [*src[i:], *dst[j:]]):
        return None
    last_in, last_out = blocks[-1]
    blocks[-1] = (range(last_in.start, len(src)), range(last_out.start, len(dst)))
    return blocks


def _reshaped(embedding: Embedding, n: int, src: list[Dim], dst: list[Dim]) -> Embedding | str:
    """The embedding of the output of a reshape from ``src`` to ``dst`` dims."""
    t = len(src) + embedding.axis
    blocks = _blocks(src, dst)
    if blocks is None:
        return "its input and output dimensions cannot be matched"
    block = next(b for b in blocks if t in b[0])
    ins, outs = block
    if len(ins) == 1 and len(outs) == 1:
        return Embedding(outs[0] - len(dst), len(dst), embedding.layout)
    outer = math.prod(src[k] for k in range(ins.start, t))  # type: ignore[misc]
    inner = math.prod(src[k] for k in range(t + 1, ins.stop))  # type: ignore[misc]
    merged = embedding.layout.scaled(inner).repeated(outer)
    if merged is None:
        return "it merges concatenated channels with other axes"
    if len(outs) == 1:
        return Embedding(outs[0] - len(dst), len(dst), merged)
    if len(merged.segments) != 1:
        return "it splits concatenated channels across axes"
    seg = merged.segments[0]
    assert isinstance(seg, Channel)
    before = 1
    for o in outs:
        after = math.prod(dst[k] for k in range(o + 1, outs.stop))  # type: ignore[misc]
        size = dst[o]
        if (seg.outer % before == 0 and seg.inner % after == 0
                and size == (seg.outer // before) * n * (seg.inner // after) and (size != 1 or n == 1)):
            return Embedding(o - len(dst), len(dst), AxisLayout((Channel(seg.outer // before, seg.inner // after),)))
        before *= size  # type: ignore[operator]
    return "it splits the channels across several axes"


def _input_dims(ctx: GroupContext, x: ir.Value, embedding: Embedding) -> list[Dim] | None:
    dims = _symbolic_dims(x)
    if dims is None:
        return None
    t = len(dims) + embedding.axis
    dims[t] = embedding.layout.old_size(ctx.width)
    return dims


@rule("Flatten")
class FlattenRule:
    """``[d0..d(a-1), da..]`` → ``[prod(d0..d(a-1)), prod(da..)]``."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        x, y = node.inputs[0], node.outputs[0]
        if x not in known:
            ctx.refuse(node, "cannot trace channels backward through Flatten")
        embedding = known[x]
        src = _input_dims(ctx, x, embedding)
        if src is None:
            ctx.refuse(node, "its input shape is unknown")
        a = node.attributes.get_int("axis", 1) % (len(src) + 1)
        t = len(src) + embedding.axis
        part = range(0, a) if t < a else range(a, len(src))
        dims = [src[k] for k in part]
        if any(isinstance(src[k], str) for k in part):
            ctx.refuse(node, "the axes merged with the channels have dynamic sizes")
        outer = math.prod(dims[: t - part.start])  # type: ignore[arg-type]
        inner = math.prod(dims[t - part.start + 1:])  # type: ignore[arg-type]
        merged = embedding.layout.scaled(inner).repeated(outer)
        if merged is None:
            ctx.refuse(node, "it merges concatenated channels with other axes")
        ctx.track(y, Embedding(-2 if t < a else -1, 2, merged), node)

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        """Nothing to change: Flatten computes its output shape."""


def _target_shape(node: ir.Node) -> np.ndarray | None:
    return constant_array(node.inputs[1])


def _concat_minus_one(shape: ir.Value, index: int) -> bool:
    """True when a computed shape is a Concat whose entry ``index`` is a constant -1."""
    producer = shape.producer()
    if producer is None or producer.op_type != "Concat":
        return False
    position = 0
    for part in producer.inputs:
        array = constant_array(part)
        length = array.size if array is not None else (static_dims(part) or [None])[0]
        if not isinstance(length, int):
            return False
        if position <= index < position + length:
            return array is not None and int(array.reshape(-1)[index - position]) == -1
        position += length
    return False


@rule("Reshape")
class ReshapeRule:
    """Reshape with the channel entry of its target shape rewritten."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        x, y = node.inputs[0], node.outputs[0]
        if node.inputs[1] in known:
            ctx.refuse(node, "the channels reach the shape input")
        if x not in known:
            ctx.refuse(node, "cannot trace channels backward through Reshape")
        embedding = known[x]
        src = _input_dims(ctx, x, embedding)
        dst = self._output_dims(node, src)
        if src is None or dst is None:
            ctx.refuse(node, "its input or output shape is unknown")
        result = _reshaped(embedding, ctx.width, src, dst)
        if isinstance(result, str):
            ctx.refuse(node, result)
        target = _target_shape(node)
        out_t = len(dst) + result.axis
        if target is None:
            if not _concat_minus_one(node.inputs[1], out_t):  # type: ignore[arg-type]
                ctx.refuse(node, "its target shape is computed at run time")
        elif int(target[out_t]) == 0 and (len(src) <= out_t or src[out_t] != dst[out_t]
                                           or len(src) + embedding.axis != out_t
                                           or embedding.layout != result.layout):
            ctx.refuse(node, "its target shape copies (0) an axis that changes size differently")
        ctx.track(y, result, node)

    @staticmethod
    def _output_dims(node: ir.Node, src: list[Dim] | None) -> list[Dim] | None:
        """Output dims: from the target constant when it resolves, else the annotation."""
        target = _target_shape(node)
        if target is not None and src is not None:
            allowzero = node.attributes.get_int("allowzero", 0)
            dims: list[Dim] = [src[k] if (v == 0 and not allowzero) else int(v) for k, v in enumerate(target)]
            if -1 in dims:
                known = [d for d in dims if d != -1]
                if all(isinstance(d, int) for d in src + known):
                    total = math.prod(src)  # type: ignore[arg-type]
                    dims[dims.index(-1)] = total // max(math.prod(known), 1)  # type: ignore[arg-type]
                else:
                    annotated = _symbolic_dims(node.outputs[0])
                    if annotated is None or len(annotated) != len(dims):
                        return None
                    dims[dims.index(-1)] = annotated[dims.index(-1)]
            return dims
        return _symbolic_dims(node.outputs[0])

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        assert ctx.cmap is not None
        y = node.outputs[0]
        embedding = known[y]
        target = _target_shape(node)
        if target is None or find_constant(node.inputs[1]) is None:
            return
        out_t = len(target) + embedding.axis
        if int(target[out_t]) in (0, -1):
            return
        new_size = embedding.layout.new_size(ctx.cmap.q)

        def set_entry(shape: np.ndarray) -> np.ndarray:
            shape = shape.copy()
            shape[out_t] = new_size
            return shape

        ctx.edit(node, 1, set_entry)
