"""The sizes a growth asks for: a count (``128``), a multiple of the current one (``2x``,
``1.5x``) or an increase (``+8``) (docs/design.md §9).

``--to``, ``--heads``, ``--kv-heads`` and ``--rows`` take any of them, and so do the widening
operations (a size is an ``int``, one of these strings, or a :class:`Size`). A multiple or
an increase is resolved against the layer it is applied to when the growth is planned, so one
pattern (``--node 'model.layers.*.mlp.up_proj' --to 1.5x``) grows layers of different widths
each by its own measure. A multiple is exact arithmetic (``1.5x`` is ``3/2``): one that does
not give a whole number is refused with the whole numbers around it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction

from onnxgrow.errors import GrowError

_COUNT = re.compile(r"^-?\d+$")
_INCREASE = re.compile(r"^\+(\d+)$")
_MULTIPLE = re.compile(r"^(\d+(?:\.\d+)?|\.\d+)[xX×]$")
#: The forms a size is written in, for messages.
FORMS = "a count (128), a multiple (2x, 1.5x) or an increase (+8)"


@dataclass(frozen=True)
class Size:
    """A requested size: exactly one of ``count``, ``factor`` (a multiple of the current
    size) or ``increase`` is set; ``text`` is how it was written."""

    text: str
    count: int | None = None
    factor: Fraction | None = None
    increase: int | None = None

    @staticmethod
    def parse(value: int | str | Size, what: str = "size") -> Size:
        """``value`` as a size; GrowError naming ``what`` (``--to for 'fc1'``) when it is none."""
        if isinstance(value, Size):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return Size(str(value), count=value)
        text = value.strip() if isinstance(value, str) else ""
        if _COUNT.match(text):
            return Size(text, count=int(text))
        increase = _INCREASE.match(text)
        if increase:
            return Size(text, increase=int(increase.group(1)))
        multiple = _MULTIPLE.match(text)
        if multiple:
            return Size(text, factor=Fraction(multiple.group(1)))
        raise GrowError(f"{what} must be {FORMS}, got {value!r}")

    @property
    def relative(self) -> bool:
        """Whether the size depends on the current one (a multiple or an increase)."""
        return self.count is None

    def of(self, current: int, what: str, unit: str = "width") -> int:
        """The size for something ``current`` large (``what``: ``'fc1' (width 64)`` in words);
        GrowError when a multiple gives no whole number."""
        if self.count is not None:
            return self.count
        if self.increase is not None:
            return current + self.increase
        assert self.factor is not None
        exact = self.factor * current
        if exact.denominator != 1:
            low, high = math.floor(exact), math.ceil(exact)
            raise GrowError(f"{self.text} of {what} ({unit} {current}) is {float(exact):g}, not a whole {unit}; "
                            f"give a count ({low} or {high}) or another multiple")
        return int(exact)

    def __str__(self) -> str:
        return self.text
