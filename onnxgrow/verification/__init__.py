"""Equivalence of two models, judged by onnxruntime (docs/design.md §6): the one checker.

:func:`verify` runs the reference in onnxruntime and the candidate in onnxruntime or, for
an export, through the framework model's own runner, on the same inputs
(:mod:`~onnxgrow.verification.inputs`), and compares every output by name
(:mod:`~onnxgrow.verification.compare`); the verdict is a
:class:`~onnxgrow.verification.report.VerifyReport` naming the provider that really ran
(:mod:`~onnxgrow.verification.runtime`). bfloat16 models run as float32 twins
(:mod:`onnxgrow.bfloat16`), and the verdict says so.

The models run whole when the larger one's onnxruntime session fits the memory the check
may use (``--max-memory``, :mod:`~onnxgrow.verification.memory`), else segment by segment
(:mod:`~onnxgrow.verification.segmented`): the same outputs, compared the same way, plus
the values at every cut between segments; the verdict says which mode ran.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx_ir as ir

from onnxgrow import collector
from onnxgrow.bfloat16 import float32_feeds, has_bfloat16
from onnxgrow.errors import GrowError
from onnxgrow.lineage import read_history
from onnxgrow.model_io import load_model
from onnxgrow.options import VerifyOptions, VerifyScope
from onnxgrow.resources import check_memory, size_text
from onnxgrow.verification.branches import branch_runs, has_if
from onnxgrow.verification.compare import (
    DEFAULT_TOLERANCES,
    compare_outputs,
    format_dims,
    name_of,
    restrict,
    shape_dims,
    signature_mismatch,
    worse,
)
from onnxgrow.verification.inputs import input_specs, load_inputs, random_inputs, sample_bytes, sample_feeds
from onnxgrow.verification.memory import (
    CEILING_IS,
    ORT_MEMORY_FACTOR,
    fits_whole,
    largest_node_bytes,
    memory_ceiling,
    memory_limit,
    model_weight_bytes,
    segment_budget,
)
from onnxgrow.verification.report import CutComparison, OutputComparison, VerifyReport
from onnxgrow.verification.runtime import (
    Runner,
    Runs,
    Steps,
    first_line,
    model_on_disk,
    resolve_providers,
    run_model,
    run_samples,
    runnable,
)
from onnxgrow.verification.segment_models import SegmentError
from onnxgrow.verification.segmented import SegmentedRuns, loaded, plan_for, run_segmented
from onnxgrow.verification.segments import SEGMENTED_FROM_NODES

__all__ = [
    "DEFAULT_TOLERANCES",
    "CutComparison",
    "OutputComparison",
    "Runner",
    "VerifyOptions",
    "VerifyReport",
    "VerifyScope",
    "first_line",
    "format_dims",
    "input_specs",
    "load_inputs",
    "model_on_disk",
    "name_of",
    "random_inputs",
    "shape_dims",
    "verify",
]

ModelLike = ir.Model | str | os.PathLike[str]


def verify(
    reference: ModelLike,
    candidate: ModelLike | None,
    options: VerifyOptions | None = None,
    *,
    scope: VerifyScope | None = None,
    candidate_runner: Runner | None = None,
    candidate_label: str = "",
    expected_exact: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> VerifyReport:
    """Run both models on the same inputs and compare every output by name.

    The candidate is an ONNX model (a path or an ``ir.Model``) or, with
    ``candidate_runner``, any callable from feeds to outputs by name (an exported PyTorch
    or Keras model; ``candidate`` is then ``None`` and ``candidate_label`` names it).
    ``scope`` narrows what is compared (:class:`~onnxgrow.options.VerifyScope`); by
    default, the scope the candidate's lineage records for the growths the reference's
    history lacks (a classifier grown by new classes is judged on its old classes).

    Raises GrowError for input errors (missing onnxruntime or provider, unloadable model,
    inputs that do not fit the reference, a reference that fails on them), and the
    GrowError of a ``candidate_runner`` that refuses the model (an export whose framework
    cannot run one of its nodes: no verdict to give); a candidate that is not comparable,
    fails to run or computes something else gives a report with ``passed=False`` and the
    reason. ``progress(done, total)`` counts the sessions opened (two, or one per segment
    of each model) and every run.

    The check runs whole or segment by segment as ``options.max_memory`` allows (module
    docstring); a framework ``candidate_runner`` always runs whole, beside a reference run
    in segments when it does not fit. A many-node model that fits is run in segments to
    save time, and whole after all when a segment cannot be opened or run
    (:class:`~onnxgrow.verification.segment_models.SegmentError`); one that does not fit
    raises that error.
    """
    options = options or VerifyOptions()
    if (candidate is None) == (candidate_runner is None):
        raise TypeError("verify() takes a candidate model or a candidate_runner, not both or neither")
    ref_model = reference if isinstance(reference, ir.Model) else load_model(reference)
    cand_model = None
    if candidate is not None:
        cand_model = candidate if isinstance(candidate, ir.Model) else load_model(candidate)
    if scope is None:
        scope = lineage_scope(ref_model, cand_model) if cand_model is not None else VerifyScope()
    providers = resolve_providers(options.providers)
    limit = memory_limit(options)
    needed = max(model_weight_bytes(ref_model), model_weight_bytes(cand_model) if cand_model is not None else 0)
    fits = fits_whole(needed, limit)
    _check_memory(ref_model, cand_model, options, scope, fits or candidate_runner is not None)
    feeds_list, drawn = sample_feeds(ref_model, options, scope.input_high)
    branches = branch_runs(ref_model, cand_model, feeds_list, providers) if has_if(ref_model) else []
    nodes = max(len(ref_model.graph), len(cand_model.graph) if cand_model is not None else 0)
    whole = fits and nodes < SEGMENTED_FROM_NODES

    def report(passed: bool, reason: str, outputs: list[OutputComparison] | None = None,
               ran: list[str] | None = None, extra: dict[str, object] | None = None,
               segmented: SegmentedRuns | None = None) -> VerifyReport:
        info: dict[str, dict[str, object]] = {
            name: {"shape": list(arr.shape), "dtype": str(arr.dtype)} for name, arr in feeds_list[0].items()}
        details = dict(extra or {})
        if scope.preserved:
            details["preserved"] = scope.preserved
        if candidate_label:
            details["candidate"] = candidate_label
        verdict = VerifyReport(passed, outputs or [], ran or [], info, len(feeds_list), options.seed, reason,
                               expected_exact, extra=details,
                               input_source="random" if options.inputs is None else "given",
                               max_memory=options.max_memory, drawn=drawn, branches=branches)
        if segmented is not None:
            verdict.mode, verdict.segments = "segmented", segmented.segments
            verdict.cuts, verdict.reused_segments = segmented.cuts, segmented.reused
            verdict.segment_bytes = segmented.segment_bytes
        return verdict

    if cand_model is not None:
        mismatch = signature_mismatch(ref_model, cand_model, scope.outputs)
        if mismatch:
            return report(False, mismatch)
    twins = has_bfloat16(ref_model) or (cand_model is not None and has_bfloat16(cand_model))
    extra: dict[str, object] = {"computed_as": "float32 twins of bfloat16 models"} if twins else {}
    run_feeds = [float32_feeds(f) for f in feeds_list] if twins else feeds_list
    segmented = None
    if not whole:
        budget = None if fits or limit is None else segment_budget(limit)
        try:
            segmented = _run_in_segments(reference, ref_model, candidate, cand_model, candidate_runner, budget,
                                         twins, providers, run_feeds, feeds_list, options, progress)
        except SegmentError:
            if not fits:
                raise
            segmented = None  # segments were only to save time: the whole models settle it
    if segmented is not None:
        ref_runs, cand_runs = segmented.reference, segmented.candidate
    else:
        steps = Steps(len(feeds_list), progress)
        with runnable(reference, twins) as ref_path:
            ref_runs = run_model(ref_path, providers, run_feeds, steps)
        if ref_runs.error:
            raise GrowError(f"the reference model fails on these inputs: {ref_runs.error}"
                            + _drawn_hint(drawn if options.inputs is None else None))
        cand_runs = _run_candidate(candidate, candidate_runner, twins, providers, run_feeds, feeds_list, steps)
    if cand_runs.error:
        return report(False, f"the candidate fails to run: {cand_runs.error}", ran=ref_runs.providers,
                      segmented=segmented)
    dtypes = {name_of(v): v.dtype or ir.DataType.FLOAT for v in ref_model.graph.outputs}
    merged: dict[str, OutputComparison] = {}
    for ref_out, cand_out in zip(ref_runs.outputs, cand_runs.outputs):
        for comp in compare_outputs(ref_out, restrict(cand_out, scope.outputs, scope.renormalise), options.atol,
                                    options.rtol, dtypes):
            merged[comp.name] = worse(merged.get(comp.name), comp)
    outputs = list(merged.values())
    passed = all(o.passed for o in outputs)
    warnings = "; ".join([*(f"output {o.name!r}: {o.reason}" for o in outputs if o.passed and o.reason),
                          *(b.warning() for b in branches if b.warning())])
    return report(passed, warnings if passed else "outputs differ beyond tolerance", outputs, ref_runs.providers,
                  extra, segmented)


def _check_memory(ref_model: ir.Model, cand_model: ir.Model | None, options: VerifyOptions, scope: VerifyScope,
                  whole: bool) -> None:
    """Before any input is drawn or session opened, against :func:`memory_ceiling`: the
    samples (their inputs, and the outputs of static shape, kept for every sample), and for a
    check run in segments (not ``whole``: whole, it fits, or a framework model is compared)
    the session of each model's heaviest node, which no cut splits (docs/design.md §6)."""
    ceiling = memory_ceiling(options)
    per_sample = sample_bytes(ref_model, options, scope.input_high)
    check_memory(per_sample * options.samples if options.inputs is None else per_sample,
                 f"checking {options.samples} sample(s) of {size_text(per_sample)} of inputs and outputs each",
                 ceiling, CEILING_IS)
    if whole:
        return
    for model in (ref_model, cand_model):
        if model is not None:
            held, node = largest_node_bytes(model)
            check_memory(int(held * ORT_MEMORY_FACTOR), f"checking node {node!r}, which reads {size_text(held)} of "
                                                        "weights (no segment of a check can split a node)",
                         ceiling, CEILING_IS)


