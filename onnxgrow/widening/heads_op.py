"""``onnxgrow.widen(model, heads={...})``: the head growth operation (a GrowthOp).

Each named attention module (see :mod:`onnxgrow.structure.attention`) is planned on the
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
from onnxgrow.growths import growth
from onnxgrow.lineage import COUNT, NAMES, NUMBER, TEXT
from onnxgrow.options import check_seed
from onnxgrow.pipeline import Report
from onnxgrow.sizes import Size
from onnxgrow.structure import Attention, find_attention, find_attentions
from onnxgrow.widening.api import (
    WidenGroup,
    check_noise,
    check_size,
    group_key,
    parse_init,
    rewritten_group,
)
from onnxgrow.widening.channel_map import Init, build_channel_map
from onnxgrow.widening.context import GroupContext, WeightEdit
from onnxgrow.widening.heads import HeadCounts, HeadPlan, plan_heads, query_embedding
from onnxgrow.widening.layers import Layer, all_generated_names, find_layers
from onnxgrow.widening.patterns import expand_attentions
from onnxgrow.widening.planner import plan_group


@dataclass
class HeadRequest:
    """One attention to grow: the name asked for, the module, and its head plan."""

    name: str
    attention: Attention
    plan: HeadPlan

    def group(self, model: ir.Model) -> GroupContext:
        """The channel group of the query projection's head units (nothing modified)."""
        return plan_group(model.graph, f"attention {self.attention.path!r}", self.attention.query.node,
                          self.plan.width, query_embedding(self.attention, self.plan))


@dataclass
class HeadsPlan:
    """The layers and attention modules found, each head group to grow once, and those
    groups as planned on the untouched model."""

    layers: list[Layer]
    attentions: list[Attention]
    order: list[HeadRequest]
    groups: list[GroupContext]


@dataclass
class HeadsGroup(WidenGroup):
    """One attention's heads grown: the channel group of its head units (widths count units:
    heads, or key/value heads with their query groups) and the head counts."""

    heads: HeadCounts


@dataclass(kw_only=True)
class HeadsReport(Report):
    """What a head growth did (a :class:`~onnxgrow.pipeline.GrowthReport`)."""

    groups: list[HeadsGroup]
    init: str
    noise: float
    seed: int

    def lines(self) -> list[str]:
        lines = []
        for group in self.groups:
            counts = group.heads
            line = f"grew attention {counts.attention}: {counts.old_heads} → {counts.new_heads} heads"
            if (counts.old_kv_heads, counts.new_kv_heads) != (counts.old_heads, counts.new_heads):
                line += f" ({counts.old_kv_heads} → {counts.new_kv_heads} key/value heads)"
            line += f", head size {counts.head_dim} ({self.init}" + (f", noise {self.noise})" if self.noise else ")")
            lines.append(line)
            if counts.together:
                lines.append(f"  attention grown with it (shared position bias): {', '.join(counts.together)}")
            lines.append(f"  projections grown: {', '.join(group.layers)}")
            lines += group.edit_lines()
        return lines


