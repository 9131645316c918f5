"""A PyTorch module that cannot run a model is refused as such (exit 2, one line naming the
node and its op, nothing written), never reported as a FAILED comparison; and an op form that
onnxruntime cannot run (LRN with an even window) is checked against the ONNX definition."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from onnxgrow.errors import GrowError
from tests.helpers.cli import assert_refused
from tests.helpers.export_op_graphs import OpGraph, _branch, _f32, _if, _Spec, graph, lrn_graph, node, x

pytest.importorskip("torch")

import torch

from onnxgrow.export import to_torch
from onnxgrow.export.torch_ops import TORCH_OPS, TorchOp

pytestmark = pytest.mark.torch


def _resize(name: str, **attrs: object) -> OpGraph:
    return graph(name, _Spec([node("Resize", ["x", "", "scales"], **attrs)], {"x": x(1, 2, 6, 6)},
                             weights={"scales": _f32(1, 1, 0.5, 0.5)}, opset=18), keras=False)


@pytest.mark.parametrize("attrs, why", [
    ({"mode": "linear", "antialias": 1}, "antialiased resizing is not supported"),
    ({"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize"},
     "coordinate_transformation_mode 'tf_crop_and_resize' is not supported"),
])
def test_export_refuses_a_resize_it_cannot_run(tmp_path: Path, attrs: dict[str, object], why: str) -> None:
    """onnxruntime runs these nodes, so the refusal comes from running the module, and it is
    exit 2 naming the node, not a comparison that failed."""
    src = _resize("resize", **attrs).save(tmp_path)
    out = tmp_path / "resize.torch.pt"
    assert_refused(tmp_path, ["export", str(src), "--to", "torch", "-o", str(out)],
                   f"error: cannot run Resize node 'resize_node' in PyTorch: {why}", out)


def test_an_if_whose_condition_is_computed_needs_both_branches_to_convert(tmp_path: Path) -> None:
    """Unlike a constant condition (``If-constant-condition`` in the op graphs), a run-time one
    may take either branch, so an op without a converter in either is refused, named."""
    einsum = helper.make_node("Einsum", ["x", "x"], ["e_else"], name="einsum_in_else", equation="ij,ij->ij")
    case = graph("If-einsum", _Spec([node("ReduceSum", ["x"], ["total"], keepdims=0),
                                     node("Greater", ["total", "zero"], ["c"]),
                                     _if("c", "y", else_branch=_branch("else", [einsum], "e_else"))],
                                    {"x": x(2, 3)}, weights={"zero": np.array(0, np.float32), "w": x(3)}))
    with pytest.raises(GrowError, match=r"^cannot export to PyTorch: op Einsum \(node 'einsum_in_else'\) "
                                        r"is not supported$"):
        to_torch(case.save(tmp_path))


def test_a_crash_inside_a_converter_names_the_node_and_op(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any exception inside an op function (here a Relu that indexes past its input) becomes one
    line naming the node, in the module itself and in the export."""

    def broken_relu(call: object, inputs: object) -> torch.Tensor:
        return torch.zeros(2)[5]

    monkeypatch.setitem(TORCH_OPS, "Relu", TorchOp(broken_relu))
    case = graph("Relu", _Spec([node("Relu", ["x"])], {"x": x(2, 3)}))
    src = case.save(tmp_path)
    message = "cannot run Relu node 'relu_node' in PyTorch: index 5 is out of bounds for dimension 0 with size 2"
    with pytest.raises(GrowError, match=f"^{message}$"):
        to_torch(src)(torch.from_numpy(case.feeds["x"]))
    out = tmp_path / "relu.torch.pt"
    assert_refused(tmp_path, ["export", str(src), "--to", "torch", "-o", str(out)], f"error: {message}", out)


def _lrn_by_the_definition(x: np.ndarray, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    """The ONNX definition, channel by channel: the sum of squares over channels
    ``c - floor((size-1)/2)`` to ``c + ceil((size-1)/2)``, clipped to the existing ones."""
    channels = x.shape[1]
    square_sum = np.zeros_like(x, dtype=np.float64)
    for c in range(channels):
        first, last = max(0, c - (size - 1) // 2), min(channels - 1, c + size // 2)
        square_sum[:, c] = (x[:, first:last + 1].astype(np.float64) ** 2).sum(axis=1)
    return x / (bias + alpha / size * square_sum) ** beta


def test_lrn_with_an_even_window_follows_the_onnx_definition(tmp_path: Path) -> None:
    """onnxruntime runs odd LRN windows only (and ``onnx.reference`` sums the wrong channels),
    so an even window (one more channel after than before in ONNX, the other way round in
    ``F.local_response_norm``) is compared with the definition."""
    case = lrn_graph(4)
    expected = _lrn_by_the_definition(case.feeds["x"], 4, alpha=0.01, beta=0.6, bias=1.5)
    with torch.no_grad():
        result = to_torch(case.save(tmp_path))(torch.from_numpy(case.feeds["x"])).numpy()
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)
