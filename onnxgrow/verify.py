"""Equivalence of two models, judged by onnxruntime (DESIGN.md §6).

Both models run on the same seeded inputs. Every output is compared by name:
max absolute error, max relative error ``max|a-b| / max|a|`` (``a`` the reference),
NaN at the same place on both sides counts as equal. An output passes when
``max|a-b| <= atol + rtol * max|a|``. The report names the provider that actually
ran (``session.get_providers()``) and the smallest ``rtol`` that would pass.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx_ir as ir

from onnxgrow.errors import GrowError
from onnxgrow.model_io import load_model, save_model

#: Default tolerances by output dtype: (atol, rtol).
DEFAULT_TOLERANCES: dict[ir.DataType, tuple[float, float]] = {
    ir.DataType.FLOAT: (1e-6, 1e-5),
    ir.DataType.DOUBLE: (1e-12, 1e-10),
    ir.DataType.FLOAT16: (1e-3, 1e-2),
    ir.DataType.BFLOAT16: (1e-2, 4e-2),
}
#: Size given to a dynamic dimension when the user gives none.
DEFAULT_DYNAMIC_DIM = 2
#: Integer inputs that index no embedding table are drawn from [0, this).
DEFAULT_INT_HIGH = 10

PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
}


@dataclass
class OutputComparison:
    """How one output of the candidate compares with the reference's."""

    name: str
    shape: list[int]
    dtype: str
    max_abs_error: float
    max_rel_error: float
    reference_max_abs: float
    nan_mismatch: int
    atol: float
    rtol: float
    passed: bool
    reason: str = ""

    @property
    def min_rtol(self) -> float:
        """Smallest rtol (with this atol) under which this output would pass."""
        if self.nan_mismatch:
            return float("inf")
        excess = max(self.max_abs_error - self.atol, 0.0)
        return excess / self.reference_max_abs if self.reference_max_abs > 0 else (
            0.0 if excess == 0 else float("inf")
        )


@dataclass
class VerifyReport:
    """The verdict over all outputs and samples."""

    passed: bool
    outputs: list[OutputComparison]
    providers: list[str]
    inputs: dict[str, dict[str, object]]
    samples: int
    seed: int
    reason: str = ""
    expected_exact: bool = True
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def max_abs_error(self) -> float:
        return max((o.max_abs_error for o in self.outputs), default=0.0)

    @property
    def max_rel_error(self) -> float:
        return max((o.max_rel_error for o in self.outputs), default=0.0)

    def summary(self) -> str:
        """One line: verdict, errors, provider, inputs."""
        verdict = "PASSED" if self.passed else "FAILED"
        shapes = ", ".join(
            f"{name}{list(info['shape'])}:{info['dtype']}" for name, info in self.inputs.items()
        )
        text = (
            f"{verdict}: max abs error {self.max_abs_error:.3g}, max rel error "
            f"{self.max_rel_error:.3g} on {self.samples} sample(s) [{shapes}] "
            f"with {', '.join(self.providers)}"
        )
        if self.reason:
            text += f" ({self.reason})"
        return text

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        for out, comp in zip(data["outputs"], self.outputs):
            out["min_rtol"] = comp.min_rtol
        data["max_abs_error"] = self.max_abs_error
        data["max_rel_error"] = self.max_rel_error
        return data


def _import_onnxruntime():  # type: ignore[no-untyped-def]
    try:
        import onnxruntime
    except ImportError:
        raise GrowError(
            "onnxruntime is not installed: install it with `pip install 'onnxgrow[cpu]'` "
            "(or `[gpu]` for onnxruntime-gpu), or skip verification with --no-verify"
        ) from None
    return onnxruntime


def resolve_providers(names: Sequence[str]) -> list[str]:
    """Map short names (cpu, cuda) to onnxruntime providers; fail if one is unavailable."""
    ort = _import_onnxruntime()
    available = ort.get_available_providers()
    resolved = []
    for name in names:
        full = PROVIDER_NAMES.get(name.lower(), name)
        if full not in available:
            raise GrowError(
                f"execution provider {name!r} ({full}) is not available in this onnxruntime "
                f"(available: {', '.join(available)}); for CUDA install `onnxgrow[gpu]`"
            )
        resolved.append(full)
    if "CPUExecutionProvider" not in resolved:
        resolved.append("CPUExecutionProvider")
    return resolved


@dataclass
class Session:
    """An onnxruntime session with the providers it really uses."""

    session: object
    providers: list[str]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]  # type: ignore[attr-defined]
        values = self.session.run(names, dict(feeds))  # type: ignore[attr-defined]
        return dict(zip(names, values))


