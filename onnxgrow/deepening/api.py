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
:func:`onnxgrow.widening.widen`, which is exact. It is refused when not larger than X's
width, and after the model's last layer in identity mode (the output would change
shape). The whole request is first run on a clone of the model, so any refusal of the
widening leaves the model as it was.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from pathlib import Path

import onnx_ir as ir

from onnxgrow.constants import find_constant
from onnxgrow.deepening.activation import ActivationKind, InsertionPoint, find_insertion_point
from onnxgrow.deepening.kinds import kind_for
from onnxgrow.deepening.splice import Splice, fresh_scope
from onnxgrow.errors import GrowError, RefusedError
from onnxgrow.graph import node_label
from onnxgrow.grow import Progress, VerifyOptions, check_output_path, default_output, write_grown
from onnxgrow.lineage import append_history
from onnxgrow.model_io import load_model
from onnxgrow.options import parse_choice
from onnxgrow.shapes import infer_shapes
from onnxgrow.verification import check_seed
from onnxgrow.widening import Layer, WidenReport, find_layer, find_layers, widen

#: Weight dtypes a new layer can be built in.
FLOAT_TYPES = frozenset({ir.DataType.FLOAT, ir.DataType.DOUBLE, ir.DataType.FLOAT16, ir.DataType.BFLOAT16})


class Mode(str, enum.Enum):
    """How the new layer keeps the function."""

    AUTO = "auto"
    IDENTITY = "identity"
    RESIDUAL = "residual"


@dataclass
class DeepenReport:
    """What :func:`deepen` did."""

    after: str
    layer: str
    mode: str
    activation: str | None
    layer_width: int
    width: int
    new_layer: str
    tensor: str
    new_nodes: list[str]
    new_weights: list[tuple[str, tuple[int, ...]]]
    seed: int
    widened: WidenReport | None = None
    exact: bool = True
    verification: object | None = None

    @property
    def history_entries(self) -> int:
        """Lineage entries this operation appended (the insertion, then any widening)."""
        return 1 + (len(self.widened.groups) if self.widened is not None else 0)


def parse_mode(mode: str | Mode) -> Mode:
    return parse_choice(Mode, mode, "--mode")


def deepen_summary(layer: Layer) -> str:
    """What ``auto`` inserts after ``layer``: ``identity``, ``identity+Relu`` or ``residual (Gelu)``;
    ``-`` for layers no kind of new layer follows (an embedding lookup)."""
    try:
        kind_for(layer.node)
    except GrowError:
        return "-"
    point = find_insertion_point(layer.node)
    if point.kind is ActivationKind.OTHER:
        return f"residual ({point.label})"
    return f"identity+{point.label}" if point.label else "identity"


def deepen(
    model: ir.Model | str | os.PathLike[str],
    after: str,
    *,
    width: int | None = None,
    mode: str | Mode = Mode.AUTO,
    seed: int = 0,
) -> tuple[ir.Model, DeepenReport]:
    """Insert a new layer after the layer named ``after`` (see the module docstring).

    ``model`` is a path or an ``ir.Model`` (modified in place and returned). Raises
    GrowError for an unknown name or a bad width, RefusedError (naming the blocking
    node) when the request cannot be exact; then the model is unchanged.
    """
    if not isinstance(model, ir.Model):
        model = load_model(model)
    mode = parse_mode(mode)
    check_seed(seed)
    if width is not None:
        if isinstance(width, bool) or not isinstance(width, int):
            raise GrowError(f"--width must be an integer, got {width!r}")
        _insert(model.clone(), after, width, mode, seed)  # a dry run: refusals leave `model` as it was
    return model, _insert(model, after, width, mode, seed)


def _insert(model: ir.Model, after: str, width: int | None, mode: Mode, seed: int) -> DeepenReport:
    infer_shapes(model)
    layer = _find_layer(model, after)
    point = find_insertion_point(layer.node)
    chosen = _choose_mode(mode, point, after)
    if width is not None:
        _check_width(width, layer.width, after, chosen, point)
    splice = Splice(model.graph, point.tensor, _weight_dtype(layer, after))
    tensor_name = point.tensor.name or ""
    scope = fresh_scope(model.graph, f"{layer.display.strip('/') or layer.op_type}_deep")
    new_layers = _build(splice, layer, point, chosen, scope)
    append_history(model, {
        "op": "deepen", "after": after, "layer": layer.display, "mode": chosen.value,
        "activation": point.label, "width": layer.width, "new_nodes": new_layers, "seed": seed,
    })
    widened = _widen_new_layer(model, scope, width, after, seed) if width is not None else None
    return DeepenReport(
        after, layer.display, chosen.value, point.label, layer.width,
        width if width is not None else layer.width, scope, tensor_name,
        [node.name or node.op_type for node in splice.nodes],
        [(w.name or "", tuple(w.shape.numpy()) if w.shape is not None else ()) for w in splice.weights],
        seed, widened,
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
    """The layer ``after`` names; a non-growable node of a layer op type is refused as such."""
    layers, refused = find_layers(model)
    try:
        return find_layer(model, after, layers, refused)
    except GrowError:
        for item in refused:
            if after in item.names.all():
                raise GrowError(f"cannot deepen after {after!r}: {node_label(item.node)} is not a "
                                f"growable layer ({item.reason})") from None
        raise


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
    try:
        return widen(model, {scope: width}, seed=seed)[1]
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
    verify: VerifyOptions | None = None,
    progress: Progress | None = None,
) -> DeepenReport:
    """Deepen the model file ``source`` and write it to ``output``, checked by onnxruntime.

    Nothing is written when the request is refused or the check fails (NotEquivalentError).
    """
    source = Path(source)
    out = Path(output) if output is not None else default_output(source)
    model = load_model(source)
    check_output_path(source, out, model)
    model, report = deepen(model, after, width=width, mode=mode, seed=seed)
    report.verification = write_grown(
        model, source, out, expected_exact=report.exact, history_entries=report.history_entries,
        options=verify or VerifyOptions(), progress=progress,
    )
    return report
