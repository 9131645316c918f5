"""What every command answers to a user error: one line, the documented exit status."""

from __future__ import annotations

from pathlib import Path

import pytest

from onnxgrow import signals
from tests.helpers.cli import run
from tests.helpers.paths import fixture_path


@pytest.mark.parametrize(("args", "message"), [
    (["widen", "{m}", "--node", "layer_1", "--heads", "4.5"], "Invalid value for '--heads': '4.5'"),
    (["widen", "{m}", "--node", "layer_1", "--bogus"], "No such option '--bogus'"),
    (["widen"], "Missing argument 'MODEL'"),
    (["export", "{m}", "--to", "nothing"], "Invalid value for '--to'"),
    (["verify", "{m}", "{m}", "--samples", "many"], "Invalid value for '--samples'"),
    (["nosuch"], "No such command 'nosuch'"),
])
def test_option_errors_are_one_line(args: list[str], message: str) -> None:
    code, stdout, stderr = run(*[a.format(m=fixture_path("mlp_legacy")) for a in args])
    assert code == 2 and stdout == ""
    assert stderr.count("\n") == 1 and stderr.startswith("error: ") and message in stderr, stderr
    assert "--help" in stderr


def test_an_error_after_sigterm_exits_as_terminated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A SIGTERM that cut an import short can surface as another error (a package that seems
    missing): the command still exits 143, not 2."""
    monkeypatch.setattr(signals, "_received", [True])
    code, _, stderr = run("widen", str(fixture_path("mlp_legacy")), "--node", "nosuch", "--to", "9",
                          "-o", str(tmp_path / "w.onnx"))
    assert code == signals.EXIT_TERMINATED and stderr == "terminated; nothing written\n"
    assert list(tmp_path.iterdir()) == []


def test_new_outputs_is_refused_with_heads() -> None:
    code, _, stderr = run("widen", str(fixture_path("mlp_legacy")), "--node", "a", "--heads", "8", "--new-outputs")
    assert code == 2 and "--new-outputs goes with --to" in stderr
