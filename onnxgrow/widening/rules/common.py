"""Helpers the op rules share: shapes, broadcasting, and the three weight edits.

The edits, for a weight axis that the widened channels index:

- *produce*: new output unit ``j`` copies unit ``src[j]`` (fresh units get random
  weights with the tensor's own standard deviation);
- *contract*: input row ``j`` is row ``src[j]`` times its share ``coef[j]`` (fresh rows
  are 0, or random for random-pad);
- *gather*: per-channel parameters (bias, BatchNorm statistics, a per-channel constant)
  copy position ``src[j]``;
- *fill*: chosen positions set to one value (new classes' zero rows, their bias);
- *append*: new units the growth gives itself appended (a vocabulary's new rows:
  :meth:`~onnxgrow.widening.context.GroupContext.append_units`).

Each edit also tells :data:`~onnxgrow.widening.context.EDIT_LOG`, when one is open (see
:meth:`~onnxgrow.widening.context.GroupContext.edit`), which axis it grew and how: the
growth map is made from that.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx_ir as ir

from onnxgrow.constants import PASS_THROUGH_OPS, find_constant
from onnxgrow.graph import const_shape, holder_of, model_input_behind, node_label
from onnxgrow.grown_tensors import AxisEdit
from onnxgrow.widening.channel_map import Init
from onnxgrow.widening.context import EDIT_LOG, AxisRecord, GroupContext
from onnxgrow.widening.layout import AxisIndex
from onnxgrow.widening.rules.quantized import QUANTIZATION_OPS


def weight_problem(value: ir.Value | None, what: str) -> str:
    """Why the weight ``value`` cannot be rewritten ('' when it is a constant).

    An initializer that is also a graph input is no constant: callers may feed another
    value at run time, so onnxgrow leaves it alone unless the model was loaded with
    ``weights_as_constants`` (before IR version 4 they are constants anyway, docs/design.md
    §10). A computed weight is reported with the node computing it (through
    Identity/Transpose); a DequantizeLinear there means a quantized weight.
    """
    if value is None or find_constant(value) is not None:
        return ""
    root = model_input_behind(value)
    holder = holder_of(root.graph) if root is not None else None
    if root is not None and holder is not None:
        passed = {"Loop": "a loop-carried value", "Scan": "a state or scanned input"}.get(holder.op_type, "an input")
        return f"its {what} {root.name!r} is {passed} of {node_label(holder)}, not a constant"
    if root is not None:
        reason = f"its {what} {root.name!r} is a model input (callers may replace it at run time), not a constant"
        if root.const_value is not None:  # an initializer listed as an input (IR >= 4)
            reason += "; --weights-as-constants treats the weights listed as inputs as constants"
        return reason
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


def _log(kind: str, axis: int, idx: AxisIndex, scaled: bool) -> None:
    """Tell the open edit log (if any) that ``axis`` grew by ``idx``."""
    log = EDIT_LOG.get()
    if log is not None:
        log.append(_record(kind, axis, idx, scaled))


def _record(kind: str, axis: int, idx: AxisIndex, scaled: bool) -> AxisRecord:
    return AxisRecord(kind, axis, idx.src, np.asarray(idx.coef if scaled else np.ones(len(idx))), idx.fresh)


def _recorder(kind: str, axis: int, idx: AxisIndex, scaled: bool) -> Callable[[int], AxisRecord]:
    """The growth map's record of an edit, for a tensor of rank ``ndim``."""
    return lambda ndim: _record(kind, axis % ndim, idx, scaled)


def _axis_shape(ndim: int, axis: int) -> list[int]:
    shape = [1] * ndim
    shape[axis] = -1
    return shape


def gather(array: np.ndarray, axis: int, idx: AxisIndex) -> np.ndarray:
    """Per-channel values copied from ``src`` along ``axis``."""
    _log("gather", axis % array.ndim, idx, False)
    return np.take(array, idx.src, axis=axis)


