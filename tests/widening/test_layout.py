"""Where the widened channels sit inside an axis (onnxgrow/widening/layout.py).

Each layout is checked against what it stands for: expanding it must gather the same
positions as numpy gathering the channels of the tensor the layout describes (a plain
channel axis, NCHW or NHWC flattened, a Concat with other inputs, a depthwise
multiplier), and merging axes (``scaled``, ``repeated``) must commute with flattening.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxgrow.widening.channel_map import ChannelMap, Init, build_channel_map
from onnxgrow.widening.layout import AxisLayout, Channel, Embedding, Fixed, Segment

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def channel_maps(draw: st.DrawFn) -> ChannelMap:
    n = draw(st.integers(1, 6))
    init = draw(st.sampled_from(list(Init)))
    return build_channel_map(n, n + draw(st.integers(1, 6)), init, draw(st.sampled_from([0.0, 0.2])),
                             draw(st.integers(0, 1000)))


segments = st.one_of(st.builds(Fixed, st.integers(0, 4)), st.builds(Channel, st.integers(1, 3), st.integers(1, 3)))
layouts = st.lists(segments, min_size=1, max_size=4).map(lambda s: AxisLayout(tuple(s)))


def reference_expand(layout: AxisLayout, cmap: ChannelMap) -> list[tuple[int, float, bool]]:
    """(old position, share, fresh) of every new position, by the formula of the module docstring:
    channel ``c`` of repeat ``o`` at inner offset ``s`` sits at ``o·n·inner + c·inner + s``."""
    out, offset = [], 0
    for seg in layout.segments:
        if isinstance(seg, Fixed):
            out += [(offset + k, 1.0, False) for k in range(seg.length)]
        else:
            out += [(offset + o * cmap.n * seg.inner + int(cmap.src[j]) * seg.inner + s,
                     float(cmap.coef[j]), bool(cmap.fresh[j]))
                    for o in range(seg.outer) for j in range(cmap.q) for s in range(seg.inner)]
        offset += seg.old_size(cmap.n)
    return out


@SETTINGS
@given(layout=layouts, cmap=channel_maps())
def test_expand_follows_the_layout_formula(layout: AxisLayout, cmap: ChannelMap) -> None:
    index = layout.expand(cmap)
    assert len(index) == layout.new_size(cmap.q)
    assert list(zip(index.src.tolist(), index.coef.tolist(), index.fresh.tolist())) == reference_expand(layout, cmap)
    assert index.src.min(initial=0) >= 0 and index.src.max(initial=-1) < layout.old_size(cmap.n)


def test_layout_expansion_of_flatten_and_concat() -> None:
    cmap = build_channel_map(2, 3, seed=0)
    extra = int(cmap.src[2])
    flat = AxisLayout((Channel(1, 2),)).expand(cmap)  # channel c owns positions [2c, 2c+2)
    assert flat.src.tolist() == [0, 1, 2, 3, 2 * extra, 2 * extra + 1]
    mixed = AxisLayout((Fixed(3), Channel())).expand(cmap)  # concat: 3 untouched, then channels
    assert mixed.src.tolist() == [0, 1, 2, 3, 4, 3 + extra]
    assert mixed.coef[:3].tolist() == [1, 1, 1]


@SETTINGS
@given(cmap=channel_maps(), h=st.integers(1, 3), w=st.integers(1, 3))
def test_flattened_images_gather_what_numpy_gathers(cmap: ChannelMap, h: int, w: int) -> None:
    """``[C, H, W]`` flattened is ``Channel(1, H·W)``; ``[H, W, C]`` flattened is ``Channel(H·W, 1)``."""
    nchw = np.arange(cmap.n * h * w).reshape(cmap.n, h, w)
    src = AxisLayout((Channel(1, h * w),)).expand(cmap).src
    assert np.array_equal(nchw.reshape(-1)[src], nchw[cmap.src].reshape(-1))
    nhwc = np.arange(h * w * cmap.n).reshape(h, w, cmap.n)
    src = AxisLayout((Channel(h * w, 1),)).expand(cmap).src
    assert np.array_equal(nhwc.reshape(-1)[src], nhwc[:, :, cmap.src].reshape(-1))


@SETTINGS
@given(cmap=channel_maps(), before=st.integers(0, 3), after=st.integers(0, 3), multiplier=st.integers(1, 3))
def test_concat_and_depthwise_layouts(cmap: ChannelMap, before: int, after: int, multiplier: int) -> None:
    """A Concat keeps its other inputs' positions in place; a depthwise multiplier ``m`` gives
    each channel ``m`` consecutive positions."""
    layout = AxisLayout((Fixed(before), Channel(1, multiplier), Fixed(after)))
    channels = np.arange(cmap.n * multiplier).reshape(cmap.n, multiplier) + 100
    axis = np.concatenate([np.arange(before), channels.reshape(-1), np.arange(after) + 1000])
    index = layout.expand(cmap)
    expected = np.concatenate([np.arange(before), channels[cmap.src].reshape(-1), np.arange(after) + 1000])
    assert np.array_equal(axis[index.src], expected)
    fixed = np.r_[np.arange(before), len(index) - after + np.arange(after)].astype(int)
    assert np.all(index.coef[fixed] == 1.0) and not index.fresh[fixed].any()


@SETTINGS
@given(layout=layouts, cmap=channel_maps(), inner=st.integers(1, 3))
def test_scaled_is_the_layout_of_the_axis_merged_with_the_next(layout: AxisLayout, cmap: ChannelMap,
                                                                inner: int) -> None:
    x = np.arange(layout.old_size(cmap.n) * inner).reshape(-1, inner)
    merged = layout.scaled(inner)
    assert merged.old_size(cmap.n) == x.size and merged.new_size(cmap.q) == layout.new_size(cmap.q) * inner
    assert np.array_equal(x.reshape(-1)[merged.expand(cmap).src], x[layout.expand(cmap).src].reshape(-1))


@SETTINGS
@given(layout=layouts, cmap=channel_maps(), outer=st.integers(1, 3))
def test_repeated_is_the_layout_of_the_axis_merged_with_the_previous(layout: AxisLayout, cmap: ChannelMap,
                                                                      outer: int) -> None:
    merged = layout.repeated(outer)
    if outer > 1 and not (len(layout.segments) == 1 and isinstance(layout.segments[0], Channel)):
        assert merged is None  # fixed positions repeated between the channels: no layout says that
        return
    assert merged is not None
    x = np.arange(outer * layout.old_size(cmap.n)).reshape(outer, -1)
    assert np.array_equal(x.reshape(-1)[merged.expand(cmap).src], x[:, layout.expand(cmap).src].reshape(-1))


@pytest.mark.parametrize(("segments", "plain"), [
    ((Channel(),), True), ((Channel(1, 2),), False), ((Channel(2, 1),), False), ((Fixed(1), Channel()), False),
])
def test_only_a_bare_channel_axis_is_plain(segments: tuple[Segment, ...], plain: bool) -> None:
    assert AxisLayout(segments).is_plain is plain
    assert AxisLayout().is_plain


def test_sizes_add_up_over_the_segments() -> None:
    layout = AxisLayout((Fixed(3), Channel(2, 5), Fixed(1)))
    assert (layout.old_size(4), layout.new_size(6)) == (3 + 2 * 4 * 5 + 1, 3 + 2 * 6 * 5 + 1)


def test_embedding_counts_its_axis_from_the_end() -> None:
    with pytest.raises(ValueError, match="counts from the end"):
        Embedding(1)
    embedding = Embedding(-3, None, AxisLayout((Channel(1, 4),)))
    assert embedding.positive_axis() is None
    moved = embedding.with_axis(-1, 4)
    assert (moved.axis, moved.rank, moved.positive_axis(), moved.layout) == (-1, 4, 3, embedding.layout)
    relaid = moved.with_layout(AxisLayout())
    assert (relaid.axis, relaid.rank, relaid.layout.is_plain) == (-1, 4, True)


@SETTINGS
@given(layout=layouts, cmap=channel_maps(), inner=st.integers(1, 3))
def test_a_dynamic_size_merged_in_front_is_kept_as_outer(layout: AxisLayout, cmap: ChannelMap, inner: int) -> None:
    """``[B, H, T, d] → [B·H, T, d]``: the batch merged in front of the heads is a symbol the
    layout keeps (products of symbols when merged again), sized ``size*outer``; scaling keeps
    it, and no index arrays span such an axis."""
    merged = layout.repeated("batch")
    assert merged is not None and merged.outer == "batch" and merged.segments == layout.segments
    assert merged.old_dim(cmap.n) == f"{layout.old_size(cmap.n)}*batch" and not merged.is_plain
    again = merged.repeated("beam")
    assert again is not None and again.outer == "beam*batch"
    assert merged.repeated(2) is None  # a constant in front of a dynamic size: no layout says that
    assert merged.scaled(inner).outer == "batch" and merged.scaled(inner).without_outer() == layout.scaled(inner)
    assert merged.without_outer() == layout and layout.old_dim(cmap.n) == layout.old_size(cmap.n)
    with pytest.raises(ValueError, match="dynamic size"):
        merged.expand(cmap)
