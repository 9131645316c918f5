"""Growing a vocabulary: rows appended to an embedding table, and its LM head's classes.

``grow_vocabulary(model, {"embed_tokens": 120})`` appends rows to the constant table
``[V, D]`` of an embedding lookup (``Gather(table, ids)`` on axis 0) so it has 120. Old
ids read the same rows, so every output computed from old ids is unchanged. New rows
(:class:`RowInit`): ``mean`` of the old rows (the default), ``zero-pad`` (zeros) or
``random-pad`` (seeded normal with the table's standard deviation).

A table may be named by its lookup (``embed_tokens``) or by its own name (``shared``: the
initializer ``shared`` or ``shared.weight``, or the name every lookup of it answers to), which
designates the table every lookup of it reads (an encoder-decoder's shared embedding).

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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxgrow.constants import ConstantRef, find_constant
from onnxgrow.errors import GrowError, RefusedError
from onnxgrow.graph import model_input_behind
from onnxgrow.growth_map import build_growth_map
from onnxgrow.growths import growth
from onnxgrow.lineage import COUNT, FLAG, OPTIONAL_TEXT
from onnxgrow.names import is_pattern
from onnxgrow.options import GrowOptions, VerifyScope, check_seed, parse_choice
from onnxgrow.pipeline import Report, grow, grow_file
from onnxgrow.sizes import Size
from onnxgrow.widening import new_outputs as classes
from onnxgrow.widening.api import check_memory, check_size
from onnxgrow.widening.channel_map import Init
from onnxgrow.widening.context import GroupContext, TensorChange, change_lines, merge_changes
from onnxgrow.widening.layers import Layer, NotGrowable, find_layer, find_layers
from onnxgrow.widening.patterns import expand_layers
from onnxgrow.widening.planner import plan_group
from onnxgrow.widening.rules.common import appending
from onnxgrow.widening.tied import head_width_axis, reads_table

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


def _lookups_of_table(name: str, layers: list[Layer]) -> list[Layer]:
    """The first lookup of one table when ``name`` designates the table rather than one layer:
    several lookups answer to it and all read that table (optimum names T5's ``encoder.shared``
    and ``decoder.shared``), or none does and the table is the initializer ``name`` or
    ``name.weight`` (the TorchScript exporter's ``encoder.embed_tokens`` reading ``shared.weight``).
    Growing the table grows it for every lookup reading it. Empty otherwise: the name is
    resolved as a layer's."""
    answering = [layer for layer in layers if name in layer.names.all()]
    if len(answering) == 1:
        return []
    candidates = answering or [layer for layer in layers if layer.op_type == "Gather" and layer.node.inputs[0]
                               is not None and layer.node.inputs[0].name in (name, f"{name}.weight")]
    tables = {id(layer.node.inputs[0]) for layer in candidates}
    if candidates and len(tables) == 1 and all(layer.op_type == "Gather" for layer in candidates):
        return candidates[:1]
    return []


def _check_rows_size(name: str, table: ConstantRef, vocab: int, count: int) -> None:
    """Refuse before allocating a grown table that would not fit in memory: the new table, and
    its new rows drawn in float64 (:func:`new_rows`)."""
    grown = table.tensor.nbytes * count // max(vocab, 1)
    row = int(table.tensor.shape.numpy()[1]) if len(table.tensor.shape) > 1 else 1
    check_memory(grown + 8 * (count - vocab) * row, grown, f"growing {name!r} from {vocab} to {count} rows")


def _head_reads_table(head: Layer | None, table: ConstantRef) -> bool:
    """Whether the LM head reads the table's own initializer (through a Transpose)."""
    ref = find_constant(head.node.inputs[1]) if head is not None else None
    return ref is not None and ref.root is table.root


def _ids_input(node: ir.Node) -> ir.Value | None:
    """The model input the lookup's ids come from (through casts and reshapes), if any."""
    return model_input_behind(node.inputs[1], _ID_CARRIERS)


def _tied_head(layers: list[Layer], table: ConstantRef, vocab: int) -> Layer | None:
    """The MatMul/Gemm of ``vocab`` outputs whose weight is the table (:func:`~onnxgrow.widening.tied.reads_table`)."""
    return next((layer for layer in layers if layer.width == vocab and reads_table(layer.node, table)), None)


@dataclass
class VocabularyGroup:
    """One table grown: the name asked for, its rows before and after, its LM head (tied or
    not), the tensors changed, and what the check compares (words and scope)."""

    requested: str
    old_rows: int
    new_rows: int
    head: str | None
    tied: bool
    changes: list[TensorChange]
    compared: str
    scope: VerifyScope

    @property
    def layers(self) -> list[str]:
        """The table's lookup, then its head when one grew."""
        return [self.requested] + ([self.head] if self.head is not None else [])


@dataclass(kw_only=True)
class VocabularyReport(Report):
    """What a vocabulary growth did (a :class:`~onnxgrow.pipeline.GrowthReport`)."""

    groups: list[VocabularyGroup]
    init: str
    seed: int

    def lines(self) -> list[str]:
        lines = []
        for group in self.groups:
            lines.append(f"grown {group.requested}: {group.old_rows} → {group.new_rows} rows ({self.init})")
            lines += change_lines(group.changes, group.compared)
        return lines


@dataclass
class TablePlan:
    """One table to grow: its lookup, old and new row counts, and its LM head."""

    name: str
    layer: Layer
    vocab: int
    rows: int
    head: Layer | None
    tied: bool
    #: The channel group of the head's classes, as planned on the untouched model.
    head_group: GroupContext | None


@dataclass
class VocabularyPlan:
    """Every table to grow, and the channel groups of their heads' classes."""

    tables: list[TablePlan]

    @property
    def groups(self) -> list[GroupContext]:
        return [t.head_group for t in self.tables if t.head_group is not None]


@growth("vocabulary")
class VocabularyOp:
    """Grow each named embedding table to the given number of rows, and its LM head: a
    :class:`~onnxgrow.pipeline.GrowthOp` (see the module docstring).

    The arguments are checked on construction (GrowError); ``plan`` raises GrowError for a
    name that is no embedding lookup or a size not larger than the table, RefusedError
    (naming the node) when the head's classes cannot grow.
    """

    infer_shapes = True
    entry_keys = {"old_rows": COUNT, "new_rows": COUNT, "head": OPTIONAL_TEXT, "tied": FLAG}

    def __init__(self, rows: Mapping[str, int | str | Size], *, head: str | None = None,
                 init: str | RowInit | None = None, seed: int = 0,
                 old_probabilities: str | classes.OldProbabilities = classes.OldProbabilities.EXACT) -> None:
        if not rows:
            raise GrowError("nothing to grow: give at least one --node NAME --rows ROWS")
        for name, count in rows.items():
            if isinstance(count, (bool, float)) or not isinstance(count, (int, str, Size)):
                raise GrowError(f"--rows for {name!r} must be an integer, got {count!r}")
        if head is not None and len(rows) != 1:
            raise GrowError("--head names the LM head of one vocabulary: grow one table at a time")
        self.rows = {name: Size.parse(count, f"--rows for {name!r}") for name, count in rows.items()}
        self.head = head
        self.init = parse_choice(RowInit, init if init is not None else RowInit.MEAN, "--init")
        self.seed = check_seed(seed)
        self.old = classes.parse_old_probabilities(old_probabilities)

    def plan(self, model: ir.Model) -> VocabularyPlan:
        """Every named table (or every one a pattern names) with its new row count and its head."""
        layers, refused = find_layers(model)
        plans = []
        for request, size in self.rows.items():
            matched = _lookups_of_table(request, layers) or expand_layers(model, request, layers, refused)
            for layer in matched:
                name = request if len(matched) == 1 and not is_pattern(request) else layer.display
                plans.append(self._plan_table(model, name, layer, size, layers, refused))
        return VocabularyPlan(plans)

    def _plan_table(self, model: ir.Model, name: str, layer: Layer, size: Size, layers: list[Layer],
                    refused: list[NotGrowable]) -> TablePlan:
        table = find_constant(layer.node.inputs[0]) if layer.op_type == "Gather" else None
        if table is None:
            raise GrowError(f"--rows grows an embedding table (a Gather from a constant [vocabulary, width]); "
                            f"{name!r} is a {layer.op_type} node")
        if table.chain or table.root.producer() is not None or not table.root.is_initializer() \
                or table.root.is_graph_input():
            raise RefusedError(f"cannot grow {name!r}: its table {table.root.name!r} is not a plain "
                               "initializer the lookup reads directly", layer.node.name)
        vocab = int(table.tensor.shape.numpy()[0])
        count = size.of(vocab, repr(name), "row count")
        if count <= vocab:
            raise GrowError(f"--rows for {name!r} must be larger than its {vocab} rows, got {count}")
        _check_rows_size(name, table, vocab, count)
        head = find_layer(model, self.head, layers, refused) if self.head is not None else \
            _tied_head(layers, table, vocab)
        tied = head is not None and (self.head is None or _tied_head([head], table, vocab) is not None)
        ctx = None
        if head is not None:
            if head_width_axis(head.node) is None or head.width != vocab:
                raise GrowError(f"--head {self.head!r} must be a MatMul or Gemm with {vocab} outputs (one per "
                                f"row of {name!r}), got a {head.op_type} with {head.width}")
            ctx = plan_group(model.graph, repr(head.display), head.node, vocab, head.producer.embedding,
                             new_outputs=True)
            check_size(ctx, count, repr(head.display))
            classes.check_last_layer(ctx, repr(head.display))
            classes.plan_probabilities(ctx, self.old)
        return TablePlan(name, layer, vocab, count, head, tied, ctx)

    def apply(self, model: ir.Model, plan: VocabularyPlan) -> VocabularyReport:
        groups, edits = [], []
        rng = np.random.default_rng(self.seed)
        for p in plan.tables:
            table = find_constant(p.layer.node.inputs[0])  # as it is now: a growth before this one may have changed it
            assert table is not None
            rows = new_rows(table.tensor.numpy(), p.rows - p.vocab, self.init, rng)
            ctx = self._head_group(model, p) if p.head is not None else GroupContext(model.graph, p.vocab, repr(p.name))
            ctx.share(table.root)  # every reader of the table sees the new rows; old ids read what they did
            if not _head_reads_table(p.head, table):  # else the head's own edit grows the table
                ctx.edit(p.layer.node, 0, appending(0, lambda _: rows))
            found = None
            if p.head is not None:
                axis = head_width_axis(p.head.node)
                assert axis is not None
                ctx.append_units(p.head.node, 1, appending(axis, self._head_rows(ctx, rows, p.tied, axis)))
                head_init = Init.RANDOM_PAD if self.init is RowInit.RANDOM_PAD and not p.tied else Init.ZERO_PAD
                ctx.rewrite(p.rows, head_init, 0.0, self.seed)
                found = classes.finish(ctx, Init.ZERO_PAD, self.old, p.head.display)
            edits.extend(ctx.edits)
            ids = _ids_input(p.layer.node)
            highs = {ids.name: p.vocab} if ids is not None and ids.name else {}
            what = f"ids of {', '.join(highs) or 'the lookup'} in [0, {p.vocab})"
            what += f"; {found.words}" if found else ""
            scope = VerifyScope(found.outputs if found else {}, highs, what, found.renormalise if found else {})
            groups.append(VocabularyGroup(p.name, p.vocab, p.rows, p.head.display if p.head is not None else None,
                                          p.tied, merge_changes(ctx.changes), what, scope))
        report = VocabularyReport(groups=groups, init=self.init.value, seed=self.seed, exact=True,
                                  scope=VerifyScope.merged([g.scope for g in groups]),
                                  map_builder=lambda: build_growth_map(model, edits))
        for p in plan.tables:
            if p.head is None:
                report.notes.append(f"no LM head grew with {p.name}: none is tied to its table "
                                    "(name an untied one with --head)")
            elif p.tied:
                report.notes.append(f"{p.head.display} is tied to {p.name}: its new classes are the new rows")
        return report

    def _head_group(self, model: ir.Model, p: TablePlan) -> GroupContext:
        assert p.head is not None
        return plan_group(model.graph, repr(p.head.display), p.head.node, p.vocab, p.head.producer.embedding,
                          new_outputs=True)

    def _head_rows(self, ctx: GroupContext, rows: np.ndarray, tied: bool,
                   axis: int) -> Callable[[np.ndarray], np.ndarray]:
        """The head weight's new output units (along ``axis`` of the weight as the head sees it):
        the new table rows when tied, else the mean of its old units (``mean``), seeded random
        ones (``random-pad``, drawn from the group's generator) or zeros."""
        def new_units(weight: np.ndarray) -> np.ndarray:
            if tied:
                return rows if axis == 0 else rows.T
            shape = list(weight.shape)
            shape[axis] = rows.shape[0]
            if self.init is RowInit.RANDOM_PAD:
                std = float(np.std(weight.astype(np.float64))) or 0.02
                return ctx.rng.normal(0.0, std, size=shape)
            if self.init is RowInit.MEAN:
                return np.broadcast_to(weight.astype(np.float64).mean(axis=axis, keepdims=True), shape)
            return np.zeros(shape)

        return new_units

    def history(self, report: VocabularyReport) -> list[dict[str, Any]]:
        """One entry per table, with the id range the grown model accepts (``input_range``)."""
        return [{
            "op": "vocabulary", "node": group.requested, "old_rows": group.old_rows, "new_rows": group.new_rows,
            "init": report.init, "seed": report.seed, "head": group.head, "tied": group.tied,
            "input_range": {k: group.new_rows for k in group.scope.input_high},
            "verify_scope": group.scope.to_json(),
        } for group in report.groups]

    @staticmethod
    def describe(entry: Mapping[str, Any]) -> str:
        """``embed_tokens vocabulary 100 → 120 rows, mean, LM head lm_head (tied)``."""
        text = f"{entry.get('node')} vocabulary {entry.get('old_rows')} → {entry.get('new_rows')} rows"
        text += f", {entry.get('init', 'mean')}"
        if entry.get("head"):
            text += f", LM head {entry['head']}" + (" (tied)" if entry.get("tied") else "")
        return text


def grow_vocabulary(
    model: ir.Model | str | os.PathLike[str],
    rows: Mapping[str, int | str | Size],
    *,
    head: str | None = None,
    init: str | RowInit | None = None,
    seed: int = 0,
    old_probabilities: str | classes.OldProbabilities = classes.OldProbabilities.EXACT,
) -> tuple[ir.Model, VocabularyReport]:
    """Grow each named embedding table to the given number of rows, and its LM head
    (:class:`VocabularyOp`). ``model`` is a path or an ``ir.Model`` (modified in place and
    returned); on a refusal the model is unchanged."""
    return grow(model, VocabularyOp(rows, head=head, init=init, seed=seed, old_probabilities=old_probabilities))


def grow_vocabulary_file(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str] | None,
    rows: Mapping[str, int | str | Size],
    *,
    head: str | None = None,
    init: str | RowInit | None = None,
    seed: int = 0,
    old_probabilities: str | classes.OldProbabilities = classes.OldProbabilities.EXACT,
    options: GrowOptions | None = None,
) -> VocabularyReport:
    """Grow the vocabulary of the model file ``source`` and write it to ``output``, checked by
    onnxruntime on old ids and old logits (:func:`onnxgrow.pipeline.grow_file` with a
    :class:`VocabularyOp`); nothing is written when refused or when the check fails."""
    op = VocabularyOp(rows, head=head, init=init, seed=seed, old_probabilities=old_probabilities)
    return grow_file(source, output, op, options)
