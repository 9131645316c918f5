"""The PyTorch module computes each supported op as onnxruntime does, and trains like the
PyTorch modules the ops came from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from onnxgrow.errors import GrowError
from onnxgrow.export import to_torch
from tests.helpers.export_op_graphs import OpGraph, _Spec, graph, node, op_graphs, x

pytest.importorskip("torch")

import torch

from tests.helpers.export import assert_close, ort_run

pytestmark = pytest.mark.torch

CASES = op_graphs()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_op_matches_onnxruntime(case: OpGraph, tmp_path: Path) -> None:
    path = case.save(tmp_path)
    module = to_torch(path)
    names = [i.name for i in case.model.graph.input]
    with torch.no_grad():
        result = module(*(torch.from_numpy(case.feeds[n]) for n in names))
    results = result if isinstance(result, tuple) else (result,)
    assert_close(ort_run(path, case.feeds), [r.numpy() for r in results])


def test_weights_in_parameter_slots_are_parameters(tmp_path: Path) -> None:
    case = next(c for c in CASES if c.id == "BatchNormalization")
    module = to_torch(case.save(tmp_path))
    assert {n for n, _ in module.named_parameters()} == {"bn.weight", "bn.bias"}
    assert {n for n, _ in module.named_buffers()} >= {"bn.running_mean", "bn.running_var", "bn.num_batches_tracked"}


def test_batchnorm_trains_on_batch_statistics_and_updates_its_running_mean(tmp_path: Path) -> None:
    case = next(c for c in CASES if c.id == "BatchNormalization")
    module = to_torch(case.save(tmp_path))
    before = module.get_buffer("bn.running_mean").clone()
    batch = torch.from_numpy(case.feeds["x"]) * 3 + 1
    module.train()
    out = module(batch)
    reference = torch.nn.functional.batch_norm(batch, None, None, module.get_parameter("bn.weight"),
                                               module.get_parameter("bn.bias"), True, 0.1, 1e-3)
    torch.testing.assert_close(out, reference)
    expected = 0.9 * before + 0.1 * batch.mean((0, 2, 3))  # ONNX momentum 0.9 = PyTorch 0.1
    torch.testing.assert_close(module.get_buffer("bn.running_mean"), expected)


def test_dropout_drops_only_while_training(tmp_path: Path) -> None:
    case = graph("Dropout-ratio", _Spec([node("Dropout", ["x", "ratio"])], {"x": np.ones((64, 64), np.float32)},
                                        weights={"ratio": np.array(0.5, np.float32)}, opset=13))
    module = to_torch(case.save(tmp_path))
    ones = torch.ones(64, 64)
    assert torch.equal(module(ones), ones)
    module.train()
    dropped = module(ones)
    assert 0.3 < float((dropped == 0).float().mean()) < 0.7
    assert set(torch.unique(dropped).tolist()) == {0.0, 2.0}


def test_unsupported_op_names_the_node(tmp_path: Path) -> None:
    case = graph("Einsum", _Spec([node("Einsum", ["a", "b"], equation="ij,jk->ik")], {"a": x(2, 3), "b": x(3, 4)}))
    message = r"^cannot export to PyTorch: op Einsum \(node 'einsum_node'\) is not supported$"
    with pytest.raises(GrowError, match=message):
        to_torch(case.save(tmp_path))


def test_custom_domain_op_names_its_domain(tmp_path: Path) -> None:
    spec = helper.make_graph([helper.make_node("FusedGemm", ["a", "b"], ["y"], name="fused", domain="com.microsoft")],
                             "g", [helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [2, 2]),
                                   helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [2, 2])],
                             [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(spec, opset_imports=opsets)
    onnx.save(model, tmp_path / "custom.onnx")
    with pytest.raises(GrowError, match=r"op FusedGemm \(domain com.microsoft\) \(node 'fused'\)"):
        to_torch(tmp_path / "custom.onnx")


def test_unused_extra_output_is_fine_but_a_used_one_is_refused(tmp_path: Path) -> None:
    weights = {"bn.weight": x(3), "bn.bias": x(3), "bn.running_mean": x(3), "bn.running_var": np.abs(x(3)) + 1}
    bn = ["x", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"]
    used = graph("BN-mean-output", _Spec([node("BatchNormalization", bn, ["y", "m", "v"], training_mode=1)],
                                         {"x": x(2, 3, 4)}, outputs=["y", "m"], weights=weights, opset=15))
    with pytest.raises(GrowError, match=r"output 1 of BatchNormalization node 'batchnormalization_node' is used"):
        to_torch(used.save(tmp_path))


def test_wrong_number_of_inputs_is_a_type_error(tmp_path: Path) -> None:
    module = to_torch(CASES[0].save(tmp_path))
    with pytest.raises(TypeError, match=r"takes 1 input\(s\) \(x\), got 2"):
        module(torch.zeros(1), torch.zeros(1))
