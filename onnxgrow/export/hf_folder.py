"""A Hugging Face model folder from an ONNX model: what ``onnxgrow export --to hf`` writes.

- **config.json**: the original's with every size the growths changed, read from the
  weights (:mod:`onnxgrow.export.hf_config`). The original is ``--config DIR|config.json``,
  else the config.json beside the ONNX file, where ``optimum-cli export onnx`` writes it.
  The ONNX file itself is no source: neither exporter keeps the config in it (the dynamo
  exporter and optimum-onnx 0.1.0 write no ``metadata_props``), and the family cannot be
  told from weight names alone (LLaMA and Mistral share them). Without a config, or
  with one that names no known ``model_type`` or no ``architectures``, the export is
  refused in one line naming what is missing.
- **Weights**: every weight under its framework name, in PyTorch layout
  (:mod:`onnxgrow.parameter_names`), in ``model.safetensors``, or in shards of at most
  ``max_shard_size`` bytes (``model-00001-of-00003.safetensors``...) with
  ``model.safetensors.index.json``. Left out, as ``save_pretrained`` leaves them out: the
  copy of a tied pair (``lm_head.weight`` when ``tie_word_embeddings``), and the buffers
  the model class does not save (``rotary_emb.inv_freq``, computed from the config). A
  tied config over weights that differ is refused, naming both: an untied model is never
  written under a tied config.
- **Companion files** of the config's folder, copied when present: the tokenizer's,
  ``generation_config.json``, the image processor's (:data:`COMPANION_FILES`).

The folder is written whole or not at all (:func:`onnxgrow.atomic.atomic_folder`, through
the target registry), after the checks, and loaded back with ``from_pretrained`` for the
check.

The weights are written tensor by tensor from the model's (memory-mapped) data
(:func:`onnxgrow.export.safetensors_file.write_safetensors_shards`): no shard is held.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxgrow.errors import GrowError
from onnxgrow.export.hf_config import GrownConfig, architecture, grown_config, shown
from onnxgrow.export.hf_families import Family, family_of
from onnxgrow.export.safetensors_file import write_safetensors_shards
from onnxgrow.lineage import read_history
from onnxgrow.parameter_names import ParameterTable, parameter_table

CONFIG_NAME = "config.json"
#: Files of the original's folder that the grown model keeps.
COMPANION_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model",
    "chat_template.jinja", "chat_template.json", "generation_config.json", "preprocessor_config.json",
    "processor_config.json",
)


def config_path(source: Path | None, given: str | os.PathLike[str] | None) -> Path:
    """The config.json to start from: ``given`` (a folder holding one, or the file), else the
    one beside the ONNX file ``source``; a GrowError naming what is missing."""
    if given is not None:
        path = Path(given)
        found = path / CONFIG_NAME if path.is_dir() else path
        if not found.is_file():
            raise GrowError(f"--config {given}: no such file" if not path.is_dir()
                            else f"--config {given}: the folder has no {CONFIG_NAME}")
        return found
    beside = source.parent / CONFIG_NAME if source is not None else None
    if beside is None or not beside.is_file():
        where = f" (there is none beside {source})" if source is not None else ""
        raise GrowError(f"--to hf starts from the original model's config.json: give it with --config "
                        f"DIR|config.json{where}")
    return beside


def read_config(path: Path) -> dict[str, Any]:
    """A config.json's contents; a GrowError when it is not a JSON object."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GrowError(f"{path}: not a readable config.json ({exc})") from None
    if not isinstance(config, dict):
        raise GrowError(f"{path}: not a config.json (a JSON object)")
    return config


