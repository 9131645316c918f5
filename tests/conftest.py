"""Shared test fixtures: the committed reference models and file-safety helpers."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from onnxgrow.cli import main

# Keras exports that run inside the test process use the torch backend: with TensorFlow
# installed (the tf test extra), Keras would load it into a process that also runs
# torch.onnx's dynamo exporter, and importing triton there crashes the process
# (segmentation fault). TensorFlow runs in subprocesses only (tests/tf_zoo.py).
os.environ.setdefault("KERAS_BACKEND", "torch")

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
REFERENCE_MODELS = ["mlp_legacy", "mlp_dynamo", "mnist_cnn_legacy", "mnist_cnn_dynamo"]


def fixture_path(name: str) -> Path:
    """Path of a committed fixture model by stem."""
    return FIXTURES / f"{name}.onnx"


def tree_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (to prove inputs are untouched)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


@pytest.fixture
def fixture_copy(tmp_path: Path):
    """Copy a reference model (and its external data) into a fresh folder; return its path."""

    def copy(name: str) -> Path:
        for src in FIXTURES.glob(f"{name}.onnx*"):
            (tmp_path / src.name).write_bytes(src.read_bytes())
        return tmp_path / f"{name}.onnx"

    return copy


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
