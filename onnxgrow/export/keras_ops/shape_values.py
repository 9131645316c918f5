"""Ops on shapes known when the Keras model is built (:class:`ShapeValue`): Shape, and
Gather, Cast, Slice, Concat, Unsqueeze, Squeeze and Reshape when they read one.

A shape whose sizes are all known becomes a numpy constant, so any op may use it; one
with a size known only at run time (the batch) stays a ShapeValue until a Reshape reads
it, which then takes ``-1`` for that size (one unknown size at most).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from keras import ops

from onnxgrow.export.keras_ops.registry import (
    CHANNELS_LAST,
    ChannelsLast,
    KerasCall,
    KerasInput,
    ShapeValue,
    int_list,
    keras_op,
    onnx_layout,
    shape_op,
)


def _shape(dims: tuple[int | None, ...], scalar: bool = False) -> Any:
    """A numpy constant when every size is known, else a ShapeValue."""
    if None in dims:
        return ShapeValue(dims, scalar)
    array = np.array(dims, np.int64)
    return array.reshape(()) if scalar else array


def _dims(value: KerasInput) -> tuple[int | None, ...]:
    if isinstance(value, ShapeValue):
        return value.dims
    return tuple(int(v) for v in np.asarray(value).reshape(-1))


@keras_op("Shape", layout=CHANNELS_LAST)
def shape(call: KerasCall, inputs: list[KerasInput]) -> Any:
    """The input's shape in the ONNX layout (``start``/``end`` from opset 15)."""
    x: Any = inputs[0]  # a run-time Keras tensor or a ChannelsLast one (untyped)
    dims = tuple(x.onnx_shape() if isinstance(x, ChannelsLast) else x.shape)
    start, end = call.attr("start", 0), call.attr("end")
    return _shape(tuple(dims[start:end]))


@shape_op("Gather")
def gather_sizes(call: KerasCall, inputs: list[KerasInput]) -> Any:
    if not isinstance(inputs[0], ShapeValue) or isinstance(inputs[1], ShapeValue):
        raise call.refuse("indices computed from a run-time shape are not supported")
    indices = np.asarray(inputs[1])
    dims = inputs[0].dims
    return _shape(tuple(dims[int(i)] for i in indices.reshape(-1)), scalar=indices.ndim == 0)


@shape_op("Cast", "Identity")
def pass_sizes(call: KerasCall, inputs: list[KerasInput]) -> Any:
    return inputs[0]


@shape_op("Slice")
def slice_sizes(call: KerasCall, inputs: list[KerasInput]) -> Any:
    value = inputs[0]
    if not isinstance(value, ShapeValue) or any(isinstance(v, ShapeValue) for v in inputs[1:]):
        raise call.refuse("slice bounds computed from a run-time shape are not supported")
    starts, ends = int_list(call, inputs[1], "starts"), int_list(call, inputs[2], "ends")
    steps = int_list(call, inputs[4], "steps") if len(inputs) > 4 and inputs[4] is not None else [1]
    bound = 2**62
    return _shape(value.dims[max(min(starts[0], bound), -bound):max(min(ends[0], bound), -bound):steps[0]])


@shape_op("Concat")
def concat_sizes(call: KerasCall, inputs: list[KerasInput]) -> Any:
    return _shape(tuple(d for v in inputs if v is not None for d in _dims(v)))


@shape_op("Unsqueeze")
def unsqueeze_sizes(call: KerasCall, inputs: list[KerasInput]) -> Any:
    value = inputs[0]
    if not isinstance(value, ShapeValue) or not value.scalar:
        raise call.refuse("only a single size of a run-time shape can be unsqueezed")
    return ShapeValue(value.dims)


@shape_op("Squeeze")
def squeeze_sizes(call: KerasCall, inputs: list[KerasInput]) -> Any:
    value = inputs[0]
    if not isinstance(value, ShapeValue) or len(value.dims) != 1:
        raise call.refuse("only a one-size run-time shape can be squeezed")
    return ShapeValue(value.dims, scalar=True)


@shape_op("Reshape")
def reshape_to_sizes(call: KerasCall, inputs: list[KerasInput]) -> Any:
    """The one size known only at run time becomes ``-1``."""
    x, target = onnx_layout(inputs[0]), inputs[1]
    if isinstance(x, ShapeValue) or not isinstance(target, ShapeValue):
        raise call.refuse("reshaping a shape is not supported")
    dims = list(target.dims)
    if not call.attr("allowzero", 0):
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    unknown = [i for i, d in enumerate(dims) if d is None or d == -1]
    if len(unknown) > 1:
        raise call.refuse("more than one size of the target shape is known only at run time")
    return ops.reshape(x, tuple(-1 if d is None else d for d in dims))