@dataclass
class HFFolder:
    """What :func:`hf_folder` found: the new config, the weights to write (name → the
    framework-layout array, in order), the companion files, and the notes of the report."""

    config: dict[str, Any]
    grown: GrownConfig
    weights: dict[str, np.ndarray]
    companions: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _same(table: ParameterTable, a: str, b: str, tensors: Mapping[str, np.ndarray]) -> bool:
    """Whether the weights ``a`` and ``b`` are one tensor (one initializer, or equal values)."""
    if table.aliases.get(a) == b or table.aliases.get(b) == a:
        return True
    x, y = tensors[a], tensors[b]
    return x.shape == y.shape and bool(np.array_equal(x, y))


def _named_tie_sources(family: Family, tensors: dict[str, np.ndarray]) -> list[str]:
    """Give the weight of an always-tied pair its own name where the export names only its
    copies (the dynamo exporter names T5's ``shared`` after its readers,
    ``encoder.embed_tokens``): the copy's values under the name ``save_pretrained`` writes.
    Returns the notes."""
    notes = []
    for tie in family.ties:
        for base in dict.fromkeys((family.base + ".", "")):
            copy, source = shown(tie.copy, base), shown(tie.source, base)
            if tie.always and copy in tensors and source not in tensors:
                tensors[source] = tensors[copy]
                notes.append(f"{source}: named {copy} in the model; written as {source}, as save_pretrained does")
    return notes


def _tied_layout(grown: GrownConfig, table: ParameterTable, tensors: dict[str, np.ndarray]) -> list[str]:
    """Leave out the copy of each tied pair, as ``save_pretrained`` does; refuse a tied
    config over weights that differ. Returns the notes."""
    family, config = grown.family, grown.config
    tie_words = bool(config.get("tie_word_embeddings", family.tie_default))
    notes = []
    for tie in family.ties:
        copy, source = shown(tie.copy, grown.base), shown(tie.source, grown.base)
        if copy not in tensors or source not in tensors or not (tie.always or tie_words):
            continue
        if not _same(table, copy, source, tensors):
            raise GrowError(f"the config ties {copy} to {source} (tie_word_embeddings), but the model holds them "
                            "apart with different values: export a model grown with them tied, or give a config "
                            "with \"tie_word_embeddings\": false to write them apart")
        del tensors[copy]
        notes.append(f"{copy}: tied to {source}; written once, as save_pretrained writes a tied model")
    return notes


@dataclass
class SavedLayout:
    """What a model class built from the new config saves: each weight's shape under the name
    ``save_pretrained`` writes it with, the buffers it does not save (computed from the
    config), and the module names it writes under another name (transformers 5 renamed
    modules whose checkpoints keep their older names: ViT's ``vit.layers.0.attention.q_proj``
    is saved as ``vit.encoder.layer.0.attention.attention.query``)."""

    shapes: dict[str, tuple[int, ...]]
    unsaved: set[str]
    renamed: dict[str, str] = field(default_factory=dict)


