"""Growing the tiny ``transformers`` exports of :mod:`tests.helpers.hf_zoo` and checking the results.

- :func:`hf_exports`: a session fixture factory, ``(name, exporter) -> (path, sidecar)``; optimum's
  exports skip without the optimum environment (``.venv-optimum`` or ``ONNXGROW_OPTIMUM_PYTHON``);
- :func:`feeds`: inputs for an export as its exporter named them (``input_ids``, ``attention_mask``
  of ones, ``token_type_ids`` of zeros, ``position_ids`` counting up, ``pixel_values`` of :data:`IMAGE`),
  ids drawn below ``vocab``;
- :func:`max_rel`: the check's error measure (max |a - b| over max |a|);
- :func:`block_container`, :func:`ffn_pattern`: what a user types for the export's blocks, from its sidecar;
- :func:`framework_logits`: a grown state dict loaded strictly into its ``transformers`` class
  (:mod:`tests.helpers.hf_load`), run where the export was made.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from tests.helpers.hf_zoo import (
    MODELS,
    ExportFailed,
    export,
    hf_directory,
    in_other_environment,
    optimum_python,
    skip_without_other_environment,
)
from tests.helpers.paths import REPO

Export = tuple[Path, dict[str, Any]]
#: An image of the tiny ViT (channels, height, width): what ``pixel_values`` holds past the batch
#: where the export leaves those axes dynamic (optimum's does).
IMAGE = (MODELS["vit"].config["num_channels"], MODELS["vit"].config["image_size"], MODELS["vit"].config["image_size"])


def hf_exports(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Export]:
    """``get(name, exporter)``: the export and its sidecar, written once per session."""
    directory = hf_directory(tmp_path_factory.getbasetemp())

    def get(name: str, exporter: str) -> Export:
        skip_without_other_environment(exporter)
        try:
            return export(name, exporter, directory)
        except ExportFailed as failed:
            pytest.fail(str(failed))

    return get


def block_container(info: Mapping[str, Any]) -> str:
    """The path of the export's blocks as the framework numbers them (``model.layers``), from its sidecar."""
    (container,) = info["blocks"]
    return str(container)


def ffn_pattern(info: Mapping[str, Any], suffixes: tuple[str, ...]) -> str:
    """The pattern of every block's FFN projection: the first of ``suffixes`` (by transformers
    line: ViT's ``intermediate.dense`` became ``mlp.fc1``) that the first block's linear layers have."""
    container = block_container(info)
    first = f"{container}.0."
    inside = [path[len(first):] for path in info["linear"][f"{container}.0"]]
    return f"{container}.*.{next(s for s in suffixes if s in inside)}"


def feeds(path: Path, vocab: int = 64, batch: int = 2, seq: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for the model at ``path``, by input name (see the module docstring)."""
    rng = np.random.default_rng(seed)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    found: dict[str, np.ndarray] = {}
    for value in session.get_inputs():
        if value.name == "pixel_values":
            size = [d if isinstance(d, int) else full for d, full in zip(value.shape, (batch, *IMAGE), strict=True)]
            found[value.name] = rng.standard_normal(size).astype(np.float32)
        elif value.name == "attention_mask":
            found[value.name] = np.ones((batch, seq), dtype=np.int64)
        elif value.name == "token_type_ids":
            found[value.name] = np.zeros((batch, seq), dtype=np.int64)
        elif value.name == "position_ids":
            found[value.name] = np.broadcast_to(np.arange(seq, dtype=np.int64), (batch, seq)).copy()
        else:
            found[value.name] = rng.integers(0, vocab, (batch, seq)).astype(np.int64)
    return found


def run_onnx(path: Path, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """The model's first output on ``inputs``."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, dict(inputs))[0]


def max_rel(reference: np.ndarray, other: np.ndarray) -> float:
    return float(np.abs(reference - other).max() / max(float(np.abs(reference).max()), 1e-30))


def framework_logits(name: str, exporter: str, config: Mapping[str, Any], changes: Mapping[str, Any],
                     state_file: Path, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """The logits of the state dict ``state_file`` loaded strictly into the class of ``name``
    built from ``config`` with ``changes`` (:mod:`tests.helpers.hf_load`), in the environment
    that made the export: here for dynamo, the optimum environment for the exports made there."""
    if not in_other_environment(exporter):
        from tests.helpers.hf_load import grown_model, logits

        return logits(grown_model(name, config, changes, state_file), inputs)
    folder = state_file.parent
    np.savez(folder / "inputs.npz", **inputs)
    spec = {"name": name, "config": dict(config), "changes": dict(changes), "state": str(state_file),
            "inputs": str(folder / "inputs.npz"), "out": str(folder / "logits.npy")}
    (folder / "spec.json").write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    python = optimum_python()
    assert python, "no optimum environment"
    done = subprocess.run([python, "-m", "tests.helpers.hf_load",
                           str(folder / "spec.json")], env=env, capture_output=True, text=True, cwd=REPO,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return np.load(folder / "logits.npy")