def _run_in_segments(reference: ModelLike, ref_model: ir.Model, candidate: ModelLike | None,
                     cand_model: ir.Model | None, runner: Runner | None, budget: int | None, twins: bool,
                     providers: list[str], run_feeds: Sequence[Mapping[str, np.ndarray]],
                     feeds_list: Sequence[Mapping[str, np.ndarray]], options: VerifyOptions,
                     progress: Callable[[int, int], None] | None) -> SegmentedRuns:
    """Both models run segment by segment, each segment within ``budget`` weight bytes (None:
    any) and :data:`~onnxgrow.verification.segments.SEGMENT_NODES` nodes. The cyclic garbage
    collector is paused meanwhile: planning makes many short-lived objects, each full
    collection would rescan both loaded graphs, and nothing made here is cyclic garbage but
    the float32 twins of bfloat16 segments, which are collected one by one."""
    dims = _dim_sizes(ref_model, feeds_list[0])
    with collector.paused(), loaded(_as_model_or_path(reference), ref_model) as ref_loaded, \
            contextlib.ExitStack() as stack:
        cand_loaded = None
        if candidate is not None and cand_model is not None:
            cand_loaded = stack.enter_context(loaded(_as_model_or_path(candidate), cand_model))
        ref_layout, cand_layout, plan = plan_for(ref_loaded, cand_loaded, budget, dims)
        sessions = plan.count + (plan.count if cand_layout is not None else 1)
        steps = Steps(len(feeds_list), progress, sessions)
        return run_segmented(ref_layout, cand_layout, plan, providers, run_feeds, twins, steps,
                             (options.atol, options.rtol),
                             (runner, feeds_list) if runner is not None else None)


