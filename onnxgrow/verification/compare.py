"""Comparing outputs by name, and whether two models can be compared at all.

Two models whose inputs or outputs differ in name, dtype or a static dimension are not
comparable: the check fails with that reason (outputs a
:class:`~onnxgrow.options.VerifyScope` declares grown are compared on their old part).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxgrow.verification.report import OutputComparison

#: Outputs are compared in blocks of this many elements (in float64: 8 MiB per temporary), so
#: that comparing a value of a weight's size (a tied LM head's transposed embedding at a cut)
#: holds a few blocks, not several float64 copies of it.
COMPARE_BLOCK = 2**20

#: Default tolerances by output dtype: (atol, rtol).
DEFAULT_TOLERANCES: dict[ir.DataType, tuple[float, float]] = {
    ir.DataType.FLOAT: (1e-6, 1e-5),
    ir.DataType.DOUBLE: (1e-12, 1e-10),
    ir.DataType.FLOAT16: (1e-3, 1e-2),
    ir.DataType.BFLOAT16: (1e-2, 4e-2),
}


def compare_outputs(
    reference: Mapping[str, np.ndarray],
    candidate: Mapping[str, np.ndarray],
    atol: float | None,
    rtol: float | None,
    dtypes: Mapping[str, ir.DataType],
) -> list[OutputComparison]:
    """Compare outputs by name; tolerances default by the output's dtype."""
    results = []
    for name, ref in reference.items():
        ref = maps_as_array(ref)
        dtype = dtypes.get(name, ir.DataType.FLOAT)
        d_atol, d_rtol = DEFAULT_TOLERANCES.get(dtype, (0.0, 0.0))
        a_tol = d_atol if atol is None else atol
        r_tol = d_rtol if rtol is None else rtol
        if name not in candidate:
            results.append(
                OutputComparison(name, list(ref.shape), dtype.name, float("inf"), float("inf"),
                                 0.0, 0, a_tol, r_tol, False, "missing in candidate")
            )
            continue
        results.append(_compare_one(name, ref, maps_as_array(candidate[name]), dtype, a_tol, r_tol))
    return results


def maps_as_array(value: object) -> np.ndarray:
    """A sequence of maps (ZipMap's ``seq(map(int64, float))``, which onnxruntime returns as a
    list of dicts) as a ``[len + 1, keys]`` array: its values by sorted key, then the keys as
    a last row so that different keys differ; any other value as it is."""
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        keys = sorted({key for item in value for key in item})
        rows = [[item.get(key, np.nan) for key in keys] for item in value]
        key_row = keys if all(isinstance(k, (int, float)) for k in keys) else list(range(len(keys)))
        return np.asarray([*rows, key_row], dtype=np.float64)
    return value  # type: ignore[return-value]


def _compare_one(
    name: str, ref: np.ndarray, cand: np.ndarray, dtype: ir.DataType, atol: float, rtol: float
) -> OutputComparison:
    if ref.shape != cand.shape:
        return OutputComparison(
            name, list(ref.shape), dtype.name, float("inf"), float("inf"), 0.0, 0, atol, rtol,
            False, f"shape {list(ref.shape)} became {list(cand.shape)}",
        )
    if ref.dtype.kind in "OSU":  # strings: equal or not, no distance
        differ = int(np.count_nonzero(ref != cand))
        error = 0.0 if differ == 0 else float("inf")
        return OutputComparison(
            name, list(ref.shape), dtype.name, error, error, 0.0, 0, atol, rtol, differ == 0,
            f"{differ} values differ" if differ else "",
        )
    max_abs, ref_max, nan_mismatch, non_finite = 0.0, 0.0, 0, 0
    flat_ref, flat_cand = ref.reshape(-1), cand.reshape(-1)
    for start in range(0, flat_ref.size, COMPARE_BLOCK):
        block = _compare_block(flat_ref[start:start + COMPARE_BLOCK], flat_cand[start:start + COMPARE_BLOCK])
        max_abs, ref_max = max(max_abs, block[0]), max(ref_max, block[1])
        nan_mismatch, non_finite = nan_mismatch + block[2], non_finite + block[3]
    max_rel = max_abs / ref_max if ref_max > 0 else (0.0 if max_abs == 0 else float("inf"))
    passed = nan_mismatch == 0 and max_abs <= atol + rtol * ref_max
    reason = f"{nan_mismatch} NaN positions differ" if nan_mismatch else ""
    if passed and ref.size == 0:
        reason = "warning: 0 elements compared"
    elif passed and non_finite:
        reason = f"warning: {non_finite} of {ref.size} values are NaN or Inf in both models (compared as equal)"
    return OutputComparison(
        name, list(ref.shape), dtype.name, max_abs, max_rel, ref_max, nan_mismatch, atol, rtol,
        passed, reason,
    )


def _compare_block(ref: np.ndarray, cand: np.ndarray) -> tuple[float, float, int, int]:
    """Over one block of both outputs (flat, in float64): the largest absolute difference, the
    largest finite reference magnitude, how many NaN positions differ, and how many values are
    NaN or the same infinity in both (compared as equal)."""
    a = np.asarray(ref, dtype=np.float64)
    b = np.asarray(cand, dtype=np.float64)
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    nan_mismatch = int(np.count_nonzero(nan_a != nan_b))
    both = nan_a | nan_b
    same_inf = np.isinf(a) & (a == b)
    with np.errstate(invalid="ignore"):  # inf - inf where both are the same infinity: masked next
        diff = np.where(both | same_inf, 0.0, np.abs(a - b))
    max_abs = float(diff.max()) if diff.size else 0.0
    finite_ref = np.where(np.isfinite(a), np.abs(a), 0.0)
    ref_max = float(finite_ref.max()) if finite_ref.size else 0.0
    return max_abs, ref_max, nan_mismatch, int(np.count_nonzero(both | same_inf))


