"""``deepen --block``: insert copies of whole blocks, numbered as the framework numbers them
(docs/design.md §5, "Blocks").

``DeepenBlockOp("model.layers.1", count=N, init="zero")`` inserts N copies of the block right
after it: the first reads the block's output, each next one the copy before, and the last
one's output goes wherever the block's went. A glob (``model.layers.*``) copies every
block it matches, each followed by its own copies (depth × (N + 1), interleaved). Which
blocks can be copied and what ``--init`` does: :mod:`onnxgrow.deepening.block_plan`; how a
copy is made: :mod:`onnxgrow.deepening.block_copy`.

The copies take the numbers after their block's, and every later block of the same
container moves up (:mod:`onnxgrow.deepening.block_names`), so the exported weights
(``--to state-dict``, ``--to torch``) load into the framework's class built with the new
block count (:attr:`DeepenBlockReport.layers`; :func:`config_updates` says what a Hugging
Face config needs). The lineage entry records the copies (``inserted``: new block → the block copied,
old names), the renumbering (``renumbered``: old → new) and the counts; the growth map moves
every renamed and copied weight's training state (:func:`onnxgrow.growth_map.block_growth_map`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import onnx_ir as ir

from onnxgrow.deepening.block_copy import BlockCopier, TakenNames
from onnxgrow.deepening.block_names import Renumbering, block_name, renumber_graph, renumbering_clash
from onnxgrow.deepening.block_plan import BlockInit, BlocksPlan, plan_blocks
from onnxgrow.deepening.splice import hand_over
from onnxgrow.errors import GrowError
from onnxgrow.growth_map import block_growth_map
from onnxgrow.growths import growth
from onnxgrow.lineage import COUNT, OPTIONAL_TEXT, TEXT, KeyCheck
from onnxgrow.options import GrowOptions, parse_choice
from onnxgrow.pipeline import Report, grow, grow_file
from onnxgrow.structure import find_structure
from onnxgrow.structure.blocks import split_index
from onnxgrow.structure.flow import DataFlow
from onnxgrow.structure.patterns import index_ranges


def _names_map(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _counts(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, list) and len(v) == 2
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in v) for k, v in value.items())


NAMES_MAP: KeyCheck = _names_map, "an object of block names"
LAYER_COUNTS: KeyCheck = _counts, "an object of containers and [old, new] block counts"

#: Config fields holding a container's block count, by family (for ``--to hf``).
LAYER_COUNT_FIELDS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
#: Config fields holding one entry per block.
PER_BLOCK_FIELDS = ("layer_types",)


@dataclass
class InsertedBlock:
    """One inserted copy: its name, the block it copies (old name), the weights set to zero."""

    name: str
    source: str
    zeroed: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class DeepenBlockReport(Report):
    """What ``deepen --block`` did (a :class:`~onnxgrow.pipeline.GrowthReport`)."""

    request: str
    init: str
    count: int
    inserted: list[InsertedBlock]
    renumbered: dict[str, str]
    layers: dict[str, tuple[int, int]]
    zeroed_words: str

    def lines(self) -> list[str]:
        lines = [f"inserted block {b.name} (copy of {b.source}, {self.init_words()})" for b in self.inserted]
        for block in self.inserted[:1]:
            if block.zeroed:
                lines.append(f"  zeroed in {block.name}: {', '.join(block.zeroed)}"
                             + (" (and likewise in every copy)" if len(self.inserted) > 1 else ""))
        moves: dict[str, list[tuple[int, int]]] = {}
        for old, new in self.renumbered.items():
            container, before = split_index(old)
            moves.setdefault(container, []).append((before, split_index(new)[1]))
        for container, pairs in moves.items():
            olds, news = ([p[k] for p in pairs] for k in (0, 1))
            lines.append(f"  renumbered {_numbered(container, olds)} → {_numbered(container, news)}")
        for container, (before, after) in self.layers.items():
            lines.append(f"  {container}: {before} → {after} blocks")
        return lines

    def init_words(self) -> str:
        if self.init == BlockInit.ZERO.value:
            return f"zero-initialised {self.zeroed_words}"
        return "every weight copied: stacking, not function-preserving"


@growth("deepen-block")
class DeepenBlockOp:
    """Insert ``count`` copies of the blocks ``block`` names after each (see the module
    docstring): a :class:`~onnxgrow.pipeline.GrowthOp`. Arguments are checked on construction."""

    entry_keys = {"count": COUNT, "inserted": NAMES_MAP, "renumbered": NAMES_MAP, "layers": LAYER_COUNTS,
                  "zeroed": OPTIONAL_TEXT, "block": TEXT}
    infer_shapes = False

    def __init__(self, block: str, *, count: int = 1, init: str | BlockInit = BlockInit.ZERO) -> None:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise GrowError(f"--count must be a positive integer (the copies to insert), got {count!r}")
        if not isinstance(block, str) or not block:
            raise GrowError("--block needs a block name, e.g. model.layers.3 (inspect lists them)")
        self.block, self.count, self.init = block, count, parse_choice(BlockInit, init, "--init")

    def plan(self, model: ir.Model) -> BlocksPlan:
        structure = find_structure(model)
        flow = DataFlow(model.graph)
        containers = {b.container for b in structure.blocks if b.container is not None}
        named = {c: named_indices(model.graph.initializers, c) for c in containers}
        plan = plan_blocks(structure, flow, self.block, self.count, self.init, named)
        clash = renumbering_clash(model.graph, plan.renumberings)
        if clash is not None:
            raise GrowError(f"cannot renumber the blocks after {self.block!r}: two values would be named {clash!r}")
        return plan

    def apply(self, model: ir.Model, plan: BlocksPlan) -> DeepenBlockReport:
        graph = model.graph
        renumber_graph(graph, plan.renumberings)
        by_container = {r.container: r for r in plan.renumberings}
        taken = TakenNames(graph)
        inserted: list[InsertedBlock] = []
        fresh: set[str] = set()
        for copies in reversed(plan.blocks):
            block = copies.block
            renumbering = by_container[copies.container]
            current = renumbering.indices.get(block.index, block.index)
            copier = BlockCopier(graph, block, set(copies.zero), taken)
            uses = list(block.exit.uses())
            reading, after = block.exit, block.exit.producer()
            assert after is not None
            made = []
            for index, name in zip(copies.copies, copies.copy_names()):
                copy = copier.insert(reading, after, Renumbering(copies.container, {current: index}))
                fresh.update(w for w, source in copy.weights.items() if source is None)
                reading, after = copy.exit, copy.last
                zeroed = [Renumbering(copies.container, {block.index: index}).block(z) for z in copies.zeroed]
                made.append(InsertedBlock(name, block.name or "", zeroed))
            hand_over(graph, graph, block.exit, uses, reading, copies.copy_names()[-1])
            inserted[:0] = made
        renamed = {block_name(r.container, old): block_name(r.container, new)
                   for r in plan.renumberings for old, new in sorted(r.indices.items())}
        sources = {new: old for old, new in renamed.items()}
        sources.update({b.name: b.source for b in inserted})
        return DeepenBlockReport(
            exact=plan.init is BlockInit.ZERO, request=plan.request, init=plan.init.value, count=plan.count,
            inserted=inserted, renumbered=renamed, layers=plan.layers, zeroed_words=_zeroed_words(plan),
            map_builder=lambda: block_growth_map(model, sources, {b.name for b in inserted}, fresh))

    def history(self, report: DeepenBlockReport) -> list[dict[str, Any]]:
        return [{"op": "deepen-block", "block": report.request, "init": report.init, "count": report.count,
                 "inserted": {b.name: b.source for b in report.inserted}, "renumbered": report.renumbered,
                 "layers": {c: list(n) for c, n in report.layers.items()},
                 "zeroed": report.zeroed_words if report.init == BlockInit.ZERO.value else None}]

    @staticmethod
    def describe(entry: Mapping[str, Any]) -> str:
        """``inserted block model.layers.2 (copy of model.layers.1, zero-initialised output projections)``."""
        how = (f"zero-initialised {entry.get('zeroed')}" if entry.get("init") == BlockInit.ZERO.value
               else "every weight copied: stacking, not function-preserving")
        inserted = dict(entry.get("inserted") or {})
        parts = [f"{new} (copy of {old}" for new, old in inserted.items()]
        if len(parts) == 1:
            text = f"inserted block {parts[0]}, {how})"
        else:
            text = f"inserted {len(parts)} blocks: " + ", ".join(p + ")" for p in parts) + f"; {how}"
        renumbered = dict(entry.get("renumbered") or {})
        if renumbered:
            text += f"; {len(renumbered)} later block{'s' if len(renumbered) > 1 else ''} renumbered"
        return text


def _numbered(container: str, indices: list[int]) -> str:
    """``model.layers.3``, or ``model.layers.{3..11}`` for several."""
    return block_name(container, indices[0]) if len(indices) == 1 else block_name(container, 0)[:-1] + index_ranges(
        indices)


def _zeroed_words(plan: BlocksPlan) -> str:
    """What a zero copy zeroes, in words: ``output projections``, ``last normalisation``..."""
    norms = any(r.output_norm is not None for p in plan.blocks for r in p.block.residuals)
    convs = any(p.op_type == "Conv" for b in plan.blocks for p in b.block.output_projections)
    if norms:
        return "last normalisations"
    return "output convolutions" if convs else "output projections"


def named_indices(names: Mapping[str, Any], container: str) -> set[int]:
    """The indices of ``container``'s blocks that the names ``names`` hold (``model.layers.7.*`` → 7)."""
    pattern = Renumbering(container, {})
    return {int(m.group(1)) for name in names if container in name for m in pattern.matches(name)}


