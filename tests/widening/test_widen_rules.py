"""Widening rules on hand-built graphs (ONNX text format or ``onnx.helper``): the cases torch
exports do not emit.

Each property builds a small graph around the layer it widens, with hypothesis choosing
shapes, constant layouts, axes and the new width, then checks with onnxruntime that the
widened model computes what the original did (max relative error ≤ 1e-5), or that the
refusal names the blocking node. Budgets are small: each example runs onnxruntime twice.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from onnxgrow import RefusedError, load_model, widen
from tests.helpers.graphs import assert_widens_exactly, save_graph, save_text, weights

SETTINGS = settings(max_examples=20, deadline=None)
N, H, W = 2, 4, 4


@contextmanager
def model_file() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="onnxgrow-rules-") as tmp:
        yield Path(tmp) / "model.onnx"


def conv(name: str, x: str, w: str, out: str, *, b: str | None = None, group: int = 1) -> object:
    inputs = [x, w] + ([b] if b else [])
    return helper.make_node("Conv", inputs, [out], name=name, pads=[1, 1, 1, 1], group=group)


widths = st.integers(min_value=2, max_value=6)
seeds = st.integers(min_value=0, max_value=2**16)


@SETTINGS
@given(c=widths, extra=st.integers(1, 7), op=st.sampled_from(["Add", "Sub", "Mul", "Div"]),
       layout=st.sampled_from(["c11", "1c11", "scalar", "one"]), const_first=st.booleans(), seed=seeds)
def test_per_channel_constants(c: int, extra: int, op: str, layout: str, const_first: bool, seed: int) -> None:
    """``conv → op(constant) → Relu → conv``: per-channel constants are gathered, others kept."""
    rng = np.random.default_rng(seed)
    shape = {"c11": (c, 1, 1), "1c11": (1, c, 1, 1), "scalar": (), "one": (1,)}[layout]
    const = (rng.uniform(0.5, 2.0, shape) * rng.choice([-1, 1], shape)).astype(np.float32)
    operands = ["k", "a"] if const_first and op != "Div" else ["a", "k"]
    nodes = [
        conv("conv", "x", "w1", "a", b="b1"),
        helper.make_node(op, operands, ["m"], name="per_channel"),
        helper.make_node("Relu", ["m"], ["r"]),
        conv("out", "r", "w2", "y"),
    ]
    inits = {"w1": weights(rng, c, 3, 3, 3), "b1": weights(rng, c), "k": const, "w2": weights(rng, 3, c, 3, 3)}
    with model_file() as path:
        save_graph(path, nodes, {"x": [N, 3, H, W]}, ["y"], inits)
        assert_widens_exactly(path, "conv", c + extra)


@SETTINGS
@given(c=widths, extra=st.integers(1, 7), per_channel=st.booleans(), seed=seeds)
def test_prelu_slope(c: int, extra: int, per_channel: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    slope = weights(rng, c, 1, 1) if per_channel else weights(rng, 1)
    with model_file() as path:
        save_text(path, f"""
            g (float[{N}, 3, {H}, {W}] x) => (float y) {{
                [conv] a = Conv <pads = [1, 1, 1, 1]> (x, w1)
                p = PRelu (a, slope)
                [out] y = Conv <pads = [1, 1, 1, 1]> (p, w2)
            }}""", {"w1": weights(rng, c, 3, 3, 3), "slope": slope, "w2": weights(rng, 2, c, 3, 3)})
        assert_widens_exactly(path, "conv", c + extra)


@SETTINGS
@given(c=widths, extra=st.integers(1, 7), back_to_nchw=st.booleans(), seed=seeds)
def test_transpose_nchw_nhwc(c: int, extra: int, back_to_nchw: bool, seed: int) -> None:
    """NCHW → NHWC (channels last, contracted by a MatMul), optionally back to NCHW for a conv."""
    rng = np.random.default_rng(seed)
    nodes = [conv("conv", "x", "w1", "a", b="b1"), helper.make_node("Transpose", ["a"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("Sigmoid", ["t"], ["s"])]
    inits = {"w1": weights(rng, c, 3, 3, 3), "b1": weights(rng, c)}
    if back_to_nchw:
        nodes += [helper.make_node("Transpose", ["s"], ["u"], perm=[0, 3, 1, 2]), conv("out", "u", "w2", "y")]
        inits["w2"] = weights(rng, 2, c, 3, 3)
    else:
        nodes.append(helper.make_node("MatMul", ["s", "w2"], ["y"], name="out"))
        inits["w2"] = weights(rng, c, 5)
    with model_file() as path:
        save_graph(path, nodes, {"x": [N, 3, H, W]}, ["y"], inits)
        report = assert_widens_exactly(path, "conv", c + extra)
    assert len(report.groups[0].contractors) == 1


@SETTINGS
@given(c=widths, other=widths, extra=st.integers(1, 7), position=st.integers(0, 2),
       other_is_input=st.booleans(), seed=seeds)
def test_concat_offsets_with_an_unwidened_input(c: int, other: int, extra: int, position: int,
                                                 other_is_input: bool, seed: int) -> None:
    """``Concat([.., conv, ..], axis=1)`` with another conv or the model input beside it."""
    rng = np.random.default_rng(seed)
    inits = {"w1": weights(rng, c, 3, 3, 3)}
    nodes = [conv("conv", "x", "w1", "a"), helper.make_node("Relu", ["a"], ["ra"])]
    if other_is_input:
        parts, other = ["x"], 3
    else:
        nodes.append(conv("side", "x", "w2", "b"))
        inits["w2"] = weights(rng, other, 3, 3, 3)
        parts = ["b"]
    parts.insert(min(position, len(parts)), "ra")
    nodes += [helper.make_node("Concat", parts, ["cat"], axis=1), conv("out", "cat", "w3", "y")]
    inits["w3"] = weights(rng, 2, c + other, 3, 3)
    with model_file() as path:
        save_graph(path, nodes, {"x": [N, 3, H, W]}, ["y"], inits)
        assert_widens_exactly(path, "conv", c + extra)


@SETTINGS
@given(c=widths, extra=st.integers(1, 7), axis=st.sampled_from([2, 3, -1, -2]), use_slice=st.booleans(),
       start=st.integers(0, 1), stop=st.sampled_from([3, 4, 2**62]), seed=seeds)
def test_split_and_slice_on_other_axes(c: int, extra: int, axis: int, use_slice: bool, start: int, stop: int,
                                       seed: int) -> None:
    rng = np.random.default_rng(seed)
    inits = {"w1": weights(rng, c, 3, 3, 3), "w2": weights(rng, 2, c, 3, 3)}
    nodes = [conv("conv", "x", "w1", "a")]
    if use_slice:
        inits.update(starts=np.array([start]), ends=np.array([stop]), axes=np.array([axis]))
        nodes.append(helper.make_node("Slice", ["a", "starts", "ends", "axes"], ["m"]))
    else:
        inits["sizes"] = np.array([1, 3])
        nodes += [helper.make_node("Split", ["a", "sizes"], ["p", "q"], axis=axis),
                  helper.make_node("ReduceMax", ["q", "ax"], ["qm"], keepdims=1),
                  helper.make_node("Mul", ["p", "qm"], ["m"])]
        inits["ax"] = np.array([axis])
    nodes.append(conv("out", "m", "w2", "y"))
    with model_file() as path:
        save_graph(path, nodes, {"x": [N, 3, H, W]}, ["y"], inits)
        assert_widens_exactly(path, "conv", c + extra)


SLICED_CONVS = f"""
    g (float[{N}, 3, {H}, {W}] x) => (float y) {{
        [conv] a = Conv <pads = [1, 1, 1, 1]> (x, w1)
        [cut] m = Slice (a, s, e, ax)
        [out] y = Conv <pads = [1, 1, 1, 1]> (m, w2)
    }}"""


@pytest.mark.parametrize("end", [3, 2**62])
def test_slice_keeping_the_whole_channel_axis(end: int) -> None:
    """``x[:, :3]`` of 3 channels keeps them all: the end (3) is rewritten, INT_MAX is kept."""
    rng = np.random.default_rng(0)
    inits = {"w1": weights(rng, 3, 3, 3, 3), "s": np.array([0]), "e": np.array([end]), "ax": np.array([1]),
             "w2": weights(rng, 2, 3, 3, 3)}
    with model_file() as path:
        save_text(path, SLICED_CONVS, inits)
        assert_widens_exactly(path, "conv", 7)


def test_slice_cutting_the_channel_axis_keeps_its_blocks() -> None:
    """``a[:, 0:2]`` of 4 channels: the channels widen as 2 blocks of 2 units, each alike, and the
    slice keeps the first block (its new end rewritten); an odd new width cannot be 2 alike blocks."""
    rng = np.random.default_rng(0)
    inits = {"w1": weights(rng, 4, 3, 3, 3), "s": np.array([0]), "e": np.array([2]), "ax": np.array([1]),
             "w2": weights(rng, 2, 2, 3, 3)}
    with model_file() as path:
        save_text(path, SLICED_CONVS, inits)
        assert_widens_exactly(path, "conv", 10)
        with pytest.raises(RefusedError, match="at Slice node 'cut': it slices positions 0 to 2 of the channels, so "
                                               "the new width must be a multiple of 2 .*; 9 is not"):
            widen(load_model(path), {"conv": 9})


@SETTINGS
@given(c=widths, extra=st.integers(1, 7), keepdims=st.sampled_from([0, 1]),
       axes=st.sampled_from([[2, 3], [-1, -2], [3, 2]]), as_input=st.booleans(), seed=seeds)
def test_reduce_mean_over_spatial_axes(c: int, extra: int, keepdims: int, axes: list[int], as_input: bool,
                                       seed: int) -> None:
    """ReduceMean over H, W (axes as attribute, opset 13, or as input, opset 18) → Gemm."""
    rng = np.random.default_rng(seed)
    inits = {"w1": weights(rng, c, 3, 3, 3), "fc": weights(rng, 5, c)}
    if as_input:
        inits["axes"] = np.array(axes)
        reduce = helper.make_node("ReduceMean", ["a", "axes"], ["m"], keepdims=keepdims)
    else:
        reduce = helper.make_node("ReduceMean", ["a"], ["m"], axes=axes, keepdims=keepdims)
    nodes = [conv("conv", "x", "w1", "a"), reduce]
    flat = "m"
    if keepdims:
        nodes.append(helper.make_node("Flatten", ["m"], ["f"], axis=1))
        flat = "f"
    nodes.append(helper.make_node("Gemm", [flat, "fc"], ["y"], name="out", transB=1))
    with model_file() as path:
        save_graph(path, nodes, {"x": [N, 3, H, W]}, ["y"], inits, opset=18 if as_input else 13)
        assert_widens_exactly(path, "conv", c + extra)


@SETTINGS
@given(c=widths, extra=st.integers(1, 7),
       first=st.sampled_from([[0, 0, -1], [0, "C", -1], ["N", "C", "HW"], [-1, "C", "HW"]]),
       second=st.sampled_from([[0, -1], ["N", -1], [-1, "CHW"], ["N", "CHW"]]), seed=seeds)
def test_reshape_with_zero_and_minus_one(c: int, extra: int, first: list[int | str], second: list[int | str],
                                         seed: int) -> None:
    """``[N, C, H, W]`` → ``[N, C, H·W]`` → ``[N, C·H·W]`` → Gemm, targets with 0, -1 and baked sizes."""
    rng = np.random.default_rng(seed)
    sizes = {"N": N, "C": c, "HW": H * W, "CHW": c * H * W}
    inits = {
        "w1": weights(rng, c, 3, 3, 3),
        "shape1": np.array([sizes.get(d, d) for d in first], dtype=np.int64),  # type: ignore[misc]
        "shape2": np.array([sizes.get(d, d) for d in second], dtype=np.int64),  # type: ignore[misc]
        "fc": weights(rng, c * H * W, 4),
    }
    nodes = [conv("conv", "x", "w1", "a"), helper.make_node("Reshape", ["a", "shape1"], ["r1"]),
             helper.make_node("Softmax", ["r1"], ["s"], axis=-1),  # over H·W, not the channels
             helper.make_node("Reshape", ["s", "shape2"], ["r2"]),
             helper.make_node("Gemm", ["r2", "fc"], ["y"], name="out")]
    with model_file() as path:
        save_graph(path, nodes, {"x": [N, 3, H, W]}, ["y"], inits)
        assert_widens_exactly(path, "conv", c + extra)


@SETTINGS
@given(d=widths, hidden=widths, extra=st.integers(1, 7), trans_b=st.booleans(),
       back=st.sampled_from([["B", "T", "H"], ["B", -1, "H"], [-1, "T", "H"]]), seed=seeds)
def test_transformer_ffn_reshape_gemm_pairs(d: int, hidden: int, extra: int, trans_b: bool,
                                            back: list[int | str], seed: int) -> None:
    """``[B, T, D]`` → Reshape → Gemm fc1 → Reshape → Gelu → Reshape → Gemm fc2 → Reshape."""
    rng = np.random.default_rng(seed)
    b, t = 2, 3
    sizes = {"B": b, "T": t, "H": hidden}
    w1 = weights(rng, hidden, d) if trans_b else weights(rng, d, hidden)
    inits = {
        "flat_d": np.array([-1, d]), "w1": w1, "b1": weights(rng, hidden),
        "back_h": np.array([sizes.get(v, v) for v in back], dtype=np.int64),  # type: ignore[misc]
        "flat_h": np.array([-1, hidden]), "w2": weights(rng, hidden, d), "b2": weights(rng, d),
        "back_d": np.array([b, t, d]),
    }
    nodes = [
        helper.make_node("Reshape", ["x", "flat_d"], ["x2"]),
        helper.make_node("Gemm", ["x2", "w1", "b1"], ["h2"], name="fc1", transB=int(trans_b)),
        helper.make_node("Reshape", ["h2", "back_h"], ["h"]),
        helper.make_node("Gelu", ["h"], ["g"], approximate="tanh"),
        helper.make_node("Reshape", ["g", "flat_h"], ["g2"]),
        helper.make_node("Gemm", ["g2", "w2", "b2"], ["y2"], name="fc2"),
        helper.make_node("Reshape", ["y2", "back_d"], ["y"]),
    ]
    with model_file() as path:
        save_graph(path, nodes, {"x": [b, t, d]}, ["y"], inits, opset=20)
        report = assert_widens_exactly(path, "fc1", hidden + extra)
    assert len(report.groups[0].contractors) == 1


LAYER_NORM = "[ln] ln = LayerNormalization <axis = -1> (h, scale, bias)"
LAYER_NORM_BY_PRIMITIVES = """
    [mean] mean = ReduceMean (h, ax)
    centred = Sub (h, mean)
    sq = Pow (centred, two)
    [variance] var = ReduceMean (sq, ax)
    var_eps = Add (var, eps)
    std = Sqrt (var_eps)
    normed = Div (centred, std)
    scaled = Mul (normed, scale)
    ln = Add (scaled, bias)
