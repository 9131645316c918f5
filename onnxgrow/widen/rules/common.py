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
from onnxgrow.widen.rules.quantized import QUANTIZATION_OPS


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
    value at run time, so onnxgrow leaves it alone. A computed weight is reported with
    the node computing it (through Identity/Transpose); a DequantizeLinear there means a
    quantized weight.
    """
    if value is None or find_constant(value) is not None:
        return ""
    root = model_input_behind(value)
    if root is not None:
        return f"its {what} {root.name!r} is a model input (callers may replace it at run time), not a constant"
    node = computing_node(value)
    if node is None:
        return f"its {what} is computed at run time, not a constant"
    label = f"{node.op_type} node {node.name!r}" if node.name else f"an unnamed {node.op_type} node"
    if is_quantization(node):
        return f"its {what} is quantized (dequantized at run time by {label}); onnxgrow widens float weights only"
    return f"its {what} is computed at run time by {label}, not a constant"


def computing_node(value: ir.Value | None) -> ir.Node | None:
    """The node computing ``value``, looking through Identity/Transpose."""
    node = value.producer() if value is not None else None
    while node is not None and node.op_type in PASS_THROUGH_OPS and node.inputs and node.inputs[0] is not None:
        node = node.inputs[0].producer()
    return node


def is_quantization(node: ir.Node | None) -> bool:
    """Whether ``node`` (de)quantizes or computes on quantized tensors."""
    return node is not None and node.op_type in QUANTIZATION_OPS and node.domain in ("", "ai.onnx")


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

    The shares are applied in float64 and cast to the weight's dtype; the rounding of
    that cast is then moved onto one copy of each row (:func:`_sum_preserving_cast`),
    so the copies of a row add up to exactly what it contributed, in the weight's own
    dtype. Without this an fp16 row split in three loses up to an ulp per copy.
    """
    out = np.take(array, idx.src, axis=axis).astype(np.float64)
    out *= idx.coef.reshape(_axis_shape(out.ndim, axis))
    stored = _sum_preserving_cast(out, array.dtype, axis, idx, array.shape[axis])
    if init is Init.RANDOM_PAD and idx.fresh.any():
        std = float(np.std(array.astype(np.float64))) or 0.01
        noise = rng.normal(0.0, std, size=out.shape).astype(array.dtype)
        stored = np.where(idx.fresh.reshape(_axis_shape(out.ndim, axis)), noise, stored)
    return stored


def _sum_preserving_cast(
    shares: np.ndarray, dtype: np.dtype, axis: int, idx: AxisIndex, old_size: int
) -> np.ndarray:
    """``shares`` (float64) cast to ``dtype``, with each old row's total rounding error added
    to its copy of smallest share before that copy is cast: the smallest copy has the finest
    grid, so the corrected value is representable. ``shares`` is overwritten."""
    stored = shares.astype(dtype)
    if np.dtype(dtype) == np.float64:
        return stored
    copies = np.flatnonzero(~idx.fresh)
    shares -= stored.astype(np.float64)  # each copy's rounding error
    errors = np.moveaxis(shares, axis, 0)
    residue = np.zeros((old_size, *errors.shape[1:]))
    np.add.at(residue, idx.src[copies], errors[copies])
    by_row = copies[np.lexsort((np.abs(idx.coef[copies]), idx.src[copies]))]
    rows, first = np.unique(idx.src[by_row], return_index=True)
    smallest = by_row[first]
    view = np.moveaxis(stored, axis, 0)
    view[smallest] = (view[smallest].astype(np.float64) + residue[rows]).astype(dtype)
    return stored


def broadcast_axis(shape: tuple[int, ...], axis: int) -> int | None:
    """The axis of a broadcasting operand of ``shape`` aligned with negative ``axis``, if any."""
    return len(shape) + axis if len(shape) >= -axis else None
