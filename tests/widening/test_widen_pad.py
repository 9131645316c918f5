"""The Pad rule: conv → Pad → conv widens exactly when the channel axis gets no pads, in the
attribute form (opset 10), the input form (opset 13) and with the ``axes`` input (opset 18),
in every mode; padding the channel axis is refused naming the Pad node."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from onnxgrow import RefusedError, load_model, widen
from tests.helpers.graphs import assert_widens_exactly, save_graph, weights

N, H, W = 2, 4, 4


def _model(path: Path, c: int, opset: int, mode: str, spatial: list[int], channel: tuple[int, int] = (0, 0),
           axes: list[int] | None = None, seed: int = 0) -> Path:
    """conv (c channels) → Pad → conv; ``spatial`` = [top, left, bottom, right] pads."""
    rng = np.random.default_rng(seed)
    top, left, bottom, right = spatial
    inits = {"w1": weights(rng, c, 3, 3, 3), "b1": weights(rng, c), "w2": weights(rng, 2, c, 3, 3)}
    if axes is not None:  # opset 18: the pads of the listed axes only
        begin = {1: channel[0], 2: top, 3: left}
        end = {1: channel[1], 2: bottom, 3: right}
        pads = [begin[a % 4] for a in axes] + [end[a % 4] for a in axes]
        inits["axes"] = np.array(axes, np.int64)
    else:
        pads = [0, channel[0], top, left, 0, channel[1], bottom, right]
    mode_attr = {"mode": mode}
    if opset < 11:
        pad = helper.make_node("Pad", ["a"], ["p"], name="pad", pads=pads, **mode_attr)
    else:
        inits["pads"] = np.array(pads, np.int64)
        inputs = ["a", "pads", "", "axes"] if axes is not None else ["a", "pads"]
        pad = helper.make_node("Pad", inputs, ["p"], name="pad", **mode_attr)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="conv", pads=[1, 1, 1, 1]), pad,
             helper.make_node("Conv", ["p", "w2"], ["y"], name="out")]
    return save_graph(path, nodes, {"x": [N, 3, H, W]}, ["y"], inits, opset=opset)


@settings(max_examples=15, deadline=None)
@given(c=st.integers(2, 6), extra=st.integers(1, 6), opset=st.sampled_from([10, 13, 18]),
       mode=st.sampled_from(["constant", "reflect", "edge"]),
       spatial=st.lists(st.integers(0, 2), min_size=4, max_size=4),
       axes=st.sampled_from([None, [2, 3], [-1, -2], [1, 2, 3]]), seed=st.integers(0, 2**16))
def test_pad_on_spatial_axes_carries_the_channels(c: int, extra: int, opset: int, mode: str, spatial: list[int],
                                                   axes: list[int] | None, seed: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = _model(Path(tmp) / "m.onnx", c, opset, mode, spatial, axes=axes if opset >= 18 else None, seed=seed)
        assert_widens_exactly(path, "conv", c + extra)


@pytest.mark.parametrize(("opset", "axes"), [(10, None), (13, None), (18, [1, 2, 3])])
def test_pad_on_the_channel_axis_is_refused(opset: int, axes: list[int] | None, tmp_path: Path) -> None:
    path = _model(tmp_path / "m.onnx", 4, opset, "constant", [1, 1, 1, 1], channel=(1, 0), axes=axes)
    with pytest.raises(RefusedError, match=r"at Pad node 'pad': it pads the widened axis \(1 before, 0 after\)"):
        widen(load_model(path), {"conv": 6})
