"""The op-rule registry: one small unit per op type (docs/design.md §8).

A rule has two halves:

``propagate(ctx, node, known)``
    Called whenever a value of ``node`` becomes tracked; ``known`` maps the node's
    tracked inputs/outputs to their :class:`Embedding`. The rule tracks the node's other
    values that must carry the channels (``ctx.track``), records constraints, or refuses
    (``ctx.refuse``). It must be idempotent: it can be called several times.

``rewrite(ctx, node, known)``
    Called once per node after the group is closed and the channel map chosen; edits the
    node's weights/attributes so it computes the widened function
    (``ctx.index(value)`` gives the widened axis' index arrays of a tracked value).

Both receive the :class:`~onnxgrow.widening.context.GroupContext`, the rule API.

Adding an op is one module under ``onnxgrow/widening/rules/`` with a ``@rule(...)``-decorated
class, plus one equivalence test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import onnx_ir as ir

from onnxgrow.widening.context import Rule
from onnxgrow.widening.layout import Embedding

RULES: dict[str, Rule] = {}


def rule(*op_types: str) -> Callable[[type], type]:
    """Register the decorated class (instantiated once) for ``op_types`` of the default domain."""

    def register(cls: type) -> type:
        instance = cls()
        for op_type in op_types:
            if op_type in RULES:
                raise ValueError(f"two rules for {op_type}")
            RULES[op_type] = instance
        return cls

    return register


def rule_for(node: ir.Node) -> Rule | None:
    """The rule for ``node``, or None (custom domains have none)."""
    if node.domain not in ("", "ai.onnx"):
        return None
    return RULES.get(node.op_type)


@dataclass
class Producer:
    """A layer whose output channels can be widened: its node, width and output embedding."""

    node: ir.Node
    width: int
    embedding: Embedding
    weight: ir.Value
    bias: ir.Value | None = None


#: A function describing a node as a layer, saying why it is not one, or None when the
#: node is no layer candidate at all (a Gather that reads a shape, not a table).
Describe = Callable[[ir.Node], "Producer | str | None"]

#: op type -> the function describing its nodes.
PRODUCERS: dict[str, Describe] = {}

D = TypeVar("D", bound=Describe)


def producer(*op_types: str) -> Callable[[D], D]:
    """Register a function that describes nodes of ``op_types`` as growable layers."""

    def register(fn: D) -> D:
        for op_type in op_types:
            PRODUCERS[op_type] = fn
        return fn

    return register
