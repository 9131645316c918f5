"""Equivalence of two models, judged by onnxruntime (docs/design.md §6).

Both models run on the same seeded inputs. Every output is compared by name:
max absolute error, max relative error ``max|a-b| / max|a|`` (``a`` the reference),
NaN at the same place on both sides counts as equal. An output passes when
``max|a-b| <= atol + rtol * max|a|``. The report names the provider that actually
ran (``session.get_providers()``) and, per output, the smallest ``atol`` (at the
given ``rtol``) and ``rtol`` (at the given ``atol``) that would pass.

Inputs are either seeded random values (floats standard normal, integers in
``[0, table size)`` when they index a Gather, else ``[0, 10)``, booleans 0/1; dynamic
dimensions from ``input_shapes`` or 2) or one user-given sample (an ``.npz`` file),
which must match the reference's inputs by name, dtype, rank and every static dimension.
Two models whose inputs or outputs differ in name, dtype or a static dimension are
not comparable: the report fails with that reason.

Sessions run the models as written: graph optimisations off, and weights not
prepacked. Each model is opened once and run on a few samples, so packing its
matrices for faster runs costs more than it saves (a 3 GB transformer: 3-4 s to pack,
0.7 s slower to run unpacked), and unpacked external weights stay memory-mapped
instead of copied. The reference runs and is closed before the candidate opens, so
one model is in memory at a time.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx_ir as ir

from onnxgrow.bfloat16 import float32_feeds, has_bfloat16, make_float32_twin
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

    @property
    def min_atol(self) -> float:
        """Smallest atol (with this rtol) under which this output would pass."""
        if self.nan_mismatch:
            return float("inf")
        return max(self.max_abs_error - self.rtol * self.reference_max_abs, 0.0)

    def line(self) -> str:
        """``PASSED name: errors (tolerances); what would pass``, for people."""
        verdict = "PASSED" if self.passed else "FAILED"
        text = f"{verdict}  {self.name} {self.shape} {self.dtype}: "
        if self.reason and math.isinf(self.max_abs_error):
            return text + self.reason
        text += (
            f"max abs error {self.max_abs_error:.3g}, max rel error {self.max_rel_error:.3g} "
            f"(atol {self.atol:g}, rtol {self.rtol:g})"
        )
        if self.nan_mismatch:
            return text + f"; {self.reason}: no tolerance passes"
        text += f"; min atol to pass {_round_up(self.min_atol)} (at rtol {self.rtol:g})"
        if math.isinf(self.min_rtol):
            return text
        return text + f", min rtol to pass {_round_up(self.min_rtol)} (at atol {self.atol:g})"


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
    input_source: str = "random"

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
        if self.extra.get("computed_as"):
            text += f"; computed as {self.extra['computed_as']}"
        return text

    def lines(self) -> list[str]:
        """The full report for people: provider, inputs, one line per output, verdict."""
        source = (
            f"random, seed {self.seed}, {self.samples} sample(s)"
            if self.input_source == "random" else self.input_source
        )
        shapes = ", ".join(
            f"{name} {list(info['shape'])} {info['dtype']}" for name, info in self.inputs.items()
        )
        out = [
            f"provider: {', '.join(self.providers) or 'none (not run)'}",
            f"inputs:   {source}: {shapes or 'none'}",
        ]
        if not self.expected_exact:
            out.append("note:     this change is not meant to be exact")
        out.extend(o.line() for o in self.outputs)
        failed = sum(not o.passed for o in self.outputs)
        if self.passed:
            out.append(f"PASSED: {len(self.outputs)} output(s) within tolerance")
        elif failed:
            out.append(f"FAILED: {failed} of {len(self.outputs)} output(s) differ beyond tolerance")
        else:
            out.append(f"FAILED: {self.reason}")
        return out

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: non-finite numbers (an output that cannot pass) become ``None``."""
        data = asdict(self)
        for out, comp in zip(data["outputs"], self.outputs):
            out["min_rtol"] = comp.min_rtol
            out["min_atol"] = comp.min_atol
        data["max_abs_error"] = self.max_abs_error
        data["max_rel_error"] = self.max_rel_error
        return _finite_or_none(data)  # type: ignore[no-any-return]


