"""``onnxgrow.widen``: the widening growth operation (docs/design.md §1-§4, §9).

:class:`WidenOp` plans every requested layer's channel group on the untouched model
first, so a refusal or a conflict (two names in one group asking for different widths)
leaves the model as it was. Its ``apply`` then rewrites the groups one after the other,
each re-planned on the current graph; group ``k`` draws its map from ``seed + k``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx_ir as ir

from onnxgrow.constants import find_constant
from onnxgrow.errors import GrowError
from onnxgrow.growth_map import GrowthMap, build_growth_map
from onnxgrow.names import generated_names
from onnxgrow.options import VerifyScope, check_seed, parse_choice
from onnxgrow.shapes import infer_shapes
from onnxgrow.verification import VerifyReport
from onnxgrow.widening import new_outputs as classes
from onnxgrow.widening.channel_map import Init, build_channel_map
from onnxgrow.widening.context import GroupContext, TensorChange, WeightEdit
from onnxgrow.widening.heads import HeadCounts
from onnxgrow.widening.layers import Layer, find_layer, find_layers
from onnxgrow.widening.planner import plan_group

#: Refuse requests that would need more than this many bytes (or the machine's memory, if less).
MAX_NEW_WEIGHT_BYTES = 64 * 1024**3


@dataclass
class GroupReport:
    """One channel group widened: the name asked for and the layer it named, the group's
    layers, widths, contracting nodes, changed tensors, and the seed its map came from."""

    requested: str
    layer: str
    layers: list[str]
    old_width: int
    new_width: int
    contractors: list[str]
    changes: list[TensorChange]
    seed: int
    #: "channels" (a hidden layer), "classes" (new outputs) or "rows" (a vocabulary).
    kind: str = "channels"
    #: For grown outputs: what the check compares (the old classes, and what of them is exact),
    compared: str = ""
    #: that part as a scope,
    scope: VerifyScope = field(default_factory=VerifyScope)
    #: and, under a Softmax, what is kept of the old probabilities ("exact", "renormalised").
    old_probabilities: str | None = None
    #: For a vocabulary: whether its LM head (the group's second layer) is tied to the table.
    tied_head: bool = False
    heads: HeadCounts | None = None  # a head growth: the widths count the group's units (heads_op.py)


@dataclass
class WidenReport:
    """What a widening did (a :class:`~onnxgrow.pipeline.GrowthReport`)."""

    groups: list[GroupReport]
    init: str
    noise: float
    seed: int
    exact: bool
    verification: VerifyReport | None = None
    notes: list[str] = field(default_factory=list)
    scope: VerifyScope = field(default_factory=VerifyScope)
    written: list[Path] = field(default_factory=list)
    #: Makes the growth map (:attr:`growth_map`) on first use.
    map_builder: Callable[[], GrowthMap] | None = field(default=None, repr=False)
    _growth_map: GrowthMap | None = field(default=None, init=False, repr=False)

    @property
    def growth_map(self) -> GrowthMap:
        """Where every grown weight's positions come from (see :mod:`onnxgrow.growth_map`).

        Made on first use from the grown model, which the report holds until then: naming the
        weights reads them all, which a growth that never asks for its map (a large model
        grown to a file) should not pay for.
        """
        if self._growth_map is None:
            self._growth_map = self.map_builder() if self.map_builder is not None else GrowthMap()
            self.map_builder = None
        return self._growth_map


def parse_init(init: str | Init) -> Init:
    return parse_choice(Init, init, "--init")


def check_noise(noise: float, init: Init) -> float:
    """``noise`` when it is a finite number >= 0 (and 0 unless ``init`` is net2wider)."""
    if (isinstance(noise, bool) or not isinstance(noise, (int, float)) or not math.isfinite(noise)
            or noise < 0 or (noise > 0 and init is not Init.NET2WIDER)):
        raise GrowError(f"--noise must be a finite number >= 0 and applies to --init net2wider only, "
                        f"got {noise!r}")
    return noise


def _check_width(layer: Layer, name: str, width: int) -> int:
    if width <= layer.width:
        raise GrowError(f"width for {name!r} must be larger than its current {layer.width}, got {width}")
    return width


def memory_limit() -> int:
    """Bytes a widening may need: :data:`MAX_NEW_WEIGHT_BYTES`, or this machine's memory if smaller."""
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return MAX_NEW_WEIGHT_BYTES
    return min(MAX_NEW_WEIGHT_BYTES, physical) if physical > 0 else MAX_NEW_WEIGHT_BYTES


