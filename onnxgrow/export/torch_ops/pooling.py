"""MaxPool, AveragePool, LpPool and the global pools."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from onnxgrow.export.torch_ops.padding import pad_input, symmetric, window_pads
from onnxgrow.export.torch_ops.registry import Inputs, OpCall, Tensor, torch_op

_MAX = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVG = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _window(call: OpCall, x: Tensor) -> tuple[int, list[int], list[int], list[int]]:
    kernel = list(call.attr("kernel_shape"))
    rank = len(kernel)
    if rank not in _MAX:
        raise call.refuse(f"{rank}-D pooling is not supported")
    return rank, kernel, list(call.attr("strides") or [1] * rank), list(call.attr("dilations") or [1] * rank)


@torch_op("MaxPool")
def max_pool(call: OpCall, inputs: Inputs) -> Tensor:
    """Asymmetric padding is applied as -inf before pooling, which is what ONNX means."""
    x = inputs[0]
    rank, kernel, strides, dilations = _window(call, x)
    begins, ends = window_pads(call, x, kernel, strides, dilations)
    if not symmetric(begins, ends) or any(2 * p > k for p, k in zip(begins, kernel)):
        x, begins = pad_input(x, begins, ends, float("-inf")), [0] * rank
    return _MAX[rank](x, kernel, strides, begins, dilations, bool(call.attr("ceil_mode", 0)))


@torch_op("AveragePool")
def average_pool(call: OpCall, inputs: Inputs) -> Tensor:
    x = inputs[0]
    rank, kernel, strides, dilations = _window(call, x)
    if any(d != 1 for d in dilations):
        raise call.refuse("dilated average pooling is not supported")
    begins, ends = window_pads(call, x, kernel, strides, dilations)
    count_pad = bool(call.attr("count_include_pad", 0))
    if not symmetric(begins, ends) or any(2 * p > k for p, k in zip(begins, kernel)):
        if not count_pad and any(begins + ends):
            raise call.refuse("asymmetric padding that is not counted is not supported")
        x, begins = pad_input(x, begins, ends), [0] * rank
    return _AVG[rank](x, kernel, strides, begins, bool(call.attr("ceil_mode", 0)), count_pad)


@torch_op("LpPool")
def lp_pool(call: OpCall, inputs: Inputs) -> Tensor:
    """``(Σ |x|^p)^(1/p)`` over each window: an unpadded-count sum pool of |x|^p."""
    x = inputs[0]
    rank, kernel, strides, dilations = _window(call, x)
    if any(d != 1 for d in dilations) or bool(call.attr("ceil_mode", 0)):
        raise call.refuse("dilations and ceil_mode are not supported")
    p = float(call.attr("p", 2))
    begins, ends = window_pads(call, x, kernel, strides, dilations)
    powered = pad_input(x.abs() ** p, begins, ends)
    window = 1
    for k in kernel:
        window *= k
    summed = _AVG[rank](powered, kernel, strides, 0, False, True) * window
    return summed ** (1.0 / p)


def _spatial(x: Tensor) -> list[int]:
    return list(range(2, x.dim()))


@torch_op("GlobalAveragePool")
def global_average_pool(call: OpCall, inputs: Inputs) -> Tensor:
    return inputs[0].mean(dim=_spatial(inputs[0]), keepdim=True)


@torch_op("GlobalMaxPool")
def global_max_pool(call: OpCall, inputs: Inputs) -> Tensor:
    return torch.amax(inputs[0], dim=_spatial(inputs[0]), keepdim=True)
