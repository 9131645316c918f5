"""Ops that move or select data with constant shapes: Identity, Dropout, Flatten,
Reshape, Transpose, Concat, Split, Slice, Squeeze, Unsqueeze, Pad.

Transpose, Squeeze, Reshape and Pad take channels-last values (see
:mod:`onnxgrow.export.keras_ops.registry`): the NCHW→NHWC Transpose of a ChannelsLast
value is its tensor, and NHWC→NCHW of a tensor is that tensor held as ChannelsLast, so
neither becomes a Keras op; so is tf2onnx's Reshape ``[N, H, W, 1] → [N, 1, H, W]``.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from onnxgrow.export.keras_ops.layers import ZERO_PADDING
from onnxgrow.export.keras_ops.registry import (
    CHANNELS_LAST,
    ELEMENTWISE,
    ChannelsLast,
    KerasCall,
    KerasInput,
    array_of,
    axes_of,
    int_list,
    keras_axis,
    keras_op,
    onnx_layout,
    rank_of,
    to_channels_first,
    to_channels_last,
)


@keras_op("Identity", layout=ELEMENTWISE)
def identity(call: KerasCall, inputs: list[KerasInput]) -> Any:
    return inputs[0]


@keras_op("Dropout", layout=ELEMENTWISE)
def dropout(call: KerasCall, inputs: list[KerasInput]) -> Any:
    """A Dropout layer: identity at inference, dropping while training."""
    ratio = call.attr("ratio", 0.5)
    if len(inputs) > 1 and inputs[1] is not None:
        ratio = float(array_of(inputs[1]))  # type: ignore[arg-type]
    return keras.layers.Dropout(ratio, name=call.names.make(call.node))(inputs[0])


@keras_op("Flatten")
def flatten(call: KerasCall, inputs: list[KerasInput]) -> Any:
    x: Any = inputs[0]  # a run-time Keras tensor (untyped)
    axis = call.attr("axis", 1) % max(rank_of(x), 1)
    head, tail = x.shape[:axis], x.shape[axis:]
    if None in tail and None in head:
        raise call.refuse("needs static sizes on one side of the flattened axis")
    if None in tail:
        return ops.reshape(x, (int(math.prod(head)), -1))
    return ops.reshape(x, (-1, int(math.prod(tail))))


def _moves_last_axis_of_size_one(x: Any, shape: list[int]) -> bool:
    """Whether reshaping ``x`` to ``shape`` is the NHWC → NCHW transpose (the channel axis has size 1)."""
    rank = rank_of(x)
    if rank < 3 or len(shape) != rank or x.shape[-1] != 1 or shape[1] != 1:
        return False
    return all(s == d for s, d in zip(shape[2:], x.shape[1:-1])) and (shape[0] in (-1, 0) or shape[0] == x.shape[0])


@keras_op("Reshape", layout=CHANNELS_LAST)
def reshape(call: KerasCall, inputs: list[KerasInput]) -> Any:
    """A 0 copies the input's size at that position (a dynamic one becomes -1)."""
    x = onnx_layout(inputs[0])
    shape = int_list(call, inputs[1], "the target shape")
    if not isinstance(inputs[0], ChannelsLast) and _moves_last_axis_of_size_one(x, shape):
        return ChannelsLast(x)
    if not call.attr("allowzero", 0):
        shape = [(x.shape[i] if x.shape[i] is not None else -1) if s == 0 else s for i, s in enumerate(shape)]
    if shape.count(-1) > 1:
        raise call.refuse("more than one size is unknown")
    return ops.reshape(x, tuple(shape))


@keras_op("Transpose", layout=CHANNELS_LAST)
def transpose(call: KerasCall, inputs: list[KerasInput]) -> Any:
    x = inputs[0]
    rank = x.rank if isinstance(x, ChannelsLast) else rank_of(x)
    perm = tuple(call.attr("perm") or reversed(range(rank)))
    if isinstance(x, ChannelsLast) and perm == to_channels_last(rank):
        return x.tensor
    if not isinstance(x, ChannelsLast) and rank >= 3 and perm == to_channels_first(rank):
        return ChannelsLast(x)
    return ops.transpose(onnx_layout(x), perm)


@keras_op("Concat")
def concat(call: KerasCall, inputs: list[KerasInput]) -> Any:
    return ops.concatenate([call.constant(t) for t in inputs if t is not None], axis=call.attr("axis"))


