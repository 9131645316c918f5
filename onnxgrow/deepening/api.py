"""``onnxgrow.deepen``: insert a layer after a named one, keeping the function (docs/design.md §5).

The new layer reads the tensor after the named layer X (after its bias Add, a following
BatchNorm and its activation ``a``: :mod:`onnxgrow.deepening.activation`) and replaces that
tensor ``v`` for every consumer. It is built like X (:mod:`onnxgrow.deepening.kinds`):

- ``identity``: ``a(I·v + 0)``, or ``I·v + 0`` when X has no activation. Exact when ``a``
  is idempotent; refused, with the reason, for any other activation.
- ``residual``: ``v + W2·a(W1·v + b1)`` with ``W1 = I``, ``b1 = 0``, ``W2 = 0``, ``b2 = 0``.
  The branch adds exactly zero whatever ``a`` is; its output weights get gradients
  from the first step.
- ``auto``: ``identity`` where it is exact, else ``residual``.

``width``: the new layer (``W1`` in the residual form) is then widened to ``width`` with
:class:`onnxgrow.widening.WidenOp`, which is exact. It is refused when not larger than X's
width, and after the model's last layer in identity mode (the output would change
shape). :class:`DeepenOp` plans by running the whole request on a clone of the model,
so any refusal, of the widening too, leaves the model as it was.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import onnx_ir as ir

from onnxgrow.constants import find_constant
from onnxgrow.deepening.activation import ActivationKind, InsertionPoint, find_insertion_point
from onnxgrow.deepening.kinds import kind_for
from onnxgrow.deepening.splice import Splice, fresh_scope
from onnxgrow.errors import GrowError, RefusedError
from onnxgrow.graph import node_label
from onnxgrow.growth_map import GrowthMap
from onnxgrow.growths import growth
from onnxgrow.lineage import COUNT, NAMES, OPTIONAL_TEXT, TEXT
from onnxgrow.options import GrowOptions, check_seed, parse_choice
from onnxgrow.pipeline import Report, grow, grow_file
from onnxgrow.shapes import infer_shapes
from onnxgrow.widening import Layer, WidenOp, WidenReport, find_layer, find_layers
from onnxgrow.widening.api import check_memory

#: Weight dtypes a new layer can be built in.
FLOAT_TYPES = frozenset({ir.DataType.FLOAT, ir.DataType.DOUBLE, ir.DataType.FLOAT16, ir.DataType.BFLOAT16})


class Mode(str, enum.Enum):
    """How the new layer keeps the function."""

    AUTO = "auto"
    IDENTITY = "identity"
    RESIDUAL = "residual"


@dataclass(kw_only=True)
class DeepenReport(Report):
    """What a deepening did (a :class:`~onnxgrow.pipeline.GrowthReport`); its growth map is
    the widening's of the new layer (``width``), else empty: a new layer's weights start fresh."""

    after: str
    layer: str
    mode: str
    activation: str | None
    layer_width: int
    width: int
    new_layer: str
    tensor: str
    new_nodes: list[str]
    new_layers: list[str]
    new_weights: list[tuple[str, tuple[int, ...]]]
    seed: int
    widened: WidenReport | None = None

    @property
    def growth_map(self) -> GrowthMap:
        return self.widened.growth_map if self.widened is not None else GrowthMap()

    def lines(self) -> list[str]:
        lines = [f"inserted {self.new_layer} after {self.after}: {self.form()} "
                 f"({self.layer_width} units, at tensor {self.tensor!r})",
                 f"  new nodes: {', '.join(self.new_nodes)}",
                 "  new weights: " + ", ".join(f"{name} {list(shape)}" for name, shape in self.new_weights)]
        for group in self.widened.groups if self.widened is not None else []:
            line = f"  widened {group.requested}: {group.old_width} → {group.new_width}"
            if group.contractors:
                line += f"; contracting layers adjusted: {', '.join(group.contractors)}"
            lines.append(line)
        return lines

    def form(self) -> str:
        """The inserted function in words: ``identity layer + Relu``, ``residual v + W2·Gelu(W1·v + b1), W2 = 0``."""
        if self.mode == "identity":
            return "identity layer" + (f" + {self.activation}" if self.activation else "")
        inner = f"{self.activation}(W1·v + b1)" if self.activation else "(W1·v + b1)"
        return f"residual v + W2·{inner}, W2 = 0"


def parse_mode(mode: str | Mode) -> Mode:
    return parse_choice(Mode, mode, "--mode")


def deepen_summary(layer: Layer, point: InsertionPoint | None = None) -> str:
    """What ``auto`` inserts after ``layer``: ``identity``, ``identity+Relu`` or ``residual (Gelu)``;
    ``-`` for layers no kind of new layer follows (an embedding lookup). ``point``: the
    layer's insertion point when the caller has found it already."""
    try:
        kind_for(layer.node)
    except GrowError:
        return "-"
    if point is None:
        point = find_insertion_point(layer.node)
    if point.kind is ActivationKind.OTHER:
        return f"residual ({point.label})"
    return f"identity+{point.label}" if point.label else "identity"


