"""Hypothesis: random MLPs and small CNNs widened at a random layer stay exact."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import onnxgrow
from tests.helpers.graphs import ACTIVATIONS, cnn, mlp

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def mlp_case(draw: st.DrawFn) -> tuple[list[int], list[str], list[str], int, int, int]:
    depth = draw(st.integers(2, 5))
    widths = draw(st.lists(st.integers(1, 12), min_size=depth + 1, max_size=depth + 1))
    acts = draw(st.lists(st.sampled_from(ACTIVATIONS), min_size=1, max_size=depth))
    styles = draw(st.lists(st.sampled_from(["gemm_t", "gemm", "matmul"]), min_size=depth, max_size=depth))
    layer = draw(st.integers(1, depth - 1))
    extra = draw(st.integers(1, 20))
    seed = draw(st.integers(0, 2**16))
    return widths, acts, styles, layer, extra, seed


@SETTINGS
@given(mlp_case())
def test_random_mlp(case: tuple[list[int], list[str], list[str], int, int, int]) -> None:
    widths, acts, styles, layer, extra, seed = case
    with tempfile.TemporaryDirectory() as tmp:
        path = mlp(Path(tmp) / "m.onnx", widths, acts, seed=seed, styles=styles)
        name = f"dense_{layer}"
        grown, _ = onnxgrow.widen(path, {name: widths[layer] + extra}, seed=seed)
        check = onnxgrow.verify(path, grown, onnxgrow.VerifyOptions(seed=seed))
        assert check.passed, check.summary()


@st.composite
def cnn_case(draw: st.DrawFn) -> tuple[list[int], list[str], int, int, int, bool, int]:
    depth = draw(st.integers(2, 5))
    channels = draw(st.lists(st.integers(1, 8), min_size=depth + 1, max_size=depth + 1))
    acts = draw(st.lists(st.sampled_from(ACTIVATIONS), min_size=1, max_size=depth))
    layer = draw(st.integers(1, depth))
    extra = draw(st.integers(1, 9))
    kernel = draw(st.sampled_from([1, 3]))
    pool = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    return channels, acts, layer, extra, kernel, pool, seed


@SETTINGS
@given(cnn_case())
def test_random_cnn(case: tuple[list[int], list[str], int, int, int, bool, int]) -> None:
    channels, acts, layer, extra, kernel, pool, seed = case
    with tempfile.TemporaryDirectory() as tmp:
        path = cnn(Path(tmp) / "c.onnx", channels, acts, kernel=kernel, pool=pool, seed=seed)
        name = f"conv_{layer}"
        grown, _ = onnxgrow.widen(path, {name: channels[layer] + extra}, seed=seed)
        check = onnxgrow.verify(path, grown, onnxgrow.VerifyOptions(seed=seed))
        assert check.passed, check.summary()
