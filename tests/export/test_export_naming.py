"""Framework names and PyTorch layouts of exported weights (onnxgrow.parameter_names)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxgrow.export import export_state_dict, state_dict, to_torch
from onnxgrow.parameter_names import is_framework_name

pytest.importorskip("torch")

import torch
from safetensors.torch import load_file
from torch import nn

from tests.helpers.export import (
    ResNetish,
    TiedLM,
    TinyEncoder,
    assert_close,
    assert_every_parameter_learns,
    export_onnx,
    ort_run,
    torch_run,
)

pytestmark = pytest.mark.torch

EXPORTS = [("legacy", True), ("legacy", False), ("dynamo", True), ("dynamo", False)]


def _export(cls: type[nn.Module], folder: Path, exporter: str, fold: bool) -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    model = cls().eval()
    path = export_onnx(model, (torch.randint(0, 20, (2, 5)),), folder / "m.onnx", dynamo=exporter == "dynamo",
                       fold=fold, input_names=("tokens",))
    return model, path


def _tokens(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 20, (3, 5)).astype(np.int64)


@pytest.mark.parametrize("exporter, fold", EXPORTS)
def test_matmul_weights_come_back_as_out_by_in(tmp_path: Path, exporter: str, fold: bool) -> None:
    """Linear on a 3-D input exports as MatMul with a [in, out] weight (``onnx::MatMul_12``,
    ``val_0``, or ``Transpose(up.weight)``); the state dict has PyTorch's [out, in]."""
    model, path = _export(TinyEncoder, tmp_path, exporter, fold)
    result = state_dict(path)
    expected = model.state_dict()
    assert set(result.tensors) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(result.tensors[key], value.numpy(), err_msg=key)
    assert result.notes() == []


@pytest.mark.parametrize("exporter, fold", [("legacy", True), ("dynamo", True)])
def test_free_parameters_are_trainable_in_the_torch_module(tmp_path: Path, exporter: str, fold: bool) -> None:
    """``pos`` is added to a tensor (no layer): it is still an nn.Parameter that learns."""
    _, path = _export(TinyEncoder, tmp_path, exporter, fold)
    module = to_torch(path)
    tokens = _tokens()
    assert_close(ort_run(path, {"tokens": tokens}), torch_run(module, tokens))
    assert "pos" in dict(module.named_parameters())
    assert_every_parameter_learns(module, tokens)


@pytest.mark.parametrize("exporter, fold", EXPORTS)
def test_tied_weights_load_strictly(tmp_path: Path, exporter: str, fold: bool) -> None:
    model, path = _export(TiedLM, tmp_path, exporter, fold)
    result = state_dict(path)
    fresh = TiedLM()
    fresh.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in result.tensors.items()}, strict=True)
    np.testing.assert_array_equal(fresh.emb.weight.detach().numpy(), model.emb.weight.detach().numpy())
    tokens = _tokens(1)
    assert_close(ort_run(path, {"tokens": tokens}), torch_run(fresh, tokens))


def test_tied_weights_stay_one_parameter_in_the_torch_module(tmp_path: Path) -> None:
    _, path = _export(TiedLM, tmp_path, "dynamo", True)
    assert any("tied weights" in note for note in state_dict(path).notes())
    module = to_torch(path)
    assert module.get_parameter("emb.weight") is module.get_parameter("head.weight")
    assert len(list(module.parameters())) == 1


def test_safetensors_round_trip(tmp_path: Path) -> None:
    model, path = _export(TinyEncoder, tmp_path, "legacy", True)
    export_state_dict(path, tmp_path / "weights.safetensors")
    fresh = TinyEncoder()
    fresh.load_state_dict(load_file(tmp_path / "weights.safetensors"), strict=True)
    tokens = _tokens(2)
    assert_close(ort_run(path, {"tokens": tokens}), torch_run(fresh, tokens))


def test_pt_file_loads_with_weights_only(tmp_path: Path) -> None:
    model, path = _export(TiedLM, tmp_path, "legacy", False)
    export_state_dict(path, tmp_path / "weights.pt")
    loaded = torch.load(tmp_path / "weights.pt")  # weights_only=True by default
    assert loaded["emb.weight"].data_ptr() == loaded["head.weight"].data_ptr()
    TiedLM().load_state_dict(loaded, strict=True)


