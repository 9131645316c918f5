"""Equivalence of two models, judged by onnxruntime (docs/design.md §6): the one checker.

:func:`verify` runs the reference in onnxruntime and the candidate in onnxruntime or, for
an export, through the framework model's own runner, on the same inputs
(:mod:`~onnxgrow.verification.inputs`), and compares every output by name
(:mod:`~onnxgrow.verification.compare`); the verdict is a
:class:`~onnxgrow.verification.report.VerifyReport` naming the provider that really ran
(:mod:`~onnxgrow.verification.runtime`). bfloat16 models run as float32 twins
(:mod:`onnxgrow.bfloat16`), and the verdict says so.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import onnx_ir as ir

from onnxgrow.bfloat16 import float32_feeds, has_bfloat16
from onnxgrow.errors import GrowError
from onnxgrow.lineage import read_history
from onnxgrow.model_io import load_model
from onnxgrow.options import VerifyOptions, VerifyScope
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
from onnxgrow.verification.inputs import input_specs, load_inputs, random_inputs, sample_feeds
from onnxgrow.verification.report import OutputComparison, VerifyReport
from onnxgrow.verification.runtime import (
    Runner,
    Runs,
    Steps,
    model_on_disk,
    resolve_providers,
    run_model,
    run_samples,
    runnable,
)

__all__ = [
    "DEFAULT_TOLERANCES",
    "OutputComparison",
    "Runner",
    "VerifyOptions",
    "VerifyReport",
    "VerifyScope",
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
    inputs that do not fit the reference, a reference that fails on them); a candidate
    that is not comparable, fails to run or computes something else gives a report with
    ``passed=False`` and the reason. ``progress(done, total)`` counts the two model loads
    and every run.
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
    feeds_list = sample_feeds(ref_model, options, scope.input_high)

    def report(passed: bool, reason: str, outputs: list[OutputComparison] | None = None,
               ran: list[str] | None = None, extra: dict[str, object] | None = None) -> VerifyReport:
        info: dict[str, dict[str, object]] = {
            name: {"shape": list(arr.shape), "dtype": str(arr.dtype)} for name, arr in feeds_list[0].items()}
        details = dict(extra or {})
        if scope.preserved:
            details["preserved"] = scope.preserved
        if candidate_label:
            details["candidate"] = candidate_label
        return VerifyReport(passed, outputs or [], ran or [], info, len(feeds_list), options.seed, reason,
                            expected_exact, extra=details,
                            input_source="random" if options.inputs is None else "given")

    if cand_model is not None:
        mismatch = signature_mismatch(ref_model, cand_model, scope.outputs)
        if mismatch:
            return report(False, mismatch)
    twins = has_bfloat16(ref_model) or (cand_model is not None and has_bfloat16(cand_model))
    extra: dict[str, object] = {"computed_as": "float32 twins of bfloat16 models"} if twins else {}
    run_feeds = [float32_feeds(f) for f in feeds_list] if twins else feeds_list
    steps = Steps(len(feeds_list), progress)
    with runnable(reference, twins) as ref_path:
        ref_runs = run_model(ref_path, providers, run_feeds, steps)
    if ref_runs.error:
        raise GrowError(f"the reference model fails on these inputs: {ref_runs.error}")
    cand_runs = _run_candidate(candidate, candidate_runner, twins, providers, run_feeds, feeds_list, steps)
    if cand_runs.error:
        return report(False, f"the candidate fails to run: {cand_runs.error}", ran=ref_runs.providers)
    dtypes = {name_of(v): v.dtype or ir.DataType.FLOAT for v in ref_model.graph.outputs}
    merged: dict[str, OutputComparison] = {}
    for ref_out, cand_out in zip(ref_runs.outputs, cand_runs.outputs):
        for comp in compare_outputs(ref_out, restrict(cand_out, scope.outputs, scope.renormalise), options.atol,
                                    options.rtol, dtypes):
            merged[comp.name] = worse(merged.get(comp.name), comp)
    outputs = list(merged.values())
    passed = all(o.passed for o in outputs)
    warnings = "; ".join(f"output {o.name!r}: {o.reason}" for o in outputs if o.passed and o.reason)
    return report(passed, warnings if passed else "outputs differ beyond tolerance", outputs, ref_runs.providers,
                  extra)


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
