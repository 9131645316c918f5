"""Where the repository and its committed reference models are."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures"
REFERENCE_MODELS = ["mlp_legacy", "mlp_dynamo", "mnist_cnn_legacy", "mnist_cnn_dynamo"]


def fixture_path(name: str) -> Path:
    """Path of a committed fixture model by stem."""
    return FIXTURES / f"{name}.onnx"
