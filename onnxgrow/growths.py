"""The registry of growth operations (docs/design.md §9).

Each growth registers its operation class where it is defined, with the ``op`` key of
the lineage entries it writes::

    @growth("widen-heads")
    class HeadsOp:
        ...
        @staticmethod
        def describe(entry: Mapping[str, Any]) -> str:
            return f"attention {entry.get('attention')}: ..."

``when`` tells apart growths that share an ``op`` key: an entry belongs to the growth
registered with ``when=KEY`` if it holds a true ``KEY``, else to the one registered
without (new output classes are ``{"op": "widen", "new_outputs": true}``).

The registry is what the lineage reads (``inspect``'s history and ``diff``'s sentences:
:func:`onnxgrow.lineage.describe`) and what the contract tests walk: every registered
growth runs through the driver's plan check there. Adding a growth is its module, its
registration, and its tests; the built-in growths are imported on first use
(:data:`BUILT_IN`), a growth defined elsewhere once its module is imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

#: The modules that define the built-in growths.
BUILT_IN = (
    "onnxgrow.widening.api",
    "onnxgrow.widening.new_outputs_op",
    "onnxgrow.widening.vocabulary",
    "onnxgrow.widening.heads_op",
    "onnxgrow.deepening.api",
    "onnxgrow.deepening.block_op",
)


class Describing(Protocol):
    """A growth operation class: it says what one of its lineage entries means."""

    @staticmethod
    def describe(entry: Mapping[str, Any]) -> str: ...


T = TypeVar("T", bound=Describing)


@dataclass(frozen=True)
class Growth:
    """One registered growth: its lineage ``op`` key (and ``when`` flag) and its operation class."""

    op: str
    when: str | None
    operation: type[Describing]

    def claims(self, entry: Mapping[str, Any]) -> bool:
        """Whether the lineage ``entry`` was written by this growth."""
        return entry.get("op") == self.op and (self.when is None or bool(entry.get(self.when)))

    def describe(self, entry: Mapping[str, Any]) -> str:
        return self.operation.describe(entry)


_REGISTRY: list[Growth] = []


def growth(op: str, *, when: str | None = None) -> Callable[[type[T]], type[T]]:
    """Class decorator registering a growth operation under its lineage ``op`` key."""

    def register(cls: type[T]) -> type[T]:
        for known in _REGISTRY:
            if (known.op, known.when) == (op, when) and known.operation is not cls:
                raise ValueError(f"growth op {op!r} (when={when!r}) is registered twice: "
                                 f"{known.operation.__qualname__} and {cls.__qualname__}")
        _REGISTRY.append(Growth(op, when, cls))
        return cls

    return register


def registered() -> list[Growth]:
    """Every registered growth, the built-in ones included."""
    for module in BUILT_IN:
        importlib.import_module(module)
    return list(_REGISTRY)


def growth_of(entry: Mapping[str, Any]) -> Growth | None:
    """The growth that wrote the lineage ``entry``: the one registered with a ``when`` flag the
    entry holds, else the plain one for its ``op``; None for an unknown op."""
    candidates = [g for g in registered() if g.claims(entry)]
    flagged = [g for g in candidates if g.when is not None]
    return flagged[0] if flagged else candidates[0] if candidates else None