@keras_op("Split", outputs=64)
def split(call: KerasCall, inputs: list[KerasInput]) -> Any:
    x: Any = inputs[0]  # a run-time Keras tensor (untyped)
    axis = call.attr("axis", 0) % rank_of(x)
    if len(inputs) > 1 and inputs[1] is not None:
        sizes = int_list(call, inputs[1], "split sizes")
    elif call.attr("split") is not None:
        sizes = list(call.attr("split"))
    else:
        size = x.shape[axis]
        if size is None:
            raise call.refuse("splitting a dynamic axis evenly is not supported")
        parts = call.attr("num_outputs") or call.outputs
        chunk = -(-size // parts)
        sizes = [min(chunk, size - k * chunk) for k in range(parts)]
    boundaries = [sum(sizes[: k + 1]) for k in range(len(sizes) - 1)]
    return tuple(ops.split(x, boundaries, axis=axis))


@keras_op("Slice")
def slice_(call: KerasCall, inputs: list[KerasInput]) -> Any:
    """Constant starts/ends/axes/steps, as Python slicing of the symbolic tensor."""
    x: Any = inputs[0]  # a run-time Keras tensor (untyped)
    if call.opset < 10:
        starts, ends, axes, steps = list(call.attr("starts")), list(call.attr("ends")), call.attr("axes"), None
    else:
        starts, ends = int_list(call, inputs[1], "starts"), int_list(call, inputs[2], "ends")
        axes = int_list(call, inputs[3], "axes") if len(inputs) > 3 and inputs[3] is not None else None
        steps = int_list(call, inputs[4], "steps") if len(inputs) > 4 and inputs[4] is not None else None
    rank = rank_of(x)
    index = [slice(None)] * rank
    for k, (start, end) in enumerate(zip(starts, ends)):
        axis = (axes[k] if axes is not None else k) % rank
        step = steps[k] if steps else 1
        if step < 1:
            raise call.refuse("negative or zero steps are not supported")
        bound = 2**62
        index[axis] = slice(max(min(start, bound), -bound), max(min(end, bound), -bound), step)
    return x[tuple(index)]


def _squeeze_channels_last(x: ChannelsLast, axes: list[int]) -> Any:
    """Squeeze a ChannelsLast value: the result is plain, ChannelsLast, or transposed to plain."""
    rank = x.rank
    axes = sorted(a % rank for a in axes)
    kept = [a for a in to_channels_last(rank) if a not in axes]  # ONNX axes in the tensor's order
    order = [sorted(kept).index(a) for a in kept]
    y = ops.squeeze(x.tensor, axis=tuple(keras_axis(a, rank) for a in axes))
    if order == list(range(len(order))):
        return y
    if len(order) >= 3 and tuple(order) == to_channels_last(len(order)):
        return ChannelsLast(y)
    return ops.transpose(y, tuple(order.index(k) for k in range(len(order))))


@keras_op("Squeeze", layout=CHANNELS_LAST)
def squeeze(call: KerasCall, inputs: list[KerasInput]) -> Any:
    x: Any = inputs[0]  # a run-time Keras tensor (untyped)
    axes = axes_of(call, inputs, 1)
    if isinstance(x, ChannelsLast):
        if axes is None:
            axes = [i for i, size in enumerate(x.onnx_shape()) if size == 1]
        return _squeeze_channels_last(x, axes)
    if axes is None:
        axes = [i for i, size in enumerate(x.shape) if size == 1]
    return ops.squeeze(x, axis=tuple(a % rank_of(x) for a in axes))


@keras_op("Unsqueeze")
def unsqueeze(call: KerasCall, inputs: list[KerasInput]) -> Any:
    x: Any = inputs[0]  # a run-time Keras tensor (untyped)
    axes = axes_of(call, inputs, 1) or []
    rank = rank_of(x) + len(axes)
    for axis in sorted(a % rank for a in axes):
        x = ops.expand_dims(x, axis)
    return x


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "edge"}


def _pads_and_value(call: KerasCall, inputs: list[KerasInput], rank: int) -> tuple[list[int], float]:
    """Begin/end pads per axis (all axes) and the constant: attributes before opset 11,
    inputs after; the ``axes`` input (opset 18) names the padded axes."""
    if call.opset < 11:
        pads, value = list(call.attr("pads")), float(call.attr("value", 0.0))
        axes = list(range(rank))
    else:
        pads = int_list(call, inputs[1], "pads")
        constant = array_of(inputs[2]) if len(inputs) > 2 and inputs[2] is not None else None
        if len(inputs) > 2 and inputs[2] is not None and constant is None:
            raise call.refuse("the pad value must be a constant")
        value = float(constant.reshape(-1)[0]) if constant is not None and constant.size else 0.0
        axes = [a % rank for a in int_list(call, inputs[3], "axes")] \
            if len(inputs) > 3 and inputs[3] is not None else list(range(rank))
    begins, ends = [0] * rank, [0] * rank
    for k, axis in enumerate(axes):
        begins[axis], ends[axis] = pads[k], pads[k + len(axes)]
    if any(p < 0 for p in begins + ends):
        raise call.refuse("negative pads (cropping) are not supported")
    return begins + ends, value


@keras_op("Pad", layout=CHANNELS_LAST)
def pad(call: KerasCall, inputs: list[KerasInput]) -> Any:
    """Zero padding of a channels-last value's spatial axes is a ZeroPadding layer (Keras'
    ZeroPadding2D as tf2onnx wrote it); other pads are ``ops.pad``."""
    x = inputs[0]
    rank = x.rank if isinstance(x, ChannelsLast) else rank_of(x)
    mode = call.attr("mode", "constant")
    if mode not in _PAD_MODES:
        raise call.refuse(f"pad mode {mode!r} is not supported")
    pads, value = _pads_and_value(call, inputs, rank)
    pairs = list(zip(pads[:rank], pads[rank:]))
    if isinstance(x, ChannelsLast):
        spatial = pairs[2:]
        if mode == "constant" and value == 0.0 and pairs[0] == (0, 0) and pairs[1] == (0, 0) and 1 <= len(spatial) <= 3:
            padding = tuple(spatial) if len(spatial) > 1 else spatial[0]
            return ChannelsLast(ZERO_PADDING[len(spatial)](padding, name=call.layer_name(None))(x.tensor))
        keras_pairs = [pairs[a] for a in to_channels_last(rank)]
        options = {"constant_values": value} if mode == "constant" else {}
        return ChannelsLast(ops.pad(x.tensor, keras_pairs, mode=_PAD_MODES[mode], **options))
    options = {"constant_values": value} if mode == "constant" else {}
    return ops.pad(x, pairs, mode=_PAD_MODES[mode], **options)
