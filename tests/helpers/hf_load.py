"""A grown state dict loaded strictly into its ``transformers`` class, and its logits.

Run where the export was made: in the test process for the dynamo exports, in the optimum
environment (``ONNXGROW_OPTIMUM_PYTHON``) for optimum's, whose ``transformers`` may name the
modules otherwise (``python -m tests.helpers.hf_load SPEC.json`` from the repository root, as
:func:`tests.helpers.hf_growth.framework_logits` runs it). So this module imports only what
both environments have: numpy at module level, torch, transformers and safetensors inside.

The model is its family's class (:data:`tests.helpers.hf_zoo.MODELS`) built from the export's
config with some entries changed; non-persistent buffers (LLaMA's ``rotary_emb.inv_freq``, a
constant in the ONNX model) are left out of the state dict, every other name must match.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tests.helpers.hf_zoo import MODELS


def grown_model(name: str, config: Mapping[str, Any], changes: Mapping[str, Any], state_file: Path) -> Any:
    """The class of ``name`` built from ``config`` updated by ``changes``, loaded with
    ``strict=True`` from the safetensors file ``state_file``."""
    import transformers
    from safetensors.torch import load_file

    entry = MODELS[name]
    settings = {k: v for k, v in config.items() if k not in ("architectures", "transformers_version")}
    built = getattr(transformers, entry.config_class)(**{**settings, **changes})
    model = getattr(transformers, entry.model_class)(built).eval()
    transient = {n for n, _ in model.named_buffers()} - set(model.state_dict())
    state = {k: v for k, v in load_file(str(state_file)).items() if k not in transient}
    model.load_state_dict(state, strict=True)
    return model


def logits(model: Any, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """The model's logits on ``inputs`` (the ONNX model's inputs)."""
    import torch

    with torch.no_grad():
        return model(**{k: torch.from_numpy(np.asarray(v)) for k, v in inputs.items()}).logits.numpy()


def run_spec(spec_file: Path) -> None:
    """The logits of the spec's grown model on its inputs, saved to its ``out`` (.npy)."""
    spec = json.loads(spec_file.read_text())
    model = grown_model(spec["name"], spec["config"], spec["changes"], Path(spec["state"]))
    inputs = dict(np.load(spec["inputs"]))
    np.save(spec["out"], logits(model, inputs))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.helpers.hf_load SPEC.json")
    run_spec(Path(sys.argv[1]))
