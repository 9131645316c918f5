"""MaxPool, AveragePool and the global pools, channels-last (the only layout every Keras
backend pools on CPU): they give ChannelsLast values."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from keras import ops

from onnxgrow.export.keras_ops.layers import channels_last
from onnxgrow.export.keras_ops.registry import (
    CHANNELS_LAST,
    ChannelsLast,
    KerasCall,
    KerasInput,
    keras_op,
    spatial_sizes,
    window_pads,
)


def _pool(call: KerasCall, x: Any, function, pad_value: float) -> Any:
    kernel = list(call.attr("kernel_shape"))
    rank = len(kernel)
    strides = list(call.attr("strides") or [1] * rank)
    dilations = list(call.attr("dilations") or [1] * rank)
    if any(d != 1 for d in dilations):
        raise call.refuse("dilated pooling is not supported")
    begins, ends = window_pads(call, x, kernel, strides, dilations)
    if call.attr("ceil_mode", 0):
        for size, k, s, b, e in zip(spatial_sizes(x), kernel, strides, begins, ends):
            if size is None or (size + b + e - k) % s:
                raise call.refuse("ceil_mode that changes the output size is not supported")
    y = channels_last(x)
    if any(begins) or any(ends):
        y = ops.pad(y, [(0, 0), *zip(begins, ends), (0, 0)], constant_values=pad_value)
    return ChannelsLast(function(y, kernel, strides, padding="valid", data_format="channels_last"))


@keras_op("MaxPool", layout=CHANNELS_LAST)
def max_pool(call: KerasCall, inputs: list[KerasInput]) -> Any:
    return _pool(call, inputs[0], ops.max_pool, float("-inf"))


@keras_op("AveragePool", layout=CHANNELS_LAST)
def average_pool(call: KerasCall, inputs: list[KerasInput]) -> Any:
    """Padding is supported when it is counted (``count_include_pad=1``)."""
    pads = call.attr("pads") or []
    if any(pads) and not call.attr("count_include_pad", 0) or call.attr("auto_pad", "NOTSET").startswith("SAME"):
        raise call.refuse("padding excluded from the average is not supported")
    return _pool(call, inputs[0], ops.average_pool, 0.0)


def _global(x: Any, function: Callable[..., Any]) -> Any:
    """Over the spatial axes, in the layout the value has (a reduction needs no transpose)."""
    if isinstance(x, ChannelsLast):
        return ChannelsLast(function(x.tensor, axis=tuple(range(1, x.rank - 1)), keepdims=True))
    return function(x, axis=tuple(range(2, len(x.shape))), keepdims=True)


@keras_op("GlobalAveragePool", layout=CHANNELS_LAST)
def global_average_pool(call: KerasCall, inputs: list[KerasInput]) -> Any:
    return _global(inputs[0], ops.mean)


@keras_op("GlobalMaxPool", layout=CHANNELS_LAST)
def global_max_pool(call: KerasCall, inputs: list[KerasInput]) -> Any:
    return _global(inputs[0], ops.max)
