"""Running two models segment by segment in bounded memory (docs/design.md §6).

Both models are cut at the same values (:mod:`~onnxgrow.verification.segments`). For each
segment in turn, the reference's part opens in onnxruntime holding only its own weights
(:mod:`~onnxgrow.verification.segment_models`), runs on every sample and closes; then the
candidate's part does the same, unless it is the reference's part (same nodes, same
weights) fed bit-identical inputs (:mod:`~onnxgrow.verification.unchanged`): then the
candidate takes the reference's outputs. What crosses the cut after the segment is all
that is kept of either model's activations; the floating-point values of the same name,
shape and dtype in both are compared as outputs are. The graph outputs are collected where they are made.

Memory: at any time one segment's session, the values crossing one cut for both models
and every sample, and the outputs made so far.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxgrow.model_io import load_model
from onnxgrow.verification.compare import compare_outputs, worse
from onnxgrow.verification.report import CutComparison, OutputComparison
from onnxgrow.verification.runtime import Runner, Runs, Steps, model_on_disk, run_samples
from onnxgrow.verification.segment_models import SegmentError, SegmentSource, type_of
from onnxgrow.verification.segments import (
    SEGMENT_NODES,
    Layout,
    Segment,
    SegmentPlan,
    layout,
    plan_segments,
    segment_weight_bytes,
)
from onnxgrow.verification.unchanged import same_arrays, same_computation

Values = dict[str, Any]


@dataclass
class SegmentedRuns:
    """Both models' outputs for every sample, the cuts compared, and the plan that ran
    (``segment_bytes``: each segment's weight bytes, the larger model's)."""

    reference: Runs
    candidate: Runs
    cuts: list[CutComparison]
    segments: int
    reused: int
    segment_bytes: list[int]


@contextlib.contextmanager
def loaded(model: ir.Model | str, loaded_model: ir.Model) -> Iterator[ir.Model]:
    """``loaded_model`` when it was read from a file (its weights stay there), else the
    in-memory ``model`` saved to a temporary folder and read back, so that every large
    weight is external data a segment can point at."""
    if not isinstance(model, ir.Model):
        yield loaded_model
        return
    with model_on_disk(model) as path:
        yield load_model(path)


def plan_for(reference: ir.Model, candidate: ir.Model | None, budget: int | None,
             dims: Mapping[str, int]) -> tuple[Layout, Layout | None, SegmentPlan]:
    """The layouts of both models and their segments under ``budget`` weight bytes (None: any)
    and :data:`~onnxgrow.verification.segments.SEGMENT_NODES` nodes each."""
    ref_layout = layout(reference, dims=dims)
    cand_layout = layout(candidate, dims=dims) if candidate is not None else None
    return ref_layout, cand_layout, plan_segments(ref_layout, cand_layout, budget, SEGMENT_NODES)


def run_segmented(
    ref_layout: Layout,
    cand_layout: Layout | None,
    plan: SegmentPlan,
    providers: list[str],
    feeds_list: Sequence[Mapping[str, np.ndarray]],
    twins: bool,
    steps: Steps,
    tolerances: tuple[float | None, float | None],
    candidate_runner: tuple[Runner, Sequence[Mapping[str, np.ndarray]]] | None = None,
) -> SegmentedRuns:
    """Run the reference (and the candidate model, or ``candidate_runner`` on its own feeds,
    whole) segment by segment as the module docstring says. A segment that cannot be opened
    or fed, and a reference that fails, are a SegmentError; a candidate that fails gives
    its Runs an error."""
    ref = SegmentSource(ref_layout, "the reference")
    cand = SegmentSource(cand_layout, "the candidate") if cand_layout is not None else None
    samples = len(feeds_list)
    ref_state: list[Values] = [{} for _ in range(samples)]
    cand_state: list[Values] = [{} for _ in range(samples)]
    ref_out: list[Values] = [{} for _ in range(samples)]
    cand_out: list[Values] = [{} for _ in range(samples)]
    cuts: list[CutComparison] = []
    ref_providers: list[str] = []
    cand_error, reused = "", 0
    for k, ref_segment in enumerate(plan.reference):
        runs = _run_part(ref, k, plan.count, ref_segment, ref_state, feeds_list, providers, twins, steps)
        if runs.error:
            raise SegmentError(f"the reference model fails on these inputs: {runs.error} "
                               f"(in segment {k + 1} of {plan.count})")
        ref_providers = runs.providers
        _take(ref_layout, runs.outputs, ref_state, ref_out)
        if cand_error:
            steps(1 + samples)  # the candidate's remaining segments are not run
        elif cand is not None and cand_layout is not None and plan.candidate is not None:
            cand_segment = plan.candidate[k]
            if _reusable(ref_layout, ref_segment, cand_layout, cand_segment, runs.fed or [], cand_state, feeds_list):
                reused += 1
                steps(1 + samples)
                cand_runs = Runs(runs.providers, [dict(o) for o in runs.outputs])
            else:
                cand_runs = _run_part(cand, k, plan.count, cand_segment, cand_state, feeds_list, providers, twins,
                                      steps)
            if cand_runs.error:
                cand_error = f"{cand_runs.error} (in segment {k + 1} of {plan.count})"
            else:
                _take(cand_layout, cand_runs.outputs, cand_state, cand_out)
        keep = set(plan.cuts[k]) if k < len(plan.cuts) else set()
        for state in (*ref_state, *cand_state):
            for name in [n for n in state if n not in keep]:
                del state[name]
        if k < len(plan.cuts) and cand is not None and not cand_error:
            cuts.append(_compare_cut(k + 1, plan.after[k], plan.cuts[k], ref_state, cand_state, tolerances))
    _pass_through(ref_layout, feeds_list, ref_out)
    reference = Runs(ref_providers, _in_output_order(ref_layout, ref_out))
    if candidate_runner is not None:
        runner, runner_feeds = candidate_runner
        steps()  # the framework model is loaded already
        candidate = run_samples(runner, [], runner_feeds, steps)
    elif cand_layout is not None and not cand_error:
        _pass_through(cand_layout, feeds_list, cand_out)
        candidate = Runs(ref_providers, _in_output_order(cand_layout, cand_out))
    else:
        candidate = Runs(ref_providers, [], cand_error)
    sizes = [segment_weight_bytes(ref_layout, segment) for segment in plan.reference]
    if cand_layout is not None and plan.candidate is not None:
        sizes = [max(size, segment_weight_bytes(cand_layout, segment)) for size, segment in zip(sizes, plan.candidate)]
    return SegmentedRuns(reference, candidate, cuts, plan.count, reused, sizes)


@dataclass
class _PartRuns(Runs):
    """A segment's runs, with the feeds each sample got."""

    fed: list[Values] | None = None


