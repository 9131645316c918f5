"""fp16 / bf16 / fp64 models grow in their own dtype; quantized graphs are refused by name.

- Every weight keeps its dtype; shares are applied in float64 and cast, with the rounding
  moved onto the last copy so the copies of a row sum exactly to it in the weight's dtype.
- ``onnxgrow.verify`` judges with the tolerances of the output dtype (DEFAULT_TOLERANCES).
- bfloat16: onnxruntime's CPU provider has no bfloat16 kernel for Gemm, MatMul, Conv or the
  elementwise ops, and its Python binding does not accept bfloat16 numpy inputs, so
  ``verify`` runs float32 twins of both models (bfloat16 → float32 is exact, see
  onnxgrow/bfloat16.py) and says so; the check here also runs its own float32 copies.
- Quantized: a DequantizeLinear weight (QDQ) feeding a Gemm, a QDQ pair on the activation
  path and the QLinear/Integer layers are refused with a message naming the op's node.
"""

from __future__ import annotations

from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxgrow
from onnxgrow.verification import DEFAULT_TOLERANCES
from tests.helpers.fuzz_graphs import GraphBuilder, available, dtype_cnn, dtype_mlp
from tests.helpers.robustness import assert_checker_passes, assert_clean, assert_equivalent, run_cli, untouched

NUMPY = {TensorProto.FLOAT16: np.float16, TensorProto.DOUBLE: np.float64, TensorProto.BFLOAT16: ml_dtypes.bfloat16}
DTYPE_IDS = {TensorProto.FLOAT16: "fp16", TensorProto.DOUBLE: "fp64", TensorProto.BFLOAT16: "bf16"}


def initializer_dtypes(path: Path) -> set[int]:
    return {t.data_type for t in onnx.load(str(path)).graph.initializer if t.data_type != TensorProto.INT64}


@pytest.mark.parametrize("dtype", [TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16], ids=DTYPE_IDS.get)
@pytest.mark.parametrize("init", ["net2wider", "zero-pad"])
def test_mlp_grows_in_its_own_dtype(tmp_path: Path, dtype: int, init: str) -> None:
    src = dtype_mlp(tmp_path / "m.onnx", dtype)
    out = tmp_path / "wide.onnx"
    with untouched(src):
        report = onnxgrow.widen_file(src, out, {"fc1": 7, "fc2": 11}, init=init, noise=0.0)
    assert initializer_dtypes(out) == {dtype}
    assert_checker_passes(out)
    assert_equivalent(src, out, {"x": [4, 3]}, dtype, seeds=(0, 1, 2))
    atol, rtol = DEFAULT_TOLERANCES[onnxgrow.load_model(src).graph.outputs[0].dtype]
    assert report.verification.passed
    assert (report.verification.outputs[0].atol, report.verification.outputs[0].rtol) == (atol, rtol)
    twinned = "float32 twins" in report.verification.summary()
    assert twinned == (dtype == TensorProto.BFLOAT16)


@pytest.mark.parametrize("dtype", [TensorProto.FLOAT16, TensorProto.BFLOAT16], ids=DTYPE_IDS.get)
def test_cnn_grows_in_its_own_dtype(tmp_path: Path, dtype: int) -> None:
    src = dtype_cnn(tmp_path / "c.onnx", dtype)
    out = tmp_path / "wide.onnx"
    report = onnxgrow.widen_file(src, out, {"conv1": 5, "conv2": 9})
    assert report.verification.passed
    assert initializer_dtypes(out) == {dtype}
    assert_checker_passes(out)
    assert_equivalent(src, out, {"x": [2, 2, 8, 8]}, dtype)


def test_fp64_grows_with_fp64_tolerances(tmp_path: Path) -> None:
    """Doubles are held to 1e-10: the split is done in float64 with no cast at all."""
    src = dtype_mlp(tmp_path / "m.onnx", TensorProto.DOUBLE)
    report = onnxgrow.widen_file(src, tmp_path / "o.onnx", {"fc1": 9}, noise=0.05)
    worst = report.verification.outputs[0]
    assert worst.rtol == 1e-10 and worst.max_rel_error < 1e-12


