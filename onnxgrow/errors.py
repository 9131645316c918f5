"""Errors that reach the user as one clear line.

The CLI maps :class:`GrowError` (bad input, a request that cannot be honoured)
to exit status 2 and :class:`NotEquivalentError` (a check that failed) to 1.
"""

from __future__ import annotations


class GrowError(Exception):
    """A user error: bad input, an unknown name, or a graph onnxgrow must refuse to change."""


class RefusedError(GrowError):
    """A rewrite that would not keep the model's function or interface, naming the blocking node."""

    def __init__(self, message: str, node: str | None = None) -> None:
        super().__init__(message)
        self.node = node


class NotEquivalentError(Exception):
    """A grown model that onnxruntime shows to differ from the original beyond tolerance."""

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


class OnnxgrowWarning(UserWarning):
    """Something the user should know that does not stop the command (one ``warning:`` line on the CLI)."""
