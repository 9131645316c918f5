"""Text from a model (node, tensor and file names) made safe to print on a terminal.

A name in a hostile or damaged model may hold ESC sequences (which recolour, move the
cursor or retitle the window), carriage returns (which overwrite what was printed) or
line breaks (which forge a line of their own). Rules:

- :func:`printable`: every control character (C0, DEL, C1, and the Unicode line and
  paragraph separators) becomes a visible escape: ``\\n``, ``\\r``, ``\\t``, ``\\x1b``,
  ``\\u2028``. For one name or one line.
- :func:`printable_lines`: the same, except that line breaks are kept: for a whole
  report whose own lines are separated by ``\\n``.
"""

from __future__ import annotations

import re

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control character escaped, line breaks included."""
    return _CONTROL.sub(_escape, text)


def printable_lines(text: str) -> str:
    """``text`` with every control character but ``\\n`` escaped."""
    return _CONTROL_BUT_NEWLINE.sub(_escape, text)
