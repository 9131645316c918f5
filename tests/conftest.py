"""Shared test fixtures. Helper functions live in ``tests/helpers/``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers.paths import FIXTURES

# Keras exports that run inside the test process use the torch backend: with TensorFlow
# installed (the tf test extra), Keras would load it into a process that also runs
# torch.onnx's dynamo exporter, and importing triton there crashes the process
# (segmentation fault). TensorFlow runs in subprocesses only (tests/helpers/tf_zoo.py).
os.environ.setdefault("KERAS_BACKEND", "torch")
# Every growth's plan is checked to leave the model as it was (onnxgrow.pipeline.checked_plan).
os.environ.setdefault("ONNXGROW_CHECK_PLAN", "1")


@pytest.fixture
def fixture_copy(tmp_path: Path):
    """Copy a reference model (and its external data) into a fresh folder; return its path."""

    def copy(name: str) -> Path:
        for src in FIXTURES.glob(f"{name}.onnx*"):
            (tmp_path / src.name).write_bytes(src.read_bytes())
        return tmp_path / f"{name}.onnx"

    return copy
