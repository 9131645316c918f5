"""Ops with weights, as built-in Keras layers: Gemm and MatMul (Dense), Conv (ConvND,
channels-last; one filter group per channel: DepthwiseConv2D), BatchNormalization,
LayerNormalization, InstanceNormalization and GroupNormalization, Gather on an embedding
table (Embedding), PRelu.

Conv gives a ChannelsLast value (its input made channels-last first unless it is one);
BatchNormalization normalises the last axis of a ChannelsLast value. ScaleShift (the
builder's, for tf2onnx's BatchNormalization as Mul/Add) is an EinsumDense per channel."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from onnxgrow.export.keras_ops.registry import (
    CHANNELS_LAST,
    ChannelsLast,
    KerasCall,
    KerasInput,
    Weight,
    array_of,
    keras_op,
    rank_of,
    to_channels_last,
    window_pads,
)


def _dense(call: KerasCall, x: Any, kernel: np.ndarray, bias: np.ndarray | None, weight: Weight) -> Any:
    layer = keras.layers.Dense(kernel.shape[1], use_bias=bias is not None, name=call.layer_name(weight),
                               dtype=str(kernel.dtype))
    y = layer(x)
    layer.set_weights([kernel] if bias is None else [kernel, bias])
    return y


@keras_op("Gemm")
def gemm(call: KerasCall, inputs: list[KerasInput]) -> Any:
    """``alpha · A' B' + beta · C``: a Dense layer when B is a weight (alpha folded into its
    kernel, a 1-D C as its bias)."""
    x, b = inputs[0], inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    alpha, beta = call.attr("alpha", 1.0), call.attr("beta", 1.0)
    if call.attr("transA", 0):
        x = ops.transpose(x)
    if not isinstance(b, Weight):
        b = call.constant(b)
        y = ops.matmul(x, ops.transpose(b) if call.attr("transB", 0) else b)
        y = y * alpha if alpha != 1.0 else y
        return y if c is None else y + beta * call.constant(c)
    kernel = b.array.T if call.attr("transB", 0) else b.array
    kernel = kernel * np.asarray(alpha, kernel.dtype) if alpha != 1.0 else kernel
    c_array = array_of(c)
    if c is not None and c_array is not None and c_array.size == kernel.shape[1]:
        bias = c_array.reshape(-1) * np.asarray(beta, c_array.dtype)
        return _dense(call, x, kernel, bias, b)
    y = _dense(call, x, kernel, None, b)
    return y if c is None else y + beta * call.constant(c)


@keras_op("MatMul")
def matmul(call: KerasCall, inputs: list[KerasInput]) -> Any:
    """A Dense layer over the last axis when B is a 2-D weight; the Keras builder passes
    the bias of a following ``Add`` as a third input."""
    x, b = inputs[0], inputs[1]
    bias = array_of(inputs[2]) if len(inputs) > 2 else None
    if isinstance(b, Weight) and b.array.ndim == 2:
        return _dense(call, x, b.array, bias, b)
    return ops.matmul(call.constant(x), call.constant(b))


_CONV = {1: keras.layers.Conv1D, 2: keras.layers.Conv2D, 3: keras.layers.Conv3D}
ZERO_PADDING = {1: keras.layers.ZeroPadding1D, 2: keras.layers.ZeroPadding2D, 3: keras.layers.ZeroPadding3D}


def channels_last(x: Any) -> Any:
    """The channels-last tensor of a run-time value (a Transpose unless it is ChannelsLast)."""
    if isinstance(x, ChannelsLast):
        return x.tensor
    return ops.transpose(x, to_channels_last(rank_of(x)))


def _depthwise(call: KerasCall, y: Any, w: Weight, kernel: list[int], strides: list[int],
               dilations: list[int], bias: np.ndarray | None) -> Any:
    """A DepthwiseConv2D: ONNX filters ``[C·m, 1, kh, kw]`` → Keras ``[kh, kw, C, m]``."""
    groups = call.attr("group")
    multiplier = w.array.shape[0] // groups
    layer = keras.layers.DepthwiseConv2D(kernel, strides=strides, padding="valid", depth_multiplier=multiplier,
                                         dilation_rate=dilations, use_bias=bias is not None,
                                         data_format="channels_last", name=call.layer_name(w),
                                         dtype=str(w.array.dtype))
    out = layer(y)
    filters = w.array.reshape(groups, multiplier, *kernel).transpose(2, 3, 0, 1)
    layer.set_weights([filters] if bias is None else [filters, bias])
    return out


@keras_op("Conv", layout=CHANNELS_LAST)
def conv(call: KerasCall, inputs: list[KerasInput]) -> Any:
    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 else None
    if not isinstance(w, Weight):
        raise call.refuse("the filters are computed at run time; Keras needs them as a weight")
    rank = w.array.ndim - 2
    if rank not in _CONV:
        raise call.refuse(f"{rank}-D convolution is not supported")
    kernel = list(call.attr("kernel_shape") or w.array.shape[2:])
    strides = list(call.attr("strides") or [1] * rank)
    dilations = list(call.attr("dilations") or [1] * rank)
    begins, ends = window_pads(call, x, kernel, strides, dilations)
    y = channels_last(x)
    if any(begins) or any(ends):
        padding = tuple(zip(begins, ends)) if rank > 1 else (begins[0], ends[0])
        y = ZERO_PADDING[rank](padding, **({"data_format": "channels_last"} if rank > 1 else {}))(y)
    bias = array_of(b)
    groups = call.attr("group", 1)
    if rank == 2 and groups > 1 and w.array.shape[1] == 1 and groups == y.shape[-1]:
        return ChannelsLast(_depthwise(call, y, w, kernel, strides, dilations, bias))
    layer = _CONV[rank](w.array.shape[0], kernel, strides=strides, padding="valid", dilation_rate=dilations,
                        groups=call.attr("group", 1), use_bias=bias is not None, data_format="channels_last",
                        name=call.layer_name(w), dtype=str(w.array.dtype))
    y = layer(y)
    filters = np.transpose(w.array, (*range(2, rank + 2), 1, 0))
    layer.set_weights([filters] if bias is None else [filters, bias])
    return ChannelsLast(y)


@keras_op("BatchNormalization", layout=CHANNELS_LAST)
def batch_norm(call: KerasCall, inputs: list[KerasInput]) -> Any:
    """Keras' moving-average momentum has the ONNX meaning (weight of the old value)."""
    x: Any = inputs[0]  # a run-time Keras tensor or a ChannelsLast one (untyped)
    scale, bias, mean, var = inputs[1:5]
    if call.attr("training_mode", 0):
        raise call.refuse("exported in training mode (batch statistics at inference); re-export in eval mode")
    arrays = [array_of(v) for v in (scale, bias, mean, var)]
    if any(a is None for a in arrays):
        raise call.refuse("scale, bias, mean and variance must be constants")
    last = isinstance(x, ChannelsLast)
    layer = keras.layers.BatchNormalization(axis=-1 if last else 1, epsilon=call.attr("epsilon", 1e-5),
                                            momentum=call.attr("momentum", 0.9),
                                            name=call.layer_name(scale if isinstance(scale, Weight) else None))
    y = layer(x.tensor if last else x)
    layer.set_weights([a.reshape(-1) for a in arrays])  # type: ignore[union-attr]
    return ChannelsLast(y) if last else y