@growth("deepen")
class DeepenOp:
    """Insert a new layer after the layer named ``after`` (see the module docstring): a
    :class:`~onnxgrow.pipeline.GrowthOp`.

    The arguments are checked on construction (GrowError); ``plan`` raises GrowError for
    an unknown name or a bad width, RefusedError (naming the blocking node) when the
    request cannot be exact.
    """

    entry_keys = {"after": TEXT, "layer": TEXT, "mode": TEXT, "activation": OPTIONAL_TEXT, "width": COUNT,
                  "new_nodes": NAMES}
    infer_shapes = False

    def __init__(self, after: str, *, width: int | None = None, mode: str | Mode = Mode.AUTO,
                 seed: int = 0) -> None:
        if width is not None and (isinstance(width, bool) or not isinstance(width, int)):
            raise GrowError(f"--width must be an integer, got {width!r}")
        self.after, self.width, self.mode, self.seed = after, width, parse_mode(mode), check_seed(seed)

    def plan(self, model: ir.Model) -> InsertPlan:
        """Every check that needs no rewrite; with ``width``, the whole request also runs on a
        clone, so a refusal of the widening is raised here too, the model untouched."""
        if self.width is not None:
            clone = model.clone()
            _insert(clone, _prepare(clone, self.after, self.width, self.mode), self.width, self.seed)
        return _prepare(model, self.after, self.width, self.mode)

    def apply(self, model: ir.Model, plan: InsertPlan) -> DeepenReport:
        return _insert(model, plan, self.width, self.seed)

    def history(self, report: DeepenReport) -> list[dict[str, Any]]:
        """The insertion, then the widening of the new layer (with ``width``)."""
        entries: list[dict[str, Any]] = [{
            "op": "deepen", "after": report.after, "layer": report.layer, "mode": report.mode,
            "activation": report.activation, "width": report.layer_width, "new_nodes": report.new_layers,
            "seed": report.seed,
        }]
        if report.widened is not None:
            entries += WidenOp({report.new_layer: report.width}, seed=report.seed).history(report.widened)
        return entries

    @staticmethod
    def describe(entry: Mapping[str, Any]) -> str:
        """``layer inserted after fc1 (identity, width 64)``."""
        text = f"layer inserted after {entry.get('after')} ({entry.get('mode')}"
        if entry.get("width") is not None:
            text += f", width {entry['width']}"
        return text + ")"


def deepen(
    model: ir.Model | str | os.PathLike[str],
    after: str,
    *,
    width: int | None = None,
    mode: str | Mode = Mode.AUTO,
    seed: int = 0,
) -> tuple[ir.Model, DeepenReport]:
    """Insert a new layer after the layer named ``after`` (:class:`DeepenOp`).

    ``model`` is a path or an ``ir.Model`` (modified in place and returned); on a refusal
    the model is unchanged.
    """
    return grow(model, DeepenOp(after, width=width, mode=mode, seed=seed))


@dataclass
class InsertPlan:
    """Where the new layer goes and how: the layer named, the insertion point, the mode, the dtype."""

    after: str
    layer: Layer
    point: InsertionPoint
    mode: Mode
    dtype: ir.DataType


def _prepare(model: ir.Model, after: str, width: int | None, mode: Mode) -> InsertPlan:
    """Find the layer and the insertion point, choose the mode, check the width (reads only)."""
    layer = _find_layer(model, after)
    point = find_insertion_point(layer.node)
    chosen = _choose_mode(mode, point, after)
    dtype = _weight_dtype(layer, after)
    _check_memory(layer, chosen, dtype, after)
    if width is not None:
        _check_width(width, layer.width, after, chosen, point)
    return InsertPlan(after, layer, point, chosen, dtype)


def _check_memory(layer: Layer, mode: Mode, dtype: ir.DataType, after: str) -> None:
    """Refuse before building when the new layers would not fit in memory: each holds a square
    weight (``n × n``, times the kernel's taps for a convolution), built in float64 and then
    cast to the layer's dtype; the residual form has two."""
    values = (2 if mode is Mode.RESIDUAL else 1) * kind_for(layer.node).weight_values(layer.width)
    weights = int(values * dtype.itemsize)
    check_memory(weights + 8 * values, weights, f"deepening after {after!r} ({layer.width} units wide)")


def _insert(model: ir.Model, plan: InsertPlan, width: int | None, seed: int) -> DeepenReport:
    layer, point = plan.layer, plan.point
    splice = Splice(model.graph, point.tensor, plan.dtype)
    tensor_name = point.tensor.name or ""
    scope = fresh_scope(model.graph, f"{layer.display.strip('/') or layer.op_type}_deep")
    new_layers = _build(splice, layer, point, plan.mode, scope)
    widened = _widen_new_layer(model, scope, width, plan.after, seed) if width is not None else None
    return DeepenReport(
        after=plan.after, layer=layer.display, mode=plan.mode.value, activation=point.label,
        layer_width=layer.width, width=width if width is not None else layer.width, new_layer=scope,
        tensor=tensor_name, new_nodes=[node.name or node.op_type for node in splice.nodes], new_layers=new_layers,
        new_weights=[(w.name or "", tuple(w.shape.numpy()) if w.shape is not None else ()) for w in splice.weights],
        seed=seed, widened=widened,
    )


