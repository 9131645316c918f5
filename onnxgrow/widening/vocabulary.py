"""Growing a vocabulary: rows appended to an embedding table, and its LM head's classes.

``grow_vocabulary(model, {"embed_tokens": 120})`` appends rows to the constant table
``[V, D]`` of an embedding lookup (``Gather(table, ids)`` on axis 0) so it has 120. Old
ids read the same rows, so every output computed from old ids is unchanged. New rows
(:class:`RowInit`): ``mean`` of the old rows (the default), ``zero-pad`` (zeros) or
``random-pad`` (seeded normal with the table's standard deviation).

The LM head grows with it, its classes (output units) appended like ``--new-outputs``
(:mod:`onnxgrow.widening.new_outputs`), when it is

- **tied**: a MatMul or Gemm reading the same initializer (through a Transpose), or a
  constant equal to the table transposed (an exporter that folded the transpose): its
  new output units are the new rows, so it stays tied;
- **named** (``head=``): an untied head; its new units start like the new table rows:
  the mean of the head's old rows (as Hugging Face's ``resize_token_embeddings`` does), zero
  rows (new tokens start at logit 0) or seeded random rows.

The check then draws only old ids (``input_high``: the ids input in ``[0, V)``) and
compares the grown logits restricted to the old vocabulary. The lineage records the new
range (``input_range``), so verifying the grown model against itself draws new ids too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxgrow.constants import PASS_THROUGH_OPS, ConstantRef, find_constant
from onnxgrow.errors import GrowError, RefusedError
from onnxgrow.graph import model_input_behind
from onnxgrow.growth_map import build_growth_map
from onnxgrow.options import GrowOptions, VerifyScope, check_seed, parse_choice
from onnxgrow.pipeline import grow, grow_file
from onnxgrow.shapes import infer_shapes
from onnxgrow.widening import new_outputs as classes
from onnxgrow.widening.api import GroupReport, WidenReport
from onnxgrow.widening.channel_map import Init
from onnxgrow.widening.context import (
    EDIT_LOG,
    AxisRecord,
    GroupContext,
    TensorChange,
    WeightEdit,
    chain_axes,
)
from onnxgrow.widening.layers import Layer, find_layer, find_layers
from onnxgrow.widening.planner import plan_group

#: Ops an ids input may pass through on its way to the lookup.
_ID_CARRIERS = frozenset({"Identity", "Cast", "Reshape", "Flatten", "Squeeze", "Unsqueeze"})


class RowInit(str, Enum):
    """How new vocabulary rows start."""

    MEAN = "mean"
    ZERO_PAD = "zero-pad"
    RANDOM_PAD = "random-pad"


def new_rows(table: np.ndarray, count: int, init: RowInit, rng: np.random.Generator) -> np.ndarray:
    """``count`` new rows for ``table`` [V, D], in its dtype."""
    wide = table.astype(np.float64)
    if init is RowInit.MEAN:
        rows = np.broadcast_to(wide.mean(axis=0), (count, table.shape[1]))
    elif init is RowInit.ZERO_PAD:
        rows = np.zeros((count, table.shape[1]))
    else:
        rows = rng.normal(0.0, float(wide.std()) or 0.02, size=(count, table.shape[1]))
    return rows.astype(table.dtype)


def _appended(array: np.ndarray, axis: int, block: np.ndarray) -> np.ndarray:
    """``array`` with ``block`` appended along ``axis``; tells the edit log (new rows are fresh)."""
    axis %= array.ndim
    out = np.concatenate([array, block], axis=axis)
    log = EDIT_LOG.get()
    if log is not None:
        old, new = array.shape[axis], out.shape[axis]
        fresh = np.arange(new) >= old
        log.append(AxisRecord("produce", axis, np.where(fresh, 0, np.arange(new)), np.ones(new), fresh))
    return out


def _grow_root(ref: ConstantRef, grown: np.ndarray) -> None:
    """Replace the table's initializer by ``grown`` for every reader (shared by a tied head:
    the Transposes in between see the new shape too)."""
    ref.root.const_value = ir.Tensor(np.require(grown, requirements="C"), name=ref.root.name, dtype=ref.dtype)
    ref.root.shape = ir.Shape(grown.shape)
    stack = [(ref.root, tuple(grown.shape))]
    while stack:
        value, shape = stack.pop()
        for use in value.uses():
            node = use.node
            if node.op_type not in PASS_THROUGH_OPS or node.domain not in ("", "ai.onnx"):
                continue
            perm = node.attributes.get_ints("perm", None) if node.op_type == "Transpose" else None
            if node.op_type == "Transpose":
                perm = list(range(len(shape)))[::-1] if perm is None else list(perm)
            out = tuple(shape[p] for p in perm) if perm is not None else shape
            if node.outputs[0].type is not None:
                node.outputs[0].shape = ir.Shape(out)
            stack.append((node.outputs[0], out))


def _ids_input(node: ir.Node) -> ir.Value | None:
    """The model input the lookup's ids come from (through casts and reshapes), if any."""
    return model_input_behind(node.inputs[1], _ID_CARRIERS)


