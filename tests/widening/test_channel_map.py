"""The channel map: identity on old units, balanced draws, shares that sum to one."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxgrow.widening.channel_map import Init, build_channel_map


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40), st.integers(0, 100), st.floats(0, 0.5), st.integers(0, 1000))
def test_net2wider_map(n: int, extra: int, noise: float, seed: int) -> None:
    q = n + extra
    cmap = build_channel_map(n, q, Init.NET2WIDER, noise, seed)
    assert np.array_equal(cmap.src[:n], np.arange(n))
    assert cmap.counts.max() - cmap.counts.min() <= 1
    shares = np.bincount(cmap.src, weights=cmap.coef, minlength=n)
    assert np.allclose(shares, 1.0)
    assert cmap.uniform == (q % n == 0)
    if noise == 0:
        assert np.allclose(cmap.coef, 1.0 / cmap.counts[cmap.src])


def test_pad_maps_have_fresh_units() -> None:
    cmap = build_channel_map(4, 7, Init.ZERO_PAD, 0.0, 0)
    assert cmap.fresh.tolist() == [False] * 4 + [True] * 3
    assert cmap.coef.tolist() == [1, 1, 1, 1, 0, 0, 0]
    assert not cmap.uniform


def test_same_seed_same_map() -> None:
    a, b = build_channel_map(5, 13, seed=3), build_channel_map(5, 13, seed=3)
    assert np.array_equal(a.src, b.src)
