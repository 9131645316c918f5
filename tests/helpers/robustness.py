"""Helpers of the robustness suite: file hashing, clean CLI runs, independent equivalence checks.

- :func:`hashes` / :func:`untouched`: prove a command left its input files byte-identical.
- :func:`run_cli`: run ``onnxgrow`` in-process; :func:`assert_clean` checks the result is an
  allowed exit status with at most one ``error:`` line and never a traceback.
- :func:`assert_equivalent`: run two models in onnxruntime directly (not through
  ``onnxgrow.verify``) on seeded inputs and compare at dtype-aware tolerances. bfloat16
  models are compared on float32 copies, since onnxruntime's CPU provider has no
  bfloat16 kernels (every bfloat16 value is exactly a float32 one).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
from click.testing import CliRunner
from onnx import TensorProto, numpy_helper

from onnxgrow.cli import main

#: (atol, rtol) per dtype for the independent check: max|a-b| <= atol + rtol·max|a|.
TOLERANCES = {
    TensorProto.FLOAT: (1e-6, 1e-5),
    TensorProto.DOUBLE: (1e-12, 1e-10),
    TensorProto.FLOAT16: (1e-3, 1e-2),
    TensorProto.BFLOAT16: (1e-2, 4e-2),
}


# ----- files --------------------------------------------------------------------------------
def hashes(paths: Iterable[Path]) -> dict[Path, str]:
    """SHA-256 of each file (a folder contributes every file under it)."""
    found: dict[Path, str] = {}
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            found[f] = hashlib.sha256(f.read_bytes()).hexdigest()
    return found


@contextlib.contextmanager
def untouched(*paths: Path) -> Iterator[None]:
    """Fail when any of ``paths`` (files or folders) changed, appeared or vanished."""
    before = hashes(paths)
    yield
    after = hashes(paths)
    assert after == before, f"inputs modified: {sorted(set(after.items()) ^ set(before.items()))}"


def listing(folder: Path) -> set[str]:
    """Names in ``folder`` (hidden temporary files included)."""
    return {p.name for p in folder.iterdir()}


def model_files(model: Path) -> list[Path]:
    """A model file and its external data files."""
    proto = onnx.load(str(model), load_external_data=False)
    files = [model]
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location" and model.parent / entry.value not in files:
                files.append(model.parent / entry.value)
    return files


# ----- CLI ----------------------------------------------------------------------------------
@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str
    exception: BaseException | None


class _LogLines(logging.Handler):
    """Log records formatted as Python prints them on stderr when no logging is configured."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.text = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.text += self.format(record) + "\n"


def run_cli(*args: object) -> CliResult:
    """``onnxgrow ARGS`` in-process; an exception that escaped the command is kept, not raised.

    Warnings logged by libraries are added to stderr, as a real process would print them
    (under pytest its logging plugin would swallow them).
    """
    logs = _LogLines()
    logging.getLogger().addHandler(logs)
    try:
        result = CliRunner().invoke(main, [str(a) for a in args])
    finally:
        logging.getLogger().removeHandler(logs)
    escaped = result.exception if not isinstance(result.exception, SystemExit) else None
    return CliResult(result.exit_code, result.stdout, result.stderr + logs.text, escaped)


def assert_clean(result: CliResult, codes: Sequence[int] = (0, 2)) -> None:
    """An allowed exit status; errors as one ``error: ...`` line on stderr (also for an option
    value click checks itself), after any ``warning:`` lines; no traceback."""
    assert result.exception is None, f"escaped {type(result.exception).__name__}: {result.exception!r}"
    assert result.code in codes, (result.code, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    if result.code == 2:
        lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("warning: ")]
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr


# ----- numerical equivalence ---------------------------------------------------------------
def float32_copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    """``proto`` with every bfloat16 tensor, value and Cast target turned into float32 (exact)."""
    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    for i, tensor in enumerate(graph.initializer):
        if tensor.data_type == TensorProto.BFLOAT16:
            array = numpy_helper.to_array(tensor).astype(np.float32)
            graph.initializer[i].CopyFrom(numpy_helper.from_array(array, tensor.name))
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.type.tensor_type.elem_type == TensorProto.BFLOAT16:
            value.type.tensor_type.elem_type = TensorProto.FLOAT
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.BFLOAT16:
                attr.i = TensorProto.FLOAT
    return model


def _session(model: onnx.ModelProto | Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    if isinstance(model, Path):
        proto = onnx.load(str(model))
    else:
        proto = model
    if any(t.data_type == TensorProto.BFLOAT16 for t in proto.graph.initializer) or any(
            v.type.tensor_type.elem_type == TensorProto.BFLOAT16 for v in proto.graph.input):
        proto = float32_copy(proto)
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def seeded_feeds(shapes: Mapping[str, Sequence[int]], dtype: int, seed: int) -> dict[str, np.ndarray]:
    """Normal random inputs, rounded to ``dtype`` and given as onnxruntime can take them."""
    rng = np.random.default_rng(seed)
    np_dtype = {TensorProto.FLOAT: np.float32, TensorProto.FLOAT16: np.float16,
                TensorProto.DOUBLE: np.float64, TensorProto.BFLOAT16: ml_dtypes.bfloat16}[dtype]
    feeds = {}
    for name, shape in shapes.items():
        array = rng.standard_normal(tuple(shape)).astype(np_dtype)
        feeds[name] = array.astype(np.float32) if dtype == TensorProto.BFLOAT16 else array
    return feeds


def max_errors(reference: Path | onnx.ModelProto, candidate: Path | onnx.ModelProto,
               feeds: Mapping[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """Per output: (max abs error, max |reference|)."""
    ref_sess, cand_sess = _session(reference), _session(candidate)
    names = [o.name for o in ref_sess.get_outputs()]
    ref_out = ref_sess.run(names, dict(feeds))
    cand_out = cand_sess.run(names, dict(feeds))
    errors = {}
    for name, a, b in zip(names, ref_out, cand_out):
        assert a.shape == b.shape, (name, a.shape, b.shape)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        assert np.array_equal(np.isnan(a64), np.isnan(b64)), f"{name}: NaN positions differ"
        diff = np.where(np.isnan(a64), 0.0, np.abs(a64 - b64))
        errors[name] = (float(diff.max(initial=0.0)), float(np.nanmax(np.abs(a64), initial=0.0)))
    return errors


def assert_equivalent(reference: Path | onnx.ModelProto, candidate: Path | onnx.ModelProto,
                      shapes: Mapping[str, Sequence[int]], dtype: int, seeds: Sequence[int] = (0, 1)) -> float:
    """Both models agree within the dtype's tolerance on every output; returns the max rel error."""
    atol, rtol = TOLERANCES[dtype]
    worst = 0.0
    for seed in seeds:
        for name, (abs_err, ref_max) in max_errors(reference, candidate, seeded_feeds(shapes, dtype, seed)).items():
            assert abs_err <= atol + rtol * ref_max, f"{name}: max abs error {abs_err:.3g} (max |ref| {ref_max:.3g})"
            worst = max(worst, abs_err / ref_max if ref_max else abs_err)
    return worst


def assert_checker_passes(path: Path) -> None:
    """``onnx.checker`` full check (strict shape inference) on a written model file."""
    onnx.checker.check_model(str(path), full_check=True)