def _head_width_axis(node: ir.Node) -> int | None:
    """The axis of the head's weight (as the node sees it) that runs over the vocabulary."""
    if node.op_type == "MatMul":
        return 1
    if node.op_type == "Gemm":
        return 0 if node.attributes.get_int("transB", 0) else 1
    return None


def _tied_head(layers: list[Layer], table: ConstantRef, vocab: int) -> Layer | None:
    """The MatMul/Gemm whose weight is the table: the same initializer, or equal to it transposed."""
    array = None
    for layer in layers:
        axis = _head_width_axis(layer.node)
        ref = find_constant(layer.node.inputs[1]) if axis is not None else None
        if ref is None or layer.width != vocab or axis is None:
            continue
        if ref.root is table.root:
            return layer
        view = ref.array()
        table_shape = tuple(table.tensor.shape.numpy())
        if tuple(view.shape) == (table_shape if axis == 0 else table_shape[::-1]):
            array = table.array() if array is None else array
            if np.array_equal(view, array if axis == 0 else array.T):
                return layer
    return None


@dataclass
class TablePlan:
    """One table to grow: its lookup, table, old and new row counts, and its LM head."""

    name: str
    layer: Layer
    table: ConstantRef
    vocab: int
    rows: int
    head: Layer | None
    tied: bool


