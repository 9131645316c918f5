"""One growth pipeline: ``load → resolve names → plan → rewrite → verify → save`` (docs/design.md §9).

Every growth (widen, new output classes, vocabulary, heads, deepen) is a
:class:`GrowthOp`, registered with :func:`onnxgrow.growths.growth`:

- ``plan(model)`` reads the model and decides everything: names resolved, widths and
  modes checked, channel groups closed. It touches nothing (shapes included: the driver
  infers them before), and refuses with a :class:`~onnxgrow.errors.GrowError` /
  :class:`~onnxgrow.errors.RefusedError` naming the blocking node, so a refused request
  leaves the model as it was. With ``ONNXGROW_CHECK_PLAN=1`` (the tests set it) the driver
  fingerprints the model around ``plan`` and fails loudly when it changed.
- ``apply(model, plan)`` rewrites the model in place and returns the growth's own report,
  a :class:`GrowthReport` that says in words what it did (``lines``).
- ``history(report)`` returns the lineage entries of what was done, and the static
  ``describe(entry)`` says in words what one of them means (``inspect``, ``diff``).

An operation checks its own arguments on construction, before any model is loaded.
:func:`grow` runs an operation on a model in memory; :func:`grow_file` is the one driver
every growth command goes through: it checks every output path before any work, loads,
plans, applies, records the lineage, saves to a temporary folder (sharded on request),
verifies the saved files against the source with onnxruntime (restricted to what the
operation preserves, its ``scope``), stores the measured errors in the lineage, and only
then renames the files into place, the growth map with them when one is asked for. An
exact growth that fails the check raises NotEquivalentError and nothing is written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import onnx
import onnx_ir as ir

from onnxgrow import collector
from onnxgrow.errors import GrowError, NotEquivalentError
from onnxgrow.fingerprint import model_fingerprint
from onnxgrow.growth_map import GrowthMap
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
from onnxgrow.resources import check_disk
from onnxgrow.shapes import shapes_inferred
from onnxgrow.verification import VerifyReport, verify
from onnxgrow.verification.memory import model_weight_bytes

PlanT = TypeVar("PlanT")
ReportT = TypeVar("ReportT", bound="GrowthReport")

#: Set to 1 to check, around every ``plan``, that it left the model as it was.
CHECK_PLAN_ENV = "ONNXGROW_CHECK_PLAN"


class GrowthReport(Protocol):
    """What every growth reports: whether it is meant to be exact, what it preserves, what
    it did in words, where its grown weights come from, its verdict (filled in by
    :func:`grow_file`) and the files written."""

    exact: bool
    scope: VerifyScope
    verification: VerifyReport | None
    written: list[Path]
    notes: list[str]

    def lines(self) -> list[str]: ...

    @property
    def growth_map(self) -> GrowthMap: ...


@dataclass(kw_only=True)
class Report:
    """The fields every growth's report shares (a :class:`GrowthReport` once ``lines`` is
    defined). ``map_builder`` makes the growth map on first use from the grown model, which
    the report holds until then: naming the weights reads them all, which a growth that
    never asks for its map (a large model grown to a file) should not pay for."""

    exact: bool = True
    scope: VerifyScope = field(default_factory=VerifyScope)
    verification: VerifyReport | None = None
    written: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    map_builder: Callable[[], GrowthMap] | None = field(default=None, repr=False)
    _growth_map: GrowthMap | None = field(default=None, init=False, repr=False)

    @property
    def growth_map(self) -> GrowthMap:
        """Where every grown weight's positions come from (see :mod:`onnxgrow.growth_map`)."""
        if self._growth_map is None:
            self._growth_map = self.map_builder() if self.map_builder is not None else GrowthMap()
            self.map_builder = None
        return self._growth_map


