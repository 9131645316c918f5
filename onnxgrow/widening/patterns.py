"""``--node`` patterns: one name for the same layer or attention module of every block.

A requested name is a pattern when no layer (or attention module) answers to it and it holds
wildcards (:func:`onnxgrow.names.is_pattern`); it then designates every layer one of whose
names it matches, in graph order. A pattern must match something, and only one kind of thing:
the matches' roles in their blocks (:func:`onnxgrow.names.block_role`) and op types must all be
equal, so ``model.layers.*.mlp.up_proj`` grows every FFN's up projection and ``*.mlp.*`` is
refused, listing what it matched (written once per block pattern,
``model.layers.{0..11}.mlp.gate_proj``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import onnx_ir as ir

from onnxgrow.errors import GrowError
from onnxgrow.names import block_role, is_pattern, matches_pattern
from onnxgrow.structure import Attention
from onnxgrow.structure.patterns import index_ranges
from onnxgrow.widening.layers import Layer, NotGrowable, find_layer

_FIRST_INDEX = re.compile(r"(?<=[./])(\d+)(?=[./]|$)")
#: The most kinds a refusal lists.
_LISTED = 8


def compact(names: Iterable[str]) -> list[str]:
    """Names that differ only in their first index written once, with the indices as ranges
    (``model.layers.{0..11}.mlp.up_proj``), in the order their first name comes."""
    groups: dict[str, list[int]] = {}
    for name in names:
        found = _FIRST_INDEX.search(name)
        if found is None:
            groups.setdefault(name, [])
            continue
        key = name[:found.start()] + "{}" + name[found.end():]
        groups.setdefault(key, []).append(int(found.group(1)))
    listed = []
    for key, indices in groups.items():
        if not indices:
            listed.append(key)
        elif len(indices) == 1:
            listed.append(key.replace("{}", str(indices[0]), 1))
        else:
            listed.append(key.replace("{}", index_ranges(indices), 1))
    return listed


def _listing(names: Sequence[str]) -> str:
    shown = compact(names)
    more = f" and {len(shown) - _LISTED} more" if len(shown) > _LISTED else ""
    return ", ".join(shown[:_LISTED]) + more


def _one_kind(pattern: str, kinds: dict[tuple[str, str], list[str]], what: str) -> None:
    """Refuse a pattern whose matches are of several kinds (role and op type), listing them
    (with their op types where those differ)."""
    if len(kinds) > 1:
        ops = len({op for _, op in kinds}) > 1
        listed = "; ".join(_listing(names) + (f" ({op})" if ops else "") for (_, op), names in kinds.items())
        raise GrowError(f"--node pattern {pattern!r} matches {what} of different kinds: {listed}; "
                        "give one pattern per kind")


def expand_layers(model: ir.Model, name: str, layers: list[Layer], refused: list[NotGrowable]) -> list[Layer]:
    """The layers ``name`` designates: the one it names (:func:`find_layer`), or every layer a
    pattern matches (see the module docstring)."""
    if not is_pattern(name) or any(name in layer.names.all() for layer in layers):
        return [find_layer(model, name, layers, refused)]
    matched = [layer for layer in layers if matches_pattern(name, layer.names.all())]
    if not matched:
        others = [item for item in refused if matches_pattern(name, item.names.all())]
        if others:
            first = others[0]
            raise GrowError(f"--node pattern {name!r} matches no growable layer, only nodes that cannot be "
                            f"widened: {_listing([item.names.display for item in others])} ({first.reason})")
        raise GrowError(f"--node pattern {name!r} matches no layer; layers: "
                        f"{_listing([layer.display for layer in layers])}")
    kinds: dict[tuple[str, str], list[str]] = {}
    for layer in matched:
        kinds.setdefault((block_role(layer.display), layer.op_type), []).append(layer.display)
    _one_kind(name, kinds, "layers")
    return matched


def expand_attentions(name: str, attentions: list[Attention]) -> list[Attention] | None:
    """The attention modules a pattern ``name`` matches (by any of their paths), of one kind
    (role in the block); None when ``name`` is no pattern or an attention answers to it as a name."""
    if not is_pattern(name) or any(a.answers_to(name) for a in attentions):
        return None
    matched = [a for a in attentions if matches_pattern(name, a.names | {a.path})]
    if not matched:
        known = _listing([a.path for a in attentions]) or "none found"
        raise GrowError(f"--node pattern {name!r} matches no attention module (attention modules: {known})")
    kinds: dict[tuple[str, str], list[str]] = {}
    for attention in matched:
        kinds.setdefault((block_role(attention.path), "attention"), []).append(attention.path)
    _one_kind(name, kinds, "attention modules")
    return matched
