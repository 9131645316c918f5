"""Tiny real ``transformers`` models and their ONNX exports: the graphs users have.

Every model is a real ``transformers`` class built from a tiny config (2 layers unless
``layers`` asks for another block count, hidden 32, random weights, seeded; nothing is
downloaded), and every parameter gets seeded noise so that no two are equal (exporters share
identical initializers, which trained models never have: all LayerNorm weights would be one
tensor). Exporters:

- ``dynamo``: ``torch.onnx.export(..., dynamo=True)`` with dynamic batch and sequence
  axes, in the test process; ``dynamo-static``: the same with every shape fixed by the
  example inputs (batch 2, sequence 6);
- ``legacy``: the TorchScript exporter (``dynamo=False``), for T5, which the dynamo exporter
  cannot export with transformers 5.25 and torch 2.14 (``Cannot view a tensor with shape
  [2, 6, 4, 8] ... as a tensor with shape (2, 6, 32)`` in T5Attention's output reshape);
- ``dynamo@transformers4``: the ``dynamo`` export made in the optimum environment (below), whose
  ``transformers`` is the 4.57 line: the same model as the older line builds and names it
  (ViT's ``vit.encoder.layer.*`` modules), so that both lines' dynamo graphs are tested;
- ``optimum:<task>``: ``optimum-cli export onnx --model <folder> --task <task>``, run by the
  Python of the optimum environment (``ONNXGROW_OPTIMUM_PYTHON``, else the repository's
  ``.venv-optimum``: optimum-onnx and the transformers it supports), in a subprocess that
  first builds the same tiny model with that transformers and saves it with
  ``save_pretrained``. Skipped when there is none. The JSON files optimum writes beside
  ``model.onnx`` (``config.json``...) are kept in the sidecar's ``files``.
  This module is that subprocess's script (``python -m tests.helpers.hf_zoo other SPEC``,
  from the repository root), so it imports nothing at module level that the optimum
  environment lacks.

Each export is written once per test session (:func:`tests.helpers.export_cache.write_once`, shared by
xdist workers) with a JSON sidecar, ``<export>.json``: the versions that made it, the
config as the exporting transformers saw it, and, from the torch module itself, the
blocks as the framework numbers them (every ModuleList of ``...Layer``/``...Block``
modules) with the linear layers inside each (``nn.Linear``, GPT-2's ``Conv1D``). Tests
compare the structure onnxgrow finds against those, not against hard-coded names.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers.export_cache import shared_directory, write_once
from tests.helpers.paths import REPO

OPTIMUM_PYTHON_VARIABLE = "ONNXGROW_OPTIMUM_PYTHON"
#: The dynamo exporter run with the other (4.57) ``transformers`` line, in the optimum environment.
DYNAMO_OTHER_LINE = "dynamo@transformers4"
_NOISE = 0.02


@dataclass(frozen=True)
class HFModel:
    """A tiny ``transformers`` model: its class, config, example inputs, and exporters."""

    model_class: str
    config_class: str
    config: dict[str, Any]
    inputs: tuple[str, ...]  # input_ids, attention_mask, decoder_input_ids, pixel_values
    exporters: tuple[str, ...]


_LLAMA = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=64, use_cache=False)
_IDS = ("input_ids",)

MODELS: dict[str, HFModel] = {
    "llama": HFModel("LlamaForCausalLM", "LlamaConfig", {**_LLAMA, "tie_word_embeddings": False}, _IDS,
                     ("dynamo", DYNAMO_OTHER_LINE, "optimum:text-generation", "optimum:text-generation-with-past")),
    # eager attention (the matmuls and softmax written out, repeat_kv before them), static shapes
    "llama-eager": HFModel("LlamaForCausalLM", "LlamaConfig", {**_LLAMA, "tie_word_embeddings": False,
                                                              "attn_implementation": "eager"}, _IDS,
                           ("dynamo-static",)),
    "llama-tied": HFModel("LlamaForCausalLM", "LlamaConfig", {**_LLAMA, "tie_word_embeddings": True}, _IDS,
                          ("dynamo", DYNAMO_OTHER_LINE, "optimum:text-generation")),
    "qwen2": HFModel("Qwen2ForCausalLM", "Qwen2Config", dict(_LLAMA), _IDS,
                     ("dynamo", DYNAMO_OTHER_LINE, "optimum:text-generation", "optimum:text-generation-with-past")),
    "gpt2": HFModel("GPT2LMHeadModel", "GPT2Config",
                    dict(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0,
                         eos_token_id=0, use_cache=False), _IDS,
                    ("dynamo", DYNAMO_OTHER_LINE, "optimum:text-generation", "optimum:text-generation-with-past")),
    "bert": HFModel("BertForSequenceClassification", "BertConfig",
                    dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=48, max_position_embeddings=64, num_labels=3),
                    ("input_ids", "attention_mask"), ("dynamo", DYNAMO_OTHER_LINE, "optimum:text-classification")),
    "vit": HFModel("ViTForImageClassification", "ViTConfig",
                   dict(image_size=16, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=48, num_labels=3),
                   ("pixel_values",), ("dynamo", DYNAMO_OTHER_LINE, "optimum:image-classification")),
    "t5": HFModel("T5Model", "T5Config",
                  dict(vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, use_cache=False),
                  ("input_ids", "decoder_input_ids"),
                  ("dynamo", "legacy", DYNAMO_OTHER_LINE, "optimum:feature-extraction")),
    "bart": HFModel("BartModel", "BartConfig",
                    dict(vocab_size=64, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                         decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48,
                         max_position_embeddings=64, use_cache=False), _IDS, ("dynamo",)),
}

CASES = [(name, exporter) for name, model in MODELS.items() for exporter in model.exporters]
#: Config fields holding the block count.
LAYER_FIELDS = ("num_hidden_layers", "n_layer", "num_layers")


class ExportFailed(RuntimeError):
    """The exporter could not export the model (the message says why)."""


# ----- building (in whichever environment runs this) -------------------------------------------


def model_config(name: str, layers: int | None = None) -> dict[str, Any]:
    """The config of ``name``, with ``layers`` blocks when given."""
    config = dict(MODELS[name].config)
    if layers is not None:
        config.update({key: layers for key in LAYER_FIELDS if key in config})
    return config


def build_model(name: str, layers: int | None = None) -> Any:
    """The seeded model ``name`` in eval mode, every parameter nudged by seeded noise."""
    import torch
    import transformers

    entry = MODELS[name]
    config = getattr(transformers, entry.config_class)(**model_config(name, layers))
    torch.manual_seed(0)
    model = getattr(transformers, entry.model_class)(config).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, parameter in sorted(model.named_parameters()):
            parameter.add_(_NOISE * torch.randn(parameter.shape, generator=generator))
    return model


def example_inputs(name: str) -> dict[str, Any]:
    import torch

    generator = torch.Generator().manual_seed(2)
    entry = MODELS[name]
    vocab = entry.config.get("vocab_size", 64)
    found: dict[str, Any] = {}
    for key in entry.inputs:
        if key == "pixel_values":
            size = entry.config["image_size"]
            found[key] = torch.randn(2, 3, size, size, generator=generator)
        elif key == "attention_mask":
            found[key] = torch.ones(2, 6, dtype=torch.long)
        else:
            found[key] = torch.randint(3, vocab, (2, 6), generator=generator)
    return found


def describe(model: Any) -> dict[str, Any]:
    """The blocks of a torch model as the framework numbers them, and their linear layers."""
    import torch

    blocks: dict[str, list[str]] = {}
    linear: dict[str, list[str]] = {}
    for path, module in model.named_modules():
        children = list(module) if isinstance(module, torch.nn.ModuleList) else []
        if not children or not all(type(m).__name__.endswith(("Layer", "Block")) for m in children):
            continue
        blocks[path] = [f"{path}.{k}" for k in range(len(children))]
        for k, child in enumerate(children):
            linear[f"{path}.{k}"] = [f"{path}.{k}.{sub}" for sub, m in child.named_modules()
                                     if isinstance(m, torch.nn.Linear) or type(m).__name__ == "Conv1D"]
    return {"blocks": blocks, "linear": linear}


def _versions() -> dict[str, str]:
    import torch
    import transformers

    return {"transformers": transformers.__version__, "torch": torch.__version__}


# ----- exporting -----------------------------------------------------------------------------------


def _export_in_process(name: str, exporter: str, path: Path, layers: int | None) -> dict[str, Any]:
    import torch

    model = build_model(name, layers)
    inputs = example_inputs(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter in ("dynamo", "dynamo-static"):
            batch = torch.export.Dim("batch", min=1, max=64)
            seq = torch.export.Dim("seq", min=2, max=64)
            shapes = ({k: ({0: batch} if k == "pixel_values" else {0: batch, 1: seq}) for k in inputs}
                      if exporter == "dynamo" else None)
            try:
                program = torch.onnx.export(model, (), kwargs=inputs, dynamo=True, dynamic_shapes=shapes,
                                            verbose=False)
            except Exception as exc:  # noqa: BLE001  # the exporter's own failure, reported as such
                lines = [ln for ln in str(exc).splitlines() if ln.strip()]
                cause = next((ln for ln in lines if "Error" in ln and ":" in ln), lines[0] if lines else repr(exc))
                raise ExportFailed(f"torch.onnx.export(dynamo=True) fails on {MODELS[name].model_class}: "
                                   f"{cause.strip()[:240]}") from None
            assert program is not None
            program.save(str(path), external_data=False)
        else:
            names = list(inputs)
            axes = {k: ({0: "batch"} if k == "pixel_values" else {0: "batch", 1: "seq"}) for k in names}
            torch.onnx.export(model, (), str(path), kwargs=inputs, dynamo=False, input_names=names,
                              dynamic_axes=axes)
    return {"exporter": exporter, **_versions(), "config": json.loads(model.config.to_json_string()),
            **describe(model)}


def _export_in_other_environment(name: str, exporter: str, path: Path, layers: int | None) -> dict[str, Any]:
    """``exporter`` (optimum's, or :data:`DYNAMO_OTHER_LINE`) run in the optimum environment."""
    python = optimum_python()
    assert python, f"no optimum environment: set {OPTIMUM_PYTHON_VARIABLE} or make .venv-optimum"
    what = (f"optimum-cli export onnx --task {exporter.split(':', 1)[1]}" if exporter.startswith("optimum:")
            else "torch.onnx.export(dynamo=True) with the other transformers line")
    with tempfile.TemporaryDirectory() as folder:
        spec = Path(folder) / "spec.json"
        spec.write_text(json.dumps({"name": name, "exporter": exporter, "folder": folder, "layers": layers}))
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        done = subprocess.run([python, "-m", "tests.helpers.hf_zoo", "other", str(spec)], env=env,
                              capture_output=True, text=True, timeout=900, cwd=REPO)
        if done.returncode != 0:
            raise ExportFailed(f"{what} failed on {MODELS[name].model_class}:\n"
                               f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        info = json.loads((Path(folder) / "info.json").read_text())
        if exporter.startswith("optimum:"):
            info["files"] = {f.name: f.read_text() for f in sorted((Path(folder) / "onnx").glob("*.json"))}
        onnx_files = sorted((Path(folder) / "onnx").glob("*.onnx"))
        if [f.name for f in onnx_files] != ["model.onnx"] or list((Path(folder) / "onnx").glob("*.onnx_data")):
            raise ExportFailed(f"{what} wrote {[f.name for f in onnx_files]}, not one self-contained model.onnx")
        path.write_bytes(onnx_files[0].read_bytes())
    return info


def _other_main(spec_path: str) -> None:
    """In the optimum environment: build the model and export it (optimum: save it with
    save_pretrained and run optimum-cli on the folder), then describe it."""
    spec = json.loads(Path(spec_path).read_text())
    folder = Path(spec["folder"])
    exporter = spec["exporter"]
    (folder / "onnx").mkdir()
    if exporter == DYNAMO_OTHER_LINE:
        info = _export_in_process(spec["name"], "dynamo", folder / "onnx" / "model.onnx", spec.get("layers"))
        info["exporter"] = exporter
    else:
        model = build_model(spec["name"], spec.get("layers"))
        model.save_pretrained(folder / "model")
        command = [sys.executable, "-m", "optimum.commands.optimum_cli", "export", "onnx", "--model",
                   str(folder / "model"), "--task", exporter.split(":", 1)[1], str(folder / "onnx")]
        subprocess.run(command, check=True, cwd=folder)
        from importlib.metadata import version

        info = {"exporter": exporter, **_versions(), "optimum": version("optimum"),
                "optimum-onnx": version("optimum-onnx"), "config": json.loads(model.config.to_json_string()),
                **describe(model)}
    (folder / "info.json").write_text(json.dumps(info))


def export(name: str, exporter: str, directory: Path, layers: int | None = None) -> tuple[Path, dict[str, Any]]:
    """The export of ``name`` (with ``layers`` blocks) by ``exporter`` under ``directory`` and its
    sidecar, written once per directory; ExportFailed when the exporter cannot export it (each time)."""
    stem = f"{name}-{exporter.replace(':', '-')}" + (f"-{layers}layers" if layers is not None else "")
    path = directory / f"{stem}.onnx"
    outcome = directory / f"{stem}.outcome.json"

    def make(tmp: Path) -> None:
        try:
            if in_other_environment(exporter):
                info = _export_in_other_environment(name, exporter, path, layers)
            else:
                info = _export_in_process(name, exporter, path, layers)
            tmp.write_text(json.dumps({"ok": True, **info}))
        except ExportFailed as failed:
            tmp.write_text(json.dumps({"ok": False, "error": str(failed)}))

    result = json.loads(write_once(outcome, make).read_text())
    if not result["ok"]:
        raise ExportFailed(result["error"])
    return path, result


def optimum_python() -> str | None:
    """The Python of the optimum environment: ``ONNXGROW_OPTIMUM_PYTHON``, else the
    repository's ``.venv-optimum`` (the README's test command makes it), else None."""
    named = os.environ.get(OPTIMUM_PYTHON_VARIABLE)
    if named:
        return named
    beside = REPO / ".venv-optimum" / "bin" / "python"
    return str(beside) if beside.exists() else None


def optimum_available() -> bool:
    return optimum_python() is not None


def in_other_environment(exporter: str) -> bool:
    """Whether ``exporter`` runs in the optimum environment (optimum's, and the dynamo export
    with the other transformers line): tests of its exports skip without that environment, and
    load grown weights there."""
    return exporter.startswith("optimum:") or exporter == DYNAMO_OTHER_LINE


def skip_without_other_environment(exporter: str) -> None:
    """Skip the calling test when ``exporter`` runs in the optimum environment and there is none."""
    if in_other_environment(exporter) and not optimum_available():
        import pytest

        pytest.skip("no optimum environment (.venv-optimum, or ONNXGROW_OPTIMUM_PYTHON) for exports made there")


def hf_directory(base: Path) -> Path:
    """Where a test session keeps these exports (shared by its xdist workers)."""
    return shared_directory(base, "hf_zoo")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "other":
        _other_main(sys.argv[2])
    else:
        sys.exit("usage: python -m tests.helpers.hf_zoo other SPEC.json")
