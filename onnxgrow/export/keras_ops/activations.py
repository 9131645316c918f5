"""Activations and other unary ops, Softmax/LogSoftmax, Clip, with ``keras.ops``."""

from __future__ import annotations

import math
from typing import Any

from keras import ops

from onnxgrow.export.keras_ops.registry import ELEMENTWISE, KerasCall, KerasInput, array_of, keras_op, rank_of

_UNARY = {
    "Relu": ops.relu, "Sigmoid": ops.sigmoid, "Tanh": ops.tanh, "Erf": ops.erf, "Exp": ops.exp,
    "Log": ops.log, "Sqrt": ops.sqrt, "Abs": ops.abs, "Neg": ops.negative, "Floor": ops.floor,
    "Ceil": ops.ceil, "Round": ops.round, "Sin": ops.sin, "Cos": ops.cos, "Sign": ops.sign,
    "Not": ops.logical_not, "Softsign": ops.softsign, "HardSwish": ops.hard_swish,
    "Reciprocal": lambda x: 1.0 / x,
    "Softplus": ops.softplus,
    "Mish": lambda x: x * ops.tanh(ops.softplus(x)),
}


def _unary(call: KerasCall, inputs: list[KerasInput]) -> Any:
    return _UNARY[call.op_type](inputs[0])


keras_op(*_UNARY, layout=ELEMENTWISE)(_unary)


@keras_op("LeakyRelu", layout=ELEMENTWISE)
def leaky_relu(call: KerasCall, inputs: list[KerasInput]) -> Any:
    return ops.leaky_relu(inputs[0], negative_slope=call.attr("alpha", 0.01))


@keras_op("Elu", layout=ELEMENTWISE)
def elu(call: KerasCall, inputs: list[KerasInput]) -> Any:
    return ops.elu(inputs[0], alpha=call.attr("alpha", 1.0))


@keras_op("Selu", "Celu", layout=ELEMENTWISE)
def selu_celu(call: KerasCall, inputs: list[KerasInput]) -> Any:
    """Selu: ``gamma · (x > 0 ? x : alpha (eˣ − 1))``; Celu: ``max(0, x) + min(0, alpha (e^(x/alpha) − 1))``."""
    x: Any = inputs[0]  # a run-time Keras tensor (untyped)
    if call.op_type == "Celu":
        alpha = call.attr("alpha", 1.0)
        return ops.maximum(x, 0.0) + ops.minimum(alpha * (ops.exp(x / alpha) - 1.0), 0.0)
    alpha = call.attr("alpha", 1.67326319217681884765625)
    gamma = call.attr("gamma", 1.05070102214813232421875)
    return gamma * ops.where(x > 0, x, alpha * (ops.exp(x) - 1.0))


@keras_op("Gelu", layout=ELEMENTWISE)
def gelu(call: KerasCall, inputs: list[KerasInput]) -> Any:
    return ops.gelu(inputs[0], approximate=call.attr("approximate", "none") == "tanh")


@keras_op("HardSigmoid", layout=ELEMENTWISE)
def hard_sigmoid(call: KerasCall, inputs: list[KerasInput]) -> Any:
    return ops.clip(call.attr("alpha", 0.2) * inputs[0] + call.attr("beta", 0.5), 0.0, 1.0)


@keras_op("ThresholdedRelu", layout=ELEMENTWISE)
def thresholded_relu(call: KerasCall, inputs: list[KerasInput]) -> Any:
    x: Any = inputs[0]  # a run-time Keras tensor (untyped)
    return ops.where(x > call.attr("alpha", 1.0), x, ops.zeros_like(x))


@keras_op("Clip", layout=ELEMENTWISE)
def clip(call: KerasCall, inputs: list[KerasInput]) -> Any:
    """Bounds are constant inputs from opset 11, attributes before."""
    x: Any = inputs[0]  # a run-time Keras tensor (untyped)
    if call.opset < 11:
        low, high = call.attr("min", -math.inf), call.attr("max", math.inf)
    else:
        low_array = array_of(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else None
        high_array = array_of(inputs[2]) if len(inputs) > 2 and inputs[2] is not None else None
        if (len(inputs) > 1 and inputs[1] is not None and low_array is None) or \
                (len(inputs) > 2 and inputs[2] is not None and high_array is None):
            raise call.refuse("bounds computed at run time are not supported")
        low = float(low_array) if low_array is not None else -math.inf
        high = float(high_array) if high_array is not None else math.inf
    return ops.clip(x, low, high)


def _softmax_family(call: KerasCall, x: Any, function) -> Any:
    """Opset 13: along ``axis``; before: over everything from ``axis`` (default 1) on."""
    rank = rank_of(x)
    if call.opset >= 13:
        return function(x, axis=call.attr("axis", -1))
    axis = call.attr("axis", 1) % rank
    if axis == rank - 1:
        return function(x, axis=-1)
    tail = x.shape[axis:]
    if None in tail:
        raise call.refuse("opset < 13 softmax over several axes needs static sizes")
    flat = ops.reshape(x, (-1, *x.shape[1:axis], int(math.prod(tail))))
    return ops.reshape(function(flat, axis=-1), (-1, *x.shape[1:]))


@keras_op("Softmax")
def softmax(call: KerasCall, inputs: list[KerasInput]) -> Any:
    return _softmax_family(call, inputs[0], ops.softmax)


@keras_op("LogSoftmax")
def log_softmax(call: KerasCall, inputs: list[KerasInput]) -> Any:
    return _softmax_family(call, inputs[0], ops.log_softmax)
