"""Cutting a widened axis into parts and joining parts into one (docs/design.md §1, block maps).

Split, Slice and Concat along the channel axis, and the groups of a grouped convolution, see
the axis as consecutive parts. A part of a layout is again a layout when every cut falls on a
segment boundary, inside a ``Fixed`` segment, or between two blocks of a
``Channel(outer, inner)`` segment (a block is ``n·inner`` positions: all units once). A cut
inside a block is possible once the units come in finer blocks: :func:`cut` then says how
many times finer (the rule asks with ``GroupContext.require_blocks``), so that each part
holds whole blocks and is widened alike (copies stay in their part).

Layouts are kept *normalised*: adjacent ``Fixed`` segments merged, adjacent ``Channel``
segments of the same ``inner`` merged (``Channel(a, i)`` then ``Channel(b, i)`` is
``Channel(a + b, i)``, position for position), so that a layout joined from parts and the
same layout met another way compare equal.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from itertools import accumulate

from onnxgrow.widening.layout import AxisLayout, Channel, Fixed, Segment


def normalised(segments: Iterable[Segment]) -> AxisLayout:
    """The layout of ``segments`` with neighbours of one kind merged and empty ones dropped."""
    merged: list[Segment] = []
    for seg in segments:
        if (isinstance(seg, Fixed) and seg.length == 0) or (isinstance(seg, Channel) and seg.outer == 0):
            continue
        last = merged[-1] if merged else None
        if isinstance(seg, Fixed) and isinstance(last, Fixed):
            merged[-1] = Fixed(last.length + seg.length)
        elif isinstance(seg, Channel) and isinstance(last, Channel) and last.inner == seg.inner:
            merged[-1] = Channel(last.outer + seg.outer, seg.inner)
        else:
            merged.append(seg)
    return AxisLayout(tuple(merged))


def joined(layouts: Iterable[AxisLayout]) -> AxisLayout:
    """The layout of parts laid one after the other (a Concat along the axis; no part holds a
    dynamic size merged with the channels: :func:`cut` refuses those)."""
    return normalised(seg for layout in layouts for seg in layout.segments)


def has_channels(layout: AxisLayout) -> bool:
    """Whether any position of ``layout`` belongs to a widened channel."""
    return any(isinstance(seg, Channel) for seg in layout.segments)


def cut(layout: AxisLayout, n: int, sizes: Sequence[int]) -> list[AxisLayout] | int | str:
    """``layout`` (of ``n`` units) cut into consecutive parts of the old ``sizes``.

    Returns the parts; or, when a cut falls inside a block of units, how many times finer
    the units must be cut so that no cut does (an int > 1); or why no blocks can help
    (a cut inside the ``inner`` positions of one unit, sizes that do not add up).
    """
    if layout.outer is not None:
        return f"it cuts an axis where {layout.outer} is merged with the channels"
    if any(size < 0 for size in sizes) or sum(sizes) != layout.old_size(n):
        return f"its parts {list(sizes)} do not add up to the axis' {layout.old_size(n)} positions"
    bounds = list(accumulate(sizes))
    parts: list[list[Segment]] = [[] for _ in sizes]
    factor, offset, k = 1, 0, 0
    for seg in layout.segments:
        size, done = seg.old_size(n), 0
        while done < size:
            while bounds[k] <= offset + done:
                k += 1
            take = min(size - done, bounds[k] - offset - done)
            if isinstance(seg, Fixed):
                parts[k].append(Fixed(take))
            elif done % seg.inner or take % seg.inner:
                return f"a cut would part the {seg.inner} positions of one widened channel"
            elif done % (n * seg.inner) or take % (n * seg.inner):
                units = math.gcd(n, (done // seg.inner) % n, (take // seg.inner) % n)
                factor = math.lcm(factor, n // units)
            else:
                parts[k].append(Channel(take // (n * seg.inner), seg.inner))
            done += take
        offset += size
    if factor > 1:
        return factor
    return [normalised(part) for part in parts]


def new_position(layout: AxisLayout, n: int, q: int, position: int) -> int:
    """Where old ``position`` (a cut point: between blocks or in a ``Fixed`` segment) lies
    once ``n`` units are ``q``."""
    old = new = 0
    for seg in layout.segments:
        size = seg.old_size(n)
        if position < old + size:
            inside = position - old
            if isinstance(seg, Fixed):
                return new + inside
            block = n * seg.inner
            assert inside % block == 0, "a cut between blocks"
            return new + inside // block * q * seg.inner
        old, new = old + size, new + seg.new_size(q)
    return new