def open_session(path: Path, providers: Sequence[str], optimize: bool = False) -> Session:
    """Open ``path`` in onnxruntime; graph optimisations off unless ``optimize``."""
    ort = _import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if optimize
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.log_severity_level = 3
    try:
        sess = ort.InferenceSession(str(path), options, providers=list(providers))
    except Exception as exc:
        raise GrowError(f"{path}: onnxruntime cannot load this model: {_first_line(exc)}") from None
    used = list(sess.get_providers())
    for wanted in providers:
        if wanted not in used:
            raise GrowError(
                f"{wanted} was requested but onnxruntime fell back to {', '.join(used)} "
                f"for {path}"
            )
    return Session(sess, used)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _integer_high(model: ir.Model, value: ir.Value) -> int:
    """Upper bound for an integer input: the table size when it indexes a Gather."""
    for use in value.uses():
        node = use.node
        if node.op_type == "Gather" and node.domain == "" and use.idx == 1:
            data = node.inputs[0]
            if data is not None and data.shape is not None:
                axis = node.attributes.get_int("axis", 0)
                dim = data.shape[axis]
                if isinstance(dim, int):
                    return dim
    return DEFAULT_INT_HIGH


def input_specs(
    model: ir.Model, shapes: Mapping[str, Sequence[int]] | None = None
) -> dict[str, tuple[tuple[int, ...], ir.DataType, int]]:
    """Concrete (shape, dtype, integer high) for every true graph input.

    Dynamic dimensions take the user's ``shapes`` or :data:`DEFAULT_DYNAMIC_DIM`.
    """
    shapes = dict(shapes or {})
    initializer_names = set(model.graph.initializers)
    specs = {}
    for value in model.graph.inputs:
        if value.name in initializer_names:
            continue
        if value.name in shapes:
            concrete = tuple(int(d) for d in shapes.pop(value.name))
        else:
            dims = value.shape.dims if value.shape is not None else ()
            concrete = tuple(d if isinstance(d, int) and d >= 0 else DEFAULT_DYNAMIC_DIM for d in dims)
        if value.dtype is None:
            raise GrowError(f"model input {value.name!r} has no element type")
        specs[value.name] = (concrete, value.dtype, _integer_high(model, value))
    if shapes:
        raise GrowError(
            f"--input-shapes names {', '.join(sorted(shapes))}, which the model does not have "
            f"as inputs (inputs: {', '.join(specs)})"
        )
    return specs


