"""Writing a grown model: verify on the written files, then rename into place.

Shared by ``widen`` and ``deepen``. The grown model is saved to a temporary folder
beside the output; onnxruntime compares it with the source model there; an exact
growth that fails the check raises NotEquivalentError and nothing is written. The
measured errors are recorded in the lineage of the written file.

Long steps report to an optional :data:`Progress` callback: ``progress("saving", done,
total)`` in bytes of weights written, then ``progress("verifying", done, total)`` in
model loads and runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from onnxgrow.errors import NotEquivalentError
from onnxgrow.lineage import HISTORY_KEY, with_errors
from onnxgrow.model_io import ensure_output_is_not_input, files_of, save_model
from onnxgrow.verification import VerifyReport, verify


#: ``progress(stage, done, total)``, stage ``"saving"`` (bytes) or ``"verifying"`` (steps).
Progress = Callable[[str, int, int], None]


@dataclass
class VerifyOptions:
    """How to check a grown model against its source (see ``onnxgrow verify``)."""

    enabled: bool = True
    atol: float | None = None
    rtol: float | None = None
    samples: int = 1
    seed: int = 0
    providers: Sequence[str] = ("cpu",)
    input_shapes: Mapping[str, Sequence[int]] | None = None
    inputs: Sequence[Mapping[str, np.ndarray]] | None = None


def default_output(source: Path) -> Path:
    """``model.onnx`` → ``model.grown.onnx`` beside it."""
    return source.with_name(f"{source.stem}.grown.onnx")


def check_output_path(source: Path, output: Path, model: ir.Model) -> None:
    """Refuse to write over the source model or its external data."""
    ensure_output_is_not_input(output, files_of(source, model))


def write_grown(
    model: ir.Model,
    source: Path,
    output: Path,
    *,
    expected_exact: bool,
    history_entries: int,
    options: VerifyOptions,
    max_shard_bytes: int | None = None,
    progress: Progress | None = None,
) -> VerifyReport | None:
    """Save ``model`` to ``output`` after onnxruntime checked it against ``source``.

    ``max_shard_bytes`` splits the weights over data files of at most that size.
    """
    result: list[VerifyReport] = []

    def check(tmp_model: Path) -> None:
        if not options.enabled:
            return
        report = verify(
            source, tmp_model, inputs=options.inputs, input_shapes=options.input_shapes,
            samples=options.samples, seed=options.seed, atol=options.atol, rtol=options.rtol,
            providers=options.providers, expected_exact=expected_exact,
            progress=_stage(progress, "verifying"),
        )
        result.append(report)
        if expected_exact and not report.passed:
            raise NotEquivalentError(
                "the grown model is not equivalent to the original; nothing written. "
                + report.summary(), report)
        _record_errors(tmp_model, history_entries, report)

    save_model(model, output, max_shard_bytes=max_shard_bytes, check=check,
               progress=_stage(progress, "saving"))
    return result[0] if result else None


def _stage(progress: Progress | None, stage: str) -> Callable[[int, int], None] | None:
    """``progress`` bound to one stage."""
    if progress is None:
        return None
    return lambda done, total: progress(stage, done, total)


def _record_errors(path: Path, count: int, report: VerifyReport) -> None:
    """Store the measured errors in the lineage of the written (temporary) file.

    Only the small .onnx file is rewritten; external data is not touched.
    """
    proto = onnx.load(os.fspath(path), load_external_data=False)
    for prop in proto.metadata_props:
        if prop.key == HISTORY_KEY:
            provider = report.providers[0] if report.providers else None
            prop.value = with_errors(prop.value, count, report.max_abs_error, report.max_rel_error, provider)
            onnx.save(proto, os.fspath(path))
            return
