"""Checking option values that name a choice (``--init``, ``--mode``)."""

from __future__ import annotations

from enum import Enum
from typing import TypeVar

from onnxgrow.errors import GrowError

E = TypeVar("E", bound=Enum)


def parse_choice(kind: type[E], value: str | E, option: str) -> E:
    """``value`` as a member of ``kind``; a GrowError listing the choices otherwise."""
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(str(member.value) for member in kind)
        raise GrowError(f"unknown {option} {value!r}; choose one of {choices}") from None
