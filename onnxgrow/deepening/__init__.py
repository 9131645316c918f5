"""Deepening: insert layers that keep the function exact (docs/design.md §5)."""

from onnxgrow.deepening.activation import ActivationKind, InsertionPoint, find_insertion_point
from onnxgrow.deepening.api import DeepenOp, DeepenReport, Mode, deepen, deepen_file, deepen_summary

__all__ = [
    "ActivationKind", "DeepenOp", "DeepenReport", "InsertionPoint", "Mode", "deepen", "deepen_file",
    "deepen_summary", "find_insertion_point",
]
