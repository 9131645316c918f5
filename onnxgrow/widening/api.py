"""``onnxgrow.widen``: resolve names, plan every channel group, rewrite, record lineage.

Every requested layer's group is planned on the untouched model first, so a refusal
or a conflict (two names in one group asking for different widths) leaves the model
as it was. Groups are then rewritten one after the other, each re-planned on the
current graph.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import onnx_ir as ir

from onnxgrow.constants import find_constant
from onnxgrow.errors import GrowError
from onnxgrow.grow import Progress, VerifyOptions, check_output_path, default_output, write_grown
from onnxgrow.lineage import append_history
from onnxgrow.model_io import load_model
from onnxgrow.names import generated_names
from onnxgrow.options import parse_choice
from onnxgrow.shapes import infer_shapes
from onnxgrow.verification import check_seed
from onnxgrow.widening.channel_map import Init, build_channel_map
from onnxgrow.widening.context import GroupContext, TensorChange
from onnxgrow.widening.layers import Layer, find_layer, find_layers
from onnxgrow.widening.planner import plan_group

#: Refuse requests that would need more than this many bytes (or the machine's memory, if less).
MAX_NEW_WEIGHT_BYTES = 64 * 1024**3


@dataclass
class GroupReport:
    """One channel group widened: its layers, widths, contracting nodes and changed tensors."""

    requested: str
    layers: list[str]
    old_width: int
    new_width: int
    contractors: list[str]
    changes: list[TensorChange]


@dataclass
class WidenReport:
    """What :func:`widen` did."""

    groups: list[GroupReport]
    init: str
    noise: float
    seed: int
    exact: bool
    verification: object | None = None
    notes: list[str] = field(default_factory=list)


def parse_init(init: str | Init) -> Init:
    return parse_choice(Init, init, "--init")


def _check_width(layer: Layer, name: str, width: object) -> int:
    if isinstance(width, bool) or not isinstance(width, int):
        raise GrowError(f"width for {name!r} must be an integer, got {width!r}")
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


def _check_size(ctx: GroupContext, q: int, name: str) -> None:
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
                largest = max(largest, grown // max(ref.tensor.dtype.itemsize, 1))
    needed = weights + 8 * largest + 17 * q
    limit = memory_limit()
    if needed > limit:
        raise GrowError(f"widening {name!r} from {ctx.width} to {q} would need about {_gib(needed)} of memory "
                        f"({_gib(weights)} of new weights); the limit is {_gib(limit)}")


def _gib(count: int) -> str:
    return f"{count / 1024**3:,.1f} GiB" if count < 1024**5 else f"{count / 1024**3:.3g} GiB"


def _group_key(ctx: GroupContext) -> frozenset[int]:
    return frozenset(id(node) for node in ctx.producers)


def widen(
    model: ir.Model | str | os.PathLike[str],
    widths: Mapping[str, int],
    *,
    init: str | Init = Init.NET2WIDER,
    noise: float = 0.0,
    seed: int = 0,
) -> tuple[ir.Model, WidenReport]:
    """Widen each named layer (and its channel group) to the given width.

    ``model`` is a path or an ``ir.Model`` (modified in place and returned). Raises
    GrowError for unknown/ambiguous names or bad widths, RefusedError (naming the
    blocking node) when a group cannot be widened exactly; then the model is unchanged.
    """
    if not isinstance(model, ir.Model):
        model = load_model(model, infer_shapes=True)
    if not widths:
        raise GrowError("nothing to widen: give at least one --node NAME --to WIDTH")
    init = parse_init(init)
    check_seed(seed)
    if (isinstance(noise, bool) or not isinstance(noise, (int, float)) or not math.isfinite(noise)
            or noise < 0 or (noise > 0 and init is not Init.NET2WIDER)):
        raise GrowError(f"--noise must be a finite number >= 0 and applies to --init net2wider only, got {noise!r}")
    infer_shapes(model)
    layers, refused = find_layers(model)
    requests: list[tuple[str, Layer, int]] = []
    for name, width in widths.items():
        layer = find_layer(model, name, layers, refused)
        requests.append((name, layer, _check_width(layer, name, width)))

    planned: dict[frozenset[int], tuple[str, int]] = {}
    order: list[tuple[str, Layer, int]] = []
    for name, layer, q in requests:
        ctx = plan_group(model.graph, repr(name), layer.node, layer.width, layer.producer.embedding)
        key = _group_key(ctx)
        if key in planned:
            first, first_q = planned[key]
            if first_q != q:
                raise GrowError(f"{name!r} and {first!r} are in one channel group and must get the "
                                f"same width ({q} vs {first_q})")
            continue
        _check_size(ctx, q, name)
        ctx.check(build_channel_map(layer.width, q, init, noise, seed))
        planned[key] = (name, q)
        order.append((name, layer, q))

    reports = []
    generated = generated_names(model.graph)
    for k, (name, layer, q) in enumerate(order):
        ctx = plan_group(model.graph, repr(name), layer.node, layer.width, layer.producer.embedding)
        ctx.rewrite(q, init, noise, seed + k)
        for node in ctx.producers:  # a grown unnamed layer keeps its generated name from now on
            node.name = node.name or generated[node]
        together = [_display(layers, node) for node in ctx.producers]
        reports.append(GroupReport(name, together, layer.width, q,
                                   [_display(layers, node) for node in ctx.contractors],
                                   _merge_changes(ctx.changes)))
        append_history(model, {
            "op": "widen", "node": name, "old_width": layer.width, "new_width": q,
            "init": init.value, "noise": noise, "seed": seed + k, "together": together,
        })
    return model, WidenReport(reports, init.value, noise, seed, init.exact)


def _display(layers: list[Layer], node: ir.Node) -> str:
    for layer in layers:
        if layer.node is node:
            return layer.display
    return node.name or node.op_type


def _merge_changes(changes: list[TensorChange]) -> list[TensorChange]:
    """One entry per tensor: first old shape, last new shape."""
    merged: dict[str, TensorChange] = {}
    for change in changes:
        if change.name in merged:
            first = merged[change.name]
            merged[change.name] = TensorChange(change.name, first.old_shape, change.new_shape, first.node)
        else:
            merged[change.name] = change
    return list(merged.values())


def widen_file(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str] | None,
    widths: Mapping[str, int],
    *,
    init: str | Init = Init.NET2WIDER,
    noise: float = 0.0,
    seed: int = 0,
    verify: VerifyOptions | None = None,
    max_shard_bytes: int | None = None,
    progress: Progress | None = None,
) -> WidenReport:
    """Widen the model file ``source`` and write it to ``output``, checked by onnxruntime.

    Nothing is written when the request is refused or the check fails (NotEquivalentError).
    ``max_shard_bytes`` splits the weights over data files of at most that size;
    ``progress`` follows the save and the check (see :data:`onnxgrow.grow.Progress`).
    """
    source = Path(source)
    out = Path(output) if output is not None else default_output(source)
    model = load_model(source, infer_shapes=True)
    check_output_path(source, out, model)
    model, report = widen(model, widths, init=init, noise=noise, seed=seed)
    report.verification = write_grown(
        model, source, out, expected_exact=report.exact, history_entries=len(report.groups),
        options=verify or VerifyOptions(), max_shard_bytes=max_shard_bytes, progress=progress,
    )
    return report
