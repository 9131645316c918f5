"""The lineage read defensively: a malformed ``onnxgrow.history`` entry is left out with one
warning line naming its key, is never trusted for a verdict, and never causes a traceback."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import onnx
import pytest

from onnxgrow.lineage import HISTORY_KEY, LineageWarning, describe, parse_history
from tests.helpers.cli import run
from tests.helpers.paths import fixture_path

GOOD = {"op": "widen", "node": "layer_1", "old_width": 4, "new_width": 8, "init": "net2wider", "noise": 0.0,
        "seed": 0, "together": ["layer_1"], "tool": "onnxgrow 0.1.0", "max_abs_error": 0.0, "max_rel_error": 0.0}
SCOPED = {"op": "widen", "node": "layer_3", "old_width": 2, "new_width": 4, "init": "zero-pad", "noise": 0.0,
          "seed": 0, "together": ["layer_3"], "new_outputs": True, "old_probabilities": None,
          "verify_scope": {"outputs": {"y": [1, 2]}, "input_high": {}, "renormalise": {}, "preserved": "old"}}
HEADS = {"op": "widen-heads", "node": "a", "attention": "a", "old_heads": 2, "new_heads": 4, "old_kv_heads": 2,
         "new_kv_heads": 4, "head_dim": 8, "tied_attentions": [], "init": "net2wider", "noise": 0.0, "seed": 0,
         "together": ["a.q"]}
VOCABULARY = {"op": "vocabulary", "node": "wte", "old_rows": 50, "new_rows": 60, "init": "mean", "seed": 0,
              "head": None, "tied": False, "input_range": {"ids": 60},
              "verify_scope": {"outputs": {}, "input_high": {"ids": 50}, "renormalise": {}, "preserved": ""}}


def _with(entry: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**entry, **changes}


def _scope(**outputs: Any) -> dict[str, Any]:
    return {"outputs": outputs, "input_high": {}, "renormalise": {}, "preserved": ""}


#: (entry, the key the warning names)
HOSTILE = [
    (_with(GOOD, max_rel_error="abc"), "max_rel_error"),
    (_with(GOOD, together=5), "together"),
    (_with(GOOD, old_width="4"), "old_width"),
    (_with(GOOD, seed=-1), "seed"),
    (_with(HEADS, tied_attentions=7), "tied_attentions"),
    (_with(VOCABULARY, input_range="ids"), "input_range"),
    (_with(VOCABULARY, input_range=[60]), "input_range"),
    (_with(VOCABULARY, input_range={"ids": -4}), "input_range"),
    (_with(SCOPED, verify_scope=_scope(y=1)), "verify_scope"),
    (_with(SCOPED, verify_scope={"outputs": [1, 2]}), "verify_scope"),
    (_with(SCOPED, verify_scope={"outputs": "y"}), "verify_scope"),
    (_with(SCOPED, verify_scope=_scope(y=[1, -3])), "verify_scope"),
    (_with(SCOPED, verify_scope=_scope(y=["1", 2])), "verify_scope"),
    (_with(SCOPED, new_outputs=5), "new_outputs"),
    ({"op": 3}, "'op'"),
    ("an entry", "not an object"),
]


def _model_with_history(folder: Path, history: list[Any]) -> Path:
    proto = onnx.load(str(fixture_path("mlp_legacy")))
    del proto.metadata_props[:]
    proto.metadata_props.add(key=HISTORY_KEY, value=json.dumps(history))
    path = folder / "m.onnx"
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize(("entry", "key"), HOSTILE)
def test_a_malformed_entry_is_left_out_naming_its_key(entry: Any, key: str) -> None:
    with pytest.warns(LineageWarning, match=f"entry 1 left out: .*{key}"):
        history = parse_history(json.dumps([GOOD, entry]))
    assert history == [GOOD]


@pytest.mark.parametrize("entry", [GOOD, SCOPED, HEADS, VOCABULARY])
def test_well_formed_entries_are_kept_and_described(entry: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert parse_history(json.dumps([entry])) == [entry]
        assert describe(entry)


@pytest.mark.parametrize(("entry", "key"), HOSTILE)
@pytest.mark.parametrize("command", [
    ["inspect", "{m}"],
    ["diff", "{base}", "{m}"],
    ["verify", "{base}", "{m}"],
    ["widen", "{m}", "--node", "layer_1", "--to", "40", "-o", "{dir}/w.onnx", "-q"],
])
def test_every_command_warns_once_and_goes_on(entry: Any, key: str, command: list[str], tmp_path: Path) -> None:
    model = _model_with_history(tmp_path, [GOOD, entry])
    args = [a.format(m=model, base=fixture_path("mlp_legacy"), dir=tmp_path) for a in command]
    code, stdout, stderr = run(*args)
    assert "Traceback" not in stderr
    warned = [line for line in stderr.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 1 and "entry 1 left out" in warned[0] and key in warned[0], stderr
    expected = {"diff": 1}.get(command[0], 0)  # the weights are the base's; diff sees the new history
    assert code == expected, (stdout, stderr)
    if command[0] == "verify":
        assert "PASSED" in stdout


def test_a_scope_the_outputs_cannot_hold_is_not_trusted(tmp_path: Path) -> None:
    """A well-formed scope naming an axis the output does not have compares the whole output."""
    proto = onnx.load(str(fixture_path("mlp_legacy")))
    output = proto.graph.output[0].name
    entry = _with(SCOPED, verify_scope=_scope(**{output: [99, 1]}))
    model = _model_with_history(tmp_path, [entry])
    code, stdout, stderr = run("verify", str(fixture_path("mlp_legacy")), str(model))
    assert code == 0 and "PASSED" in stdout and "Traceback" not in stderr, (stdout, stderr)


def test_appending_keeps_stored_entries_as_they_are(tmp_path: Path) -> None:
    hostile = _with(GOOD, together=5)
    model = _model_with_history(tmp_path, [hostile])
    out = tmp_path / "w.onnx"
    code, _, stderr = run("widen", str(model), "--node", "layer_1", "--to", "40", "-o", str(out), "-q")
    assert code == 0, stderr
    stored = json.loads(next(p.value for p in onnx.load(str(out)).metadata_props if p.key == HISTORY_KEY))
    assert stored[0] == hostile and stored[1]["op"] == "widen" and stored[1]["new_width"] == 40