class GrowthOp(Protocol[PlanT, ReportT]):
    """One growth operation: plan (reads only), apply (rewrites), history (lineage), and what
    a lineage entry of it means (``describe``)."""

    #: Whether :func:`onnxgrow.model_io.load_model` should infer shapes on the parsed file.
    infer_shapes: bool

    def plan(self, model: ir.Model) -> PlanT: ...

    def apply(self, model: ir.Model, plan: PlanT) -> ReportT: ...

    def history(self, report: ReportT) -> list[dict[str, Any]]: ...

    @staticmethod
    def describe(entry: Mapping[str, Any]) -> str: ...


class PlanContractError(AssertionError):
    """A growth's ``plan`` changed the model it should only read: a bug in the growth."""


def grow(model: ir.Model | str | os.PathLike[str], op: GrowthOp[Any, ReportT]) -> tuple[ir.Model, ReportT]:
    """Run ``op`` on ``model`` (a path, or an ``ir.Model`` modified in place) and record its
    lineage; on a refusal the model is unchanged."""
    if not isinstance(model, ir.Model):
        model = load_model(model, infer_shapes=op.infer_shapes)
    with shapes_inferred(model):
        plan = checked_plan(model, op)
    report = op.apply(model, plan)
    for entry in op.history(report):
        append_history(model, entry)
    return model, report


def checked_plan(model: ir.Model, op: GrowthOp[PlanT, Any]) -> PlanT:
    """``op.plan(model)``; with :data:`CHECK_PLAN_ENV` set, fails loudly (PlanContractError)
    when the plan changed the model, even when it then refused."""
    if os.environ.get(CHECK_PLAN_ENV) != "1":
        return op.plan(model)
    before = model_fingerprint(model)
    try:
        return op.plan(model)
    finally:
        if model_fingerprint(model) != before:
            raise PlanContractError(f"{type(op).__name__}.plan changed the model it should only read")


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
    :func:`default_output`), checked by onnxruntime, and the growth map to
    ``options.map_out`` when given; see the module docstring."""
    options = options or GrowOptions()
    src = Path(source)
    out = Path(output) if output is not None else default_output(src)
    check_output_folder(out, ".onnx")
    if options.map_out is not None:
        _check_map_path(Path(options.map_out), src, out)
    if options.progress is not None:
        options.progress("loading", 0, 0)
    with collector.spared_after(lambda: load_model(src, infer_shapes=op.infer_shapes,
                                                   weights_as_constants=options.weights_as_constants)) as model:
        ensure_output_is_not_input(out, files_of(src, model))
        _check_room(out, model)
        if options.progress is not None:
            options.progress("planning", 0, 0)
        model, report = grow(model, op)
        _check_room(out, model)  # the grown weights, before any byte of them is written
        entries = len(op.history(report))
        companions = {} if options.map_out is None else {Path(options.map_out): _map_writer(report)}
        report.verification = _save_checked(model, src, out, report, entries, options, companions)
    report.written = written_files(out)
    return report


def _check_room(out: Path, model: ir.Model) -> None:
    """The output's file system has room for the model's declared weights (the saved model
    holds every one of them: a sparse input file's holes are written out)."""
    check_disk(out, model_weight_bytes(model), "the model with its weights")


def _check_map_path(path: Path, source: Path, output: Path) -> None:
    """The growth map is a .json file in an existing folder, not one of the model's own files."""
    if str(path) == "-":
        raise GrowError("--map-out -: the growth map is written to a file; give a .json file name")
    check_output_folder(path, ".json")
    if path.resolve() in (source.resolve(), output.resolve()):
        raise GrowError(f"--map-out {path}: that is the model itself; give a .json file name")


def _map_writer(report: GrowthReport) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_text(json.dumps(report.growth_map.to_json()), encoding="utf-8")

    return write


def _save_checked(model: ir.Model, source: Path, output: Path, report: GrowthReport, entries: int,
                  options: GrowOptions, companions: Mapping[Path, Callable[[Path], None]]) -> VerifyReport | None:
    """Save ``model`` to ``output``, with the ``companions`` files, once onnxruntime has
    checked the saved files against ``source``."""
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
               progress=_stage(options.progress, "saving"), companions=companions)
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
