"""Blocks: the residual connections of a stream grouped as the framework groups them.

A connection's *path* is the longest module path (``a.b.c``) that contains the Add and
every projection of its branch and shortcut (node metadata, scoped node names or weight
names, :mod:`onnxgrow.names`); nodes without a path are left out. Its *indexed prefixes*
are the prefixes of that path ending in an index: a component that is an integer
(``model.layers.3``, torchvision's ``layer2.1``) or ends in ``_<integer>``
(torchvision ViT's ``encoder.layers.encoder_layer_3``), innermost first.

A connection's block is the innermost indexed prefix ``C.i`` that *repeats*: the stream
has connections under two indices ``C.i``, ``C.j`` at least, and under every index the same
sequence of kinds (the siblings are *alike*). T5's ``encoder.block.0.layer.0`` (attention)
and ``...layer.1`` (FFN) differ, so its blocks are ``encoder.block.0``, ``encoder.block.1``,
each an attention and an FFN connection; LLaMA's ``model.layers.3`` holds attention then
FFN like every layer. Without a repeating prefix (a model of one block, a ResNet stage of
one block), the innermost prefix whose siblings are alike is taken, else the innermost.
Consecutive connections with the same block form
one :class:`Block`, named ``C.i`` with ``C`` its *container* and ``i`` its *index*. A
connection with no indexed prefix is a block of its own, named by its path when it has one
(``layer1`` in a model that does not number its blocks), indexed by its place in the stream.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

import onnx_ir as ir

from onnxgrow.names import module_path, weight_prefix
from onnxgrow.structure.attention import Attention
from onnxgrow.structure.flow import DataFlow
from onnxgrow.structure.masks import is_causal
from onnxgrow.structure.norms import Norm
from onnxgrow.structure.projections import Projection
from onnxgrow.structure.residual import FFN, Residual, ResidualKind

_INDEX = re.compile(r"^(?:\d+|.*_(\d+))$")


class BlockKind(enum.Enum):
    """What a block is: a transformer encoder or decoder layer, or a residual conv block."""

    ENCODER = "encoder"  # self-attention with no causal mask, FFN
    DECODER = "decoder"  # causal self-attention, or cross-attention to an encoder
    TRANSFORMER = "transformer"  # attention whose mask onnxgrow cannot read
    CONV = "residual conv"
    MLP = "residual mlp"
    OTHER = "other"


class NormPosition(enum.Enum):
    """Where a block normalises: before each branch (``x + f(norm(x))``), after each Add
    (``norm(x + f(x))``), or neither (a ResNet block: its norms are inside the branch)."""

    PRE = "pre-norm"
    POST = "post-norm"
    NONE = "none"
    MIXED = "mixed"


@dataclass
class Block:
    """A repeated block on a residual stream: its residual connections, from ``entry`` to ``exit``."""

    name: str | None
    container: str | None
    index: int
    residuals: tuple[Residual, ...]
    kind: BlockKind
    nodes: tuple[ir.Node, ...]
    side_inputs: tuple[ir.Value, ...]

    @property
    def entry(self) -> ir.Value:
        return self.residuals[0].entry

    @property
    def exit(self) -> ir.Value:
        return self.residuals[-1].exit

    @property
    def width(self) -> int | None:
        """The width of the stream it writes: its output projections' (the hidden size, a
        conv block's output channels); None when they differ."""
        widths = {p.width for p in self.output_projections}
        return widths.pop() if len(widths) == 1 else None

    @property
    def label(self) -> str:
        """The name to print: the framework name, else ``block <index>``."""
        return self.name or f"block {self.index}"

    @property
    def attentions(self) -> tuple[Attention, ...]:
        return tuple(a for r in self.residuals for a in r.attentions)

    @property
    def ffns(self) -> tuple[FFN, ...]:
        return tuple(r.ffn for r in self.residuals if r.ffn is not None)

    @property
    def projections(self) -> tuple[Projection, ...]:
        """Every projection of the block's branches and shortcuts."""
        return tuple(p for r in self.residuals for p in (*r.projections, *r.shortcut_projections))

    @property
    def output_projections(self) -> tuple[Projection, ...]:
        """The projections whose outputs reach the residual Adds directly (``o_proj``,
        ``down_proj``, ``conv2``): zero them and every branch adds zero."""
        return tuple(p for r in self.residuals for p in r.outputs)

    @property
    def norms(self) -> tuple[Norm, ...]:
        """The pre-, post- and output normalisations of its connections, in order."""
        return tuple(n for r in self.residuals for n in (r.pre_norm, r.output_norm, r.post_norm) if n is not None)

    @property
    def norm_position(self) -> NormPosition:
        pre = [r.pre_norm is not None for r in self.residuals]
        post = [r.post_norm is not None for r in self.residuals]
        if all(pre) and not any(post):
            return NormPosition.PRE
        if all(post) and not any(pre):
            return NormPosition.POST
        if not any(pre) and not any(post):
            return NormPosition.NONE
        return NormPosition.MIXED

    @property
    def identity_shortcuts(self) -> bool:
        return all(r.identity_shortcut for r in self.residuals)


