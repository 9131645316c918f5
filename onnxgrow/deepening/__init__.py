"""Deepening: insert layers that keep the function exact (DESIGN.md §5)."""

from onnxgrow.deepening.api import DeepenReport, Mode, deepen, deepen_file

__all__ = ["DeepenReport", "Mode", "deepen", "deepen_file"]
