"""The checks CONTRIBUTING.md asks for before a commit run in the suite too, so CI runs them:
``ruff check onnxgrow tests scripts`` (lint, import order) and ``mypy onnxgrow`` (types), both
configured in ``pyproject.toml``. Each must report nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers.optional import needs
from tests.helpers.paths import REPO


@pytest.mark.parametrize("command", [
    pytest.param(["ruff", "check", "onnxgrow", "tests", "scripts"], id="ruff"),
    pytest.param(["mypy", "onnxgrow"], id="mypy", marks=needs("torch")),  # the modules that use torch need its types
])
def test_clean(command: list[str]) -> None:
    pytest.importorskip(command[0])
    run = subprocess.run([sys.executable, "-m", *command], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
