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
"""

from __future__ import annotations

import json
from typing import Any

import onnx_ir as ir

from onnxgrow import __version__

HISTORY_KEY = "onnxgrow.history"


def parse_history(text: str | None) -> list[dict[str, Any]]:
    """The history stored as ``text``; empty when absent or unreadable."""
    if not text:
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return []
    return [entry for entry in data if isinstance(entry, dict)] if isinstance(data, list) else []


def read_history(model: ir.Model) -> list[dict[str, Any]]:
    """The model's onnxgrow history."""
    return parse_history(model.metadata_props.get(HISTORY_KEY))


def append_history(model: ir.Model, entry: dict[str, Any]) -> None:
    """Append one operation to the model's history."""
    history = read_history(model)
    history.append({**entry, "tool": f"onnxgrow {__version__}"})
    model.metadata_props[HISTORY_KEY] = json.dumps(history)


def with_errors(text: str, count: int, max_abs: float, max_rel: float, provider: str | None) -> str:
    """The history ``text`` with measured errors stored on its last ``count`` entries."""
    history = parse_history(text)
    for entry in history[-count:]:
        entry["max_abs_error"] = max_abs
        entry["max_rel_error"] = max_rel
        entry["verified_with"] = provider
    return json.dumps(history)


def describe(entry: dict[str, Any]) -> str:
    """One entry in plain words, e.g. ``fc1 widened 64 → 128, net2wider, seed 0``."""
    op = entry.get("op")
    seed = entry.get("seed")
    if op == "widen" and entry.get("new_outputs"):
        text = f"{entry.get('node')} outputs {entry.get('old_width')} → {entry.get('new_width')} classes"
        text += f", {entry.get('init', 'zero-pad')}"
        if entry.get("old_probabilities") == "exact":
            text += ", old probabilities exact (new classes start at probability 0)"
        elif entry.get("old_probabilities") == "renormalised":
            text += ", old probabilities renormalised"
        else:
            text += ", old logits exact"
    elif op == "vocabulary":
        text = f"{entry.get('node')} vocabulary {entry.get('old_rows')} → {entry.get('new_rows')} rows"
        text += f", {entry.get('init', 'mean')}"
        if entry.get("head"):
            text += f", LM head {entry['head']}" + (" (tied)" if entry.get("tied") else "")
    elif op == "widen":
        text = f"{entry.get('node')} widened {entry.get('old_width')} → {entry.get('new_width')}"
        text += f", {entry.get('init', 'net2wider')}"
        if entry.get("noise"):
            text += f" (noise {entry['noise']})"
        together = [n for n in entry.get("together", []) if n != entry.get("node")]
        if together:
            text += f", together with {', '.join(together)}"
    elif op == "widen-heads":
        text = (f"attention {entry.get('attention') or entry.get('node')}: "
                f"{entry.get('old_heads')} → {entry.get('new_heads')} heads")
        old_kv, new_kv = entry.get("old_kv_heads"), entry.get("new_kv_heads")
        if (old_kv, new_kv) != (entry.get("old_heads"), entry.get("new_heads")):
            text += f" ({old_kv} → {new_kv} key/value heads)"
        text += f", {entry.get('init', 'net2wider')}"
        if entry.get("noise"):
            text += f" (noise {entry['noise']})"
        tied = entry.get("tied_attentions") or []
        if tied:
            text += f", together with attention {', '.join(tied)}"
    elif op == "deepen":
        text = f"layer inserted after {entry.get('after')} ({entry.get('mode')}"
        if entry.get("width") is not None:
            text += f", width {entry['width']}"
        text += ")"
    else:
        text = f"{op}"
    if seed is not None:
        text += f", seed {seed}"
    if "max_rel_error" in entry:
        text += f", verified max rel error {entry['max_rel_error']:.2g}"
    return text
