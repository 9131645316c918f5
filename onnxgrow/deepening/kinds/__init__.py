"""Kinds of new layers, one module per layer family; importing this package registers them."""

from onnxgrow.deepening.kinds import conv, dense  # noqa: F401
from onnxgrow.deepening.kinds.registry import KINDS, LayerKind, kind_for

__all__ = ["KINDS", "LayerKind", "kind_for"]