def _unscoped_model(folder: Path) -> Path:
    """A Conv and a Gemm (transB=0) with exporter-made weight names and no module scope."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "onnx::Conv_7")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "onnx::Conv_8")
    k = numpy_helper.from_array(rng.standard_normal((4 * 6 * 6, 5)).astype(np.float32), "val_3")
    nodes = [
        helper.make_node("Conv", ["x", "onnx::Conv_7", "onnx::Conv_8"], ["c"], name="conv_0"),
        helper.make_node("Flatten", ["c"], ["f"], name="flatten_0"),
        helper.make_node("Gemm", ["f", "val_3"], ["y"], name="gemm_0", transB=0),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])], [w, b, k])
    path = folder / "unscoped.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_weights_without_a_framework_name_are_kept_under_the_node_name_and_listed(tmp_path: Path) -> None:
    path = _unscoped_model(tmp_path)
    result = state_dict(path)
    assert sorted(result.tensors) == ["conv_0.bias", "conv_0.weight", "gemm_0.weight"]
    assert result.tensors["gemm_0.weight"].shape == (5, 144)  # [out, in], like nn.Linear
    kept = {(u.onnx_name, u.kept_as) for u in result.table.unnamed}
    assert kept == {("onnx::Conv_7", "conv_0.weight"), ("onnx::Conv_8", "conv_0.bias"),
                    ("val_3", "gemm_0.weight")}
    assert any("'val_3' (Gemm node 'gemm_0'): no framework name" in note for note in result.notes())
    module = to_torch(path)
    x = np.random.default_rng(1).standard_normal((2, 2, 8, 8)).astype(np.float32)
    assert_close(ort_run(path, {"x": x}), torch_run(module, x))
    assert_every_parameter_learns(module, x)


@pytest.mark.parametrize("name, expected", [
    ("fc1.weight", True), ("layer1.0.conv1.weight", True), ("cls_token", True), ("weight", True),
    ("onnx::Conv_35", False), ("onnx::MatMul_12", False), ("val_0", False), ("/fc/Transpose_output_0", False),
    ("sequential/dense/kernel:0", False), ("", False), ("lifted_tensor_0", False),
])
def test_framework_names(name: str, expected: bool) -> None:
    assert is_framework_name(name) is expected


def test_two_tensors_claiming_one_name_keep_the_second_under_its_node(tmp_path: Path) -> None:
    """Two legacy-scoped Gemms in module ``fc`` with exporter-made weight names both map to
    ``fc.weight``; the second is kept apart and listed."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((3, 3)).astype(np.float32), f"onnx::Gemm_{k}")
               for k in (1, 2)]
    nodes = [helper.make_node("Gemm", ["x", "onnx::Gemm_1"], ["h"], name="/fc/Gemm", transB=1),
             helper.make_node("Gemm", ["h", "onnx::Gemm_2"], ["y"], name="/fc/Gemm_1", transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])], weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    result = state_dict(tmp_path / "m.onnx")
    assert sorted(result.tensors) == ["fc.weight", "fc_Gemm_1.weight"]
    np.testing.assert_array_equal(result.tensors["fc_Gemm_1.weight"], numpy_helper.to_array(weights[1]))
    assert result.notes() == ["'onnx::Gemm_2' (Gemm node '/fc/Gemm_1'): 'fc.weight' already names a different "
                              "tensor; kept as 'fc_Gemm_1.weight'"]
    module = to_torch(tmp_path / "m.onnx")
    x = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    assert_close(ort_run(tmp_path / "m.onnx", {"x": x}), torch_run(module, x))


def test_tensors_the_exporter_deduplicated_stay_separate(tmp_path: Path) -> None:
    """Fresh BatchNorms hold equal tensors (zeros, ones); the legacy exporter keeps one
    initializer and Identity nodes for the others. They are still separate entries."""
    torch.manual_seed(0)
    model = ResNetish().eval()
    path = export_onnx(model, (torch.randn(2, 3, 8, 8),), tmp_path / "m.onnx", dynamo=False, fold=False)
    assert any(n.op_type == "Identity" for n in onnx.load(path).graph.node)
    export_state_dict(path, tmp_path / "w.pt")
    loaded = torch.load(tmp_path / "w.pt")
    pointers = [loaded[k].data_ptr() for k in ("bn1.bias", "bn1.running_mean", "bn2.bias", "bn2.running_mean")]
    assert len(set(pointers)) == 4
    fresh = ResNetish()
    fresh.load_state_dict(loaded, strict=True)
    module = to_torch(path)
    assert module.get_parameter("bn1.bias") is not module.get_parameter("bn2.bias")
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    assert_close(ort_run(path, {"x": x}), torch_run(fresh, x))
