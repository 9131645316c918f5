"""Folders written by ``export --to hf`` loaded with ``from_pretrained``, and their logits, in
either ``transformers`` line: in the test process (the current one), and in the optimum
environment (the 4.57 line) as a server, ``python -m tests.helpers.hf_folder_load --serve``
from the repository root, which imports torch and transformers once for every folder a test
worker sends. Imports only numpy at module level, as that environment has no onnxgrow.

The server reads one JSON request a line, ``{"folder", "feeds" (an .npz), "logits" (an .npy to
write)}``, and answers one JSON line: the keys ``from_pretrained`` found missing, unexpected
or mismatched, or ``{"error": ...}``. Its first line gives its ``transformers`` version.

Feeds are the ONNX model's inputs by name; a key/value cache (``past_key_values.N.key`` and
``.value``, optimum's names) becomes the ``DynamicCache`` the model takes (:func:`model_inputs`).
"""

from __future__ import annotations

import inspect
import json
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

PAST_PREFIX = "past_key_values."


def model_inputs(model: Any, feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The keyword arguments of ``model``'s forward for the ONNX feeds: tensors by name, and the
    cache inputs, if any, as a ``DynamicCache`` of their layers in order (with ``use_cache``)."""
    import torch
    import transformers

    found: dict[str, Any] = {k: torch.from_numpy(np.asarray(v)) for k, v in feeds.items()
                             if not k.startswith(PAST_PREFIX)}
    layers = sorted({int(k[len(PAST_PREFIX):].split(".")[0]) for k in feeds if k.startswith(PAST_PREFIX)})
    if layers:
        cache = transformers.DynamicCache()
        for layer in layers:
            cache.update(torch.from_numpy(np.asarray(feeds[f"{PAST_PREFIX}{layer}.key"])),
                         torch.from_numpy(np.asarray(feeds[f"{PAST_PREFIX}{layer}.value"])), layer)
        argument = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        found.update({argument: cache, "use_cache": True})
    return found


def load(folder: Path) -> tuple[Any, dict[str, list[str]]]:
    """The model of ``folder`` (the class its config names) in eval mode, and the keys
    ``from_pretrained`` reports missing, unexpected or mismatched."""
    import transformers

    config = json.loads((folder / "config.json").read_text())
    cls = getattr(transformers, config["architectures"][0])
    model, info = cls.from_pretrained(str(folder), output_loading_info=True)
    model.eval()
    return model, {key: sorted(map(str, info.get(key, []))) for key in
                   ("missing_keys", "unexpected_keys", "mismatched_keys")}


def load_and_run(folder: Path, feeds_file: Path, logits_file: Path) -> dict[str, Any]:
    """Load ``folder``, run it on the feeds, save the logits; the loading report."""
    import torch

    model, report = load(folder)
    with np.load(feeds_file) as data:
        feeds = {name: data[name] for name in data.files}
    with torch.no_grad():
        np.save(logits_file, model(**model_inputs(model, feeds))[0].numpy())  # logits, or the last hidden state
    return report


def serve() -> None:
    """Answer requests from standard input until it closes (module docstring)."""
    answers, sys.stdout = sys.stdout, sys.stderr  # what the libraries print stays out of the answers
    import transformers

    print(json.dumps({"transformers": transformers.__version__}), file=answers, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer = load_and_run(Path(request["folder"]), Path(request["feeds"]), Path(request["logits"]))
        except Exception:  # noqa: BLE001 - reported to the test, which fails with it
            answer = {"error": traceback.format_exc()[-3000:]}
        print(json.dumps(answer), file=answers, flush=True)


if __name__ == "__main__":
    if sys.argv[1:] != ["--serve"]:
        sys.exit("usage: python -m tests.helpers.hf_folder_load --serve")
    serve()