def fill(array: np.ndarray, axis: int, where: np.ndarray, value: float) -> np.ndarray:
    """``array`` with the positions ``where`` along ``axis`` set to ``value`` (new units
    started at a chosen value: zero rows, a new class's bias)."""
    axis %= array.ndim
    log = EDIT_LOG.get()
    if log is not None:
        positions = np.arange(array.shape[axis])
        log.append(AxisRecord("fill", axis, positions, np.ones(len(positions)), np.asarray(where, dtype=bool)))
    out = np.array(array, copy=True)
    np.moveaxis(out, axis, 0)[np.asarray(where, dtype=bool)] = value
    return out


def append(array: np.ndarray, axis: int, block: np.ndarray) -> np.ndarray:
    """``array`` with ``block`` appended along ``axis`` (in ``array``'s dtype); the new
    positions are fresh units."""
    axis %= array.ndim
    out = np.concatenate([array, block.astype(array.dtype, copy=False)], axis=axis)
    log = EDIT_LOG.get()
    if log is not None:
        old, new = array.shape[axis], out.shape[axis]
        fresh = np.arange(new) >= old
        log.append(AxisRecord("append", axis, np.where(fresh, 0, np.arange(new)), np.ones(new), fresh))
    return out


def appending(axis: int, new_units: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """:func:`append` as an edit: ``new_units(old)`` gives the block to append."""
    return lambda array: append(array, axis, new_units(array))


def _spread(array: np.ndarray) -> float:
    """The standard deviation of the weight's finite values (0.01 when none or all equal):
    the scale of fresh random units. NaN/Inf weights are left out, not spread."""
    values = array.astype(np.float64)
    finite = values[np.isfinite(values)]
    return (float(np.std(finite)) if finite.size else 0.0) or 0.01


def produce(array: np.ndarray, axis: int, idx: AxisIndex, rng: np.random.Generator) -> np.ndarray:
    """Output units along ``axis`` copied from ``src``; fresh units drawn at random."""
    _log("produce", axis % array.ndim, idx, False)
    out = np.take(array, idx.src, axis=axis)
    if idx.fresh.any():
        std = _spread(array)
        noise = rng.normal(0.0, std, size=out.shape).astype(out.dtype)
        out = np.where(idx.fresh.reshape(_axis_shape(out.ndim, axis)), noise, out)
    return out


def contract(
    array: np.ndarray, axis: int, idx: AxisIndex, init: Init, rng: np.random.Generator
) -> np.ndarray:
    """Input rows along ``axis`` copied from ``src`` and scaled by their shares.

    Each product is taken in float64 and rounded once to the weight's dtype, in place:
    no float64 copy of the whole weight is made. For dtypes narrower than float32 (fp16,
    bf16) the rounding is then moved onto one copy of each row (:func:`_restore_row_sums`),
    so the copies of a row add up to exactly what it contributed, in the weight's own
    dtype: an fp16 row split in three would otherwise lose up to an ulp per copy, which a
    LayerNorm over a low-variance stream amplifies past the fp16 tolerance.
    """
    _log("contract", axis % array.ndim, idx, True)
    out = np.take(array, idx.src, axis=axis)
    coef = np.asarray(idx.coef, dtype=np.float64).reshape(_axis_shape(out.ndim, axis))
    np.multiply(out, coef, out=out, casting="unsafe")
    if out.dtype.itemsize < 4:
        _restore_row_sums(array, out, axis, idx)
    if init is Init.RANDOM_PAD and idx.fresh.any():
        std = _spread(array)
        noise = rng.normal(0.0, std, size=out.shape)
        out = np.where(idx.fresh.reshape(_axis_shape(out.ndim, axis)), noise, out).astype(array.dtype)
    return out


#: Float64 work memory of one step of :func:`_restore_row_sums`.
RESIDUE_CHUNK_BYTES = 32 * 1024**2


def _restore_row_sums(array: np.ndarray, out: np.ndarray, axis: int, idx: AxisIndex) -> None:
    """Add each old row's total rounding error to its copy of smallest share, in ``out``.

    The smallest copy has the finest grid, so the corrected value is representable and
    the copies sum exactly to ``row · Σ shares``. Rows copied once with share 1 carry no
    error and are skipped; the others are done a chunk at a time (float64 memory bounded
    by :data:`RESIDUE_CHUNK_BYTES`).
    """
    copies = np.flatnonzero(~idx.fresh)
    src = idx.src[copies]
    old_rows = array.shape[axis]
    counts = np.bincount(src, minlength=old_rows)
    totals = np.bincount(src, weights=idx.coef[copies], minlength=old_rows)
    rows = np.flatnonzero((counts > 1) | ((counts == 1) & (totals != 1.0)))
    if rows.size == 0:
        return
    by_row = copies[np.lexsort((np.abs(idx.coef[copies]), src))]  # grouped by row, smallest share first
    row_of = idx.src[by_row]
    smallest = by_row[np.searchsorted(row_of, rows)]
    old, new = np.moveaxis(array, axis, 0), np.moveaxis(out, axis, 0)
    row_bytes = 8 * max(int(np.prod(old.shape[1:])), 1)
    step = max(1, RESIDUE_CHUNK_BYTES // (row_bytes * (1 + int(counts.max()))))
    for k in range(0, rows.size, step):
        block = rows[k:k + step]
        members = np.isin(row_of, block)  # the block's copies, grouped by row in block order
        member_rows = row_of[members]
        starts = np.flatnonzero(np.r_[True, member_rows[1:] != member_rows[:-1]])
        summed = np.add.reduceat(new[by_row[members]].astype(np.float64), starts, axis=0)
        wanted = old[block].astype(np.float64) * totals[block].reshape(-1, *[1] * (old.ndim - 1))
        target = smallest[k:k + step]
        new[target] = (new[target].astype(np.float64) + wanted - summed).astype(out.dtype)


def gathering(axis: int, idx: AxisIndex) -> AxisEdit:
    """:func:`gather` as an edit that may be computed while it is written (:mod:`onnxgrow.grown_tensors`)."""
    return AxisEdit(axis, idx.src, None, lambda a: gather(a, axis, idx), record=_recorder("gather", axis, idx, False))


def producing(axis: int, idx: AxisIndex, rng: np.random.Generator) -> AxisEdit:
    """:func:`produce` as an edit; done whole when it draws fresh units (the random stream stays as it was)."""
    return AxisEdit(axis, idx.src, None, lambda a: produce(a, axis, idx, rng), lazy=not idx.fresh.any(),
                    record=_recorder("produce", axis, idx, False))


def contracting(axis: int, idx: AxisIndex, init: Init, rng: np.random.Generator) -> AxisEdit:
    """:func:`contract` as an edit; done whole when random-pad draws fresh rows."""
    draws = init is Init.RANDOM_PAD and bool(idx.fresh.any())
    return AxisEdit(axis, idx.src, np.asarray(idx.coef, dtype=np.float64),
                    lambda a: contract(a, axis, idx, init, rng), lazy=not draws,
                    record=_recorder("contract", axis, idx, True), fresh=idx.fresh)


def broadcast_axis(shape: tuple[int, ...], axis: int) -> int | None:
    """The axis of a broadcasting operand of ``shape`` aligned with negative ``axis``, if any."""
    return len(shape) + axis if len(shape) >= -axis else None


def gather_per_channel(ctx: GroupContext, node: ir.Node, out: ir.Value, inputs: range) -> None:
    """Gather, with the map of ``out``'s channels, every constant among ``node.inputs[inputs]``
    that broadcasts against ``out`` and spans the channel axis (size 1 and scalars stay)."""
    embedding = ctx.tracked[out]
    old = embedding.layout.old_size(ctx.width)
    idx = ctx.index(out)
    for i in inputs:
        shape = const_shape(node.inputs[i]) if node.inputs[i] is not None else None
        if shape is None:
            continue
        axis = broadcast_axis(shape, embedding.axis)
        if axis is not None and shape[axis] == old and old > 1:
            ctx.edit(node, i, gathering(axis, idx))
