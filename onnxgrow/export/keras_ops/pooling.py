"""MaxPool, AveragePool and the global pools, in channels-first ``keras.ops``."""

from __future__ import annotations

from typing import Any

from keras import ops

from onnxgrow.export.keras_ops.registry import KerasCall, KerasInput, keras_op, rank_of, window_pads


def _pool(call: KerasCall, x: Any, function, pad_value: float) -> Any:
    kernel = list(call.attr("kernel_shape"))
    rank = len(kernel)
    strides = list(call.attr("strides") or [1] * rank)
    dilations = list(call.attr("dilations") or [1] * rank)
    if any(d != 1 for d in dilations):
        raise call.refuse("dilated pooling is not supported")
    begins, ends = window_pads(call, x, kernel, strides, dilations)
    if call.attr("ceil_mode", 0):
        for size, k, s, b, e in zip(x.shape[2:], kernel, strides, begins, ends):
            if size is None or (size + b + e - k) % s:
                raise call.refuse("ceil_mode that changes the output size is not supported")
    if any(begins) or any(ends):
        x = ops.pad(x, [(0, 0), (0, 0), *zip(begins, ends)], constant_values=pad_value)
    return function(x, kernel, strides, padding="valid", data_format="channels_first")


@keras_op("MaxPool")
def max_pool(call: KerasCall, inputs: list[KerasInput]) -> Any:
    return _pool(call, inputs[0], ops.max_pool, float("-inf"))


@keras_op("AveragePool")
def average_pool(call: KerasCall, inputs: list[KerasInput]) -> Any:
    """Padding is supported when it is counted (``count_include_pad=1``)."""
    pads = call.attr("pads") or []
    if any(pads) and not call.attr("count_include_pad", 0) or call.attr("auto_pad", "NOTSET").startswith("SAME"):
        raise call.refuse("padding excluded from the average is not supported")
    return _pool(call, inputs[0], ops.average_pool, 0.0)


@keras_op("GlobalAveragePool")
def global_average_pool(call: KerasCall, inputs: list[KerasInput]) -> Any:
    x: Any = inputs[0]  # a run-time Keras tensor (untyped)
    return ops.mean(x, axis=tuple(range(2, rank_of(x))), keepdims=True)


@keras_op("GlobalMaxPool")
def global_max_pool(call: KerasCall, inputs: list[KerasInput]) -> Any:
    x: Any = inputs[0]  # a run-time Keras tensor (untyped)
    return ops.max(x, axis=tuple(range(2, rank_of(x))), keepdims=True)
