"""Folders written by ``export --to hf`` loaded with ``from_pretrained``, and their logits, in
another environment: ``python -m tests.helpers.hf_folder_load SPEC.json`` from the repository
root, in the optimum environment, whose ``transformers`` is the 4.57 line (the test process
has the current one). Imports only numpy at module level, as that environment has no onnxgrow.

SPEC is a JSON list of ``{"folder", "feeds" (an .npz), "logits" (an .npy to write)}``; the
report (standard output, one JSON object) gives the ``transformers`` version and, per folder,
the keys ``from_pretrained`` found missing, unexpected or mismatched.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def load_and_run(folder: Path, feeds_file: Path, logits_file: Path) -> dict[str, Any]:
    """Load ``folder`` into the class its config names, run it on the feeds, save the logits."""
    import torch
    import transformers

    config = json.loads((folder / "config.json").read_text())
    cls = getattr(transformers, config["architectures"][0])
    model, info = cls.from_pretrained(str(folder), output_loading_info=True)
    model.eval()
    with np.load(feeds_file) as data:
        inputs = {name: torch.from_numpy(data[name]) for name in data.files}
    with torch.no_grad():
        np.save(logits_file, model(**inputs).logits.numpy())
    return {key: sorted(map(str, info.get(key, []))) for key in ("missing_keys", "unexpected_keys", "mismatched_keys")}


def main(spec_file: Path) -> None:
    import transformers

    specs = json.loads(spec_file.read_text())
    loaded = {spec["folder"]: load_and_run(Path(spec["folder"]), Path(spec["feeds"]), Path(spec["logits"]))
              for spec in specs}
    print(json.dumps({"transformers": transformers.__version__, "loaded": loaded}))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.helpers.hf_folder_load SPEC.json")
    main(Path(sys.argv[1]))