class VocabularyOp:
    """Grow each named embedding table to the given number of rows, and its LM head: a
    :class:`~onnxgrow.pipeline.GrowthOp` (see the module docstring).

    The arguments are checked on construction (GrowError); ``plan`` raises GrowError for a
    name that is no embedding lookup or a size not larger than the table, RefusedError
    (naming the node) when the head's classes cannot grow. The report is a
    :class:`~onnxgrow.widening.api.WidenReport` whose groups have ``kind`` "rows".
    """

    infer_shapes = True

    def __init__(self, rows: Mapping[str, int], *, head: str | None = None, init: str | RowInit | None = None,
                 seed: int = 0,
                 old_probabilities: str | classes.OldProbabilities = classes.OldProbabilities.EXACT) -> None:
        if not rows:
            raise GrowError("nothing to grow: give at least one --node NAME --rows ROWS")
        for name, count in rows.items():
            if isinstance(count, bool) or not isinstance(count, int):
                raise GrowError(f"--rows for {name!r} must be an integer, got {count!r}")
        if head is not None and len(rows) != 1:
            raise GrowError("--head names the LM head of one vocabulary: grow one table at a time")
        self.rows = dict(rows)
        self.head = head
        self.init = parse_choice(RowInit, init if init is not None else RowInit.MEAN, "--init")
        self.seed = check_seed(seed)
        self.old = classes.parse_old_probabilities(old_probabilities)

    def plan(self, model: ir.Model) -> list[TablePlan]:
        infer_shapes(model)
        layers, refused = find_layers(model)
        plans = []
        for name, count in self.rows.items():
            layer = find_layer(model, name, layers, refused)
            table = find_constant(layer.node.inputs[0]) if layer.op_type == "Gather" else None
            if table is None:
                raise GrowError(f"--rows grows an embedding table (a Gather from a constant [vocabulary, width]); "
                                f"{name!r} is a {layer.op_type} node")
            if table.chain or table.root.producer() is not None or not table.root.is_initializer() \
                    or table.root.is_graph_input():
                raise RefusedError(f"cannot grow {name!r}: its table {table.root.name!r} is not a plain "
                                   "initializer the lookup reads directly", layer.node.name)
            vocab = int(table.tensor.shape.numpy()[0])
            if count <= vocab:
                raise GrowError(f"--rows for {name!r} must be larger than its {vocab} rows, got {count}")
            head = find_layer(model, self.head, layers, refused) if self.head is not None else \
                _tied_head(layers, table, vocab)
            tied = head is not None and (self.head is None or _tied_head([head], table, vocab) is not None)
            if head is not None:
                if _head_width_axis(head.node) is None or head.width != vocab:
                    raise GrowError(f"--head {self.head!r} must be a MatMul or Gemm with {vocab} outputs (one per "
                                    f"row of {name!r}), got a {head.op_type} with {head.width}")
                ctx = plan_group(model.graph, repr(head.display), head.node, vocab, head.producer.embedding,
                                 new_outputs=True)
                classes.check_last_layer(ctx, repr(head.display))
                classes.plan_probabilities(ctx, self.old)
            plans.append(TablePlan(name, layer, table, vocab, count, head, tied))
        return plans

    def apply(self, model: ir.Model, plans: list[TablePlan]) -> WidenReport:
        reports, edits, scopes = [], [], []
        rng = np.random.default_rng(self.seed)
        for p in plans:
            old_table = p.table.tensor.numpy()
            grown = np.concatenate([old_table, new_rows(old_table, p.rows - p.vocab, self.init, rng)], axis=0)
            _grow_root(p.table, grown)
            fresh = np.arange(p.rows) >= p.vocab
            edits.append(WeightEdit(p.layer.node, 0, p.table.root.name or "", chain_axes(p.table, 2),
                                    [AxisRecord("produce", 0, np.where(fresh, 0, np.arange(p.rows)), np.ones(p.rows),
                                              fresh)], tuple(old_table.shape)))
            changes = [TensorChange(p.table.root.name or "?", tuple(old_table.shape), tuple(grown.shape),
                                    p.layer.node.name or "Gather")]
            found = None
            if p.head is not None:
                ctx = plan_group(model.graph, repr(p.head.display), p.head.node, p.vocab, p.head.producer.embedding,
                                 new_outputs=True)
                head_init = Init.RANDOM_PAD if self.init is RowInit.RANDOM_PAD and not p.tied else Init.ZERO_PAD
                ctx.rewrite(p.rows, head_init, 0.0, self.seed, keep=frozenset({p.head.node}))
                _grow_head(ctx, p.head.node, p.table, grown, p.tied, head_init, mean=self.init is RowInit.MEAN)
                found = classes.finish(ctx, Init.ZERO_PAD, self.old, p.head.display, keep=frozenset({p.head.node}))
                edits.extend(ctx.edits)
                changes += ctx.changes
            ids = _ids_input(p.layer.node)
            highs = {ids.name: p.vocab} if ids is not None and ids.name else {}
            what = f"ids of {', '.join(highs) or 'the lookup'} in [0, {p.vocab})"
            what += f"; {found.words}" if found else ""
            scope = VerifyScope(found.outputs if found else {}, highs, what, found.renormalise if found else {})
            scopes.append(scope)
            layers = [p.name] + ([p.head.display] if p.head is not None else [])
            reports.append(GroupReport(p.name, p.name, layers, p.vocab, p.rows, [], _merged(changes), self.seed,
                                       "rows", what, scope, None, p.tied))
        report = WidenReport(reports, self.init.value, 0.0, self.seed, True, scope=VerifyScope.merged(scopes),
                             map_builder=lambda: build_growth_map(model, edits))
        for p in plans:
            if p.head is None:
                report.notes.append(f"no LM head grew with {p.name}: none is tied to its table "
                                    "(name an untied one with --head)")
            elif p.tied:
                report.notes.append(f"{p.head.display} is tied to {p.name}: its new classes are the new rows")
        return report

    def history(self, report: WidenReport) -> list[dict[str, Any]]:
        """One entry per table, with the id range the grown model accepts (``input_range``)."""
        return [{
            "op": "vocabulary", "node": group.requested, "old_rows": group.old_width, "new_rows": group.new_width,
            "init": report.init, "seed": report.seed, "head": group.layers[1] if len(group.layers) > 1 else None,
            "tied": group.tied_head,
            "input_range": {k: group.new_width for k in group.scope.input_high},
            "verify_scope": group.scope.to_json(),
        } for group in report.groups]


