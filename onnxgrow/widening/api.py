"""``onnxgrow.widen``: the widening growth operation (docs/design.md §1-§4, §9).

:class:`WidenOp` plans every requested layer's channel group on the untouched model
first, so a refusal or a conflict (two names in one group asking for different widths)
leaves the model as it was. Its ``apply`` then rewrites the groups one after the other,
each re-planned on the current graph; group ``k`` draws its map from ``seed + k``.

The helpers here (argument checks, the memory estimate, group identity, display names,
:class:`WidenGroup`) serve every growth that rewrites channel groups: new output
classes, vocabulary heads and attention heads too.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import onnx_ir as ir

from onnxgrow import resources
from onnxgrow.constants import find_constant
from onnxgrow.errors import GrowError
from onnxgrow.growth_map import build_growth_map
from onnxgrow.growths import growth
from onnxgrow.lineage import COUNT, NAMES, NUMBER
from onnxgrow.names import is_pattern
from onnxgrow.options import check_seed, parse_choice
from onnxgrow.pipeline import Report
from onnxgrow.resources import size_text
from onnxgrow.sizes import Size
from onnxgrow.widening.channel_map import Init, build_channel_map
from onnxgrow.widening.context import GroupContext, TensorChange, WeightEdit, merge_changes
from onnxgrow.widening.layers import Layer, all_generated_names, find_layers
from onnxgrow.widening.patterns import expand_layers
from onnxgrow.widening.planner import plan_group
from onnxgrow.widening.tied import find_ties, keep_ties

#: Refuse requests that would need more than this many bytes (or the machine's memory, if less).
MAX_NEW_WEIGHT_BYTES = 64 * 1024**3


@dataclass
class WidenGroup:
    """One channel group rewritten: the name asked for and the layer it named, the group's
    layers, widths, contracting layers, changed tensors, and the seed its map came from."""

    requested: str
    layer: str
    layers: list[str]
    old_width: int
    new_width: int
    contractors: list[str]
    changes: list[TensorChange]
    seed: int

    def edit_lines(self) -> list[str]:
        """The layers that contract the grown units, the weights whose shapes changed, and the
        nodes whose target shapes were rewritten (no ``[2] → [2]`` lines)."""
        lines = []
        if self.contractors:
            lines.append(f"  contracting layers adjusted: {', '.join(self.contractors)}")
        for change in self.changes:
            if change.old_shape != change.new_shape:
                lines.append(f"  {change.name}: {list(change.old_shape)} → {list(change.new_shape)}")
        targets = sorted({c.node for c in self.changes if c.old_shape == c.new_shape})
        if targets:
            lines.append(f"  target shapes rewritten for: {', '.join(targets)}")
        return lines


@dataclass(kw_only=True)
class WidenReport(Report):
    """What a widening did (a :class:`~onnxgrow.pipeline.GrowthReport`)."""

    groups: list[WidenGroup]
    init: str
    noise: float
    seed: int

    def lines(self) -> list[str]:
        lines = []
        for group in self.groups:
            together = [n for n in group.layers if n != group.layer]
            line = f"widened {group.requested}: {group.old_width} → {group.new_width} ({self.init}"
            line += f", noise {self.noise})" if self.noise else ")"
            if together:
                line += f"; channel group also widened: {', '.join(together)}"
            lines += [line, *group.edit_lines()]
        return lines


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
    Identity/Transpose chains) grows by ``q / n`` (``n``: the layer's width, its group's units
    times their blocks); the largest is also built in float64; the channel map takes 17 bytes
    per unit.
    """
    weights = largest = 0
    n = max(ctx.width * ctx.blocks, 1)
    for node in ctx.producers + ctx.contractors:
        for value in node.inputs[1:]:
            ref = find_constant(value)
            if ref is not None:
                grown = ref.tensor.nbytes * q // n
                weights += grown
                largest = max(largest, int(grown // max(ref.tensor.dtype.itemsize, 1)))
    check_memory(weights + 8 * largest + 17 * q, weights, f"widening {name!r} from {n} to {q}")


def check_memory(needed: int, weights: int, doing: str) -> None:
    """Refuse ``doing`` (``widening 'fc1' from 4 to 8``) before allocating when it would need
    ``needed`` bytes (``weights`` of them new weights), more than :func:`memory_limit`."""
    resources.check_memory(needed, f"{doing} adds {size_text(weights)} of weights and", memory_limit(),
                           f"this machine's memory, at most {size_text(MAX_NEW_WEIGHT_BYTES)}")


def group_key(ctx: GroupContext) -> frozenset[int]:
    return frozenset(id(node) for node in ctx.producers)


@dataclass
class WidenPlan:
    """The layers found, each channel group to widen once: (name asked for, layer, width), and
    the groups as planned on the untouched model."""

    layers: list[Layer]
    order: list[tuple[str, Layer, int]]
    groups: list[GroupContext]


@growth("widen")
class WidenOp:
    """Widen each named layer (and its channel group) to the given width: a
    :class:`~onnxgrow.pipeline.GrowthOp`. A name may be a pattern (every layer it matches,
    :mod:`onnxgrow.widening.patterns`), a width a multiple or an increase of the layer's own
    (:class:`~onnxgrow.sizes.Size`).

    The arguments are checked on construction (GrowError); ``plan`` raises GrowError for
    unknown/ambiguous names or widths not larger than the layer's, RefusedError (naming
    the blocking node) when a group cannot be widened exactly. The report's
    ``growth_map`` says where every grown weight's positions come from.
    """

    infer_shapes = True
    entry_keys = {"old_width": COUNT, "new_width": COUNT, "noise": NUMBER, "together": NAMES}

    def __init__(self, widths: Mapping[str, int | str | Size], *, init: str | Init | None = None, noise: float = 0.0,
                 seed: int = 0) -> None:
        self.widths = check_widths(widths)
        self.init = parse_init(init if init is not None else Init.NET2WIDER)
        self.seed = check_seed(seed)
        self.noise = check_noise(noise, self.init)

    def plan(self, model: ir.Model) -> WidenPlan:
        return plan_widths(model, self.widths, self.init, self.noise, self.seed, new_outputs=False)

    def apply(self, model: ir.Model, plan: WidenPlan) -> WidenReport:
        groups = []
        edits: list[WeightEdit] = []
        notes: list[str] = []
        generated = all_generated_names(model.graph)
        for k, (name, layer, q) in enumerate(plan.order):
            ctx = plan_group(model.graph, repr(name), layer.node, layer.width, layer.producer.embedding)
            ties = keep_ties(ctx)
            ctx.rewrite(q, self.init, self.noise, self.seed + k)
            edits.extend(ctx.edits)
            groups.append(rewritten_group(plan.layers, ctx, generated, name, layer, q, self.seed + k))
            notes += [tie.words(lambda node: display_name(plan.layers, node)) for tie in ties]
        return WidenReport(groups=groups, init=self.init.value, noise=self.noise, seed=self.seed,
                           exact=self.init.exact, notes=notes, map_builder=lambda: build_growth_map(model, edits))

    def history(self, report: WidenReport) -> list[dict[str, Any]]:
        return group_entries(report.groups, report.init, report.noise, report.seed)

    @staticmethod
    def describe(entry: Mapping[str, Any]) -> str:
        """``fc1 widened 64 → 128, net2wider, together with fc2``."""
        text = f"{entry.get('node')} widened {entry.get('old_width')} → {entry.get('new_width')}"
        text += f", {entry.get('init', 'net2wider')}"
        if entry.get("noise"):
            text += f" (noise {entry['noise']})"
        together = [n for n in entry.get("together", []) if n != entry.get("node")]
        if together:
            text += f", together with {', '.join(map(str, together))}"
        return text


def group_entries(groups: Sequence[WidenGroup], init: str, noise: float, seed: int) -> list[dict[str, Any]]:
    """One ``widen`` lineage entry per group; the seed recorded is the one the operation was
    given (group ``k`` drew its map from ``seed + k``, recorded as ``group``)."""
    entries = []
    for k, group in enumerate(groups):
        entry: dict[str, Any] = {
            "op": "widen", "node": group.requested, "old_width": group.old_width,
            "new_width": group.new_width, "init": init, "noise": noise, "seed": seed, "together": group.layers,
        }
        if k:
            entry["group"] = k
        entries.append(entry)
    return entries


def check_widths(widths: Mapping[str, int | str | Size]) -> dict[str, Size]:
    """The requested widths as sizes (:class:`~onnxgrow.sizes.Size`: a positive count, a
    multiple or an increase); GrowError otherwise."""
    if not widths:
        raise GrowError("nothing to widen: give at least one --node NAME --to WIDTH")
    sizes = {}
    for name, width in widths.items():
        size = Size.parse(width, f"the width for {name!r}") if isinstance(width, (int, str, Size)) \
            and not isinstance(width, bool) else None
        if size is None or (size.count is not None and size.count < 1):
            shown = width if isinstance(width, Size) else repr(width)
            raise GrowError(f"width for {name!r} must be a positive integer, got {shown}")
        sizes[name] = size
    return sizes


def plan_widths(model: ir.Model, widths: Mapping[str, Size], init: Init, noise: float, seed: int,
                new_outputs: bool, check: Callable[[GroupContext, str], None] | None = None) -> WidenPlan:
    """Close the channel group of every named layer, or of every layer a pattern names
    (:mod:`onnxgrow.widening.patterns`; each then named by its display name), reads only:
    each group once, its width (the size resolved against the layer's own width) larger
    than the layer's and the same for every name in it, its tied heads kept tied
    (:func:`~onnxgrow.widening.tied.find_ties`), its memory estimated and its constraints
    checked against the map; ``check(ctx, name)`` adds the caller's own refusals."""
    layers, refused = find_layers(model)
    planned: dict[frozenset[int], tuple[str, int]] = {}
    order: list[tuple[str, Layer, int]] = []
    groups: list[GroupContext] = []
    for request, size in widths.items():
        matched = expand_layers(model, request, layers, refused)
        for layer in matched:
            name = request if len(matched) == 1 and not is_pattern(request) else layer.display
            q = _check_width(layer, name, size.of(layer.width, repr(name)))
            ctx = plan_group(model.graph, repr(name), layer.node, layer.width, layer.producer.embedding, new_outputs)
            if check is not None:
                check(ctx, name)
            find_ties(ctx)
            key = group_key(ctx)
            if key in planned:
                first, first_q = planned[key]
                if first_q != q:
                    raise GrowError(f"{name!r} and {first!r} are in one channel group and must get the "
                                    f"same width ({q} vs {first_q})")
                continue
            check_size(ctx, q, name)
            ctx.check(build_channel_map(ctx.width, ctx.units(q), init, noise, seed))
            planned[key] = (name, q)
            order.append((name, layer, q))
            groups.append(ctx)
    return WidenPlan(layers, order, groups)


def rewritten_group(layers: list[Layer], ctx: GroupContext, generated: Mapping[ir.Node, str], requested: str,
                    layer: Layer | str, q: int, seed: int) -> WidenGroup:
    """The report of a rewritten group; its unnamed producers keep their generated names from now on."""
    for node in ctx.producers:
        node.name = node.name or generated[node]
    label = layer if isinstance(layer, str) else display_name(layers, layer.node)
    return WidenGroup(requested, label, [display_name(layers, node) for node in ctx.producers],
                      ctx.width * ctx.blocks, q, [display_name(layers, node) for node in ctx.contractors],
                      merge_changes(ctx.changes), seed)


def display_name(layers: list[Layer], node: ir.Node) -> str:
    for layer in layers:
        if layer.node is node:
            return layer.display
    return node.name or node.op_type
