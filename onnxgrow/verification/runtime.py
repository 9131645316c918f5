"""onnxruntime sessions: providers that really ran, models opened as written, one at a time.

Sessions run the models as written: graph optimisations off, and weights not
prepacked. Each model is opened once and run on a few samples, so packing its
matrices for faster runs costs more than it saves (a 3 GB transformer: 3-4 s to pack,
0.7 s slower to run unpacked), and unpacked external weights stay memory-mapped
instead of copied. The reference runs and is closed before the candidate opens, so
one model is in memory at a time.

Nor do they use onnxruntime's CPU memory arena: an output handed back to numpy keeps the
arena that holds it alive, and with it every block the session ever took (measured: the
9.7 MB logits of a tied LM head kept the 545 MB transposed embedding's block after the
session closed, for the reference while the candidate ran, and for every segment). Without
the arena each output is an allocation of its own, freed with its array.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxgrow.bfloat16 import make_float32_twin
from onnxgrow.errors import GrowError
from onnxgrow.model_io import load_model, save_model
from onnxgrow.options import PROVIDER_NAMES

#: onnxruntime's log severity: fatal only. Its coloured warning and error lines (an allocation
#: that failed while a session opened, say) must not precede or double our one error line; the
#: error itself comes back as an exception.
ORT_QUIET = 4
#: Runs a model on one sample of feeds and returns its outputs by name.
Runner = Callable[[Mapping[str, np.ndarray]], dict[str, Any]]


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise GrowError(
            "onnxruntime is not installed: install it with `pip install 'onnxgrow[cpu]'` "
            "(or `[gpu]` for onnxruntime-gpu), or skip verification with --no-verify"
        ) from None
    onnxruntime.set_default_logger_severity(ORT_QUIET)
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

    session: Any  # onnxruntime.InferenceSession (onnxruntime is an optional dependency)
    providers: list[str]

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
        names = [o.name for o in self.session.get_outputs()]
        values = self.session.run(names, dict(feeds))
        return dict(zip(names, values))


#: The onnxruntime release that reads the data files of a model opened from memory from a
#: folder it is given (``session.model_external_initializers_file_folder_path``).
EXTERNAL_FOLDER_SINCE = (1, 21)


def _version(text: str) -> tuple[int, ...]:
    """``1.21.0`` → ``(1, 21)``: the release's major and minor numbers."""
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())


def open_session(model: Path | bytes, providers: Sequence[str], optimize: bool = False, *,
                 external_folder: str | None = None, label: str = "") -> Session:
    """Open ``model`` (a path, or a serialised model whose external data lies under
    ``external_folder``) in onnxruntime as written (no graph optimisations, no weight
    prepacking, no CPU memory arena: see the module docstring), or with every optimisation
    when ``optimize``.
    ``label`` names the model in errors (default: its path)."""
    ort = _import_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if optimize
        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.log_severity_level = ORT_QUIET
    if not optimize:
        options.add_session_config_entry("session.disable_prepacking", "1")
        options.enable_cpu_mem_arena = False
    if external_folder is not None:
        options.add_session_config_entry("session.model_external_initializers_file_folder_path", external_folder)
    what = label or str(model)
    if external_folder is not None and _version(ort.__version__) < EXTERNAL_FOLDER_SINCE:
        raise GrowError(f"{what}: opening a model from memory with its weights in data files needs onnxruntime "
                        f"{'.'.join(map(str, EXTERNAL_FOLDER_SINCE))} or later (this is {ort.__version__})")
    try:
        sess = ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                    providers=list(providers))
    except Exception as exc:
        raise GrowError(f"{what}: onnxruntime cannot load this model: {first_line(exc)}") from None
    used = list(sess.get_providers())
    for wanted in providers:
        if wanted not in used:
            raise GrowError(
                f"{wanted} was requested but onnxruntime fell back to {', '.join(used)} "
                f"for {what}"
            )
    return Session(sess, used)


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


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


@dataclass
class Runs:
    """One model's outputs for every sample, or why it stopped."""

    providers: list[str]
    outputs: list[dict[str, Any]]
    error: str = ""


class Steps:
    """``progress(done, total)`` over a check: every session opened (two models, or every
    segment of each) and every run in it."""

    def __init__(self, samples: int, progress: Callable[[int, int], None] | None, sessions: int = 2) -> None:
        self.done, self.total, self.progress = 0, sessions * (1 + samples), progress
        if progress is not None:
            progress(0, self.total)

    def __call__(self, count: int = 1) -> None:
        self.done += count
        if self.progress is not None:
            self.progress(self.done, self.total)


def run_model(path: Path, providers: Sequence[str], feeds_list: Sequence[Mapping[str, np.ndarray]],
              step: Callable[[], None]) -> Runs:
    """Open ``path`` in onnxruntime, run it on every sample, close it (its weights are freed
    before the next model loads)."""
    session = open_session(path, providers)
    step()
    return run_samples(session.run, session.providers, feeds_list, step)


def run_samples(run: Runner, providers: list[str], feeds_list: Sequence[Mapping[str, np.ndarray]],
                step: Callable[[], None]) -> Runs:
    """``run`` on every sample; the first exception ends the runs and is kept as their error,
    except a GrowError, which a runner raises to refuse the model (it propagates)."""
    outputs = []
    for feeds in feeds_list:
        try:
            outputs.append(run(feeds))
        except GrowError:
            raise
        except Exception as exc:  # onnxruntime and the frameworks raise their own kinds
            return Runs(providers, outputs, first_line(exc))
        step()
    return Runs(providers, outputs)