def shape_dims(shape: ir.Shape | None) -> list[int | str | None] | None:
    """A shape as JSON: ints for static dims, names for symbolic ones, None when unnamed."""
    if shape is None:
        return None
    return [d if isinstance(d, int) else d.value for d in shape.dims]


def format_dims(dims: Sequence[int | str | None] | None) -> str:
    """``[N, 4]``; ``?`` for an unnamed dynamic dim, ``[?]`` for an unknown rank."""
    if dims is None:
        return "[?]"
    return "[" + ", ".join("?" if d is None else str(d) for d in dims) + "]"


def dims_compatible(a: Sequence[object] | None, b: Sequence[object] | None) -> bool:
    """Same rank and equal static dims; dynamic dims and unknown shapes match anything."""
    if a is None or b is None:
        return True
    return len(a) == len(b) and all(
        x == y or not isinstance(x, int) or not isinstance(y, int) for x, y in zip(a, b)
    )


def name_of(value: ir.Value) -> str:
    """A graph input's or output's name (ONNX requires one; onnx-ir types it optional)."""
    return value.name or ""


def true_inputs(model: ir.Model) -> list[ir.Value]:
    return [v for v in model.graph.inputs if v.name not in model.graph.initializers]


def signature_mismatch(reference: ir.Model, candidate: ir.Model,
                       grown: Mapping[str, tuple[int, int]] | None = None) -> str:
    """Why the two models cannot be compared output by output ('' when they can).

    Inputs and outputs must agree in names, dtypes, ranks and static dimensions, except
    along the axis of each output in ``grown`` (``{name: (axis, old_size)}``), where the
    candidate may be larger.
    """
    sides = (
        ("input", true_inputs(reference), true_inputs(candidate)),
        ("output", list(reference.graph.outputs), list(candidate.graph.outputs)),
    )
    for kind, ref_values, cand_values in sides:
        ref_by_name = {name_of(v): v for v in ref_values}
        cand_by_name = {name_of(v): v for v in cand_values}
        if set(ref_by_name) != set(cand_by_name):
            return (
                f"{kind}s differ: the reference has {', '.join(map(str, ref_by_name)) or 'none'}, "
                f"the candidate has {', '.join(map(str, cand_by_name)) or 'none'}"
            )
        for name, ref_value in ref_by_name.items():
            cand_value = cand_by_name[name]
            if ref_value.dtype != cand_value.dtype:
                return (
                    f"{kind} {name!r} is {_dtype_name(ref_value.dtype)} in the reference but "
                    f"{_dtype_name(cand_value.dtype)} in the candidate"
                )
            ref_dims, cand_dims = shape_dims(ref_value.shape), shape_dims(cand_value.shape)
            if kind == "output" and grown and name in grown and ref_dims is not None and cand_dims is not None:
                axis = grown[name][0] % max(len(ref_dims), 1)
                cand_dims = [*cand_dims[:axis], ref_dims[axis], *cand_dims[axis + 1:]]
            if not dims_compatible(ref_dims, cand_dims):
                return (
                    f"{kind} {name!r} has shape {format_dims(ref_dims)} in the reference but "
                    f"{format_dims(cand_dims)} in the candidate"
                )
    return ""


def _dtype_name(dtype: ir.DataType | None) -> str:
    return dtype.name if dtype is not None else "?"


def worse(old: OutputComparison | None, new: OutputComparison) -> OutputComparison:
    """The comparison to keep across samples: a failure first, then the larger error."""
    if old is None:
        return new
    return new if (not new.passed, new.max_abs_error) > (not old.passed, old.max_abs_error) else old


def restrict(outputs: Mapping[str, Any], grown: Mapping[str, tuple[int, int]],
             renormalise: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The candidate's ``outputs`` with each output in ``grown`` cut to its first ``old_size``
    entries along its axis: the part a growth that adds classes or tokens preserves. An
    output in ``renormalise`` is then renormalised over those entries (``"softmax"``:
    divided by their sum; ``"log_softmax"``: their logsumexp subtracted). A claim the output
    cannot hold (no such axis, or fewer entries there than ``old_size``: a damaged lineage) is
    not applied: the whole output is compared."""
    cut = dict(outputs)
    for name, (axis, size) in grown.items():
        array = cut.get(name)
        if isinstance(array, np.ndarray) and -array.ndim <= axis < array.ndim and 1 <= size <= array.shape[axis]:
            part = np.take(array, np.arange(size), axis=axis)
            how = (renormalise or {}).get(name)
            if how == "softmax":
                part = part / part.sum(axis=axis, keepdims=True, dtype=np.float64)
            elif how == "log_softmax":
                wide = part.astype(np.float64)
                top = wide.max(axis=axis, keepdims=True)
                part = wide - (top + np.log(np.exp(wide - top).sum(axis=axis, keepdims=True)))
            cut[name] = part
    return cut
