"""Deepening: insert layers that keep the function exact (docs/design.md §5)."""

from onnxgrow.deepening.api import DeepenOp, DeepenReport, Mode, deepen, deepen_file

__all__ = ["DeepenOp", "DeepenReport", "Mode", "deepen", "deepen_file"]