def random_inputs(
    specs: Mapping[str, tuple[tuple[int, ...], ir.DataType, int]], seed: int
) -> dict[str, np.ndarray]:
    """Seeded random feeds: normal floats, integers in [0, high), random booleans."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, (shape, dtype, high) in specs.items():
        np_dtype = dtype.numpy()
        if dtype.is_floating_point():
            feeds[name] = rng.standard_normal(shape).astype(np_dtype)
        elif dtype == ir.DataType.BOOL:
            feeds[name] = rng.integers(0, 2, size=shape).astype(bool)
        elif dtype.is_integer():
            feeds[name] = rng.integers(0, high, size=shape).astype(np_dtype)
        else:
            raise GrowError(f"cannot make random values for input {name!r} of type {dtype.name}")
    return feeds


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
        results.append(_compare_one(name, ref, candidate[name], dtype, a_tol, r_tol))
    return results


def _compare_one(
    name: str, ref: np.ndarray, cand: np.ndarray, dtype: ir.DataType, atol: float, rtol: float
) -> OutputComparison:
    if ref.shape != cand.shape:
        return OutputComparison(
            name, list(ref.shape), dtype.name, float("inf"), float("inf"), 0.0, 0, atol, rtol,
            False, f"shape {list(ref.shape)} became {list(cand.shape)}",
        )
    a = np.asarray(ref, dtype=np.float64) if ref.dtype != object else ref
    b = np.asarray(cand, dtype=np.float64) if cand.dtype != object else cand
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    nan_mismatch = int(np.count_nonzero(nan_a != nan_b))
    both = nan_a | nan_b
    same_inf = np.isinf(a) & (a == b)
    diff = np.where(both | same_inf, 0.0, np.abs(a - b))
    max_abs = float(diff.max()) if diff.size else 0.0
    finite_ref = np.where(np.isfinite(a), np.abs(a), 0.0)
    ref_max = float(finite_ref.max()) if finite_ref.size else 0.0
    max_rel = max_abs / ref_max if ref_max > 0 else (0.0 if max_abs == 0 else float("inf"))
    passed = nan_mismatch == 0 and max_abs <= atol + rtol * ref_max
    reason = f"{nan_mismatch} NaN positions differ" if nan_mismatch else ""
    return OutputComparison(
        name, list(ref.shape), dtype.name, max_abs, max_rel, ref_max, nan_mismatch, atol, rtol,
        passed, reason,
    )


@contextlib.contextmanager
def model_on_disk(model: ir.Model | str | os.PathLike[str]) -> Iterator[Path]:
    """A path onnxruntime can open: the file itself, or a temporary save of an in-memory model."""
    if not isinstance(model, ir.Model):
        yield Path(model)
        return
    with tempfile.TemporaryDirectory(prefix="onnxgrow-verify-") as tmp:
        path = Path(tmp) / "model.onnx"
        save_model(model, path, external_data=True)
        yield path


def signature_mismatch(reference: ir.Model, candidate: ir.Model) -> str:
    """Why the two models cannot be compared output by output ('' when they can)."""
    ref_in = {v.name: v.dtype for v in reference.graph.inputs if v.name not in reference.graph.initializers}
    cand_in = {v.name: v.dtype for v in candidate.graph.inputs if v.name not in candidate.graph.initializers}
    if ref_in != cand_in:
        return f"inputs differ: {_describe(ref_in)} vs {_describe(cand_in)}"
    ref_out = {v.name: v.dtype for v in reference.graph.outputs}
    cand_out = {v.name: v.dtype for v in candidate.graph.outputs}
    if ref_out != cand_out:
        return f"outputs differ: {_describe(ref_out)} vs {_describe(cand_out)}"
    return ""


def _describe(sig: Mapping[str, ir.DataType | None]) -> str:
    return "{" + ", ".join(f"{n}:{d.name if d else '?'}" for n, d in sig.items()) + "}"


def verify(
    reference: ir.Model | str | os.PathLike[str],
    candidate: ir.Model | str | os.PathLike[str],
    *,
    inputs: Sequence[Mapping[str, np.ndarray]] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    samples: int = 1,
    seed: int = 0,
    atol: float | None = None,
    rtol: float | None = None,
    providers: Sequence[str] = ("cpu",),
    expected_exact: bool = True,
) -> VerifyReport:
    """Run both models on the same inputs and compare every output by name.

    ``inputs`` (a list of feed dicts) replaces random inputs. Raises GrowError for input
    errors (missing onnxruntime or provider, unloadable model); a model that computes
    something else gives a report with ``passed=False``.
    """
    ref_model = reference if isinstance(reference, ir.Model) else load_model(reference)
    cand_model = candidate if isinstance(candidate, ir.Model) else load_model(candidate)
    full_providers = resolve_providers(providers)
    specs = input_specs(ref_model, input_shapes)
    if inputs is not None:
        feeds_list = [dict(f) for f in inputs]
        _check_feeds(feeds_list, specs)
    else:
        feeds_list = [random_inputs(specs, seed + i) for i in range(samples)]
    input_info: dict[str, dict[str, object]] = {
        name: {"shape": list(arr.shape), "dtype": str(arr.dtype)}
        for name, arr in feeds_list[0].items()
    } if feeds_list else {}
    mismatch = signature_mismatch(ref_model, cand_model)
    if mismatch:
        return VerifyReport(False, [], [], input_info, len(feeds_list), seed, mismatch, expected_exact)
    dtypes = {v.name: v.dtype or ir.DataType.FLOAT for v in ref_model.graph.outputs}
    with model_on_disk(reference) as ref_path, model_on_disk(candidate) as cand_path:
        ref_sess = open_session(ref_path, full_providers)
        cand_sess = open_session(cand_path, full_providers)
        merged: dict[str, OutputComparison] = {}
        for feeds in feeds_list:
            try:
                ref_out = ref_sess.run(feeds)
            except Exception as exc:
                raise GrowError(f"the reference model fails on these inputs: {_first_line(exc)}") from None
            try:
                cand_out = cand_sess.run(feeds)
            except Exception as exc:
                return VerifyReport(False, [], cand_sess.providers, input_info, len(feeds_list),
                                    seed, f"the candidate fails to run: {_first_line(exc)}",
                                    expected_exact)
            for comp in compare_outputs(ref_out, cand_out, atol, rtol, dtypes):
                merged[comp.name] = _worse(merged.get(comp.name), comp)
    outputs = list(merged.values())
    passed = all(o.passed for o in outputs)
    return VerifyReport(passed, outputs, ref_sess.providers, input_info, len(feeds_list), seed,
                        "" if passed else "outputs differ beyond tolerance", expected_exact)


def _worse(old: OutputComparison | None, new: OutputComparison) -> OutputComparison:
    """The comparison to keep across samples: a failure first, then the larger error."""
    if old is None:
        return new
    return new if (not new.passed, new.max_abs_error) > (not old.passed, old.max_abs_error) else old


def _check_feeds(
    feeds_list: list[dict[str, np.ndarray]],
    specs: Mapping[str, tuple[tuple[int, ...], ir.DataType, int]],
) -> None:
    for feeds in feeds_list:
        missing = set(specs) - set(feeds)
        extra = set(feeds) - set(specs)
        if missing or extra:
            raise GrowError(
                "inputs do not match the model: "
                + (f"missing {', '.join(sorted(missing))}" if missing else "")
                + ("; " if missing and extra else "")
                + (f"unknown {', '.join(sorted(extra))}" if extra else "")
            )
        for name, (_, dtype, _) in specs.items():
            if feeds[name].dtype != dtype.numpy():
                raise GrowError(
                    f"input {name!r} has dtype {feeds[name].dtype}, the model wants {dtype.numpy()}"
                )
