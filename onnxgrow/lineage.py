"""Lineage: what onnxgrow did to a model, kept in its ``metadata_props`` (docs/design.md §7).

The key ``onnxgrow.history`` holds a JSON list with one object per operation::

    {"op": "widen", "node": "fc1", "old_width": 64, "new_width": 128,
     "init": "net2wider", "noise": 0.0, "seed": 0, "together": ["fc1"],
     "tool": "onnxgrow 0.1.0", "max_abs_error": 1e-7, "max_rel_error": 2e-8}
    {"op": "deepen", "after": "fc1", "mode": "identity", "width": 64,
     "new_nodes": ["fc1_deep"], "seed": 0, "tool": "onnxgrow 0.1.0", ...}
    {"op": "widen-heads", "node": "layers.0.self_attn", "attention": "layers.0.self_attn",
     "old_heads": 4, "new_heads": 8, "old_kv_heads": 2, "new_kv_heads": 2, "head_dim": 16,
     "tied_attentions": [], "init": "net2wider", "noise": 0.0, "seed": 0, "together": [...], ...}
    {"op": "widen", "node": "fc2", "old_width": 10, "new_width": 12, "new_outputs": true,
     "old_probabilities": "exact", "verify_scope": {...}, ...}
    {"op": "vocabulary", "node": "embed_tokens", "old_rows": 100, "new_rows": 120,
     "init": "mean", "head": "lm_head", "tied": true, "input_range": {"input_ids": 120},
     "verify_scope": {...}, ...}

``verify_scope`` is what a check of the original against this model compares (see
:class:`onnxgrow.verification.VerifyScope`); ``input_range`` is the integer range a
grown vocabulary accepts, drawn from when the grown model is verified against itself.

``max_*_error`` are filled in once verification has measured them (absent with
--no-verify).

A history is data from a file, which anyone can write: :func:`read_history` checks every
entry before anything uses it (the keys every entry may carry, :data:`COMMON_KEYS`, and
those its growth declares, ``entry_keys``), and leaves out an entry with a key of the wrong
kind, with a :class:`LineageWarning` naming the key. So a malformed entry is never described,
never narrows a check (``verify_scope``) and never widens the ids drawn (``input_range``).
Appending keeps the stored entries as they are.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import onnx_ir as ir

from onnxgrow import __version__
from onnxgrow.errors import OnnxgrowWarning
from onnxgrow.growths import growth_of

HISTORY_KEY = "onnxgrow.history"

#: A check of one value of a lineage entry, and what it should have been, in words.
KeyCheck = tuple[Callable[[object], bool], str]


class LineageWarning(OnnxgrowWarning):
    """An ``onnxgrow.history`` entry that is malformed, and so left out."""


def _integer(low: int | None = None) -> KeyCheck:
    def check(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and (low is None or value >= low)

    return check, "an integer" if low is None else f"an integer >= {low}"


def _optional(check: KeyCheck) -> KeyCheck:
    return (lambda value: value is None or check[0](value)), f"{check[1]} or null"


TEXT: KeyCheck = (lambda value: isinstance(value, str)), "a string"
OPTIONAL_TEXT = _optional(TEXT)
INTEGER = _integer()
COUNT = _integer(0)
NUMBER: KeyCheck = (lambda value: isinstance(value, (int, float)) and not isinstance(value, bool)), "a number"
FLAG: KeyCheck = (lambda value: isinstance(value, bool)), "true or false"
NAMES: KeyCheck = ((lambda value: isinstance(value, list) and all(isinstance(v, str) for v in value)),
                   "a list of names")
INPUT_RANGE: KeyCheck = ((lambda value: isinstance(value, dict)
                          and all(_integer(1)[0](high) for high in value.values())),
                         "an object of input names and integers >= 1")


def _scope(value: object) -> bool:
    """A ``verify_scope``: outputs ``{name: [axis, old_size >= 1]}``, input highs ``>= 1``,
    renormalisations ``softmax``/``log_softmax``, and words."""
    if not isinstance(value, dict):
        return False
    outputs, highs = value.get("outputs", {}), value.get("input_high", {})
    renormalise, preserved = value.get("renormalise", {}), value.get("preserved", "")
    return (isinstance(outputs, dict)
            and all(isinstance(p, list) and len(p) == 2 and INTEGER[0](p[0]) and _integer(1)[0](p[1])
                    for p in outputs.values())
            and INPUT_RANGE[0](highs)
            and isinstance(renormalise, dict) and all(v in ("softmax", "log_softmax") for v in renormalise.values())
            and isinstance(preserved, str))


SCOPE: KeyCheck = _scope, "an object of outputs [axis, old size >= 1], input highs and renormalisations"

#: The keys any entry may carry.
COMMON_KEYS: Mapping[str, KeyCheck] = {
    "op": TEXT, "node": TEXT, "seed": COUNT, "group": COUNT, "tool": TEXT, "init": TEXT,
    "max_abs_error": NUMBER, "max_rel_error": NUMBER, "verified_with": OPTIONAL_TEXT,
    "verify_scope": SCOPE, "input_range": INPUT_RANGE,
}


def entry_problem(entry: object) -> str | None:
    """Why a stored history entry cannot be used (naming the key), or None when it can."""
    if not isinstance(entry, dict):
        return "it is not an object"
    if not isinstance(entry.get("op"), str):
        return "'op' is missing or not a string"
    found = growth_of(entry)
    own: Mapping[str, KeyCheck] = getattr(found.operation, "entry_keys", {}) if found is not None else {}
    for key, value in entry.items():
        check = own.get(key) or COMMON_KEYS.get(key)
        if check is not None and not check[0](value):
            return f"{key!r} is {value!r:.60}, not {check[1]}"
    return None


def parse_history(text: str | None) -> list[dict[str, Any]]:
    """The usable entries of the history stored as ``text`` (empty when absent or unreadable);
    each entry left out is named in a :class:`LineageWarning`."""
    usable = []
    for index, entry in enumerate(_stored(text)):
        problem = entry_problem(entry)
        if problem is None:
            usable.append(entry)
        else:
            warnings.warn(f"onnxgrow.history entry {index} left out: {problem}", LineageWarning, stacklevel=2)
    return usable


def _stored(text: str | None) -> list[Any]:
    """The stored list as it is (``[]`` when absent, unreadable or not a list)."""
    if not text:
        return []
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        warnings.warn("onnxgrow.history is not valid JSON; left out", LineageWarning, stacklevel=2)
        return []
    return data if isinstance(data, list) else []


def read_history(model: ir.Model) -> list[dict[str, Any]]:
    """The model's onnxgrow history: its usable entries (see the module docstring)."""
    return parse_history(model.metadata_props.get(HISTORY_KEY))


