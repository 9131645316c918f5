"""The layer-kind registry: how to build a new layer like an existing one (docs/design.md §5).

A kind is registered per op type of the layer deepened after (``@kind("Gemm")``); its
factory reads what the new layer must share with that layer (Gemm's ``transB``, the
conv's kernel rank and size) and returns a :class:`LayerKind`, whose ``emit`` builds a
square layer ``n → n`` reading ``x``: identity weights (``identity=True``) or zeros, and
a zero bias, named after ``scope``; ``weight_values(n)`` says how many values that weight
holds, for the memory check before anything is built.

Adding a layer type is one module under ``onnxgrow/deepening/kinds/`` plus a test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import onnx_ir as ir

from onnxgrow.deepening.splice import Splice
from onnxgrow.errors import GrowError


class LayerKind(Protocol):
    """Builds new square layers of one kind."""

    def emit(self, splice: Splice, x: ir.Value, n: int, scope: str, *, identity: bool) -> ir.Value: ...

    def weight_values(self, n: int) -> int: ...


KINDS: dict[str, Callable[[ir.Node], LayerKind]] = {}


def kind(*op_types: str) -> Callable[[Callable[[ir.Node], LayerKind]], Callable[[ir.Node], LayerKind]]:
    """Register a factory making the :class:`LayerKind` for layers of ``op_types``."""

    def register(factory: Callable[[ir.Node], LayerKind]) -> Callable[[ir.Node], LayerKind]:
        for op_type in op_types:
            if op_type in KINDS:
                raise ValueError(f"two layer kinds for {op_type}")
            KINDS[op_type] = factory
        return factory

    return register


def kind_for(node: ir.Node) -> LayerKind:
    """The kind of new layer to insert after ``node``; GrowError when there is none."""
    factory = KINDS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
    if factory is None:
        raise GrowError(f"no deepening rule for layers of op {node.op_type} (node {node.name!r})")
    return factory(node)
