"""Several growths in one command: one plan, one check, one save (docs/design.md §9).

``onnxgrow widen llama.onnx --node model.embed_tokens --to 2x --node '*.self_attn' --heads 2x``
grows the residual stream and every attention's heads together, so the head size stays what a
config derives from ``hidden_size / num_attention_heads``. :class:`CompositeOp` runs its parts
(a widening, a head growth, a vocabulary growth, new output classes) as one growth operation:

- ``plan`` plans every part on the untouched model (each reads only), so any part's refusal
  leaves the model as it was, and refuses parts that would grow the same channels (their
  channel groups share a tensor axis: grow those in one part);
- ``apply`` applies the parts in order, shapes inferred again between them; each part
  re-closes its channel groups on the model the parts before it left (as a widening of
  several groups does, one group after the other);
- the report holds every part's report; the driver checks the result once, saves once, and
  writes each part's lineage entries (one per layer or group, as the part alone would).

Why a part planned on the untouched model is still valid after the parts before it: a plan
is the channel groups it closes, each the closure of one tensor axis through the graph, and
the parts' groups share no axis (checked). A part's rewrite changes constants only along its
own groups' axes (a weight's other axis, per-channel constants, the target entries of shapes
on those axes) and the shapes of the values its groups track, along those axes. The rules
that close another group read its own axis of those tensors and constants (which did not
change) and whether the others broadcast (which does not change with their size), so
closing it again gives the same group, and the widths it was planned with are the widths it
finds. A part that reads a whole constant (a tied head compared with its table, a vocabulary's
table) reads it again when it is applied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import onnx_ir as ir

from onnxgrow.errors import GrowError
from onnxgrow.graph import node_label
from onnxgrow.growth_map import GrowthMap, merge_growth_maps
from onnxgrow.growths import growth_of
from onnxgrow.options import VerifyScope
from onnxgrow.pipeline import GrowthOp, GrowthReport, Report
from onnxgrow.shapes import infer_shapes
from onnxgrow.widening.context import GroupContext


@runtime_checkable
class GroupedPlan(Protocol):
    """A plan that tells the channel groups it will rewrite."""

    @property
    def groups(self) -> Sequence[GroupContext]: ...


@dataclass(kw_only=True)
class CompositeReport(Report):
    """What the parts of a composite growth did, in order (a :class:`~onnxgrow.pipeline.GrowthReport`)."""

    parts: list[GrowthReport] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [line for part in self.parts for line in part.lines()]

    @property
    def growth_map(self) -> GrowthMap:
        """The parts' maps composed in order (:func:`~onnxgrow.growth_map.merge_growth_maps`)."""
        return merge_growth_maps([part.growth_map for part in self.parts])


@dataclass
class CompositePlan:
    """Every part's plan, made on the untouched model."""

    plans: list[Any]


class CompositeOp:
    """Several growth operations as one (see the module docstring); ``parts`` run in order."""

    def __init__(self, parts: Sequence[GrowthOp[Any, Any]]) -> None:
        if not parts:
            raise GrowError("nothing to grow")
        self.parts = list(parts)
        self.infer_shapes = any(part.infer_shapes for part in self.parts)

    def plan(self, model: ir.Model) -> CompositePlan:
        plans = [part.plan(model) for part in self.parts]
        _refuse_shared_axes(plans)
        return CompositePlan(plans)

    def apply(self, model: ir.Model, plan: CompositePlan) -> CompositeReport:
        reports = []
        for k, (part, part_plan) in enumerate(zip(self.parts, plan.plans)):
            if k:
                infer_shapes(model)
            reports.append(part.apply(model, part_plan))
        return CompositeReport(parts=reports, exact=all(r.exact for r in reports),
                               scope=VerifyScope.merged([r.scope for r in reports]),
                               notes=[note for r in reports for note in r.notes])

    def history(self, report: CompositeReport) -> list[dict[str, Any]]:
        """Every part's lineage entries, in order."""
        return [entry for part, part_report in zip(self.parts, report.parts) for entry in part.history(part_report)]

    @staticmethod
    def describe(entry: Mapping[str, Any]) -> str:
        """A composite writes its parts' entries: each is described by the growth that wrote it."""
        found = growth_of(entry)
        return found.describe(entry) if found is not None else str(entry.get("op"))


def _refuse_shared_axes(plans: Sequence[Any]) -> None:
    """Refuse parts whose channel groups share a tensor axis (they would grow the same channels)."""
    claimed: dict[tuple[int, int], tuple[int, GroupContext, ir.Value]] = {}
    for k, plan in enumerate(plans):
        if not isinstance(plan, GroupedPlan):
            raise TypeError(f"a composite growth needs plans that tell their channel groups; "
                            f"{type(plan).__name__} does not")
        for group in plan.groups:
            for value, embedding in group.tracked.items():
                key = (id(value), embedding.axis)
                first = claimed.get(key)
                if first is not None and first[0] != k:
                    where = value.producer()
                    at = f" (at {node_label(where)})" if where is not None else ""
                    raise GrowError(f"{first[1].origin} and {group.origin} would grow the same channels of "
                                    f"{value.name!r}{at}: grow them with one request")
                claimed.setdefault(key, (k, group, value))