def _finite_or_none(data: object) -> object:
    """Replace inf and NaN (not valid JSON) with None, recursively."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite_or_none(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_finite_or_none(v) for v in data]
    return data


def _round_up(value: float) -> str:
    """``value`` to 2 significant digits, rounded up so the printed tolerance passes."""
    if value <= 0:
        return "0"
    exponent = math.floor(math.log10(value)) - 1
    return f"{math.ceil(value / 10**exponent) * 10**exponent:.2g}"


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
    """Open ``path`` in onnxruntime as written (no graph optimisations, no weight
    prepacking: see the module docstring), or with every optimisation when ``optimize``."""
    ort = _import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if optimize
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.log_severity_level = 3
    if not optimize:
        options.add_session_config_entry("session.disable_prepacking", "1")
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
    if ref.dtype.kind in "OSU":  # strings: equal or not, no distance
        differ = int(np.count_nonzero(ref != cand))
        error = 0.0 if differ == 0 else float("inf")
        return OutputComparison(
            name, list(ref.shape), dtype.name, error, error, 0.0, 0, atol, rtol, differ == 0,
            f"{differ} values differ" if differ else "",
        )
    a = np.asarray(ref, dtype=np.float64)
    b = np.asarray(cand, dtype=np.float64)
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




@contextlib.contextmanager
def runnable(model: ir.Model | str | os.PathLike[str], float32_twin: bool) -> Iterator[Path]:
    """A path onnxruntime can run: the model itself, or its float32 twin (see :mod:`onnxgrow.bfloat16`)."""
    with model_on_disk(model) as path:
        if not float32_twin:
            yield path
            return
        twin = load_model(path)
        make_float32_twin(twin)
        with model_on_disk(twin) as twin_path:
            yield twin_path


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


def _dims_compatible(a: Sequence[object] | None, b: Sequence[object] | None) -> bool:
    """Same rank and equal static dims; dynamic dims and unknown shapes match anything."""
    if a is None or b is None:
        return True
    return len(a) == len(b) and all(
        x == y or not isinstance(x, int) or not isinstance(y, int) for x, y in zip(a, b)
    )


def _true_inputs(model: ir.Model) -> list[ir.Value]:
    return [v for v in model.graph.inputs if v.name not in model.graph.initializers]


def signature_mismatch(reference: ir.Model, candidate: ir.Model) -> str:
    """Why the two models cannot be compared output by output ('' when they can).

    Inputs and outputs must agree in names, dtypes, ranks and static dimensions.
    """
    sides = (
        ("input", _true_inputs(reference), _true_inputs(candidate)),
        ("output", list(reference.graph.outputs), list(candidate.graph.outputs)),
    )
    for kind, ref_values, cand_values in sides:
        ref_by_name = {v.name: v for v in ref_values}
        cand_by_name = {v.name: v for v in cand_values}
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
            if not _dims_compatible(ref_dims, cand_dims):
                return (
                    f"{kind} {name!r} has shape {format_dims(ref_dims)} in the reference but "
                    f"{format_dims(cand_dims)} in the candidate"
                )
    return ""


def _dtype_name(dtype: ir.DataType | None) -> str:
    return dtype.name if dtype is not None else "?"


def load_inputs(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """One input sample from an ``.npz`` file (``numpy.savez``), keyed by input name."""
    p = Path(path)
    if not p.is_file():
        raise GrowError(f"{p}: no such file")
    try:
        with np.load(p, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("a single array, not an archive of named arrays")
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, AttributeError) as exc:
        raise GrowError(
            f"{p}: not a readable .npz file of named input arrays ({_first_line(exc)})"
        ) from None


def check_seed(seed: object) -> int:
    """A seed is a non-negative integer (numpy's generators take no other); GrowError otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise GrowError(f"--seed must be a non-negative integer, got {seed!r}")
    return seed


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
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Run both models on the same inputs and compare every output by name.

    ``inputs`` (a list of feed dicts, one per sample) replaces random inputs and then
    ``input_shapes`` and ``samples`` must be left out. Raises GrowError for input errors
    (missing onnxruntime or provider, unloadable model, inputs that do not fit the
    reference); a candidate that is not comparable or computes something else gives a
    report with ``passed=False`` and a reason. ``progress(done, total)`` counts the two
    model loads and every run (see :func:`run_both`).
    """
    ref_model = reference if isinstance(reference, ir.Model) else load_model(reference)
    cand_model = candidate if isinstance(candidate, ir.Model) else load_model(candidate)
    check_seed(seed)
    for label, tolerance in (("--atol", atol), ("--rtol", rtol)):
        if tolerance is not None and not (math.isfinite(tolerance) and tolerance >= 0):
            raise GrowError(f"{label} must be a finite number >= 0, got {tolerance}")
    full_providers = resolve_providers(providers)
    if inputs is not None:
        if input_shapes or samples != 1:
            raise GrowError(
                "given inputs fix the shapes and the samples: leave out input shapes and samples"
            )
        feeds_list = [dict(f) for f in inputs]
        if not feeds_list:
            raise GrowError("no input samples given")
        _check_feeds(feeds_list, ref_model)
    else:
        specs = input_specs(ref_model, input_shapes)
        feeds_list = [random_inputs(specs, seed + i) for i in range(samples)]
    source = "random" if inputs is None else "given"
    input_info: dict[str, dict[str, object]] = {
        name: {"shape": list(arr.shape), "dtype": str(arr.dtype)}
        for name, arr in feeds_list[0].items()
    }
    mismatch = signature_mismatch(ref_model, cand_model)
    if mismatch:
        return VerifyReport(False, [], [], input_info, len(feeds_list), seed, mismatch,
                            expected_exact, input_source=source)
    dtypes = {v.name: v.dtype or ir.DataType.FLOAT for v in ref_model.graph.outputs}
    twins = has_bfloat16(ref_model) or has_bfloat16(cand_model)
    extra: dict[str, object] = {"computed_as": "float32 twins of bfloat16 models"} if twins else {}
    run_feeds = [float32_feeds(f) for f in feeds_list] if twins else feeds_list
    with runnable(reference, twins) as ref_path, runnable(candidate, twins) as cand_path:
        ref_runs, cand_runs = run_both(ref_path, cand_path, full_providers, run_feeds, progress)
    if ref_runs.error:
        raise GrowError(f"the reference model fails on these inputs: {ref_runs.error}")
    if cand_runs.error:
        return VerifyReport(False, [], cand_runs.providers, input_info, len(feeds_list),
                            seed, f"the candidate fails to run: {cand_runs.error}",
                            expected_exact, input_source=source)
    merged: dict[str, OutputComparison] = {}
    for ref_out, cand_out in zip(ref_runs.outputs, cand_runs.outputs):
        for comp in compare_outputs(ref_out, cand_out, atol, rtol, dtypes):
            merged[comp.name] = _worse(merged.get(comp.name), comp)
    outputs = list(merged.values())
    passed = all(o.passed for o in outputs)
    return VerifyReport(passed, outputs, ref_runs.providers, input_info, len(feeds_list), seed,
                        "" if passed else "outputs differ beyond tolerance", expected_exact,
                        extra=extra, input_source=source)


@dataclass
class Runs:
    """One model's outputs for every sample, or why it stopped."""

    providers: list[str]
    outputs: list[dict[str, np.ndarray]]
    error: str = ""


def run_both(
    reference: Path,
    candidate: Path,
    providers: Sequence[str],
    feeds_list: Sequence[Mapping[str, np.ndarray]],
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Runs, Runs]:
    """Run the reference on every sample, close it, then the candidate (one model in memory
    at a time). ``progress(done, total)`` counts the two loads and every run."""
    total = 2 * (1 + len(feeds_list))
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    if progress is not None:
        progress(0, total)
    runs: list[Runs] = []
    for path in (reference, candidate):
        session = open_session(path, providers)
        step()
        runs.append(_run_samples(session, feeds_list, step))
        del session  # frees this model's weights before the next one loads
        if runs[0].error:
            return runs[0], Runs(runs[0].providers, [])
    return runs[0], runs[1]


def _run_samples(session: Session, feeds_list: Sequence[Mapping[str, np.ndarray]],
                 step: Callable[[], None]) -> Runs:
    outputs = []
    for feeds in feeds_list:
        try:
            outputs.append(session.run(feeds))
        except Exception as exc:
            return Runs(session.providers, outputs, _first_line(exc))
        step()
    return Runs(session.providers, outputs)


def _worse(old: OutputComparison | None, new: OutputComparison) -> OutputComparison:
    """The comparison to keep across samples: a failure first, then the larger error."""
    if old is None:
        return new
    return new if (not new.passed, new.max_abs_error) > (not old.passed, old.max_abs_error) else old




def _check_feeds(feeds_list: list[dict[str, np.ndarray]], model: ir.Model) -> None:
    """Given inputs must name every true input and match its dtype, rank and static dims."""
    wanted = {v.name: v for v in _true_inputs(model)}
    for feeds in feeds_list:
        missing = sorted(set(wanted) - set(feeds))
        extra = sorted(set(feeds) - set(wanted))
        if missing or extra:
            raise GrowError(
                "inputs do not match the model: "
                + "; ".join(
                    part for part in (
                        f"missing {', '.join(missing)}" if missing else "",
                        f"unknown {', '.join(extra)}" if extra else "",
                    ) if part
                )
                + f" (the model's inputs: {', '.join(wanted) or 'none'})"
            )
        for name, value in wanted.items():
            array = feeds[name]
            if value.dtype is not None and array.dtype != value.dtype.numpy():
                raise GrowError(
                    f"input {name!r} has dtype {array.dtype}, the model wants "
                    f"{np.dtype(value.dtype.numpy())}"
                )
            dims = shape_dims(value.shape)
            if not _dims_compatible(dims, list(array.shape)):
                raise GrowError(
                    f"input {name!r} has shape {list(array.shape)}, the model wants "
                    f"{format_dims(dims)}"
                )
