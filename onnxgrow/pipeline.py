"""One growth pipeline: ``load → resolve names → plan → rewrite → verify → save`` (docs/design.md §9).

Every growth (widen, deepen, and those to come: heads, classes, vocabulary) is a
:class:`GrowthOp`:

- ``plan(model)`` reads the model and decides everything: names resolved, widths and
  modes checked, channel groups closed. It touches nothing, and refuses with a
  :class:`~onnxgrow.errors.GrowError` / :class:`~onnxgrow.errors.RefusedError` naming
  the blocking node, so a refused request leaves the model as it was.
- ``apply(model, plan)`` rewrites the model in place and returns a :class:`GrowthReport`.
- ``history(report)`` returns the lineage entries of what was done.

An operation checks its own arguments on construction, before any model is loaded.
:func:`grow` runs an operation on a model in memory; :func:`grow_file` is the one driver
every growth command goes through: it checks the output path before any work, loads,
plans, applies, records the lineage, saves to a temporary folder (sharded on request),
verifies the saved files against the source with onnxruntime (restricted to what the
operation preserves, its ``scope``), stores the measured errors in the lineage, and only
then renames the files into place. An exact growth that fails the check raises
NotEquivalentError and nothing is written.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import onnx
import onnx_ir as ir

from onnxgrow import collector
from onnxgrow.errors import NotEquivalentError
from onnxgrow.lineage import HISTORY_KEY, append_history, with_errors
from onnxgrow.model_io import (
    check_output_folder,
    ensure_output_is_not_input,
    files_of,
    load_model,
    save_model,
    written_files,
)
from onnxgrow.options import GrowOptions, Progress, VerifyScope
from onnxgrow.verification import VerifyReport, verify

PlanT = TypeVar("PlanT")
ReportT = TypeVar("ReportT", bound="GrowthReport")


class GrowthReport(Protocol):
    """What every growth reports: whether it is meant to be exact, what it preserves,
    its verdict (filled in by :func:`grow_file`) and the files written."""

    exact: bool
    scope: VerifyScope
    verification: VerifyReport | None
    written: list[Path]


class GrowthOp(Protocol[PlanT, ReportT]):
    """One growth operation: plan (reads only), apply (rewrites), history (lineage)."""

    #: Whether :func:`onnxgrow.model_io.load_model` should infer shapes for it.
    infer_shapes: bool

    def plan(self, model: ir.Model) -> PlanT: ...

    def apply(self, model: ir.Model, plan: PlanT) -> ReportT: ...

    def history(self, report: ReportT) -> list[dict[str, Any]]: ...


def grow(model: ir.Model | str | os.PathLike[str], op: GrowthOp[Any, ReportT]) -> tuple[ir.Model, ReportT]:
    """Run ``op`` on ``model`` (a path, or an ``ir.Model`` modified in place) and record its
    lineage; on a refusal the model is unchanged."""
    if not isinstance(model, ir.Model):
        model = load_model(model, infer_shapes=op.infer_shapes)
    report = op.apply(model, op.plan(model))
    for entry in op.history(report):
        append_history(model, entry)
    return model, report


def default_output(source: Path) -> Path:
    """``model.onnx`` → ``model.grown.onnx`` beside it."""
    return source.with_name(f"{source.stem}.grown.onnx")


def grow_file(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str] | None,
    op: GrowthOp[Any, ReportT],
    options: GrowOptions | None = None,
) -> ReportT:
    """Grow the model file ``source`` with ``op`` and write it to ``output`` (default:
    :func:`default_output`), checked by onnxruntime; see the module docstring."""
    options = options or GrowOptions()
    src = Path(source)
    out = Path(output) if output is not None else default_output(src)
    check_output_folder(out, ".onnx")
    if options.progress is not None:
        options.progress("loading", 0, 0)
    with collector.spared_after(lambda: load_model(src, infer_shapes=op.infer_shapes)) as model:
        ensure_output_is_not_input(out, files_of(src, model))
        if options.progress is not None:
            options.progress("planning", 0, 0)
        model, report = grow(model, op)
        entries = len(op.history(report))
        report.verification = _save_checked(model, src, out, report, entries, options)
    report.written = written_files(out)
    return report


def _save_checked(model: ir.Model, source: Path, output: Path, report: GrowthReport, entries: int,
                  options: GrowOptions) -> VerifyReport | None:
    """Save ``model`` to ``output`` once onnxruntime has checked the saved files against ``source``."""
    result: list[VerifyReport] = []

    def check(tmp_model: Path) -> None:
        if options.verify is None:
            return
        verdict = verify(source, tmp_model, options.verify, scope=report.scope, expected_exact=report.exact,
                         progress=_stage(options.progress, "verifying"))
        result.append(verdict)
        if report.exact and not verdict.passed:
            raise NotEquivalentError(
                "the grown model is not equivalent to the original; nothing written. " + verdict.summary(), verdict)
        _record_errors(tmp_model, entries, verdict)

    save_model(model, output, max_shard_bytes=options.max_shard_bytes, check=check,
               progress=_stage(options.progress, "saving"))
    return result[0] if result else None


def _stage(progress: Progress | None, stage: str) -> Callable[[int, int], None] | None:
    """``progress`` bound to one stage."""
    if progress is None:
        return None
    return lambda done, total: progress(stage, done, total)


def _record_errors(path: Path, count: int, report: VerifyReport) -> None:
    """Store the measured errors in the last ``count`` lineage entries of the written
    (temporary) file. Only the small .onnx file is rewritten; external data is not touched."""
    proto = onnx.load(os.fspath(path), load_external_data=False)
    for prop in proto.metadata_props:
        if prop.key == HISTORY_KEY:
            provider = report.providers[0] if report.providers else None
            prop.value = with_errors(prop.value, count, report.max_abs_error, report.max_rel_error, provider)
            onnx.save(proto, os.fspath(path))
            return