def config_updates(config: Mapping[str, Any], entries: list[Mapping[str, Any]]) -> dict[str, Any]:
    """What a Hugging Face ``config.json`` needs after the ``deepen-block`` lineage ``entries``:
    each block-count field (:data:`LAYER_COUNT_FIELDS`; an encoder-decoder's ``encoder_layers``
    or ``decoder_layers``, matched by the container's words) that holds a grown container's
    old count gets the new one, and a per-block list of that length (``layer_types``) is
    renumbered like the blocks, each copy taking its source's entry.

    The hook for ``export --to hf``: ``config.update(config_updates(config, read_history(model)))``.
    """
    updates: dict[str, Any] = {}
    for entry in entries:
        if entry.get("op") != "deepen-block":
            continue
        for container, (before, after) in dict(entry.get("layers") or {}).items():
            for key in _count_fields(config, container):
                if updates.get(key, config.get(key)) == before:
                    updates[key] = after
            for key in PER_BLOCK_FIELDS:
                values = updates.get(key, config.get(key))
                if isinstance(values, list) and len(values) == before:
                    updates[key] = _renumbered_list(values, container, entry, after)
    return updates


def _renumbered_list(values: list[Any], container: str, entry: Mapping[str, Any], size: int) -> list[Any]:
    """A per-block list after the entry's renumbering and copies."""
    def index(name: str) -> int | None:
        head, number = split_index(name)
        return number if head == container else None

    moved: dict[int, int] = {}
    for old_name, new_name in dict(entry.get("renumbered") or {}).items():
        old, new = index(old_name), index(new_name)
        if old is not None and new is not None:
            moved[old] = new
    result: list[Any] = [None] * size
    for old, value in enumerate(values):
        result[moved.get(old, old)] = value
    for new, source in dict(entry.get("inserted") or {}).items():
        new_index, source_index = index(new), index(source)
        if new_index is not None and source_index is not None and source_index < len(values):
            result[new_index] = values[source_index]
    return result