def _check_against_class(config: dict[str, Any], tensors: dict[str, np.ndarray], what: str,
                         saved: Callable[[Mapping[str, Any]], SavedLayout]) -> list[str]:
    """Lay the weights out as a model built from the new config saves them: leave out the
    buffers it does not save, rename what it saves under another name (the model's ONNX
    names are those of the release that exported it), refuse a weight the model has no place
    for (a layer ``deepen`` inserted inside a block) or whose shape the config does not give.
    Returns the notes."""
    layout = saved(config)
    notes = []
    for name in [n for n in tensors if n in layout.unsaved]:
        del tensors[name]
        notes.append(f"{name}: a buffer {what} computes from its config and does not save; left out")
    if renamed := [name for name in tensors if name in layout.renamed]:
        for name in renamed:
            tensors[layout.renamed[name]] = tensors.pop(name)
        first = renamed[0]
        more = f" and {len(renamed) - 1} more" if len(renamed) > 1 else ""
        notes.append(f"written under the names save_pretrained writes, which transformers 4 and 5 both load: "
                     f"{first} as {layout.renamed[first]}{more}")
    state = layout.shapes
    if extra := [name for name in tensors if name not in state]:
        shown_extra = ", ".join(extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
        raise GrowError(f"a {what} has no place for {shown_extra} (a layer inserted inside a block, or a weight "
                        "without a framework name): its config cannot describe this model; export --to torch "
                        "or --to state-dict instead")
    for name, array in tensors.items():
        expected = state.get(name)
        if expected is not None and tuple(array.shape) != expected:
            raise GrowError(f"{name} has shape {list(array.shape)}, but a {what} built from the new config.json "
                            f"has {list(expected)}: the config cannot describe this model"
                            + _grow_too(name, tuple(array.shape), expected))
    return notes


def _grow_too(name: str, shape: tuple[int, ...], expected: tuple[int, ...]) -> str:
    """The growth that fits a linear layer the config sizes from a grown one (BERT's pooler,
    ``hidden_size`` wide, after the hidden size grew): its weight differs in its output rows only."""
    module, _, kind = name.rpartition(".")
    if kind != "weight" or len(shape) != 2 or len(expected) != 2 or shape[1] != expected[1]:
        return ""
    return f"; grow {module} to {expected[0]} as well (--node '{module}' --to {expected[0]})"


def _size_notes(grown: GrownConfig) -> list[str]:
    notes = []
    if grown.changes:
        notes.append("config.json: " + ", ".join(change.describe() for change in grown.changes))
    vocab = grown.changed("vocab_size")
    if vocab is not None and isinstance(vocab.old, int) and isinstance(vocab.new, int) and vocab.new > vocab.old:
        notes.append(f"the vocabulary grew from {vocab.old} to {vocab.new} ids: add {vocab.new - vocab.old} tokens to "
                     f"the tokenizer (tokenizer.add_tokens) so that ids {vocab.old}..{vocab.new - 1} have text")
    labels = grown.changed("num_labels")
    if labels is not None and isinstance(labels.old, int) and isinstance(labels.new, int) and labels.new > labels.old:
        names = [grown.config["id2label"][str(k)] for k in range(labels.old, labels.new)]
        notes.append(f"id2label names the new labels {', '.join(names)}: rename them in config.json")
    return notes


def hf_folder(model: ir.Model, config_file: Path, saved: Callable[[Mapping[str, Any]], SavedLayout]) -> HFFolder:
    """The folder of ``model``, grown from the model ``config_file`` describes (module
    docstring); ``saved`` builds the config's model class and says which weights it saves
    (:func:`onnxgrow.export.hf_transformers.saved_weights`). A GrowError when the config
    cannot describe the weights; nothing is written here."""
    original = read_config(config_file)
    table = parameter_table(model)
    tensors = {name: param.array for name, param in table.parameters.items()}
    tensors.update({alias: tensors[name] for alias, name in table.aliases.items()})
    notes = _named_tie_sources(family_of(original), tensors)
    grown = grown_config(original, {name: array.shape for name, array in tensors.items()}, read_history(model))
    notes += _size_notes(grown)
    notes += _tied_layout(grown, table, tensors)
    notes += _check_against_class(grown.config, tensors, architecture(grown.config), saved)
    notes += [line for line in table.notes() if "the same tensor as" not in line]
    companions = [config_file.parent / name for name in COMPANION_FILES if (config_file.parent / name).is_file()]
    if companions:
        notes.append(f"copied from {config_file.parent}: {', '.join(p.name for p in companions)}")
    return HFFolder(grown.config, grown, dict(sorted(tensors.items())), companions, notes)


def write_folder(folder: Path, hf: HFFolder, max_shard_size: int | None = None) -> None:
    """Fill the empty ``folder``: config.json, the weights, the companion files."""
    (folder / CONFIG_NAME).write_text(json.dumps(hf.config, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    write_safetensors_shards(folder, hf.weights, max_shard_bytes=max_shard_size, metadata={"format": "pt"})
    for path in hf.companions:
        shutil.copyfile(path, folder / path.name)