def _run_part(source: SegmentSource, k: int, total: int, segment: Segment, state: list[Values],
              feeds_list: Sequence[Mapping[str, np.ndarray]], providers: list[str], twins: bool,
              steps: Steps) -> _PartRuns:
    """Run one model's segment ``k`` on every sample, fed from ``state`` and the graph inputs."""
    fed = [{name: s[name] if name in s else feeds[name] for name in segment.inputs}
           for s, feeds in zip(state, feeds_list)]
    what = (f"segment {k + 1} of {total} of {source.label} (nodes {segment.start}-{segment.stop - 1}; "
            "a larger --max-memory checks it whole)")
    try:
        types = {name: type_of(array) for name, array in fed[0].items()}
    except TypeError as exc:
        raise SegmentError(f"{what}: {exc}") from None
    proto = source.proto(segment, types)
    with source.session(proto, providers, twins, what) as session:
        del proto
        steps()
        runs = run_samples(session.run, session.providers, fed, steps)
    return _PartRuns(runs.providers, runs.outputs, runs.error, fed)


def _reusable(ref_layout: Layout, ref_segment: Segment, cand_layout: Layout, cand_segment: Segment,
              ref_fed: list[Values], cand_state: list[Values], feeds_list: Sequence[Mapping[str, np.ndarray]]) -> bool:
    """Whether the candidate's segment is the reference's, about to be fed what the reference's
    was, bit for bit."""
    if ref_segment.inputs != cand_segment.inputs:
        return False
    for fed, state, feeds in zip(ref_fed, cand_state, feeds_list):
        for name, array in fed.items():
            if not same_arrays(array, state[name] if name in state else feeds.get(name)):
                return False
    return same_computation(ref_layout, ref_segment, cand_layout, cand_segment)


def _take(lay: Layout, outputs: list[Values], state: list[Values], collected: list[Values]) -> None:
    """Keep a segment's outputs: in the carried state, and the graph outputs among them."""
    graph_outputs = {v.name for v in lay.model.graph.outputs}
    for values, s, out in zip(outputs, state, collected):
        s.update(values)
        out.update({n: v for n, v in values.items() if n in graph_outputs})


def _pass_through(lay: Layout, feeds_list: Sequence[Mapping[str, np.ndarray]], collected: list[Values]) -> None:
    """Graph outputs no node makes: a graph input given back, or an initializer."""
    graph = lay.model.graph
    for value in graph.outputs:
        name = value.name or ""
        for feeds, out in zip(feeds_list, collected):
            if name in out:
                continue
            if name in feeds:
                out[name] = feeds[name]
            elif value.const_value is not None:
                out[name] = value.const_value.numpy()


def _in_output_order(lay: Layout, collected: list[Values]) -> list[Values]:
    names = [v.name or "" for v in lay.model.graph.outputs]
    return [{n: out[n] for n in names if n in out} for out in collected]


def _compare_cut(index: int, after: str, names: list[str], ref_state: list[Values], cand_state: list[Values],
                 tolerances: tuple[float | None, float | None]) -> CutComparison:
    """The values crossing a cut, compared where both models have them as floating-point
    arrays of the same shape and dtype. Integer and boolean values are shapes, indices and
    masks: a growth changes sizes on purpose (a head count in a reshape's target), so they
    are not compared; neither is a value whose shape changed (a widened axis)."""
    merged: dict[str, OutputComparison] = {}
    skipped: list[str] = []
    for name in names:
        pairs = [(r.get(name), c.get(name)) for r, c in zip(ref_state, cand_state)]
        if not all(isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
                   and a.dtype == b.dtype and a.dtype.kind == "f" for a, b in pairs):
            skipped.append(name)
            continue
        for a, b in pairs:
            assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
            dtype = ir.DataType.from_numpy(a.dtype)
            for comp in compare_outputs({name: a}, {name: b}, *tolerances, {name: dtype}):
                merged[name] = worse(merged.get(name), comp)
    values = list(merged.values())
    return CutComparison(index, after, values, skipped, all(v.passed for v in values))