def residual_path(residual: Residual, prefixes: dict[str, str]) -> str | None:
    """The module path holding a connection's Add and projections (see the module rules)."""
    paths = [p for node in (residual.add, *(p.node for p in (*residual.projections, *residual.shortcut_projections)))
             if (p := _node_path(node, prefixes))]
    if not paths:
        return None
    parts = [p.split(".") for p in paths]
    common = []
    for column in zip(*parts):
        if len(set(column)) != 1:
            break
        common.append(column[0])
    return ".".join(common) or None


def _node_path(node: ir.Node, prefixes: dict[str, str]) -> str | None:
    """The node's module path, else its weight's prefix (``fc1.weight``); None for a tf2onnx scope."""
    path = module_path(node, prefixes)
    if path is None and len(node.inputs) > 1 and node.inputs[1] is not None:
        path = weight_prefix(node.inputs[1].name)
    return path if path is not None and "/" not in path else None


def indexed_prefixes(path: str | None) -> list[str]:
    """``encoder.block.0.layer.1.SelfAttention`` → ``[encoder.block.0.layer.1, encoder.block.0]``."""
    if not path:
        return []
    parts = path.split(".")
    return [".".join(parts[:k + 1]) for k in range(len(parts) - 1, -1, -1) if _INDEX.match(parts[k])]


def split_index(name: str) -> tuple[str, int]:
    """``model.layers.3`` → ``("model.layers", 3)``; ``encoder.layers.encoder_layer_3`` →
    ``("encoder.layers.encoder_layer_", 3)``."""
    head, _, last = name.rpartition(".")
    match = _INDEX.match(last)
    assert match is not None
    if match.group(1) is None:
        return head, int(last)
    digits = match.group(1)
    return f"{head}.{last[:-len(digits)]}" if head else last[:-len(digits)], int(digits)


def _container(prefix: str) -> str:
    return split_index(prefix)[0]


def group_blocks(residuals: list[Residual], paths: list[str | None], flow: DataFlow) -> list[Block]:
    """The blocks of one stream's connections (in order) with their paths (see the module rules)."""
    prefixes = [indexed_prefixes(p) for p in paths]
    verdicts = _container_verdicts(prefixes, [r.kind for r in residuals])
    chosen = [_block_prefix(mine, verdicts) for mine in prefixes]
    blocks: list[Block] = []
    start = 0
    for k in range(1, len(residuals) + 1):
        if k < len(residuals) and chosen[k] is not None and chosen[k] == chosen[start]:
            continue
        members = residuals[start:k]
        prefix = chosen[start]
        if prefix is not None:
            container, index = split_index(prefix)
            blocks.append(_block(prefix, container, index, members, flow))
        else:
            blocks.append(_block(paths[start], None, len(blocks), members, flow))
        start = k
    return blocks


def _container_verdicts(prefixes: list[list[str]], kinds: list[ResidualKind]) -> dict[str, tuple[bool, bool]]:
    """For every container of the stream's indexed prefixes: (are its indices alike, does it
    repeat: two indices or more). A connection counts under the first of its prefixes in a
    container (its innermost there)."""
    by_container: dict[str, dict[str, list[ResidualKind]]] = {}
    for mine, kind in zip(prefixes, kinds):
        seen: set[str] = set()
        for prefix in mine:
            container = _container(prefix)
            if container not in seen:
                seen.add(container)
                by_container.setdefault(container, {}).setdefault(prefix, []).append(kind)
    return {container: (len({tuple(v) for v in by_index.values()}) == 1, len(by_index) > 1)
            for container, by_index in by_container.items()}


def _block_prefix(mine: list[str], verdicts: dict[str, tuple[bool, bool]]) -> str | None:
    """The block prefix of a connection with indexed prefixes ``mine`` (see the module rules)."""
    alike = [prefix for prefix in mine if verdicts[_container(prefix)][0]]
    repeating = [prefix for prefix in alike if verdicts[_container(prefix)][1]]
    if repeating:
        return repeating[0]
    return alike[0] if alike else (mine[0] if mine else None)


def _block(name: str | None, container: str | None, index: int, members: list[Residual], flow: DataFlow) -> Block:
    nodes = flow.in_order({node for r in members for node in r.nodes})
    produced = {out for node in nodes for out in node.outputs}
    entry = members[0].entry
    side = []
    for node in nodes:
        for value in flow.computed_inputs(node):
            if value not in produced and value is not entry and value not in side:
                side.append(value)
    return Block(name, container, index, tuple(members), _block_kind(members, flow), tuple(nodes), tuple(side))


def _block_kind(members: Iterable[Residual], flow: DataFlow) -> BlockKind:
    residuals = list(members)
    kinds = {r.kind for r in residuals}
    if ResidualKind.CONV in kinds:
        return BlockKind.CONV
    if ResidualKind.CROSS_ATTENTION in kinds:
        return BlockKind.DECODER
    if ResidualKind.ATTENTION in kinds:
        causal = [is_causal(r.branch, flow) for r in residuals if r.kind is ResidualKind.ATTENTION]
        if all(c is True for c in causal):
            return BlockKind.DECODER
        if all(c is False for c in causal):
            return BlockKind.ENCODER
        return BlockKind.TRANSFORMER
    if ResidualKind.FFN in kinds:
        return BlockKind.MLP
    return BlockKind.OTHER
