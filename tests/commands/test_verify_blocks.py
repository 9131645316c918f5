"""Comparisons made block by block (so that a value of a weight's size is not copied whole in
float64) give what one comparison of the whole arrays gives: the largest differences are
maxima and the NaN counts sums, whatever the block boundaries."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from onnxgrow.verification import compare, unchanged
from onnxgrow.verification.compare import compare_outputs


def _pair(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((3, 37, 11)).astype(np.float32)
    b = a + rng.standard_normal(a.shape).astype(np.float32) * np.float32(1e-6)
    a.flat[5], b.flat[5] = np.nan, np.nan  # NaN in both: compared as equal
    a.flat[200] = np.nan  # NaN in one: a mismatch
    a.flat[300], b.flat[300] = np.inf, np.inf  # the same infinity
    a.flat[-1], b.flat[-1] = 7.5, -7.5  # the largest difference and magnitude, in the last block
    return a, b


@pytest.mark.parametrize("block", [1, 7, 64, 1000, 2**20])
def test_blocks_give_the_whole_comparison(monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    a, b = _pair(0)
    whole = compare_outputs({"y": a}, {"y": b}, None, None, {"y": ir.DataType.FLOAT})
    monkeypatch.setattr(compare, "COMPARE_BLOCK", block)
    blocked = compare_outputs({"y": a}, {"y": b}, None, None, {"y": ir.DataType.FLOAT})
    assert blocked == whole
    (result,) = blocked
    assert result.max_abs_error == 15.0 and result.reference_max_abs == 7.5 and result.nan_mismatch == 1
    assert not result.passed


@pytest.mark.parametrize("block", [1, 3, 4096])
def test_same_arrays_compares_every_block(monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    monkeypatch.setattr(unchanged, "COMPARE_BLOCK_BYTES", block)
    a = np.arange(1001, dtype=np.float32).reshape(7, 143)
    assert unchanged.same_arrays(a, a.copy())
    for index in (0, 500, 1000):
        b = a.copy()
        b.flat[index] = np.nextafter(b.flat[index], np.float32(np.inf))  # one bit in one block
        assert not unchanged.same_arrays(a, b)
    assert unchanged.same_arrays(a.T, np.ascontiguousarray(a.T))  # a strided view: its values, in order
    assert not unchanged.same_arrays(a, a.astype(np.float64))
    assert not unchanged.same_arrays(a, a.reshape(143, 7))
    zero = np.zeros(4, np.float32)
    assert not unchanged.same_arrays(zero, -zero)  # equal as numbers, not as bits
