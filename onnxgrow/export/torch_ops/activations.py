"""Activations and other unary ops (IsNaN and IsInf among them), Softmax/LogSoftmax, Clip, PRelu."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from onnxgrow.export.torch_ops.registry import Inputs, OpCall, Tensor, normalize_axis, torch_op

_UNARY: dict[str, Callable[[Tensor], Tensor]] = {
    "Relu": torch.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Erf": torch.erf,
    "Exp": torch.exp, "Log": torch.log, "Sqrt": torch.sqrt, "Abs": torch.abs, "Neg": torch.neg,
    "Reciprocal": torch.reciprocal, "Floor": torch.floor, "Ceil": torch.ceil, "Round": torch.round,
    "Sin": torch.sin, "Cos": torch.cos, "Sign": torch.sign, "Not": torch.logical_not,
    "Softsign": F.softsign, "HardSwish": F.hardswish, "Mish": F.mish, "IsNaN": torch.isnan,
}


def _unary(call: OpCall, inputs: Inputs) -> Tensor:
    return _UNARY[call.op_type](inputs[0])


torch_op(*_UNARY)(_unary)


@torch_op("IsInf")
def is_inf(call: OpCall, inputs: Inputs) -> Tensor:
    """True at +inf unless ``detect_positive=0``, at -inf unless ``detect_negative=0``."""
    x = inputs[0]
    positive = torch.isposinf(x) if call.attr("detect_positive", 1) else torch.zeros_like(x, dtype=torch.bool)
    negative = torch.isneginf(x) if call.attr("detect_negative", 1) else torch.zeros_like(x, dtype=torch.bool)
    return positive | negative


@torch_op("LeakyRelu")
def leaky_relu(call: OpCall, inputs: Inputs) -> Tensor:
    return F.leaky_relu(inputs[0], call.attr("alpha", 0.01))


@torch_op("Elu")
def elu(call: OpCall, inputs: Inputs) -> Tensor:
    return F.elu(inputs[0], call.attr("alpha", 1.0))


@torch_op("Celu")
def celu(call: OpCall, inputs: Inputs) -> Tensor:
    return F.celu(inputs[0], call.attr("alpha", 1.0))


@torch_op("Selu")
def selu(call: OpCall, inputs: Inputs) -> Tensor:
    x = inputs[0]
    alpha = call.attr("alpha", 1.67326319217681884765625)
    gamma = call.attr("gamma", 1.05070102214813232421875)
    return gamma * torch.where(x > 0, x, alpha * torch.expm1(x))


@torch_op("Gelu")
def gelu(call: OpCall, inputs: Inputs) -> Tensor:
    return F.gelu(inputs[0], approximate=call.attr("approximate", "none"))


@torch_op("Softplus")
def softplus(call: OpCall, inputs: Inputs) -> Tensor:
    """``log(1 + exp(x))`` without PyTorch's linear cut-off above 20."""
    x = inputs[0]
    return torch.logaddexp(x, torch.zeros((), dtype=x.dtype, device=x.device))


@torch_op("HardSigmoid")
def hard_sigmoid(call: OpCall, inputs: Inputs) -> Tensor:
    return torch.clamp(call.attr("alpha", 0.2) * inputs[0] + call.attr("beta", 0.5), 0.0, 1.0)


@torch_op("ThresholdedRelu")
def thresholded_relu(call: OpCall, inputs: Inputs) -> Tensor:
    x = inputs[0]
    return torch.where(x > call.attr("alpha", 1.0), x, torch.zeros_like(x))


@torch_op("PRelu")
def prelu(call: OpCall, inputs: Inputs) -> Tensor:
    x, slope = inputs[0], inputs[1]
    return torch.where(x < 0, slope * x, x)


@torch_op("Clip")
def clip(call: OpCall, inputs: Inputs) -> Tensor:
    """Bounds are inputs from opset 11, attributes before."""
    x = inputs[0]
    if call.opset < 11:
        return torch.clamp(x, call.attr("min", -math.inf), call.attr("max", math.inf))
    low = inputs.optional(1)
    high = inputs.optional(2)
    if low is not None:
        x = torch.maximum(x, low.to(x.dtype))
    if high is not None:
        x = torch.minimum(x, high.to(x.dtype))
    return x


def _softmax_family(call: OpCall, x: Tensor, function) -> Tensor:
    """Opset 13 normalises along ``axis`` (default -1); earlier opsets flatten from ``axis``
    (default 1) to the end into one axis first."""
    if call.opset >= 13:
        return function(x, dim=call.attr("axis", -1))
    axis = normalize_axis(call.attr("axis", 1), x.dim())
    rows = 1
    for size in x.shape[:axis]:
        rows *= size
    return function(x.reshape(rows, -1), dim=1).reshape(x.shape)


@torch_op("Softmax")
def softmax(call: OpCall, inputs: Inputs) -> Tensor:
    return _softmax_family(call, inputs[0], torch.softmax)


@torch_op("LogSoftmax")
def log_softmax(call: OpCall, inputs: Inputs) -> Tensor:
    return _softmax_family(call, inputs[0], torch.log_softmax)
