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
from onnxgrow.widening.rules.known_dims import known_dims, scaled_size
from onnxgrow.widening.rules.registry import rule
from onnxgrow.widening.rules.shape_values import (
    Const,
    DimOf,
    Entry,
    channel_count,
    entries,
    rewrite_size_entry,
    size_entry_problem,
)


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
    """The embedding of the output of a reshape from ``src`` to ``dst`` dims.

    Axes of dynamic size merged in front of the channels become the layout's ``outer``
    (``[B, H, T, d]`` → ``[B·H, T, d]`` in decomposed attention); splitting them off again
    (``[B·H, d, T]`` → ``[B, H, d, T]``) needs output axes whose product is that size."""
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
    before = [src[k] for k in range(ins.start, t)]
    outer: int | str | None = static_product(before)
    if outer is None:
        outer = product(before).as_dim()
    inner = static_product(src[k] for k in range(t + 1, ins.stop))
    if inner is None:
        return "it merges the channels with axes of dynamic size after them"
    merged = embedding.layout.scaled(inner).repeated(outer)
    if merged is None:
        return "it merges concatenated channels with other axes"
    if len(outs) == 1:
        return Embedding(outs[0] - len(dst), len(dst), merged)
    return _split(merged, n, [dst[k] for k in outs], outs, len(dst), src[t])


def _split(merged: AxisLayout, n: int, sizes: list[Dim], outs: range, rank: int, size: Dim) -> Embedding | str:
    """The output axis among ``outs`` (of ``sizes``) that holds the channels of the axis
    ``merged`` describes, once a dynamic ``outer`` is split off by the leading axes."""
    first = 0
    if merged.outer is not None:
        prefix = [product(sizes[:k]) for k in range(len(sizes) + 1)]
        first = next((k for k, p in enumerate(prefix) if p == product([merged.outer])), -1)
        if first < 0:
            return (f"it splits the axis {size} that merges {merged.outer} with the channels into "
                    f"{_show(sizes)}, not back into the two")
        merged = merged.without_outer()
    rest = sizes[first:]
    static = [d for d in rest if isinstance(d, int)]
    if len(merged.segments) != 1:
        return "it splits concatenated channels across axes"
    if len(static) != len(rest):
        return "it splits the channels into axes of dynamic size"
    if len(rest) == 1:
        return Embedding(outs[first] - rank, rank, merged)
    seg = merged.segments[0]
    assert isinstance(seg, Channel)
    before = 1
    for k, o in enumerate(outs[first:]):
        after = math.prod(static[k + 1:])
        size_k = static[k]
        if (seg.outer % before == 0 and seg.inner % after == 0
                and size_k == (seg.outer // before) * n * (seg.inner // after) and (size_k != 1 or n == 1)):
            return Embedding(o - rank, rank, AxisLayout((Channel(seg.outer // before, seg.inner // after),)))
        before *= size_k
    return (f"it splits the widened axis ({size}) into several axes {_show(static)} "
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
    dims = known_dims(x, ctx.dims_memo)
    if dims is None:
        return None
    t = len(dims) + embedding.axis
    dims[t] = embedding.layout.old_dim(ctx.width)
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


def _output_dims(ctx: GroupContext, node: ir.Node, x: ir.Value, src: list[Dim],
                 target: list[Entry]) -> list[Dim] | None:
    """Output dims from the target entries (0 copies, -1 is inferred, a read of the input's own
    size is ``src``'s), else as known (:mod:`known_dims`) of the output."""
    annotated = known_dims(node.outputs[0], ctx.dims_memo)
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
            continue
        size = scaled_size(src[len(src) + entry.axis], entry.factor, entry.divisor) \
            if isinstance(entry, DimOf) and entry.value is x else None
        if size is None and annotated is None:
            return None
        dims.append(size if size is not None else annotated[k])  # type: ignore[index]
    if -1 in dims:
        inferred = _resolve_minus_one(dims, src)
        if inferred is None:
            inferred = annotated[dims.index(-1)] if annotated is not None else None
        if inferred is None:
            return None
        dims[dims.index(-1)] = inferred
    return dims


def _target_problem(ctx: GroupContext, target: list[Entry], out_t: int, embedding: Embedding, result: Embedding,
                    src: list[Dim], allowzero: int) -> str:
    """Why the target shape would not follow the widening ('' when it does or is rewritten:
    :func:`~onnxgrow.widening.rules.shape_values.size_entry_problem`; ``-1`` follows, ``0``
    when it copies the channel axis unchanged). Asked once the group is closed: an entry may
    read the size of a tensor the group reaches later."""
    for k, entry in enumerate(target):
        if k != out_t and isinstance(entry, DimOf) and channel_count(ctx, entry) is not None:
            return f"entry {k} of its target shape is the channel count read at run time"
    entry = target[out_t]
    if isinstance(entry, Const) and entry.value == 0 and not allowzero:
        if len(src) + embedding.axis == out_t and embedding.layout == result.layout:
            return ""
        return "its target shape copies (0) an axis that changes size differently"
    if isinstance(entry, Const) and entry.value == -1:
        return ""
    return size_entry_problem(ctx, entry, result.layout, "its target shape")


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
        dst = None if src is None else _output_dims(ctx, node, x, src, target)
        if src is None or dst is None:
            ctx.refuse(node, "its input or output shape is unknown")
        result = _reshaped(embedding, ctx.width, src, dst)
        if isinstance(result, str):
            ctx.refuse(node, result)
        allowzero = node.attributes.get_int("allowzero", 0)
        ctx.check_when_closed(node, lambda: _target_problem(ctx, target, len(dst) + result.axis, embedding,
                                                            result, src, allowzero))
        ctx.track(y, result, node)

    @staticmethod
    def _propagate_backward(ctx: GroupContext, node: ir.Node, out: Embedding, target: list[Entry]) -> None:
        """Track the input by the inverse reshape; the forward pass, run once the input is
        tracked, then checks the target shape and that both directions agree."""
        x = node.inputs[0]
        assert x is not None
        src = known_dims(x, ctx.dims_memo)
        dst = None if src is None else _output_dims(ctx, node, x, src, target)
        if src is None or dst is None:
            ctx.refuse(node, "its input or output shape is unknown")
        dst[len(dst) + out.axis] = out.layout.old_dim(ctx.width)
        result = _reshaped(out, ctx.width, dst, src)
        if isinstance(result, str):
            ctx.refuse(node, result)
        ctx.track(x, result, node)

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        target = entries(node.inputs[1], (node, 1))
        assert target is not None
        out = known[node.outputs[0]]
        entry = target[len(target) + out.axis]
        if not (isinstance(entry, Const) and entry.value in (0, -1)):
            rewrite_size_entry(ctx, entry, out.layout, node)
