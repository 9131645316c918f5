"""Ops that move or select data with constant shapes: Identity, Dropout, Flatten,
Reshape, Transpose, Concat, Split, Slice, Squeeze, Unsqueeze."""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops

from onnxgrow.export.keras_ops.registry import KerasCall, KerasInput, array_of, axes_of, int_list, keras_op, rank_of


@keras_op("Identity")
def identity(call: KerasCall, inputs: list[KerasInput]) -> Any:
    return inputs[0]


@keras_op("Dropout")
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


@keras_op("Reshape")
def reshape(call: KerasCall, inputs: list[KerasInput]) -> Any:
    """A 0 copies the input's size at that position (a dynamic one becomes -1)."""
    x: Any = inputs[0]  # a run-time Keras tensor (untyped)
    shape = int_list(call, inputs[1], "the target shape")
    if not call.attr("allowzero", 0):
        shape = [(x.shape[i] if x.shape[i] is not None else -1) if s == 0 else s for i, s in enumerate(shape)]
    if shape.count(-1) > 1:
        raise call.refuse("more than one size is unknown")
    return ops.reshape(x, tuple(shape))


@keras_op("Transpose")
def transpose(call: KerasCall, inputs: list[KerasInput]) -> Any:
    x: Any = inputs[0]  # a run-time Keras tensor (untyped)
    perm = call.attr("perm")
    return ops.transpose(x, tuple(perm) if perm is not None else None)


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


@keras_op("Squeeze")
def squeeze(call: KerasCall, inputs: list[KerasInput]) -> Any:
    x: Any = inputs[0]  # a run-time Keras tensor (untyped)
    axes = axes_of(call, inputs, 1)
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
