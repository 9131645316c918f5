"""Where the widened channels sit inside a tensor (docs/design.md §1, §3).

A tracked tensor carries the group's channels along one axis. That axis is a sequence
of segments:

- ``Fixed(length)``: positions that belong to no widened channel (another input of a
  Concat); they keep their values and are never divided;
- ``Channel(outer, inner)``: the channels, laid out as old position
  ``o·n·inner + c·inner + s`` for ``o < outer``, ``c < n``, ``s < inner``. A plain
  channel axis is ``Channel(1, 1)``; NCHW flattened to ``[N, C·H·W]`` is
  ``Channel(1, H·W)``; NHWC flattened is ``Channel(H·W, 1)``; a depthwise conv with
  multiplier ``m`` makes ``Channel(1, m)``.

An axis may also hold a dynamic size merged in front of the segments
(:attr:`AxisLayout.outer`): decomposed attention reshapes ``[B, H, T, d]`` to
``[B·H, T, d]``, so the batch repeats the heads along one axis of size ``B·H``. Position
``b·size + p`` is position ``p`` of the segments in batch ``b``; no constant spans such an
axis, so only ops that move it (Transpose, Reshape, batched MatMul, elementwise ops) carry it.

Given the group's :class:`ChannelMap`, :meth:`AxisLayout.expand` turns this into
per-position arrays for the widened axis: the old position each new position copies,
its share for contracting ops, and whether it is a fresh unit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onnxgrow.widening.channel_map import ChannelMap


@dataclass(frozen=True)
class Fixed:
    """Positions outside the widened channels."""

    length: int

    def old_size(self, n: int) -> int:
        return self.length

    def new_size(self, q: int) -> int:
        return self.length


@dataclass(frozen=True)
class Channel:
    """The group's channels, repeated ``outer`` times, each spanning ``inner`` positions."""

    outer: int = 1
    inner: int = 1

    def old_size(self, n: int) -> int:
        return self.outer * n * self.inner

    def new_size(self, q: int) -> int:
        return self.outer * q * self.inner


Segment = Fixed | Channel


@dataclass(frozen=True)
class AxisIndex:
    """Per new position: the old position it copies, its share, whether it is fresh."""

    src: np.ndarray
    coef: np.ndarray
    fresh: np.ndarray

    def __len__(self) -> int:
        return len(self.src)


@dataclass(frozen=True)
class AxisLayout:
    """The segments of one axis, in order, and the dynamic size merged in front of them
    (``outer``: a symbol or product of symbols such as ``batch``; None when there is none)."""

    segments: tuple[Segment, ...] = (Channel(),)
    outer: str | None = None

    def old_size(self, n: int) -> int:
        """The size of the segments (per ``outer`` repeat) before widening."""
        return sum(s.old_size(n) for s in self.segments)

    def new_size(self, q: int) -> int:
        return sum(s.new_size(q) for s in self.segments)

    def old_dim(self, n: int) -> int | str:
        """The axis' size before widening: an int, or ``size*outer`` as a product of symbols."""
        size = self.old_size(n)
        return size if self.outer is None else f"{size}*{self.outer}"

    @property
    def is_plain(self) -> bool:
        """A bare channel axis: ``Channel(1, 1)`` alone."""
        return self.segments == (Channel(),) and self.outer is None

    def scaled(self, inner: int) -> AxisLayout:
        """The layout after merging this axis with ``inner`` positions after it."""
        return AxisLayout(
            tuple(
                Fixed(s.length * inner) if isinstance(s, Fixed) else Channel(s.outer, s.inner * inner)
                for s in self.segments
            ),
            self.outer,
        )

    def repeated(self, outer: int | str) -> AxisLayout | None:
        """The layout after merging ``outer`` positions before this axis (a dynamic size: a
        symbol, kept as :attr:`outer`); None if not expressible."""
        if outer == 1:
            return self
        if isinstance(outer, str):
            return AxisLayout(self.segments, outer if self.outer is None else f"{outer}*{self.outer}")
        if self.outer is None and len(self.segments) == 1 and isinstance(self.segments[0], Channel):
            s = self.segments[0]
            return AxisLayout((Channel(s.outer * outer, s.inner),))
        return None

    def without_outer(self) -> AxisLayout:
        return AxisLayout(self.segments)

    def expand(self, cmap: ChannelMap) -> AxisIndex:
        """Index arrays of the widened axis under ``cmap`` (not for an axis with a dynamic
        ``outer``: no constant spans one)."""
        if self.outer is not None:
            raise ValueError(f"an axis holding a dynamic size ({self.outer}) has no index arrays")
        srcs, coefs, freshes = [], [], []
        offset = 0
        for seg in self.segments:
            if isinstance(seg, Fixed):
                srcs.append(offset + np.arange(seg.length, dtype=np.int64))
                coefs.append(np.ones(seg.length))
                freshes.append(np.zeros(seg.length, dtype=bool))
            else:
                o = np.arange(seg.outer)[:, None, None]
                c = cmap.src[None, :, None]
                s = np.arange(seg.inner)[None, None, :]
                src = offset + o * cmap.n * seg.inner + c * seg.inner + s
                shape = (seg.outer, cmap.q, seg.inner)
                srcs.append(src.reshape(-1))
                coefs.append(np.broadcast_to(cmap.coef[None, :, None], shape).reshape(-1))
                freshes.append(np.broadcast_to(cmap.fresh[None, :, None], shape).reshape(-1))
            offset += seg.old_size(cmap.n)
        return AxisIndex(np.concatenate(srcs), np.concatenate(coefs), np.concatenate(freshes))


@dataclass(frozen=True)
class Embedding:
    """How a tensor carries the group: the axis (negative, from the end), rank if known, layout."""

    axis: int
    rank: int | None = None
    layout: AxisLayout = AxisLayout()

    def __post_init__(self) -> None:
        if self.axis >= 0:
            raise ValueError("Embedding.axis counts from the end and must be negative")

    def positive_axis(self) -> int | None:
        """The axis counted from the front, when the rank is known."""
        return None if self.rank is None else self.rank + self.axis

    def with_axis(self, axis: int, rank: int | None) -> Embedding:
        return Embedding(axis, rank, self.layout)

    def with_layout(self, layout: AxisLayout) -> Embedding:
        return Embedding(self.axis, self.rank, layout)
