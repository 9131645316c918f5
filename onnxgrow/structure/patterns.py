"""Names of repeated blocks written once: ``model.layers.{0..11}.self_attn.q_proj``.

A name inside a numbered block (``model.layers.3.self_attn``: block ``model.layers.3``,
container ``model.layers``, index 3) *generalises* to a pattern with ``{}`` for the index
(``model.layers.{}.self_attn``); names of the same pattern are written once with their
indices as ranges (``{0..11}``, ``{0..3,5}``). The block of a name is the longest block
name it starts with, so ``model.layers.1`` is not taken for ``model.layers.10``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Protocol


class Numbered(Protocol):
    """A block as these functions see it (:class:`onnxgrow.structure.Block`, inspect's BlockInfo)."""

    @property
    def name(self) -> str | None: ...

    @property
    def container(self) -> str | None: ...

    @property
    def index(self) -> int: ...


def index_ranges(indices: Iterable[int]) -> str:
    """``{0..11}``, ``{0..3,5}``, ``{0,1}``: sorted indices, runs of three or more as ranges."""
    ordered = sorted(set(indices))
    parts: list[str] = []
    start = 0
    for k in range(1, len(ordered) + 1):
        if k < len(ordered) and ordered[k] == ordered[k - 1] + 1:
            continue
        run = ordered[start:k]
        parts.append(f"{run[0]}..{run[-1]}" if len(run) > 2 else ",".join(map(str, run)))
        start = k
    return "{" + ",".join(parts) + "}"


def fill(pattern: str, indices: Iterable[int]) -> str:
    """``model.layers.{}.mlp`` and ``[0, 1, 2]`` → ``model.layers.{0..2}.mlp``."""
    return pattern.replace("{}", index_ranges(indices), 1)


def _joiner(container: str) -> str:
    return "" if container.endswith("_") else "."


def numbered_in(name: str, blocks: Sequence[Numbered]) -> Numbered | None:
    """The numbered block ``name`` lies in (the longest block name it starts with)."""
    best: Numbered | None = None
    for block in blocks:
        own = block.name
        if own and block.container is not None and (name == own or name.startswith(own + ".")):
            if best is None or len(own) > len(best.name or ""):
                best = block
    return best


def generalise(name: str, blocks: Sequence[Numbered]) -> tuple[str, Numbered] | None:
    """``model.layers.3.self_attn`` → ``("model.layers.{}.self_attn", block model.layers.3)``;
    None when ``name`` lies in no numbered block."""
    block = numbered_in(name, blocks)
    if block is None or block.name is None or block.container is None:
        return None
    return f"{block.container}{_joiner(block.container)}{{}}{name[len(block.name):]}", block


def mention(text: str, block: Numbered, placeholder: str) -> str:
    """``text`` with every mention of ``block``'s name replaced by its container and
    ``placeholder`` (``divides model.layers.3.mlp`` → ``divides model.layers.{i}.mlp``)."""
    if not block.name or block.container is None:
        return text
    pattern = re.compile(rf"(?<![\w.]){re.escape(block.name)}(?![\w])")
    return pattern.sub(f"{block.container}{_joiner(block.container)}{placeholder}", text)


def merge_names(names: Iterable[str], blocks: Sequence[Numbered]) -> list[str]:
    """Names with one pattern written once (``model.layers.{0..11}.mlp.down_proj``), in the
    order their first name comes."""
    groups: dict[str, list[tuple[str, int]]] = {}
    for name in names:
        found = generalise(name, blocks)
        if found is None:
            groups.setdefault(name, [])
        else:
            groups.setdefault(found[0], []).append((name, found[1].index))
    return [fill(key, [index for _, index in members]) if len(members) > 1 else members[0][0] if members else key
            for key, members in groups.items()]


def block_pattern(blocks: Sequence[Numbered]) -> str:
    """The blocks' names written once per container (``model.layers.{0..11}``), others as they are."""
    return ", ".join(merge_names((b.name or f"block {b.index}" for b in blocks), blocks))
