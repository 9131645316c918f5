"""The CLI run in-process, and the checks that a refused command wrote and touched nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

from click.testing import CliRunner

from onnxgrow.cli import main


def tree_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (to prove inputs are untouched)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def run(*args: str) -> tuple[int, str, str]:
    """Run the CLI in-process: (exit code, stdout, stderr)."""
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def assert_refused(folder: Path, args: list[str], message: str, out: Path, code: int = 2) -> str:
    """The command fails with ``code`` and one line naming ``message``; nothing written or touched."""
    before = tree_hashes(folder)
    exit_code, stdout, stderr = run(*args)
    assert exit_code == code, (exit_code, stdout, stderr)
    assert message in stderr, stderr
    assert stderr.count("\n") == 1 and "Traceback" not in stderr
    assert not out.exists()
    assert tree_hashes(folder) == before
    assert not [p for p in folder.iterdir() if p.name.startswith(".")], "temporary files left behind"
    return stderr
