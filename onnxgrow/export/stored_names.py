"""Names from a model made safe where a file format stores them: archive members (``.npz``), HDF5
names and attributes (``.weights.h5``), and the like.

Rule: every control character (C0 including NUL, DEL, C1) and every path separator (``/``,
``\\``) becomes ``_``, and a name of dots only (``.``, ``..``) becomes as many ``_``; nothing
else changes, length included (a Keras layer name of 10,000 characters is kept as it is).
So ``..`` is never a path step, a NUL never ends a name early in a C library (zip, HDF5),
and no escape sequence reaches a terminal that lists the archive. Two names that become one
are refused before anything is written: one would silently replace the other's weights.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from onnxgrow.errors import GrowError

_UNSTORABLE = re.compile(r"[\x00-\x1f\x7f-\x9f/\\]")


def storable(name: str) -> str:
    """``name`` with what no file member may hold replaced (see the module docstring)."""
    text = _UNSTORABLE.sub("_", name)
    return "_" * len(text) if text and not text.strip(".") else text or "_"


def storable_names(names: Iterable[str], what: str) -> dict[str, str]:
    """Each of ``names`` → its storable form; GrowError when two become one (``what``: the kind
    of name, ``Keras layers``), naming both."""
    stored: dict[str, str] = {}
    seen: dict[str, str] = {}
    for name in names:
        safe = storable(name)
        other = seen.get(safe)
        if other is not None and other != name:
            raise GrowError(f"the {what} {other!r} and {name!r} would both be stored as {safe!r} (a file member "
                            "cannot hold control characters, / or \\); rename one; nothing written")
        seen[safe] = name
        stored[name] = safe
    return stored


def renamed_notes(stored: dict[str, str], what: str) -> list[str]:
    """One note per name that is stored under another form."""
    return [f"{what} {name!r} is stored as {safe!r}" for name, safe in stored.items() if safe != name]