def grow_vocabulary(
    model: ir.Model | str | os.PathLike[str],
    rows: Mapping[str, int],
    *,
    head: str | None = None,
    init: str | RowInit | None = None,
    seed: int = 0,
    old_probabilities: str | classes.OldProbabilities = classes.OldProbabilities.EXACT,
) -> tuple[ir.Model, WidenReport]:
    """Grow each named embedding table to the given number of rows, and its LM head
    (:class:`VocabularyOp`). ``model`` is a path or an ``ir.Model`` (modified in place and
    returned); on a refusal the model is unchanged."""
    return grow(model, VocabularyOp(rows, head=head, init=init, seed=seed, old_probabilities=old_probabilities))


def _grow_head(ctx: GroupContext, node: ir.Node, table: ConstantRef, grown: np.ndarray, tied: bool,
               init: Init, mean: bool) -> None:
    """The head's weight gets its new output units: the new table rows when tied (nothing to do
    when it reads the table's own initializer), else the mean of its old units (``mean``),
    zero or random ones; a Gemm's bias over the vocabulary gets zeros."""
    axis = _head_width_axis(node)
    assert axis is not None
    bias = node.inputs[2] if node.op_type == "Gemm" and len(node.inputs) > 2 else None
    bias_ref = find_constant(bias)
    if bias_ref is not None and bias_ref.array().shape[-1:] == (ctx.width,):
        ctx.edit(node, 2, lambda c: _appended(c, -1, np.zeros((*c.shape[:-1], grown.shape[0] - ctx.width), c.dtype)))
    ref = find_constant(node.inputs[1])
    assert ref is not None
    if tied and ref.root is table.root:
        return
    vocab = ref.array().shape[axis]
    extra = grown.shape[0] - vocab
    if tied:
        rows = grown[vocab:]
        block = rows if axis == 0 else rows.T
    else:
        view_shape = list(ref.array().shape)
        view_shape[axis] = extra
        if init is Init.RANDOM_PAD:
            std = float(np.std(ref.array().astype(np.float64))) or 0.02
            block = ctx.rng.normal(0.0, std, size=view_shape)
        elif mean:
            block = np.broadcast_to(ref.array().astype(np.float64).mean(axis=axis, keepdims=True), view_shape)
        else:
            block = np.zeros(view_shape)
    ctx.edit(node, 1, lambda w: _appended(w, axis, block.astype(w.dtype)))


def _merged(changes: list[TensorChange]) -> list[TensorChange]:
    merged: dict[str, TensorChange] = {}
    for change in changes:
        first = merged.get(change.name, change)
        merged[change.name] = TensorChange(change.name, first.old_shape, change.new_shape, first.node)
    return list(merged.values())


def grow_vocabulary_file(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str] | None,
    rows: Mapping[str, int],
    *,
    head: str | None = None,
    init: str | RowInit | None = None,
    seed: int = 0,
    old_probabilities: str | classes.OldProbabilities = classes.OldProbabilities.EXACT,
    options: GrowOptions | None = None,
) -> WidenReport:
    """Grow the vocabulary of the model file ``source`` and write it to ``output``, checked by
    onnxruntime on old ids and old logits (:func:`onnxgrow.pipeline.grow_file` with a
    :class:`VocabularyOp`); nothing is written when refused or when the check fails."""
    op = VocabularyOp(rows, head=head, init=init, seed=seed, old_probabilities=old_probabilities)
    return grow_file(source, output, op, options)