def _build(splice: Splice, layer: Layer, point: InsertionPoint, mode: Mode, scope: str) -> list[str]:
    """Build ``a(I·v)`` or ``v + 0·a(I·v)`` reading ``point.tensor`` and splice it in; the new layers' names."""
    new_kind = kind_for(layer.node)
    v, n = point.tensor, layer.width
    output = new_kind.emit(splice, v, n, scope, identity=True)
    if point.activation:
        output = splice.copy_region(point.activation, point.start, v, output, scope)
    new_layers = [scope]
    if mode is Mode.RESIDUAL:
        new_layers.append(f"{scope}_out")
        branch = new_kind.emit(splice, output, n, new_layers[1], identity=False)
        output = splice.node("Add", [v, branch], f"{scope}/residual_add", like=v)
    splice.connect(output, scope)
    return new_layers


def _find_layer(model: ir.Model, after: str) -> Layer:
    """The layer ``after`` names; a non-growable node of a layer op type is refused as such,
    and a block's name is answered with ``--block``."""
    layers, refused = find_layers(model)
    try:
        return find_layer(model, after, layers, refused)
    except GrowError as exc:
        hint = _block_hint(model, after)
        for item in refused:
            if after in item.names.all():
                raise GrowError(f"cannot deepen after {after!r}: {node_label(item.node)} is not a "
                                f"growable layer ({item.reason}){hint}") from None
        if hint:
            raise GrowError(f"{exc}{hint}") from None
        raise


def _block_hint(model: ir.Model, name: str) -> str:
    """``; model.layers.1 is a block: --block model.layers.1 inserts copies of it`` when ``name``
    names a block (:mod:`onnxgrow.deepening.block_op`), else nothing."""
    from onnxgrow.structure import find_structure

    try:
        block = find_structure(model).block(name)
    except GrowError:
        return ""
    return f"; {block.label} is a block: --block {block.label} inserts copies of it"


def _choose_mode(mode: Mode, point: InsertionPoint, after: str) -> Mode:
    """The mode that runs: identity where exact under auto, residual otherwise; identity refused where inexact."""
    if mode is Mode.RESIDUAL:
        return Mode.RESIDUAL
    if point.kind is not ActivationKind.OTHER:
        return Mode.IDENTITY
    if mode is Mode.AUTO:
        return Mode.RESIDUAL
    first = point.activation[0]
    raise RefusedError(
        f"--mode identity after {after!r} is not exact: its activation {point.label} "
        f"(from {node_label(first)}) is not idempotent, a(a(v)) != a(v); use --mode residual "
        "or auto, which are exact for every activation", first.name)


def _check_width(width: int, n: int, after: str, mode: Mode, point: InsertionPoint) -> None:
    if width <= n:
        raise GrowError(f"--width {width} must be larger than the width of {after!r} ({n}), "
                        "which the new layer starts with")
    if mode is Mode.IDENTITY and point.tensor.is_graph_output():
        raise RefusedError(
            f"--width after {after!r}, the model's last layer, would change the shape of model "
            f"output {point.tensor.name!r}; deepen without --width, or with --mode residual "
            "(its widened branch ends in a layer of the original width)", point.tensor.name)


def _weight_dtype(layer: Layer, after: str) -> ir.DataType:
    ref = find_constant(layer.producer.weight)
    if ref is None or ref.dtype not in FLOAT_TYPES:
        dtype = ref.dtype.name if ref is not None else "unknown"
        raise GrowError(f"cannot deepen after {after!r}: its weight has dtype {dtype}; "
                        "only floating-point layers can be deepened")
    return ref.dtype


def _widen_new_layer(model: ir.Model, scope: str, width: int, after: str, seed: int) -> WidenReport:
    """Widen the inserted layer (its lineage is recorded by :meth:`DeepenOp.history`)."""
    op = WidenOp({scope: width}, seed=seed)
    infer_shapes(model)  # the new layer's values
    try:
        return op.apply(model, op.plan(model))
    except RefusedError as exc:
        raise RefusedError(f"cannot deepen after {after!r} with --width {width}: {exc}", exc.node) from None
    except GrowError as exc:
        raise GrowError(f"cannot deepen after {after!r} with --width {width}: {exc}") from None


def deepen_file(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str] | None,
    after: str,
    *,
    width: int | None = None,
    mode: str | Mode = Mode.AUTO,
    seed: int = 0,
    options: GrowOptions | None = None,
) -> DeepenReport:
    """Deepen the model file ``source`` and write it to ``output``, checked by onnxruntime
    (:func:`onnxgrow.pipeline.grow_file` with a :class:`DeepenOp`)."""
    return grow_file(source, output, DeepenOp(after, width=width, mode=mode, seed=seed), options)
