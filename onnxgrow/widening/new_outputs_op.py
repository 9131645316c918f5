"""``onnxgrow.widen(..., new_outputs=True)``: the growth of a last layer's output classes.

:class:`NewOutputsOp` plans each named last layer's channel group with its classes
(:mod:`onnxgrow.widening.new_outputs`: what is compared, the Softmax bias that keeps the
old probabilities exact), then rewrites the groups one after the other like a widening
(group ``k`` draws from ``seed + k``) and starts the new classes. The old classes of
every grown output are exact whatever the new rows are, so the growth is exact for the
part its scope names, random-pad included.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import onnx_ir as ir

from onnxgrow.errors import GrowError
from onnxgrow.growth_map import build_growth_map
from onnxgrow.growths import growth
from onnxgrow.lineage import COUNT, FLAG, NAMES, NUMBER, OPTIONAL_TEXT
from onnxgrow.options import VerifyScope, check_seed
from onnxgrow.pipeline import Report
from onnxgrow.sizes import Size
from onnxgrow.widening import new_outputs as classes
from onnxgrow.widening.api import (
    WidenGroup,
    WidenPlan,
    check_widths,
    display_name,
    group_entries,
    parse_init,
    plan_widths,
    rewritten_group,
)
from onnxgrow.widening.channel_map import Init
from onnxgrow.widening.context import GroupContext, WeightEdit, change_lines
from onnxgrow.widening.layers import all_generated_names
from onnxgrow.widening.planner import plan_group
from onnxgrow.widening.tied import tied_lookup


@dataclass
class ClassesGroup(WidenGroup):
    """One last layer's classes grown: the group, what the check compares (words and scope),
    and, under a Softmax, what is kept of the old probabilities ("exact", "renormalised")."""

    compared: str
    scope: VerifyScope
    old_probabilities: str | None


@dataclass(kw_only=True)
class NewOutputsReport(Report):
    """What a growth of output classes did (a :class:`~onnxgrow.pipeline.GrowthReport`)."""

    groups: list[ClassesGroup]
    init: str
    seed: int

    def lines(self) -> list[str]:
        lines = []
        for group in self.groups:
            lines.append(f"grown {group.requested}: {group.old_width} → {group.new_width} classes ({self.init})")
            lines += change_lines(group.changes, group.compared)
        return lines


@growth("widen", when="new_outputs")
class NewOutputsOp:
    """Grow the output classes of each named last layer to the given count: a
    :class:`~onnxgrow.pipeline.GrowthOp` (``init``: zero-pad by default, or random-pad;
    ``old_probabilities``: see :class:`~onnxgrow.widening.new_outputs.OldProbabilities`)."""

    infer_shapes = True
    entry_keys = {"old_width": COUNT, "new_width": COUNT, "noise": NUMBER, "together": NAMES,
                  "new_outputs": FLAG, "old_probabilities": OPTIONAL_TEXT}

    def __init__(self, widths: Mapping[str, int | str | Size], *, init: str | Init | None = None, seed: int = 0,
                 old_probabilities: str | classes.OldProbabilities = classes.OldProbabilities.EXACT) -> None:
        self.widths = check_widths(widths)
        self.init = parse_init(init if init is not None else Init.ZERO_PAD)
        classes.check_init(self.init)
        self.old = classes.parse_old_probabilities(old_probabilities)
        self.seed = check_seed(seed)

    def plan(self, model: ir.Model) -> WidenPlan:
        def last_layer(ctx: GroupContext, name: str) -> None:
            classes.check_last_layer(ctx, repr(name))
            classes.plan_probabilities(ctx, self.old)

        plan = plan_widths(model, self.widths, self.init, 0.0, self.seed, new_outputs=True, check=last_layer)
        for name, layer, _ in plan.order:
            lookup = tied_lookup(model.graph, layer.node)
            if lookup is not None:
                table = display_name(plan.layers, lookup)
                raise GrowError(f"{name!r} is tied to the embedding {table!r} (it reads its table): new classes "
                                f"would untie it; grow the vocabulary with --node {table} --rows ROWS, whose new "
                                "rows are its new classes")
        return plan

    def apply(self, model: ir.Model, plan: WidenPlan) -> NewOutputsReport:
        groups = []
        edits: list[WeightEdit] = []
        generated = all_generated_names(model.graph)
        for k, (name, layer, q) in enumerate(plan.order):
            ctx = plan_group(model.graph, repr(name), layer.node, layer.width, layer.producer.embedding,
                             new_outputs=True)
            ctx.rewrite(q, self.init, 0.0, self.seed + k)
            grown = classes.finish(ctx, self.init, self.old, name)
            edits.extend(ctx.edits)
            group = rewritten_group(plan.layers, ctx, generated, name, layer, q, self.seed + k)
            scope = VerifyScope(grown.outputs, {}, grown.words, grown.renormalise)
            old = self.old.value if classes.classes_of(ctx).normalisers else None
            groups.append(ClassesGroup(**vars(group), compared=scope.preserved, scope=scope, old_probabilities=old))
        # the old classes stay exact whatever the new rows are
        return NewOutputsReport(groups=groups, init=self.init.value, seed=self.seed, exact=True,
                                scope=VerifyScope.merged([g.scope for g in groups]),
                                map_builder=lambda: build_growth_map(model, edits))

    def history(self, report: NewOutputsReport) -> list[dict[str, Any]]:
        """A widening's entry per group, with the scope its check compares (``verify_scope``)."""
        entries = group_entries(report.groups, report.init, 0.0, report.seed)
        for entry, group in zip(entries, report.groups):
            entry.update({"new_outputs": True, "old_probabilities": group.old_probabilities,
                          "verify_scope": group.scope.to_json()})
        return entries

    @staticmethod
    def describe(entry: Mapping[str, Any]) -> str:
        """``fc2 outputs 10 → 12 classes, zero-pad, old probabilities exact (...)``."""
        text = f"{entry.get('node')} outputs {entry.get('old_width')} → {entry.get('new_width')} classes"
        text += f", {entry.get('init', 'zero-pad')}"
        if entry.get("old_probabilities") == "exact":
            text += ", old probabilities exact (new classes start at probability 0)"
        elif entry.get("old_probabilities") == "renormalised":
            text += ", old probabilities renormalised"
        else:
            text += ", old logits exact"
        return text