"""


def layer_norm_graph(path: Path, d: int, decomposed: bool, seed: int) -> Path:
    """``x → MatMul proj (d) → LayerNorm over d → MatMul out``; LN as one op or as primitives."""
    rng = np.random.default_rng(seed)
    inits = {"wp": weights(rng, 3, d), "scale": weights(rng, d), "bias": weights(rng, d), "wo": weights(rng, d, 2)}
    if decomposed:
        inits.update(ax=np.array([-1]), two=np.array(2.0, dtype=np.float32), eps=np.array(1e-5, dtype=np.float32))
    return save_text(path, f"""
        g (float[2, 3, 3] x) => (float y) {{
            [proj] h = MatMul (x, wp)
            {LAYER_NORM_BY_PRIMITIVES if decomposed else LAYER_NORM}
            [out] y = MatMul (ln, wo)
        }}""", inits)


#: LayerNorm widths: from 3. Over 2 channels, one seed in about 200 draws two nearly equal
#: channels, and the decomposed form's ``Sub(h, mean)`` cancels in float32: a mean over 6
#: copies rounds otherwise than over 2, and the check rightly fails (rel 2.7e-5 at d=2, seed 621).
layer_norm_widths = st.integers(min_value=3, max_value=6)


@SETTINGS
@given(d=layer_norm_widths, factor=st.integers(2, 3), remainder=st.integers(1, 5), decomposed=st.booleans(),
       seed=seeds)
def test_layer_norm_uniform_factor_or_refusal(d: int, factor: int, remainder: int, decomposed: bool,
                                               seed: int) -> None:
    with model_file() as path:
        layer_norm_graph(path, d, decomposed, seed)
        assert_widens_exactly(path, "proj", factor * d)
        blocking = "ReduceMean over the widened axis at mean" if decomposed else "LayerNormalization"
        with pytest.raises(RefusedError, match=f"multiple of {d}") as refused:
            widen(load_model(path), {"proj": factor * d + 1 + remainder % (d - 1)})
        assert blocking in str(refused.value)


@pytest.mark.parametrize("layer", ["query", "key"])
def test_single_head_attention_query_and_key_are_refused_at_the_score_matmul(layer: str) -> None:
    """Without a head split, q and k meet in ``MatMul(q, kᵀ)``: two computed operands."""
    rng = np.random.default_rng(0)
    with model_file() as path:
        save_text(path, """
            g (float[2, 3, 4] x) => (float y) {
                [query] q = MatMul (x, wq)
                [key] k = MatMul (x, wk)
                kt = Transpose <perm = [0, 2, 1]> (k)
                [scores] scores = MatMul (q, kt)
                y = Softmax <axis = -1> (scores)
            }""", {"wq": weights(rng, 4, 4), "wk": weights(rng, 4, 4)})
        with pytest.raises(RefusedError, match="at MatMul node 'scores': it multiplies two tensors computed"):
            widen(load_model(path), {layer: 8})
