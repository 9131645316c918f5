"""LayerNorm and Softmax decomposed into sums, as a Flax model reaches ONNX through jax2tf and tf2onnx.

jax has no LayerNorm or Softmax op: Flax's ``nn.LayerNorm`` computes ``jnp.mean`` (a
``reduce_sum`` divided by the constant count) of ``x`` and of ``x²`` (its fast variance), and
``jax.nn.softmax`` divides ``exp(x - max)`` by its ``reduce_sum``. jax2tf (graph
serialisation) writes them with TensorFlow ops and tf2onnx (opset 15) with ONNX ones:
``ReduceSum(keepdims=0)``, ``Div`` by the count, the reduced value ``Reshape``d to
``[..., 1]`` and ``Expand``ed back over the axis (``broadcast_in_dim``), ``Sqrt`` and
``Reciprocal`` for ``rsqrt``, and scale and bias folded to constants of the full shape. jax
and jax2tf are not installed here, so the graphs are written to that pattern with
``onnx.helper``.

What is exact (docs/design.md §4): a sum over the channels divided by their count is a
mean, unchanged when every unit is copied equally often (``q = k·n``, the count rewritten);
so the decomposed LayerNorm widens exactly to multiples of ``n`` and is refused otherwise.
The softmax's sum is its normaliser, used otherwise: duplicated units change it, refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from onnxgrow import RefusedError, load_model, widen
from tests.helpers.graphs import assert_widens_exactly, save_graph, weights

C, BATCH, SEQ = 4, 2, 3
RNG = np.random.default_rng(0)


def node(op: str, inputs: list[str], output: str, **attrs: object) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], name=output, **attrs)


def broadcast(value: str, out: str) -> list[onnx.NodeProto]:
    """jax2tf's ``broadcast_in_dim`` of a reduced ``[B, T]`` value back over the channels."""
    return [node("Reshape", [value, "keep_shape"], f"{out}_r"), node("Expand", [f"{out}_r", "full_shape"], out)]


def mean_of(value: str, out: str, division: str) -> list[onnx.NodeProto]:
    """``jnp.mean`` over the last axis: ``ReduceSum`` divided by the count (or times its inverse)."""
    count = "count" if division == "Div" else "inverse_count"
    return [node("ReduceSum", [value, "last_axis"], f"{out}_sum", keepdims=0),
            node(division, [f"{out}_sum", count], out)]


def jax2tf_model(path: Path, body: list[onnx.NodeProto], extra: dict[str, np.ndarray]) -> Path:
    """``x [B, T, 5] → MatMul fc (C channels) → h → body → m → MatMul out``, opset 15."""
    inits = {
        "w1": weights(RNG, 5, C), "w2": weights(RNG, C, 3),
        "last_axis": np.array([-1], np.int64), "keep_shape": np.array([BATCH, SEQ, 1], np.int64),
        "full_shape": np.array([BATCH, SEQ, C], np.int64), **extra,
    }
    nodes = [node("MatMul", ["x", "w1"], "h"), *body, node("MatMul", ["m", "w2"], "y")]
    nodes[0].name = "fc"
    return save_graph(path, nodes, {"x": [BATCH, SEQ, 5]}, ["y"], inits, opset=15)


def layer_norm(path: Path, division: str) -> Path:
    """Flax ``nn.LayerNorm`` (fast variance ``E[x²] - E[x]²``) as jax2tf and tf2onnx write it."""
    body = [
        *mean_of("h", "mean", division),
        node("Mul", ["h", "h"], "h_squared"),
        *mean_of("h_squared", "mean_of_squares", division),
        node("Mul", ["mean", "mean"], "mean_squared"),
        node("Sub", ["mean_of_squares", "mean_squared"], "variance_raw"),
        node("Max", ["variance_raw", "zero"], "variance"),
        node("Add", ["variance", "epsilon"], "variance_eps"),
        node("Sqrt", ["variance_eps"], "deviation"),
        node("Reciprocal", ["deviation"], "inverse"),
        *broadcast("mean", "mean_b"),
        *broadcast("inverse", "inverse_b"),
        node("Sub", ["h", "mean_b"], "centred"),
        node("Mul", ["centred", "inverse_b"], "normed"),
        node("Mul", ["normed", "scale"], "scaled"),
        node("Add", ["scaled", "bias"], "m"),
    ]
    extra = {"count": np.array(C, np.float32), "inverse_count": np.array(1 / C, np.float32),
             "zero": np.array(0, np.float32), "epsilon": np.array(1e-6, np.float32),
             "scale": np.broadcast_to(RNG.uniform(0.5, 2, C), (BATCH, SEQ, C)).astype(np.float32),
             "bias": np.broadcast_to(RNG.standard_normal(C), (BATCH, SEQ, C)).astype(np.float32)}
    return jax2tf_model(path, body, extra)


def softmax(path: Path) -> Path:
    """``jax.nn.softmax`` over the channels: ``exp(x - max) / sum``."""
    body = [
        node("ReduceMax", ["h"], "peak", axes=[-1], keepdims=0),
        *broadcast("peak", "peak_b"),
        node("Sub", ["h", "peak_b"], "shifted"),
        node("Exp", ["shifted"], "exps"),
        node("ReduceSum", ["exps", "last_axis"], "normaliser", keepdims=0),
        *broadcast("normaliser", "normaliser_b"),
        node("Div", ["exps", "normaliser_b"], "m"),
    ]
    return jax2tf_model(path, body, {})


@pytest.mark.parametrize("division", ["Div", "Mul"])
def test_jax2tf_layer_norm_widens_to_multiples(division: str, tmp_path: Path) -> None:
    path = layer_norm(tmp_path / "layer_norm.onnx", division)
    for q in (2 * C, 3 * C):
        assert_widens_exactly(path, "fc", q)
    with pytest.raises(RefusedError, match=rf"from {C} to {C + 1} with net2wider: a mean over the widened axis at "
                                           rf"(mean|mean_of_squares)_sum is exact only when every unit is copied "
                                           rf"equally often \(net2wider to a multiple of {C}\)"):
        widen(load_model(path), {"fc": C + 1})


def test_jax2tf_layer_norm_rewrites_the_counts(tmp_path: Path) -> None:
    """Both means divide by the new count; nothing else reads the old one."""
    grown, _ = widen(load_model(layer_norm(tmp_path / "layer_norm.onnx", "Div")), {"fc": 3 * C})
    divisors = [n.inputs[1].const_value.numpy() for n in grown.graph if n.op_type == "Div"]  # type: ignore[union-attr]
    assert [float(d) for d in divisors] == [3 * C, 3 * C]


def test_jax2tf_softmax_over_the_channels_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RefusedError, match="at ReduceSum node 'normaliser': ReduceSum over the widened axis changes "
                                           "with duplicated units"):
        widen(load_model(softmax(tmp_path / "softmax.onnx")), {"fc": 2 * C})
