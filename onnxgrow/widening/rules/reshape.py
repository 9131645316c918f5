"""Flatten and Reshape (docs/design.md §3).

Both merge and split contiguous axes. Input and output dimensions are matched into
blocks of equal product. The block holding the channel axis decides:

- one axis on both sides: the channels stay, same layout;
- several input axes merged into one: the channels become ``Channel(outer, inner)``
  blocks of the merged axis (NCHW flattened: channel ``c`` owns ``[c·HW, (c+1)·HW)``);
- one merged axis split into several (the inverse, e.g. ``[N, C·H·W]`` back to
  ``[N, C, H, W]``): allowed when one output axis holds exactly the channels.

Dynamic axes match by their products (``[batch, 6, 16]`` ↔ ``[6*batch, 16]``, the
Reshape pairs that exporters put around a Gemm in a transformer). A Reshape is also
followed backward (from its output to its input), by the inverse matching.

A Reshape's target shape is followed entry by entry (:mod:`shape_values`), also when
the exporter builds it at run time (``Concat`` of constants and ``Shape`` reads). The
entry of the channel axis must follow the widening: a constant is rewritten (old size →
new size, wherever the exporter stored it); ``-1`` and a run-time read of the input's
own channel count follow by themselves; ``0`` must copy the same axis. Entries of other
axes keep their meaning.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import onnx_ir as ir

from onnxgrow.widening.context import GroupContext, Known
from onnxgrow.widening.layout import AxisLayout, Channel, Embedding
from onnxgrow.widening.rules.dims import Dim, product, static_product
from onnxgrow.widening.rules.registry import rule
from onnxgrow.widening.rules.shape_values import (
    Const,
    DimOf,
    Entry,
    entries,
    rewrite_entry,
    shape_readers,
    shared_path,
)


def _symbolic_dims(value: ir.Value | None) -> list[Dim] | None:
    if value is None or value.shape is None:
        return None
    return [d if isinstance(d, int) else str(d) for d in value.shape.dims]


def _blocks(src: list[Dim], dst: list[Dim]) -> list[tuple[range, range]] | None:
    """Pair the shortest contiguous runs of ``src`` and ``dst`` axes with equal products.

    Equal dimensions pair one to one; a run grows on the side whose product divides the
    other's (for integers: the smaller one), so ``[batch, 6, 16]`` and ``[6*batch, 16]``
    match. Trailing size-1 axes join the last block. None when no matching exists.
    """
    blocks: list[tuple[range, range]] = []
    i = j = 0
    while i < len(src) and j < len(dst):
        i0, j0 = i, j
        p, q = product([src[i]]), product([dst[j]])
        i, j = i + 1, j + 1
        while p != q:
            if not p.symbols and not q.symbols:
                grow_src = p.coef < q.coef
            elif p.divides(q) or q.divides(p):
                grow_src = p.divides(q)
            else:
                return None
            if grow_src:
                if i >= len(src):
                    return None
                p, i = p * product([src[i]]), i + 1
            else:
                if j >= len(dst):
                    return None
                q, j = q * product([dst[j]]), j + 1
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
        kept = _kept_axis(src, dst, t)
        if kept is not None:
            return Embedding(kept - len(dst), len(dst), embedding.layout)
        return f"its input dims {_show(src)} and output dims {_show(dst)} cannot be matched axis to axis"
    ins, outs = next(b for b in blocks if t in b[0])
    if len(ins) == 1 and len(outs) == 1:
        return Embedding(outs[0] - len(dst), len(dst), embedding.layout)
    outer = static_product(src[k] for k in range(ins.start, t))
    inner = static_product(src[k] for k in range(t + 1, ins.stop))
    sizes = [d for d in (dst[k] for k in outs) if isinstance(d, int)]
    if outer is None or inner is None or len(sizes) != len(outs):
        return "it merges the channels with axes of dynamic size"
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
    for k, o in enumerate(outs):
        after = math.prod(sizes[k + 1:])
        size = sizes[k]
        if (seg.outer % before == 0 and seg.inner % after == 0
                and size == (seg.outer // before) * n * (seg.inner // after) and (size != 1 or n == 1)):
            return Embedding(o - len(dst), len(dst), AxisLayout((Channel(seg.outer // before, seg.inner // after),)))
        before *= size
    return (f"it splits the widened axis ({src[t]}) into several axes {_show(sizes)} "
            "(attention heads, for instance); the channels cannot be widened across them")


def _kept_axis(src: list[Dim], dst: list[Dim], t: int) -> int | None:
    """The output axis that is input axis ``t`` unchanged, when it lies in a run of equal
    leading or trailing dimensions (then the other axes need not be matched: a merge of
    dynamic axes shape inference could not name, ``[unk, 48]`` → ``[batch, 6, 48]``)."""
    for k in range(min(len(src), len(dst))):
        if product([src[k]]) != product([dst[k]]):
            break
        if k == t:
            return k
    for k in range(1, min(len(src), len(dst)) + 1):
        if product([src[-k]]) != product([dst[-k]]):
            break
        if len(src) - k == t:
            return len(dst) - k
    return None


def _show(dims: Sequence[Dim]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


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
        embedding = ctx.forward_only(node, known, "Flatten")
        assert x is not None
        src = _input_dims(ctx, x, embedding)
        if src is None:
            ctx.refuse(node, "its input shape is unknown")
        a = node.attributes.get_int("axis", 1) % (len(src) + 1)
        t = len(src) + embedding.axis
        part = range(0, a) if t < a else range(a, len(src))
        dims = [d for d in (src[k] for k in part) if isinstance(d, int)]
        if len(dims) != len(part):
            ctx.refuse(node, "the axes merged with the channels have dynamic sizes")
        outer = math.prod(dims[: t - part.start])
        inner = math.prod(dims[t - part.start + 1:])
        merged = embedding.layout.scaled(inner).repeated(outer)
        if merged is None:
            ctx.refuse(node, "it merges concatenated channels with other axes")
        ctx.track(y, Embedding(-2 if t < a else -1, 2, merged), node)

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        """Nothing to change: Flatten computes its output shape."""


def _resolve_minus_one(dims: list[Dim], src: list[Dim]) -> Dim | None:
    """The size a ``-1`` entry takes: the input's product over the other entries' product."""
    total, known = product(src), product(d for d in dims if d != -1)
    return (total / known).as_dim() if known.divides(total) else None


def _output_dims(node: ir.Node, x: ir.Value, src: list[Dim], target: list[Entry]) -> list[Dim] | None:
    """Output dims from the target entries (0 copies, -1 is inferred), else the annotation."""
    annotated = _symbolic_dims(node.outputs[0])
    if annotated is not None and len(annotated) != len(target):
        annotated = None
    allowzero = node.attributes.get_int("allowzero", 0)
    dims: list[Dim] = []
    for k, entry in enumerate(target):
        if isinstance(entry, Const):
            copies = entry.value == 0 and not allowzero
            if copies and k >= len(src):
                return None
            dims.append(src[k] if copies else entry.value)
        elif isinstance(entry, DimOf) and entry.value is x:
            dims.append(src[len(src) + entry.axis])
        elif annotated is not None:
            dims.append(annotated[k])
        else:
            return None
    if -1 in dims:
        inferred = _resolve_minus_one(dims, src)
        if inferred is None:
            inferred = annotated[dims.index(-1)] if annotated is not None else None
        if inferred is None:
            return None
        dims[dims.index(-1)] = inferred
    return dims


def _target_problem(ctx: GroupContext, node: ir.Node, target: list[Entry], out_t: int, x: ir.Value,
                    embedding: Embedding, result: Embedding, src: list[Dim], allowzero: int) -> str:
    """Why the target shape would not follow the widening ('' when it does or is rewritten).

    A constant entry stored where other Reshapes/Expands read it too is rewritten once
    for all of them, which the group then requires to hold them all."""
    channel = DimOf(x, embedding.axis)
    for k, entry in enumerate(target):
        if entry == channel and k != out_t:
            return f"entry {k} of its target shape is the channel count read at run time"
    entry = target[out_t]
    if isinstance(entry, Const):
        if entry.value != 0 or allowzero:
            if entry.value not in (-1, 0) and shared_path(entry):
                readers = shape_readers(entry, node)
                if readers is None:
                    return "its target shape is computed by nodes that other nodes use as well"
                ctx.require_together(node, readers, "its target shape is shared with")
            return ""
        if len(src) + embedding.axis == out_t and embedding.layout == result.layout:
            return ""
        return "its target shape copies (0) an axis that changes size differently"
    if entry == channel and embedding.layout == result.layout:
        return ""
    if isinstance(entry, DimOf):
        return (f"the channel entry of its target shape is the run-time size of {entry.value.name!r} "
                f"(axis {entry.axis}), which would not follow the widening")
    return "the channel entry of its target shape is computed at run time"


@rule("Reshape")
class ReshapeRule:
    """Reshape with the channel entry of its target shape rewritten."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        x, y = node.inputs[0], node.outputs[0]
        if node.inputs[1] in known:
            ctx.refuse(node, "the channels reach the shape input")
        target = entries(node.inputs[1], (node, 1))
        if target is None:
            ctx.refuse(node, "its target shape is computed at run time in a way onnxgrow cannot follow")
        if x is None or x not in known:
            self._propagate_backward(ctx, node, known[y], target)
            return
        embedding = known[x]
        src = _input_dims(ctx, x, embedding)
        dst = None if src is None else _output_dims(node, x, src, target)
        if src is None or dst is None:
            ctx.refuse(node, "its input or output shape is unknown")
        result = _reshaped(embedding, ctx.width, src, dst)
        if isinstance(result, str):
            ctx.refuse(node, result)
        problem = _target_problem(ctx, node, target, len(dst) + result.axis, x, embedding, result, src,
                                  node.attributes.get_int("allowzero", 0))
        if problem:
            ctx.refuse(node, problem)
        ctx.track(y, result, node)

    @staticmethod
    def _propagate_backward(ctx: GroupContext, node: ir.Node, out: Embedding, target: list[Entry]) -> None:
        """Track the input by the inverse reshape; the forward pass, run once the input is
        tracked, then checks the target shape and that both directions agree."""
        x = node.inputs[0]
        assert x is not None
        src = _symbolic_dims(x)
        dst = None if src is None else _output_dims(node, x, src, target)
        if src is None or dst is None:
            ctx.refuse(node, "its input or output shape is unknown")
        dst[len(dst) + out.axis] = out.layout.old_size(ctx.width)
        result = _reshaped(out, ctx.width, dst, src)
        if isinstance(result, str):
            ctx.refuse(node, result)
        ctx.track(x, result, node)

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        target = entries(node.inputs[1], (node, 1))
        assert target is not None
        entry = target[len(target) + known[node.outputs[0]].axis]
        new = known[node.outputs[0]].layout.new_size(ctx.channel_map.q)
        if isinstance(entry, Const) and entry.value not in (0, -1, new):  # a shared store may be new already
            rewrite_entry(ctx, entry, new)