@keras_op("ScaleShift", layout=CHANNELS_LAST)
def scale_shift(call: KerasCall, inputs: list[KerasInput]) -> Any:
    """Not an ONNX op: the Keras builder's step for a BatchNormalization that tf2onnx wrote
    as Mul/Add by per-channel constants (``x · scale + shift`` on the channel axis). An
    ``EinsumDense("...c,c->...c")`` layer holds scale and shift as trainable variables."""
    x: Any = inputs[0]  # a run-time Keras tensor or a ChannelsLast one (untyped)
    scale, shift = array_of(inputs[1]), array_of(inputs[2])
    if scale is None or shift is None:
        raise call.refuse("the scale and shift must be constants")
    tensor = x.tensor if isinstance(x, ChannelsLast) or rank_of(x) == 2 else channels_last(x)
    layer = keras.layers.EinsumDense("...c,c->...c", output_shape=(scale.size,), bias_axes="c",
                                     name=call.layer_name(None), dtype=str(scale.dtype))
    y = layer(tensor)
    layer.set_weights([scale.reshape(-1), shift.reshape(-1)])
    return y if not isinstance(x, ChannelsLast) and rank_of(x) == 2 else ChannelsLast(y)


@keras_op("LayerNormalization")
def layer_norm(call: KerasCall, inputs: list[KerasInput]) -> Any:
    x: Any = inputs[0]  # a run-time Keras tensor (untyped)
    scale = inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    rank = rank_of(x)
    axis = call.attr("axis", -1) % rank
    shape = tuple(x.shape[axis:])
    scale_array, bias_array = array_of(scale), array_of(bias)
    if scale_array is None or None in shape or scale_array.size != int(np.prod(shape)):
        raise call.refuse("the scale must be a constant over statically sized normalised axes")
    layer = keras.layers.LayerNormalization(axis=list(range(axis, rank)), epsilon=call.attr("epsilon", 1e-5),
                                            center=bias_array is not None,
                                            name=call.layer_name(scale if isinstance(scale, Weight) else None))
    y = layer(x)
    weights = [scale_array.reshape(shape)] + ([bias_array.reshape(shape)] if bias_array is not None else [])
    layer.set_weights(weights)
    return y