def append_history(model: ir.Model, entry: dict[str, Any]) -> None:
    """Append one operation to the model's history, keeping the stored entries as they are."""
    history = _stored(model.metadata_props.get(HISTORY_KEY))
    history.append({**entry, "tool": f"onnxgrow {__version__}"})
    model.metadata_props[HISTORY_KEY] = json.dumps(history)


def with_errors(text: str, count: int, max_abs: float, max_rel: float, provider: str | None) -> str:
    """The history ``text`` with measured errors stored on its last ``count`` entries."""
    history = _stored(text)
    for entry in history[-count:]:
        entry["max_abs_error"] = max_abs
        entry["max_rel_error"] = max_rel
        entry["verified_with"] = provider
    return json.dumps(history)


def describe(entry: dict[str, Any]) -> str:
    """One entry in plain words, e.g. ``fc1 widened 64 → 128, net2wider, seed 0``: the growth
    that wrote it says what it did (:mod:`onnxgrow.growths`), then its seed and measured error."""
    found = growth_of(entry)
    text = found.describe(entry) if found is not None else f"{entry.get('op')}"
    seed = entry.get("seed")
    if seed is not None:
        text += f", seed {seed}"
    if "max_rel_error" in entry:
        text += f", verified max rel error {entry['max_rel_error']:.2g}"
    return text
