"""Slices, Splits and Concats of the channel axis (docs/design.md §1, block maps), on ``onnx.helper`` graphs.

- YOLO's detection head as ultralytics 8.0-8.1 exported it for some formats: each scale's box
  and class convolutions concatenated along the channels, flattened to ``[N, 4·R + K, A]``,
  then cut apart again with ``x_cat[:, :4R]`` and ``x_cat[:, 4R:]`` (two Slices of the channel
  axis). Whichever convolution is widened, its slice keeps exactly its channels (the bounds
  move to their new positions) and the other slice is untouched.
- Splits with explicit unequal sizes, traced from either side, and a Concat traced backward.

Hypothesis chooses the sizes and widths; onnxruntime compares every widening with the
original (max relative error ≤ 1e-5).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from tests.helpers.graphs import assert_widens_exactly, save_graph, weights

INT_MAX = 2**63 - 1


def node(op: str, inputs: list[str], output: str, **attrs: object) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], name=output, **attrs)


def yolo_head(path: Path, box: int, classes: int, negative_start: bool, to_the_end: bool, seed: int) -> Path:
    """``x → box conv (box) ‖ cls conv (classes) → Concat → Reshape [N, box + classes, -1] →
    Slice [:, :box] → 1-D conv ``box_out``; Slice [:, box:] (or ``-classes:``) → Sigmoid → 1-D conv ``cls_out``."""
    rng = np.random.default_rng(seed)
    total = box + classes
    start = -classes if negative_start else box
    nodes = [
        node("Conv", ["x", "box.weight", "box.bias"], "box", pads=[1, 1, 1, 1]),
        node("Conv", ["x", "cls.weight", "cls.bias"], "cls", pads=[1, 1, 1, 1]),
        node("Concat", ["box", "cls"], "joined", axis=1),
        node("Reshape", ["joined", "flat"], "x_cat"),
        node("Slice", ["x_cat", "zero", "box_end", "one"], "box_part"),
        node("Slice", ["x_cat", "cls_start", "cls_end", "one"], "cls_part"),
        node("Conv", ["box_part", "box_out.weight"], "box_out"),
        node("Sigmoid", ["cls_part"], "scores"),
        node("Conv", ["scores", "cls_out.weight"], "cls_out"),
    ]
    inits = {
        "box.weight": weights(rng, box, 3, 3, 3), "box.bias": weights(rng, box),
        "cls.weight": weights(rng, classes, 3, 3, 3), "cls.bias": weights(rng, classes),
        "flat": np.array([2, total, -1], np.int64), "zero": np.array([0], np.int64),
        "box_end": np.array([box], np.int64), "one": np.array([1], np.int64),
        "cls_start": np.array([start], np.int64), "cls_end": np.array([INT_MAX if to_the_end else total], np.int64),
        "box_out.weight": weights(rng, 2, box, 1), "cls_out.weight": weights(rng, 2, classes, 1),
    }
    return save_graph(path, nodes, {"x": [2, 3, 4, 4]}, ["box_out", "cls_out"], inits)


@settings(max_examples=12, deadline=None)
@given(box=st.integers(2, 5), classes=st.integers(2, 5), extra=st.integers(1, 6), negative_start=st.booleans(),
       to_the_end=st.booleans(), widened=st.sampled_from(["box", "cls"]), seed=st.integers(0, 2**16))
def test_yolo_head_slices_of_the_channel_axis(box: int, classes: int, extra: int, negative_start: bool,
                                             to_the_end: bool, widened: str, seed: int) -> None:
    with tempfile.TemporaryDirectory(prefix="onnxgrow-cuts-") as tmp:
        path = yolo_head(Path(tmp) / "head.onnx", box, classes, negative_start, to_the_end, seed)
        width = box if widened == "box" else classes
        report = assert_widens_exactly(path, widened, width + extra)
        assert len(report.groups[0].layers) == 1  # the other conv's slice is untouched


def split_graph(path: Path, sizes: list[int], seed: int) -> Path:
    """``x → conv a (sum(sizes)) → Split(sizes) → each part: Relu, and part 0 + conv b's output
    (a residual) → Concat of the parts → conv out``."""
    rng = np.random.default_rng(seed)
    parts = [f"part{k}" for k in range(len(sizes))]
    nodes = [node("Conv", ["x", "a.weight"], "a", pads=[1, 1, 1, 1]),
             helper.make_node("Split", ["a", "sizes"], parts, name="split", axis=1),
             node("Conv", ["x", "b.weight"], "b", pads=[1, 1, 1, 1]),
             node("Add", ["part0", "b"], "joined0"),
             *[node("Relu", [p], f"r{k}") for k, p in enumerate(parts[1:], start=1)],
             node("Concat", ["joined0", *[f"r{k}" for k in range(1, len(sizes))]], "cat", axis=1),
             node("Conv", ["cat", "out.weight"], "y")]
    inits = {"a.weight": weights(rng, sum(sizes), 3, 3, 3), "b.weight": weights(rng, sizes[0], 3, 3, 3),
             "sizes": np.array(sizes, np.int64), "out.weight": weights(rng, 2, sum(sizes), 1, 1)}
    return save_graph(path, nodes, {"x": [2, 3, 4, 4]}, ["y"], inits)


@settings(max_examples=12, deadline=None)
@given(sizes=st.lists(st.integers(2, 4), min_size=2, max_size=3), extra=st.integers(1, 5),
       seed=st.integers(0, 2**16))
def test_split_parts_traced_both_ways(sizes: list[int], extra: int, seed: int) -> None:
    """Widening ``b`` reaches part 0 backward through the residual and the Split (the other parts
    stay fixed); widening ``a`` cuts it into blocks that hold whole parts, each widened alike.
    (Parts of one channel would broadcast in the residual instead of joining it.)"""
    with tempfile.TemporaryDirectory(prefix="onnxgrow-cuts-") as tmp:
        path = split_graph(Path(tmp) / "split.onnx", sizes, seed)
        report = assert_widens_exactly(path, "b", sizes[0] + extra)
        assert len(report.groups[0].layers) == 2  # ``a`` joins through the Split
        blocks = sum(sizes) // np.gcd.reduce(sizes)
        assert_widens_exactly(path, "a", sum(sizes) * (1 + extra) if blocks > 1 else sum(sizes) + extra)