@pytest.mark.parametrize("dtype", [TensorProto.FLOAT16, TensorProto.BFLOAT16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("noise", [0.0, 0.1])
def test_copies_sum_exactly_to_the_row_in_the_weight_dtype(tmp_path: Path, dtype: int, noise: float) -> None:
    """Regression (fuzz): a row split in 3 lost up to an ulp per copy in fp16, which a
    LayerNorm over a low-variance stream amplified past the fp16 tolerance."""
    src = dtype_mlp(tmp_path / "m.onnx", dtype, widths=(3, 1, 5, 2))
    grown, _ = onnxgrow.widen(src, {"fc1": 3}, noise=noise)
    old = numpy_helper.to_array(onnx.load(str(src)).graph.initializer[2]).astype(np.float64)  # fc2 [K=1, N] (MatMul)
    new = grown.graph.initializers["fc2.weight"].const_value.numpy()
    assert new.dtype == NUMPY[dtype] and new.shape == (3, 5)
    assert np.array_equal(new.astype(np.float64).sum(axis=0), old[0])


def test_fp16_residual_layernorm_regression(tmp_path: Path) -> None:
    """The fuzz case: fp16 residual stream of width 2 under a LayerNorm, a hidden unit split in 3."""
    b = GraphBuilder(TensorProto.FLOAT16, 17, "legacy", np.random.default_rng(11))
    stream = b.dense("x", 1, 2, "fc_in", "gemm_t")
    h = b.activation(b.dense(stream, 2, 1, "block.fc1", "gemm_t"), "Elu")
    stream = b.node("Add", [stream, b.dense(h, 1, 2, "block.fc2", "gemm_t")])
    b.dense(b.layernorm(stream, 2, "norm"), 2, 2, "head", "gemm_t")
    b.nodes[-1].output[0] = "y"
    src = tmp_path / "r.onnx"
    onnx.save(b.model([b.value("x", ["N", 1])], [b.value("y", ["N", 2])]), str(src))
    out = tmp_path / "o.onnx"
    onnxgrow.widen_file(src, out, {"fc_in": 4, "block.fc1": 3})
    assert_equivalent(src, out, {"x": [64, 1]}, TensorProto.FLOAT16, seeds=range(4))


def test_bf16_cli_verifies_through_float32_twins(tmp_path: Path) -> None:
    """With verification on, a bfloat16 model is checked on its float32 twin and says so."""
    src = dtype_mlp(tmp_path / "m.onnx", TensorProto.BFLOAT16)
    out = tmp_path / "o.onnx"
    with untouched(src):
        result = run_cli("widen", src, "--node", "fc1", "--to", "6", "-o", out)
    assert_clean(result, (0,))
    assert "PASSED" in result.stdout and "float32 twins of bfloat16 models" in result.stdout
    assert initializer_dtypes(out) == {TensorProto.BFLOAT16}


def test_bf16_twin_check_can_fail(tmp_path: Path) -> None:
    """random-pad changes a bfloat16 model's function: the twin check sees it."""
    src = dtype_mlp(tmp_path / "m.onnx", TensorProto.BFLOAT16)
    report = onnxgrow.widen_file(src, tmp_path / "o.onnx", {"fc1": 9}, init="random-pad")
    assert not report.verification.passed and report.verification.max_rel_error > 0.05


# ----- quantized graphs -------------------------------------------------------------------
def _save(nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray], path: Path,
          x_shape: list, y_shape: list, x_type: int = TensorProto.FLOAT) -> Path:
    graph = helper.make_graph(nodes, "q", [helper.make_tensor_value_info("x", x_type, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
                              [numpy_helper.from_array(a, n) for n, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def qdq_weight_model(path: Path) -> Path:
    """``fc0 → Relu → fc1 (weight = DequantizeLinear(int8)) → Relu → fc2``."""
    rng = np.random.default_rng(0)
    inits = {"fc0.weight": rng.standard_normal((3, 3)).astype(np.float32),
             "fc1.weight_quantized": rng.integers(-100, 100, (4, 3)).astype(np.int8),
             "fc1.weight_scale": np.array(0.01, np.float32), "fc1.weight_zero_point": np.array(0, np.int8),
             "fc1.bias": rng.standard_normal(4).astype(np.float32),
             "fc2.weight": rng.standard_normal((2, 4)).astype(np.float32)}
    nodes = [helper.make_node("Gemm", ["x", "fc0.weight"], ["h0"], name="fc0", transB=1),
             helper.make_node("Relu", ["h0"], ["a0"], name="relu0"),
             helper.make_node("DequantizeLinear", ["fc1.weight_quantized", "fc1.weight_scale", "fc1.weight_zero_point"],
                              ["fc1.weight"], name="fc1.weight_DequantizeLinear"),
             helper.make_node("Gemm", ["a0", "fc1.weight", "fc1.bias"], ["h1"], name="fc1", transB=1),
             helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
             helper.make_node("Gemm", ["a1", "fc2.weight"], ["y"], name="fc2", transB=1)]
    return _save(nodes, inits, path, ["N", 3], ["N", 2])


def qdq_activation_model(path: Path) -> Path:
    """``fc1 → Relu → QuantizeLinear → DequantizeLinear → fc2``: quantized activations."""
    rng = np.random.default_rng(1)
    inits = {"fc1.weight": rng.standard_normal((4, 3)).astype(np.float32),
             "fc2.weight": rng.standard_normal((2, 4)).astype(np.float32),
             "act_scale": np.array(0.05, np.float32), "act_zero_point": np.array(0, np.uint8)}
    nodes = [helper.make_node("Gemm", ["x", "fc1.weight"], ["h"], name="fc1", transB=1),
             helper.make_node("Relu", ["h"], ["a"], name="relu"),
             helper.make_node("QuantizeLinear", ["a", "act_scale", "act_zero_point"], ["a_q"],
                              name="relu_QuantizeLinear"),
             helper.make_node("DequantizeLinear", ["a_q", "act_scale", "act_zero_point"], ["a_dq"],
                              name="relu_DequantizeLinear"),
             helper.make_node("Gemm", ["a_dq", "fc2.weight"], ["y"], name="fc2", transB=1)]
    return _save(nodes, inits, path, ["N", 3], ["N", 2])


def qlinear_model(path: Path) -> Path:
    """``QuantizeLinear → QLinearMatMul → MatMulInteger``-free integer MLP: ``x_q → qmm → DQ → y``."""
    rng = np.random.default_rng(2)
    inits = {"x_scale": np.array(0.1, np.float32), "x_zp": np.array(0, np.uint8),
             "w_q": rng.integers(0, 255, (3, 4)).astype(np.uint8), "w_scale": np.array(0.02, np.float32),
             "w_zp": np.array(128, np.uint8), "h_scale": np.array(0.2, np.float32), "h_zp": np.array(0, np.uint8),
             "w2_q": rng.integers(0, 255, (4, 2)).astype(np.uint8), "w2_zp": np.array(128, np.uint8)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"], name="quant"),
             helper.make_node("QLinearMatMul", ["x_q", "x_scale", "x_zp", "w_q", "w_scale", "w_zp", "h_scale", "h_zp"],
                              ["h_q"], name="qfc1"),
             helper.make_node("MatMulInteger", ["h_q", "w2_q", "h_zp", "w2_zp"], ["h2"], name="qfc2"),
             helper.make_node("Cast", ["h2"], ["y"], name="cast", to=TensorProto.FLOAT)]
    return _save(nodes, inits, path, ["N", 3], ["N", 2])


@pytest.mark.parametrize(("builder", "node", "message"), [
    (qdq_weight_model, "fc1", "DequantizeLinear node 'fc1.weight_DequantizeLinear'"),
    (qdq_weight_model, "fc0", "DequantizeLinear node 'fc1.weight_DequantizeLinear'"),
    (qdq_activation_model, "fc1", "QuantizeLinear node 'relu_QuantizeLinear'"),
    (qlinear_model, "qfc1", "quantized layer (QLinearMatMul)"),
    (qlinear_model, "qfc2", "quantized layer (MatMulInteger)"),
])
def test_quantized_graphs_are_refused_naming_the_op(tmp_path: Path, builder, node: str, message: str) -> None:  # type: ignore[no-untyped-def]
    src = builder(tmp_path / "q.onnx")
    out = tmp_path / "o.onnx"
    with untouched(tmp_path):
        result = run_cli("widen", src, "--node", node, "--to", "6", "-o", out)
    assert_clean(result, (2,))
    assert message in result.stderr, result.stderr


def test_quantized_layers_listed_as_not_growable(tmp_path: Path) -> None:
    summary = onnxgrow.inspect_model(qlinear_model(tmp_path / "q.onnx"))
    reasons = {info.node: info.reason for info in summary.not_growable}
    assert set(reasons) == {"qfc1", "qfc2"} and all("quantized layer" in r for r in reasons.values())
    summary = onnxgrow.inspect_model(qdq_weight_model(tmp_path / "w.onnx"))
    fc1 = next(i for i in summary.not_growable if i.node == "fc1")
    assert "DequantizeLinear" in fc1.reason


def test_qdq_models_run_in_onnxruntime(tmp_path: Path) -> None:
    """The quantized fixtures are real: onnxruntime runs them (so the refusals are not about broken files)."""
    import onnxruntime as ort

    for builder in (qdq_weight_model, qdq_activation_model, qlinear_model):
        session = ort.InferenceSession(str(builder(tmp_path / f"{builder.__name__}.onnx")),
                                       providers=["CPUExecutionProvider"])
        (y,) = session.run(None, {"x": np.ones((2, 3), np.float32)})
        assert y.shape == (2, 2)


def test_bf16_conv_needs_opset_22() -> None:
    """Why the bf16 CNN above uses opset 22: Conv accepts bfloat16 only from there."""
    assert not available("Conv", TensorProto.BFLOAT16, 21) and available("Conv", TensorProto.BFLOAT16, 22)
