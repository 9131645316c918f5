"""The checks CONTRIBUTING.md asks for before a commit run in the suite too, so CI runs them:
``ruff check onnxgrow tests scripts`` (lint, import order) and ``mypy onnxgrow`` (types), both
configured in ``pyproject.toml``. Each must report nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("command", [["ruff", "check", "onnxgrow", "tests", "scripts"], ["mypy", "onnxgrow"]],
                         ids=["ruff", "mypy"])
def test_clean(command: list[str]) -> None:
    pytest.importorskip(command[0])
    run = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
