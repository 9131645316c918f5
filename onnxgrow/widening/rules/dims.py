"""Dimensions as products, so merged dynamic axes can be matched.

Shape inference names a dynamic axis with a symbol (``batch``); the dynamo exporter
names a merged one with a product (``6*batch``); onnxgrow infers others from a
Reshape's ``-1``. A :class:`Product` is an integer coefficient times a multiset of
symbols: ``[batch, 6]`` and ``[6*batch]`` have the same product, and ``batch``
divides ``6*batch``. A symbol that is not a plain product (``2*s0 + 1``) stays one
opaque factor; so does a call inside a product (``Min(6, seq)*batch`` is ``Min(6, seq)``
times ``batch``).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

Dim = int | str

_FACTOR = re.compile(r"^(\d+|[A-Za-z_][A-Za-z0-9_]*)$")
_CALL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\(.*\)$")


@dataclass(frozen=True)
class Product:
    """``coef`` times the symbols in ``symbols`` (sorted, repeated for powers)."""

    coef: int
    symbols: tuple[str, ...] = ()

    def __mul__(self, other: Product) -> Product:
        return Product(self.coef * other.coef, tuple(sorted(self.symbols + other.symbols)))

    def divides(self, other: Product) -> bool:
        """True when ``other / self`` is again a product."""
        if self.coef == 0 or other.coef % self.coef:
            return False
        return not Counter(self.symbols) - Counter(other.symbols)

    def __truediv__(self, other: Product) -> Product:
        assert other.divides(self)
        left = Counter(self.symbols) - Counter(other.symbols)
        return Product(self.coef // other.coef, tuple(sorted(left.elements())))

    def as_dim(self) -> Dim:
        """An int without symbols, else the symbols joined by ``*`` (coefficient first)."""
        if not self.symbols:
            return self.coef
        return "*".join(([str(self.coef)] if self.coef != 1 else []) + list(self.symbols))


def _top_level_factors(dim: str) -> list[str] | None:
    """The factors of ``a*b*Min(6, seq)`` (a parenthesised call is one opaque factor); None
    when ``dim`` is no plain product (a top-level sum such as ``2*s0 + 1``)."""
    factors, depth, start = [], 0, 0
    for k, char in enumerate(dim):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif depth == 0 and char == "*":
            factors.append(dim[start:k].strip())
            start = k + 1
        elif depth == 0 and char in "+-/":
            return None
    factors.append(dim[start:].strip())
    if not all(_FACTOR.match(f) or _CALL.match(f) for f in factors):
        return None
    return factors


def product(dims: Iterable[Dim]) -> Product:
    """The product of ``dims``; strings are parsed as ``a*b*3`` products when they are ones."""
    coef, symbols = 1, []
    for dim in dims:
        if isinstance(dim, int):
            coef *= dim
            continue
        factors = _top_level_factors(dim)
        if factors is None:
            symbols.append(dim)
            continue
        for factor in factors:
            if factor.isdigit():
                coef *= int(factor)
            else:
                symbols.append(factor)
    return Product(coef, tuple(sorted(symbols)))


def static_product(dims: Iterable[Dim]) -> int | None:
    """The product of ``dims`` when all are integers."""
    values = list(dims)
    ints = [d for d in values if isinstance(d, int)]
    return math.prod(ints) if len(ints) == len(values) else None