@growth("widen-heads")
class HeadsOp:
    """Grow each named attention module to the given head count (``kv_heads``: the new
    key/value head count of grouped-query attention; default: kept when it divides). A name
    may be a pattern, a count a multiple or an increase (:class:`~onnxgrow.sizes.Size`)."""

    infer_shapes = True
    entry_keys = {"attention": TEXT, "old_heads": COUNT, "new_heads": COUNT, "old_kv_heads": COUNT,
                  "new_kv_heads": COUNT, "head_dim": COUNT, "tied_attentions": NAMES, "noise": NUMBER,
                  "together": NAMES}

    def __init__(self, heads: Mapping[str, int | str | Size], *,
                 kv_heads: Mapping[str, int | str | Size] | None = None, init: str | Init = Init.NET2WIDER,
                 noise: float = 0.0, seed: int = 0) -> None:
        if not heads:
            raise GrowError("nothing to grow: give at least one --node ATTENTION --heads COUNT")
        kv_heads = dict(kv_heads or {})
        for name, count in [*heads.items(), *kv_heads.items()]:
            if isinstance(count, (bool, float)) or not isinstance(count, (int, str, Size)):
                raise GrowError(f"head count for {name!r} must be an integer, got {count!r}")
        unknown = sorted(set(kv_heads) - set(heads))
        if unknown:
            raise GrowError(f"--kv-heads for {unknown[0]!r} needs --heads for it as well")
        self.heads = {name: Size.parse(count, f"the head count for {name!r}") for name, count in heads.items()}
        self.kv_heads = {name: Size.parse(count, f"the key/value head count for {name!r}")
                         for name, count in kv_heads.items()}
        self.init = parse_init(init)
        self.seed = check_seed(seed)
        self.noise = check_noise(noise, self.init)

    def plan(self, model: ir.Model) -> HeadsPlan:
        layers, _ = find_layers(model)
        known = find_attentions(model)
        attentions: list[Attention] = []
        planned: dict[frozenset[int], HeadRequest] = {}
        order: list[HeadRequest] = []
        groups: list[GroupContext] = []
        for name, attention, count, kv_count in self._requests(model, known):
            attentions.append(attention)
            request = HeadRequest(name, attention, plan_heads(attention, count, kv_count))
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
            ctx.check(build_channel_map(ctx.width, ctx.units(request.plan.new_units), self.init, self.noise, self.seed))
            planned[key] = request
            order.append(request)
            groups.append(ctx)
        return HeadsPlan(layers, known, order, groups)

    def _requests(self, model: ir.Model, known: list[Attention]) -> list[tuple[str, Attention, int, int | None]]:
        """Each attention asked for (a pattern names every one it matches, by its path:
        :mod:`onnxgrow.widening.patterns`) with its head counts, the sizes resolved against its own."""
        found = []
        for request, size in self.heads.items():
            matched = expand_attentions(request, known)
            for attention in matched if matched is not None else [find_attention(model, request, known)]:
                label = f"attention {attention.path!r}"
                kv = self.kv_heads.get(request)
                found.append((attention.path if matched is not None else request, attention,
                              size.of(attention.heads, label, "head count"),
                              kv.of(attention.kv_heads, label, "key/value head count") if kv is not None else None))
        return found

    def apply(self, model: ir.Model, plan: HeadsPlan) -> HeadsReport:
        groups = []
        edits: list[WeightEdit] = []
        generated = all_generated_names(model.graph)
        for k, request in enumerate(plan.order):
            ctx = request.group(model)
            counts = _counts(request, _tied(plan.attentions, ctx, request))
            ctx.rewrite(request.plan.new_units, self.init, self.noise, self.seed + k)
            edits.extend(ctx.edits)
            group = rewritten_group(plan.layers, ctx, generated, request.name, request.attention.path,
                                    request.plan.new_units, self.seed + k)
            groups.append(HeadsGroup(**vars(group), heads=counts))
        return HeadsReport(groups=groups, init=self.init.value, noise=self.noise, seed=self.seed,
                           exact=self.init.exact, map_builder=lambda: build_growth_map(model, edits))

    def history(self, report: HeadsReport) -> list[dict[str, Any]]:
        """One ``widen-heads`` entry per group (group ``k`` drew its map from ``seed + k``)."""
        entries = []
        for k, group in enumerate(report.groups):
            counts = group.heads
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

    @staticmethod
    def describe(entry: Mapping[str, Any]) -> str:
        """``attention layers.0.self_attn: 4 → 8 heads (2 → 4 key/value heads), net2wider``."""
        text = (f"attention {entry.get('attention') or entry.get('node')}: "
                f"{entry.get('old_heads')} → {entry.get('new_heads')} heads")
        old_kv, new_kv = entry.get("old_kv_heads"), entry.get("new_kv_heads")
        if (old_kv, new_kv) != (entry.get("old_heads"), entry.get("new_heads")):
            text += f" ({old_kv} → {new_kv} key/value heads)"
        text += f", {entry.get('init', 'net2wider')}"
        if entry.get("noise"):
            text += f" (noise {entry['noise']})"
        tied = entry.get("tied_attentions") or []
        if tied:
            text += f", together with attention {', '.join(map(str, tied))}"
        return text


def _counts(request: HeadRequest, together: tuple[str, ...]) -> HeadCounts:
    a, p = request.attention, request.plan
    return HeadCounts(a.path, a.heads, p.new_heads, a.kv_heads, p.new_kv_heads, a.head_dim, together)


def _tied(attentions: list[Attention], ctx: GroupContext, request: HeadRequest) -> tuple[str, ...]:
    """Other attention modules whose heads the group grows too (a shared position bias ties them)."""
    producers = set(map(id, ctx.producers))
    return tuple(a.path for a in attentions
                 if id(a.query.node) in producers and a.path != request.attention.path)