def check_size(ctx: GroupContext, q: int, name: str) -> None:
    """Refuse before allocating when the widening would need more memory than :func:`memory_limit`.

    Estimate: every constant input of the group's producers and contractors (found through
    Identity/Transpose chains) grows by ``q / n``; the largest is also built in float64;
    the channel map takes 17 bytes per unit.
    """
    weights = largest = 0
    for node in ctx.producers + ctx.contractors:
        for value in node.inputs[1:]:
            ref = find_constant(value)
            if ref is not None:
                grown = ref.tensor.nbytes * q // max(ctx.width, 1)
                weights += grown
                largest = max(largest, int(grown // max(ref.tensor.dtype.itemsize, 1)))
    needed = weights + 8 * largest + 17 * q
    limit = memory_limit()
    if needed > limit:
        raise GrowError(f"widening {name!r} from {ctx.width} to {q} would need about {_gib(needed)} of memory "
                        f"({_gib(weights)} of new weights); the limit is {_gib(limit)}")


def _gib(count: int) -> str:
    return f"{count / 1024**3:,.1f} GiB" if count < 1024**5 else f"{count / 1024**3:.3g} GiB"


def group_key(ctx: GroupContext) -> frozenset[int]:
    return frozenset(id(node) for node in ctx.producers)


@dataclass
class WidenPlan:
    """The layers found, and each channel group to widen once: (name asked for, layer, width)."""

    layers: list[Layer]
    order: list[tuple[str, Layer, int]]


class WidenOp:
    """Widen each named layer (and its channel group) to the given width: a
    :class:`~onnxgrow.pipeline.GrowthOp`.

    The arguments are checked on construction (GrowError); ``plan`` raises GrowError for
    unknown/ambiguous names or widths not larger than the layer's, RefusedError (naming
    the blocking node) when a group cannot be widened exactly.

    ``new_outputs``: the named layers are last layers whose outputs are model outputs;
    their classes grow (:mod:`onnxgrow.widening.new_outputs`, which explains
    ``old_probabilities``; ``init`` then defaults to zero-pad). The report's ``scope`` says
    what the check compares, its ``growth_map`` where every grown weight's positions come from.
    """

    infer_shapes = True

    def __init__(self, widths: Mapping[str, int], *, init: str | Init | None = None, noise: float = 0.0,
                 seed: int = 0, new_outputs: bool = False,
                 old_probabilities: str | classes.OldProbabilities = classes.OldProbabilities.EXACT) -> None:
        if not widths:
            raise GrowError("nothing to widen: give at least one --node NAME --to WIDTH")
        for name, width in widths.items():
            if isinstance(width, bool) or not isinstance(width, int) or width < 1:
                raise GrowError(f"width for {name!r} must be a positive integer, got {width!r}")
        self.widths = dict(widths)
        self.new_outputs = new_outputs
        self.init = parse_init(init if init is not None else (Init.ZERO_PAD if new_outputs else Init.NET2WIDER))
        self.old = classes.parse_old_probabilities(old_probabilities)
        if new_outputs:
            classes.check_init(self.init)
        self.seed = check_seed(seed)
        self.noise = check_noise(noise, self.init)

    def plan(self, model: ir.Model) -> WidenPlan:
        infer_shapes(model)
        layers, refused = find_layers(model)
        planned: dict[frozenset[int], tuple[str, int]] = {}
        order: list[tuple[str, Layer, int]] = []
        for name, width in self.widths.items():
            layer = find_layer(model, name, layers, refused)
            q = _check_width(layer, name, width)
            ctx = plan_group(model.graph, repr(name), layer.node, layer.width, layer.producer.embedding,
                             self.new_outputs)
            if self.new_outputs:
                classes.check_last_layer(ctx, repr(name))
                classes.plan_probabilities(ctx, self.old)
            key = group_key(ctx)
            if key in planned:
                first, first_q = planned[key]
                if first_q != q:
                    raise GrowError(f"{name!r} and {first!r} are in one channel group and must get the "
                                    f"same width ({q} vs {first_q})")
                continue
            check_size(ctx, q, name)
            ctx.check(build_channel_map(layer.width, q, self.init, self.noise, self.seed))
            planned[key] = (name, q)
            order.append((name, layer, q))
        return WidenPlan(layers, order)

    def apply(self, model: ir.Model, plan: WidenPlan) -> WidenReport:
        reports = []
        edits: list[WeightEdit] = []
        scopes: list[VerifyScope] = []
        generated = generated_names(model.graph)
        for k, (name, layer, q) in enumerate(plan.order):
            ctx = plan_group(model.graph, repr(name), layer.node, layer.width, layer.producer.embedding,
                             self.new_outputs)
            ctx.rewrite(q, self.init, self.noise, self.seed + k)
            scope, old = VerifyScope(), None
            if self.new_outputs:
                grown = classes.finish(ctx, self.init, self.old, name)
                scope = VerifyScope(grown.outputs, {}, grown.words, grown.renormalise)
                scopes.append(scope)
                old = self.old.value if ctx.normalisers else None
            edits.extend(ctx.edits)
            for node in ctx.producers:  # a grown unnamed layer keeps its generated name from now on
                node.name = node.name or generated[node]
            names = [display_name(plan.layers, node) for node in ctx.producers]
            reports.append(GroupReport(
                name, display_name(plan.layers, layer.node), names, layer.width, q,
                [display_name(plan.layers, node) for node in ctx.contractors], merge_changes(ctx.changes),
                self.seed + k, "classes" if self.new_outputs else "channels", scope.preserved, scope, old))
        exact = self.init.exact or self.new_outputs  # new classes leave the old outputs exact whatever their rows
        return WidenReport(reports, self.init.value, self.noise, self.seed, exact,
                           scope=VerifyScope.merged(scopes), map_builder=lambda: build_growth_map(model, edits))

    def history(self, report: WidenReport) -> list[dict[str, Any]]:
        """One entry per group; the seed recorded is the one the operation was given
        (group ``k`` drew its map from ``seed + k``, recorded as ``group``)."""
        entries = []
        for k, group in enumerate(report.groups):
            entry: dict[str, Any] = {
                "op": "widen", "node": group.requested, "old_width": group.old_width,
                "new_width": group.new_width, "init": report.init, "noise": report.noise, "seed": report.seed,
                "together": group.layers,
            }
            if k:
                entry["group"] = k
            if group.kind == "classes":
                entry.update({"new_outputs": True, "old_probabilities": group.old_probabilities,
                              "verify_scope": group.scope.to_json()})
            entries.append(entry)
        return entries


def display_name(layers: list[Layer], node: ir.Node) -> str:
    for layer in layers:
        if layer.node is node:
            return layer.display
    return node.name or node.op_type


def merge_changes(changes: list[TensorChange]) -> list[TensorChange]:
    """One entry per tensor: first old shape, last new shape."""
    merged: dict[str, TensorChange] = {}
    for change in changes:
        if change.name in merged:
            first = merged[change.name]
            merged[change.name] = TensorChange(change.name, first.old_shape, change.new_shape, first.node)
        else:
            merged[change.name] = change
    return list(merged.values())