def _group_norm(call: KerasCall, x: Any, groups: int, scale: KerasInput, bias: KerasInput) -> Any:
    channels = x.shape[1]
    scale_array, bias_array = array_of(scale), array_of(bias)
    if channels is None or scale_array is None or bias_array is None:
        raise call.refuse("needs a static channel count and constant scale and bias")
    if scale_array.size == groups and groups != channels:  # opset 18: one scale per group
        scale_array = np.repeat(scale_array, channels // groups)
        bias_array = np.repeat(bias_array, channels // groups)
    layer = keras.layers.GroupNormalization(groups=groups, axis=1, epsilon=call.attr("epsilon", 1e-5),
                                            name=call.layer_name(scale if isinstance(scale, Weight) else None))
    y = layer(x)
    layer.set_weights([scale_array.reshape(channels), bias_array.reshape(channels)])
    return y


@keras_op("InstanceNormalization")
def instance_norm(call: KerasCall, inputs: list[KerasInput]) -> Any:
    x: Any = inputs[0]  # a run-time Keras tensor (untyped)
    return _group_norm(call, x, x.shape[1], inputs[1], inputs[2])


@keras_op("GroupNormalization")
def group_norm(call: KerasCall, inputs: list[KerasInput]) -> Any:
    return _group_norm(call, inputs[0], call.attr("num_groups"), inputs[1], inputs[2])


@keras_op("Gather")
def gather(call: KerasCall, inputs: list[KerasInput]) -> Any:
    """An Embedding layer for a weight table on axis 0; ``take`` otherwise."""
    data, indices = inputs[0], inputs[1]
    axis = call.attr("axis", 0)
    if isinstance(data, Weight) and axis == 0 and data.array.ndim == 2 and not isinstance(indices, np.ndarray):
        layer = keras.layers.Embedding(*data.array.shape, name=call.layer_name(data), dtype=str(data.array.dtype))
        y = layer(indices)
        layer.set_weights([data.array])
        return y
    return ops.take(call.constant(data), call.constant(indices), axis=axis)


@keras_op("PRelu")
def prelu(call: KerasCall, inputs: list[KerasInput]) -> Any:
    """A PReLU layer sharing its slope over the axes where the ONNX slope has size 1."""
    x, slope = inputs[0], inputs[1]
    slope_array = array_of(slope)
    if slope_array is None:
        raise call.refuse("the slope must be a constant")
    rank = rank_of(x)
    shape = (1,) * (rank - 1 - slope_array.ndim) + tuple(slope_array.shape)
    shared = [axis + 1 for axis, size in enumerate(shape) if size == 1]
    layer = keras.layers.PReLU(shared_axes=shared or None,
                               name=call.layer_name(slope if isinstance(slope, Weight) else None))
    y = layer(x)
    layer.set_weights([np.broadcast_to(slope_array.reshape(shape), layer.get_weights()[0].shape).copy()])
    return y
