"""``onnxgrow.widen(model, heads={...})``: the head growth operation (a GrowthOp).

Each named attention module (see :mod:`onnxgrow.widening.heads`) is planned on the
untouched model first: its head plan, then the channel group of its query projection,
which closes over keys, values, the output projection and any attention tied to it by a
shared position bias. ``apply`` rewrites the groups one after the other (group ``k``
draws its head map from ``seed + k``); ``history`` records one ``widen-heads`` entry per
group. The report's growth map holds every rewritten projection's head-block copies and
the output projection's shares, as for a widening.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import onnx_ir as ir

from onnxgrow.errors import GrowError
from onnxgrow.growth_map import build_growth_map
from onnxgrow.names import generated_names
from onnxgrow.options import check_seed
from onnxgrow.shapes import infer_shapes
from onnxgrow.widening.api import (
    GroupReport,
    WidenReport,
    check_noise,
    check_size,
    display_name,
    group_key,
    merge_changes,
    parse_init,
)
from onnxgrow.widening.channel_map import Init, build_channel_map
from onnxgrow.widening.context import GroupContext, WeightEdit
from onnxgrow.widening.heads import (
    Attention,
    HeadCounts,
    HeadPlan,
    find_attention,
    find_attentions,
    plan_heads,
    query_embedding,
)
from onnxgrow.widening.layers import Layer, find_layers
from onnxgrow.widening.planner import plan_group


@dataclass
class HeadRequest:
    """One attention to grow: the name asked for, the module, and its head plan."""

    name: str
    attention: Attention
    plan: HeadPlan

    def group(self, model: ir.Model) -> GroupContext:
        """The channel group of the query projection's head units (nothing modified)."""
        return plan_group(model.graph, f"attention {self.attention.path!r}", self.attention.query.layer.node,
                          self.plan.width, query_embedding(self.attention, self.plan))


@dataclass
class HeadsPlan:
    layers: list[Layer]
    attentions: list[Attention]
    order: list[HeadRequest]


class HeadsOp:
    """Grow each named attention module to the given head count (``kv_heads``: the new
    key/value head count of grouped-query attention; default: kept when it divides)."""

    infer_shapes = True

    def __init__(self, heads: Mapping[str, int], *, kv_heads: Mapping[str, int] | None = None,
                 init: str | Init = Init.NET2WIDER, noise: float = 0.0, seed: int = 0) -> None:
        if not heads:
            raise GrowError("nothing to grow: give at least one --node ATTENTION --heads COUNT")
        kv_heads = dict(kv_heads or {})
        for name, count in [*heads.items(), *kv_heads.items()]:
            if isinstance(count, bool) or not isinstance(count, int):
                raise GrowError(f"head count for {name!r} must be an integer, got {count!r}")
        unknown = sorted(set(kv_heads) - set(heads))
        if unknown:
            raise GrowError(f"--kv-heads for {unknown[0]!r} needs --heads for it as well")
        self.heads, self.kv_heads = dict(heads), kv_heads
        self.init = parse_init(init)
        self.seed = check_seed(seed)
        self.noise = check_noise(noise, self.init)

    def plan(self, model: ir.Model) -> HeadsPlan:
        infer_shapes(model)
        layers, _ = find_layers(model)
        attentions: list[Attention] = []
        planned: dict[frozenset[int], HeadRequest] = {}
        order: list[HeadRequest] = []
        for name, count in self.heads.items():
            attention = find_attention(model, layers, name)
            attentions.append(attention)
            request = HeadRequest(name, attention, plan_heads(attention, count, self.kv_heads.get(name)))
            ctx = request.group(model)
            key = group_key(ctx)
            if key in planned:
                first = planned[key]
                if (first.plan.new_heads, first.plan.new_kv_heads) != (request.plan.new_heads,
                                                                       request.plan.new_kv_heads):
                    raise GrowError(f"{name!r} and {first.name!r} share their heads (a position bias ties them) "
                                    f"and must get the same head counts")
                continue
            check_size(ctx, request.plan.new_units, name)
            ctx.check(build_channel_map(request.plan.width, request.plan.new_units, self.init, self.noise, self.seed))
            planned[key] = request
            order.append(request)
        return HeadsPlan(layers, find_attentions(layers), order)

    def apply(self, model: ir.Model, plan: HeadsPlan) -> WidenReport:
        reports = []
        edits: list[WeightEdit] = []
        generated = generated_names(model.graph)
        for k, request in enumerate(plan.order):
            ctx = request.group(model)
            counts = _counts(request, _tied(plan.attentions, ctx, request))
            ctx.rewrite(request.plan.new_units, self.init, self.noise, self.seed + k)
            edits.extend(ctx.edits)
            for node in ctx.producers:  # a grown unnamed projection keeps its generated name from now on
                node.name = node.name or generated[node]
            reports.append(GroupReport(
                request.name, request.attention.path, [display_name(plan.layers, n) for n in ctx.producers],
                request.plan.width, request.plan.new_units,
                [display_name(plan.layers, n) for n in ctx.contractors], merge_changes(ctx.changes),
                self.seed + k, heads=counts))
        return WidenReport(reports, self.init.value, self.noise, self.seed, self.init.exact,
                           map_builder=lambda: build_growth_map(model, edits))

    def history(self, report: WidenReport) -> list[dict[str, Any]]:
        """One ``widen-heads`` entry per group (group ``k`` drew its map from ``seed + k``)."""
        entries = []
        for k, group in enumerate(report.groups):
            counts = group.heads
            assert counts is not None
            entry: dict[str, Any] = {
                "op": "widen-heads", "node": group.requested, "attention": counts.attention,
                "old_heads": counts.old_heads, "new_heads": counts.new_heads,
                "old_kv_heads": counts.old_kv_heads, "new_kv_heads": counts.new_kv_heads,
                "head_dim": counts.head_dim, "tied_attentions": list(counts.together),
                "init": report.init, "noise": report.noise, "seed": report.seed, "together": group.layers,
            }
            if k:
                entry["group"] = k
            entries.append(entry)
        return entries


def _counts(request: HeadRequest, together: tuple[str, ...]) -> HeadCounts:
    a, p = request.attention, request.plan
    return HeadCounts(a.path, a.heads, p.new_heads, a.kv_heads, p.new_kv_heads, a.head_dim, together)


def _tied(attentions: list[Attention], ctx: GroupContext, request: HeadRequest) -> tuple[str, ...]:
    """Other attention modules whose heads the group grows too (a shared position bias ties them)."""
    producers = set(map(id, ctx.producers))
    return tuple(a.path for a in attentions
                 if id(a.query.layer.node) in producers and a.path != request.attention.path)

