"""Absurd widths are refused before anything is allocated, saying how much memory they need.

The estimate counts every constant input of the group's producers and contractors, found
through Identity/Transpose chains (where the consuming value itself has no constant), so
a MatMul fed ``Transpose(W)`` is charged like one fed ``W``.
"""

from __future__ import annotations

import re
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

import onnxgrow
from onnxgrow.widening import api
from tests.helpers.fuzz_graphs import GraphBuilder
from tests.helpers.paths import FIXTURES
from tests.helpers.robustness import assert_clean, run_cli, untouched


def matmul_mlp(path: Path, style: str) -> Path:
    """``fc1 → Relu → fc2 → fc3`` with fc1/fc2 in ``style`` (matmul, matmul_transposed, gemm_t)."""
    b = GraphBuilder(TensorProto.FLOAT, 17, "legacy", np.random.default_rng(0))
    x = b.activation(b.dense("x", 8, 16, "fc1", style), "Relu")
    x = b.dense(x, 16, 4, "fc2", style)
    b.dense(x, 4, 2, "fc3", "gemm_t", "refuse")
    b.nodes[-1].output[0] = "y"
    onnx.save(b.model([b.value("x", ["N", 8])], [b.value("y", ["N", 2])]), str(path))
    return path


def needed_gib(message: str) -> float:
    found = re.search(r"need about ([\d,.e+]+) GiB of memory", message)
    assert found, message
    return float(found.group(1).replace(",", ""))


@pytest.mark.parametrize("width", [10**12, 2**63, 10**30])
@pytest.mark.parametrize(("model", "layer"), [("mlp_legacy", "layer_1"), ("mnist_cnn_dynamo", "conv1"),
                                              ("mnist_cnn_legacy", "fc1")])
def test_refused_through_the_cli_with_the_memory_it_needs(tmp_path: Path, model: str, layer: str, width: int) -> None:
    src = FIXTURES / f"{model}.onnx"
    with untouched(tmp_path):
        result = run_cli("widen", src, "--node", layer, "--to", width, "-o", tmp_path / "o.onnx")
    assert_clean(result, (2,))
    assert needed_gib(result.stderr) > 1000 and "the limit is" in result.stderr


def test_transpose_chains_are_charged(tmp_path: Path) -> None:
    """MatMul(x, W) and MatMul(x, Transpose(Wᵀ)) hold the same weights: the same memory is reported."""
    needed = {}
    for style in ("matmul", "matmul_transposed"):
        with pytest.raises(onnxgrow.GrowError) as refused:
            onnxgrow.widen(matmul_mlp(tmp_path / f"{style}.onnx", style), {"fc1": 10**12})
        needed[style] = needed_gib(str(refused.value))
    assert needed["matmul_transposed"] == needed["matmul"]
    # fc1 [8,16] and fc2 [16,4] in fp32 grow from 16 to 10**12 units (the bias Add is a carrier):
    assert needed["matmul"] > (8 * 16 + 16 * 4) * 4 / 16 * 10**12 / 1024**3


def test_refused_before_allocating(tmp_path: Path) -> None:
    """The refusal allocates next to nothing (tracemalloc sees numpy's buffers)."""
    model = onnxgrow.load_model(FIXTURES / "mnist_cnn_legacy.onnx")
    tracemalloc.start()
    try:
        with pytest.raises(onnxgrow.GrowError, match="would need about"):
            onnxgrow.widen(model, {"fc1": 10**13})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024**2


def test_limit_is_the_machine_memory_when_smaller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "MAX_NEW_WEIGHT_BYTES", 10**20)
    assert 0 < api.memory_limit() < 10**20
    monkeypatch.setattr(api, "MAX_NEW_WEIGHT_BYTES", 1024)
    assert api.memory_limit() == 1024
    with pytest.raises(onnxgrow.GrowError, match="the limit is 1.0 KiB"):
        onnxgrow.widen(FIXTURES / "mlp_legacy.onnx", {"layer_1": 400})


def test_deepen_width_is_guarded_too(tmp_path: Path) -> None:
    result = run_cli("deepen", FIXTURES / "mlp_legacy.onnx", "--after", "layer_1", "--width", 10**12,
                     "-o", tmp_path / "o.onnx")
    assert_clean(result, (2,))
    assert "would need about" in result.stderr and not (tmp_path / "o.onnx").exists()


@pytest.mark.parametrize(("mode", "layers"), [("identity", 1), ("residual", 2)])
def test_deepen_without_width_is_guarded_by_the_layer_width(monkeypatch: pytest.MonkeyPatch, mode: str,
                                                            layers: int) -> None:
    """The new square layer (two in the residual form) is charged before it is built: a
    100,000-unit layer needs a 37 GiB identity, which was built until memory ran out."""
    width = 4  # layer_1 of mlp_legacy: weight [4, 3] (Gemm transB: 4 units), float32
    values = layers * width * width
    monkeypatch.setattr(api, "MAX_NEW_WEIGHT_BYTES", 12 * values - 1)
    with pytest.raises(onnxgrow.GrowError, match=rf"deepening after 'layer_1' \({width} units wide\) adds "
                                                 rf"{4 * values} bytes of weights and would need about "
                                                 rf"{12 * values} bytes of memory"):
        onnxgrow.deepen(FIXTURES / "mlp_legacy.onnx", "layer_1", mode=mode)
    monkeypatch.setattr(api, "MAX_NEW_WEIGHT_BYTES", 12 * values)
    onnxgrow.deepen(FIXTURES / "mlp_legacy.onnx", "layer_1", mode=mode)