def _as_model_or_path(model: ModelLike) -> ir.Model | str:
    return model if isinstance(model, ir.Model) else os.fspath(model)


def _dim_sizes(model: ir.Model, feeds: Mapping[str, np.ndarray]) -> dict[str, int]:
    """The size each named dynamic dimension of the model's inputs has in ``feeds``."""
    sizes: dict[str, int] = {}
    for value in model.graph.inputs:
        array = feeds.get(value.name or "")
        if array is None or value.shape is None or len(value.shape) != array.ndim:
            continue
        for dim, size in zip(value.shape.dims, array.shape):
            if isinstance(dim, ir.SymbolicDim) and dim.value:
                sizes[dim.value] = int(size)
    return sizes


def _drawn_hint(drawn: list[str] | None) -> str:
    """What a reference that failed on random inputs was given, and what the user can give
    instead ('' for the user's own inputs)."""
    if drawn is None:
        return ""
    what = f"drawn by role: {', '.join(drawn)}" if drawn else "no input has a role"
    return f" (random inputs, {what}; give a real sample with --inputs, or sizes with --input-shapes)"


def lineage_scope(reference: ir.Model, candidate: ir.Model) -> VerifyScope:
    """The scope the candidate's lineage records for the growths past the reference's history."""
    before, after = read_history(reference), read_history(candidate)
    return VerifyScope.from_history(after[len(before):] if after[:len(before)] == before else after)


def _run_candidate(candidate: ModelLike | None, runner: Runner | None, twins: bool, providers: list[str],
                   run_feeds: Sequence[Mapping[str, np.ndarray]], feeds_list: Sequence[Mapping[str, np.ndarray]],
                   steps: Steps) -> Runs:
    """The candidate's outputs: an ONNX model in onnxruntime (as the reference ran, twinned
    alike), or the runner on the original feeds (a framework model takes the model's own dtypes)."""
    if runner is not None:
        steps()  # the framework model is loaded already
        return run_samples(runner, [], feeds_list, steps)
    assert candidate is not None
    with runnable(candidate, twins) as cand_path:
        return run_model(cand_path, providers, run_feeds, steps)