def _count_fields(config: Mapping[str, Any], container: str) -> list[str]:
    words = container.split(".")
    stacks = [k for k in config if k.endswith("_layers") and k.split("_")[0] in ("encoder", "decoder")]
    for key in stacks:
        if key.split("_")[0] in words:
            return [key]
    return [k for k in LAYER_COUNT_FIELDS if k in config]


def deepen_block(model: ir.Model | str | os.PathLike[str], block: str, *, count: int = 1,
                 init: str | BlockInit = BlockInit.ZERO) -> tuple[ir.Model, DeepenBlockReport]:
    """Insert ``count`` copies of the blocks ``block`` names (:class:`DeepenBlockOp`); ``model``
    is a path or an ``ir.Model`` (modified in place); on a refusal it is unchanged."""
    return grow(model, DeepenBlockOp(block, count=count, init=init))


def deepen_block_file(source: str | os.PathLike[str], output: str | os.PathLike[str] | None, block: str, *,
                      count: int = 1, init: str | BlockInit = BlockInit.ZERO,
                      options: GrowOptions | None = None) -> DeepenBlockReport:
    """Insert copies of blocks into the model file ``source`` and write it to ``output``,
    checked by onnxruntime (:func:`onnxgrow.pipeline.grow_file`)."""
    return grow_file(source, output, DeepenBlockOp(block, count=count, init=init), options)
