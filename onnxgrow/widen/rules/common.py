"""Helpers the op rules share: shapes, broadcasting, and the three weight edits.

The edits, for a weight axis that the widened channels index:

- *produce*: new output unit ``j`` copies unit ``src[j]`` (fresh units get random
  weights with the tensor's own standard deviation);
- *contract*: input row ``j`` is row ``src[j]`` times its share ``coef[j]`` (fresh rows
  are 0, or random for random-pad);
- *gather*: per-channel parameters (bias, BatchNorm statistics, a per-channel constant)
  copy position ``src[j]``.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxgrow.constants import PASS_THROUGH_OPS, find_constant
from onnxgrow.widen.channel_map import Init
from onnxgrow.widen.layout import AxisIndex


def rank_of(value: ir.Value | None) -> int | None:
    """The rank of ``value`` when its shape is known."""
    if value is None or value.shape is None:
        return None
    return len(value.shape)


def dim_at(value: ir.Value | None, axis: int) -> int | str | None:
    """The size of ``value`` along negative ``axis``: int, symbol, or None if unknown/absent."""
    if value is None or value.shape is None:
        return None
    dims = value.shape.dims
    if -axis > len(dims):
        return None
    dim = dims[axis]
    return dim if isinstance(dim, int) else str(dim)


def static_dims(value: ir.Value | None) -> list[int | None] | None:
    """The dimensions of ``value`` (None for symbolic ones), or None without a shape."""
    if value is None or value.shape is None:
        return None
    return [d if isinstance(d, int) else None for d in value.shape.dims]


def model_input_behind(value: ir.Value | None) -> ir.Value | None:
    """The graph input that ``value`` is (through Identity/Transpose), if any."""
    while value is not None and not value.is_graph_input():
        producer = value.producer()
        if producer is None or producer.op_type not in PASS_THROUGH_OPS or not producer.inputs:
            return None
        value = producer.inputs[0]
    return value


def weight_problem(value: ir.Value | None, what: str) -> str:
    """Why the weight ``value`` cannot be rewritten ('' when it is a constant).

    An initializer that is also a graph input is no constant: callers may feed another
    value at run time, so onnxgrow leaves it alone.
    """
    if value is None or find_constant(value) is not None:
        return ""
    root = model_input_behind(value)
    if root is not None:
        return f"its {what} {root.name!r} is a model input (callers may replace it at run time), not a constant"
    return f"its {what} is computed at run time, not a constant"


def const_shape(value: ir.Value | None) -> tuple[int, ...] | None:
    """The shape of a constant input as the node sees it, or None if not constant."""
    ref = find_constant(value)
    if ref is None:
        return None
    if not ref.chain:
        return tuple(ref.tensor.shape.numpy())
    return tuple(ref.array().shape)


def constant_through_casts(value: ir.Value | None) -> np.ndarray | None:
    """The constant behind ``value`` when only Cast/CastLike stand in between (value not cast)."""
    while value is not None and find_constant(value) is None:
        cast = value.producer()
        if cast is None or cast.op_type not in ("Cast", "CastLike") or cast.domain not in ("", "ai.onnx"):
            return None
        value = cast.inputs[0]
    ref = find_constant(value)
    return None if ref is None else ref.array()


def uniform_fill(value: ir.Value | None) -> float | None:
    """The one value all elements of ``value`` share when it is a constant scalar broadcast at
    run time (the dynamo exporter's zero bias ``Expand(CastLike(0.0, x), Shape(W)[:1])``)."""
    node = value.producer() if value is not None else None
    if node is None or node.op_type != "Expand" or node.domain not in ("", "ai.onnx"):
        return None
    scalar = constant_through_casts(node.inputs[0])
    if scalar is None or scalar.size != 1:
        return None
    return float(scalar.reshape(-1)[0])


def _axis_shape(ndim: int, axis: int) -> list[int]:
    shape = [1] * ndim
    shape[axis] = -1
    return shape


def gather(array: np.ndarray, axis: int, idx: AxisIndex) -> np.ndarray:
    """Per-channel values copied from ``src`` along ``axis``."""
    return np.take(array, idx.src, axis=axis)


def produce(array: np.ndarray, axis: int, idx: AxisIndex, rng: np.random.Generator) -> np.ndarray:
    """Output units along ``axis`` copied from ``src``; fresh units drawn at random."""
    out = np.take(array, idx.src, axis=axis)
    if idx.fresh.any():
        std = float(np.std(array.astype(np.float64))) or 0.01
        noise = rng.normal(0.0, std, size=out.shape).astype(out.dtype)
        out = np.where(idx.fresh.reshape(_axis_shape(out.ndim, axis)), noise, out)
    return out


def contract(
    array: np.ndarray, axis: int, idx: AxisIndex, init: Init, rng: np.random.Generator
) -> np.ndarray:
    """Input rows along ``axis`` copied from ``src`` and scaled by their shares.

    Each product is taken in float64 and rounded once to the weight's dtype, in place:
    no float64 copy of the whole weight is made.
    """
    out = np.take(array, idx.src, axis=axis)
    coef = np.asarray(idx.coef, dtype=np.float64).reshape(_axis_shape(out.ndim, axis))
    np.multiply(out, coef, out=out, casting="unsafe")
    if init is Init.RANDOM_PAD and idx.fresh.any():
        std = float(np.std(array.astype(np.float64))) or 0.01
        noise = rng.normal(0.0, std, size=out.shape)
        out = np.where(idx.fresh.reshape(_axis_shape(out.ndim, axis)), noise, out).astype(array.dtype)
    return out


def broadcast_axis(shape: tuple[int, ...], axis: int) -> int | None:
    """The axis of a broadcasting operand of ``shape`` aligned with negative ``axis``, if any."""
    return len(shape) + axis if len(shape) >= -axis else None
