"""Kinds of new layers, one module per layer family; importing this package registers them."""

from onnxgrow.deepen.kinds import conv, dense  # noqa: F401
from onnxgrow.deepen.kinds.registry import KINDS, LayerKind, kind_for

__all__ = ["KINDS", "LayerKind", "kind_for"]
