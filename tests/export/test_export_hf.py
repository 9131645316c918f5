"""``onnxgrow export --to hf`` on real ``transformers`` models (tests/helpers/hf_zoo.py).

Each case grows a real export (every layer's FFN, every attention's heads, the hidden size
with the heads, the vocabulary with a tied head, classifier labels), writes the folder
through the CLI, and checks it the way a user would use it: ``from_pretrained`` loads it
with no missing or unexpected keys, the config is the original's with exactly the grown
sizes changed, its logits equal onnxruntime's on the grown ONNX (max rel 1e-5), the
companion files are copied, and 20 AdamW steps on local data (the Python standard
library's own source text; scikit-learn's digits for ViT) lower the loss, which starts at
the original model's loss wherever the growth preserves the function. The expected sizes
are computed from the original config, not written down.

Bad input: one line, exit 2, nothing written, input untouched.
"""

from __future__ import annotations

import inspect
import json
import shutil
import subprocess
import textwrap as stdlib_text
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers.cli import assert_refused, run

pytest.importorskip("transformers")

import onnxruntime as ort
import torch
import transformers
from safetensors.numpy import load_file

from tests.helpers.hf_zoo import MODELS, build_model, export, hf_directory, optimum_available, optimum_python
from tests.helpers.paths import REPO

pytestmark = [pytest.mark.torch, pytest.mark.transformers]

Config = dict[str, Any]
#: Files a user's original folder has besides config.json; --to hf copies them.
COMPANIONS = {"generation_config.json": '{"bos_token_id": 0, "eos_token_id": 0}\n',
              "tokenizer_config.json": '{"model_max_length": 64}\n'}


def _ffn(node: str, key: str, default: Callable[[Config], int] | None = None) -> Callable[[Config], list[str]]:
    """Widen ``node`` (``{i}``: the layer) to twice the config's ``key`` in every layer."""
    def args(config: Config) -> list[str]:
        width = 2 * (config.get(key) or (default(config) if default else 0))
        layers = config.get("num_hidden_layers") or config["n_layer"]
        return [a for i in range(layers) for a in ("--node", node.format(i=i), "--to", str(width))]
    return args


@dataclass(frozen=True)
class Case:
    """A model, its exporter, the ``onnxgrow widen`` commands (each from the config), and the
    config keys they change (key → the new value, from the original config)."""

    model: str
    exporter: str
    growths: tuple[Callable[[Config], list[str]], ...]
    changed: Callable[[Config], Config]
    #: the training labels for the model's inputs (default: a language model's own ids)
    labels: Callable[[Config, dict[str, torch.Tensor]], torch.Tensor] = field(
        default=lambda config, inputs: inputs["input_ids"])
    #: the growths keep the loss (new labels and new token rows change the softmax)
    keeps_loss: bool = True
    #: the name of the growth in the test id
    growth: str = ""

    @property
    def id(self) -> str:
        return f"{self.model}-{self.exporter}" + (f"-{self.growth}" if self.growth else "")


def _gpt2_inner(config: Config) -> int:
    return 4 * int(config["n_embd"])


def _one_label_more(config: Config) -> list[str]:
    return ["--node", "classifier", "--new-outputs", "--to", str(len(config["id2label"]) + 1)]


#: BERT: every layer's FFN ×2, then one label more.
_BERT_GROWTHS = (_ffn("bert.encoder.layer.{i}.intermediate.dense", "intermediate_size"), _one_label_more)


def _ffn_and_label_changed(config: Config) -> Config:
    new = len(config["id2label"])
    return {"intermediate_size": 2 * config["intermediate_size"],
            "id2label": {**config["id2label"], str(new): f"LABEL_{new}"},
            "label2id": {**config["label2id"], f"LABEL_{new}": new}}


def _new_label_first(config: Config, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Class labels for the batch of ``inputs``, the new (last) label first."""
    batch = next(iter(inputs.values())).shape[0]
    return (torch.arange(batch) - 1) % len(config["id2label"])


def _heads(modules: str) -> Callable[[Config], list[str]]:
    return lambda config: ["--node", modules, "--heads", "2x"]


def _hidden_and_heads(stream: str, modules: str, *more: str) -> Callable[[Config], list[str]]:
    """The residual stream ×2 and every attention's heads ×2 in one command (the head size kept)."""
    return lambda config: ["--node", stream, "--to", "2x", "--node", modules, "--heads", "2x", *more]


def _doubled(*keys: str) -> Callable[[Config], Config]:
    return lambda config: {key: 2 * config[key] for key in keys}


def _heads_changed(config: Config, times: float = 2, kv_times: int = 1) -> Config:
    """Heads (and key/value heads) × ``times`` at the same head size: a config that derives the
    head size writes it out."""
    head_dim = {} if config.get("head_dim") else {"head_dim": config["hidden_size"] // config["num_attention_heads"]}
    kv = {"num_key_value_heads": kv_times * config["num_key_value_heads"]} if kv_times != 1 else {}
    return {"num_attention_heads": int(times * config["num_attention_heads"]), **head_dim, **kv}


def _gpt2_hidden_changed(config: Config) -> Config:
    """GPT-2's null n_inner means 4 × n_embd: written out, as the FFN keeps its width."""
    return {"n_embd": 2 * config["n_embd"], "n_head": 2 * config["n_head"], "n_inner": _gpt2_inner(config)}


_LLAMA_FFN = _ffn("model.layers.{i}.mlp.up_proj", "intermediate_size")
_LLAMA_HIDDEN = _hidden_and_heads("model.embed_tokens", "model.layers.*.self_attn")
CASES = [
    Case("llama", "dynamo", (_LLAMA_FFN,), _doubled("intermediate_size"), growth="ffn"),
    Case("llama-tied", "dynamo", (_LLAMA_FFN,), _doubled("intermediate_size"), growth="ffn"),
    Case("gpt2", "dynamo", (lambda c: ["--node", "transformer.wte", "--rows", str(c["vocab_size"] + 8)],),
         lambda c: {"vocab_size": c["vocab_size"] + 8}, keeps_loss=False, growth="vocabulary"),
    Case("bert", "dynamo",
         _BERT_GROWTHS, _ffn_and_label_changed, labels=_new_label_first, keeps_loss=False, growth="ffn-label"),
    Case("bert", "optimum:text-classification",
         _BERT_GROWTHS, _ffn_and_label_changed, labels=_new_label_first, keeps_loss=False, growth="ffn-label"),
    Case("qwen2", "dynamo", (_LLAMA_FFN,), _doubled("intermediate_size"), growth="ffn"),
    Case("vit", "dynamo", (_ffn("vit.layers.{i}.mlp.fc1", "intermediate_size"), _one_label_more),
         _ffn_and_label_changed, labels=_new_label_first, keeps_loss=False, growth="ffn-label"),
    Case("gpt2", "optimum:text-generation",
         (_ffn("transformer.h.{i}.mlp.c_fc", "n_inner", _gpt2_inner),),
         lambda c: {"n_inner": 2 * _gpt2_inner(c)}, growth="ffn"),
    Case("llama", "dynamo", (lambda c: ["--node", "model.layers.*.mlp.up_proj", "--to", "1.5x"],),
         lambda c: {"intermediate_size": int(1.5 * c["intermediate_size"])}, growth="ffn-1.5x"),
    Case("llama", "dynamo", (_heads("model.layers.*.self_attn"),), _heads_changed, growth="heads"),
    Case("qwen2", "dynamo", (lambda c: ["--node", "*.self_attn", "--heads", "1.5x"],),
         lambda c: _heads_changed(c, 1.5), growth="heads-1.5x"),
    Case("llama", "dynamo", (lambda c: ["--node", "*.self_attn", "--heads", "2x", "--kv-heads", "2x"],),
         lambda c: _heads_changed(c, 2, 2), growth="kv-heads"),
    Case("qwen2", "dynamo", (lambda c: ["--node", "*.self_attn", "--heads", "2x", "--kv-heads", "2x"],),
         lambda c: _heads_changed(c, 2, 2), growth="kv-heads"),
    Case("llama", "dynamo", (lambda c: ["--node", "model.embed_tokens", "--rows", "+8", "--head", "lm_head"],),
         lambda c: {"vocab_size": c["vocab_size"] + 8}, keeps_loss=False, growth="vocabulary-untied"),
    Case("llama-tied", "dynamo", (lambda c: ["--node", "model.embed_tokens", "--rows", "+8"],),
         lambda c: {"vocab_size": c["vocab_size"] + 8}, keeps_loss=False, growth="vocabulary-tied"),
    Case("qwen2", "optimum:text-generation",
         (lambda c: ["--node", "model.embed_tokens", "--rows", "+8", "--head", "lm_head"],),
         lambda c: {"vocab_size": c["vocab_size"] + 8}, keeps_loss=False, growth="vocabulary-untied"),
    Case("qwen2", "dynamo", (_heads("*.self_attn"),), _heads_changed, growth="heads"),
    Case("llama", "optimum:text-generation", (_heads("*.self_attn"),), _heads_changed, growth="heads"),
    Case("llama", "dynamo", (_LLAMA_HIDDEN,), _doubled("hidden_size", "num_attention_heads"), growth="hidden"),
    Case("llama-tied", "dynamo", (_LLAMA_HIDDEN,), _doubled("hidden_size", "num_attention_heads"),
         growth="hidden"),
    Case("llama", "optimum:text-generation", (_LLAMA_HIDDEN,), _doubled("hidden_size", "num_attention_heads"),
         growth="hidden"),
    Case("qwen2", "dynamo", (_LLAMA_HIDDEN,), _doubled("hidden_size", "num_attention_heads"), growth="hidden"),
    Case("gpt2", "dynamo", (_hidden_and_heads("transformer.wte", "transformer.h.*.attn"),), _gpt2_hidden_changed,
         growth="hidden"),
    Case("gpt2", "optimum:text-generation", (_hidden_and_heads("transformer.wte", "transformer.h.*.attn"),),
         _gpt2_hidden_changed, growth="hidden"),
    # BERT's pooler is a hidden_size × hidden_size layer: it grows with the stream
    Case("bert", "dynamo", (_hidden_and_heads("bert.embeddings.word_embeddings", "*.attention.self",
                                              "--node", "bert.pooler.dense", "--to", "2x"),),
         _doubled("hidden_size", "num_attention_heads"), labels=_new_label_first, growth="hidden"),
    Case("vit", "dynamo", (_hidden_and_heads("vit.embeddings.patch_embeddings.projection", "vit.layers.*.attention"),),
         _doubled("hidden_size", "num_attention_heads"), labels=_new_label_first, growth="hidden"),
    # optimum's ViT keeps transformers 4's module names (vit.encoder.layer.*.attention.attention.query)
    Case("vit", "optimum:image-classification",
         (_hidden_and_heads("vit.embeddings.patch_embeddings.projection", "*.attention.attention"),),
         _doubled("hidden_size", "num_attention_heads"), labels=_new_label_first, growth="hidden"),
]


@pytest.fixture(scope="session")
def hf_export(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], tuple[Path, dict[str, Any]]]:
    """``(name, exporter) -> (model.onnx, sidecar)``; optimum cases skip without optimum."""
    directory = hf_directory(tmp_path_factory.getbasetemp())

    def get(name: str, exporter: str) -> tuple[Path, dict[str, Any]]:
        if exporter.startswith("optimum:") and not optimum_available():
            pytest.skip("no optimum environment (.venv-optimum, or ONNXGROW_OPTIMUM_PYTHON) to test optimum's exports")
        return export(name, exporter, directory)

    return get


def original_folder(name: str, path: Path, info: dict[str, Any], folder: Path) -> Config:
    """Lay out ``folder`` as the user has it: the ONNX file as ``model.onnx``, and beside it
    (optimum) the files optimum wrote, or (dynamo) the folder save_pretrained wrote, whose
    config.json carries the model class. Returns the original config."""
    folder.mkdir()
    shutil.copyfile(path, folder / "model.onnx")
    if "files" in info:
        for name, text in info["files"].items():
            (folder / name).write_text(text)
    else:
        config = {**info["config"], "architectures": [MODELS[name].model_class]}
        (folder / "config.json").write_text(json.dumps(config))
    for name, text in COMPANIONS.items():
        if not (folder / name).exists():
            (folder / name).write_text(text)
    return json.loads((folder / "config.json").read_text())


def _local_text_ids(count: int, vocab: int) -> np.ndarray:
    """Token ids from real text on every machine: the standard library's ``textwrap`` source,
    one id per byte (modulo the tiny vocabulary)."""
    data = np.frombuffer(Path(stdlib_text.__file__).read_bytes(), dtype=np.uint8)
    return (data[1000:1000 + count] % vocab).astype(np.int64)


def _digit_images(batch: int, channels: int, size: int) -> np.ndarray:
    """scikit-learn's digits (8×8), scaled up to the config's image size, one copy per channel."""
    from sklearn.datasets import load_digits

    digits = load_digits().images[:batch].astype(np.float32) / 16.0
    scaled = np.kron(digits, np.ones((size // 8, size // 8), np.float32))
    return np.repeat(scaled[:, None], channels, axis=1)


def feeds_for(session: ort.InferenceSession, config: Config) -> dict[str, np.ndarray]:
    """Inputs a user gives: ids of local text in the vocabulary, a mask of ones, zero token
    types, positions, digit images of the config's size."""
    batch, seq = 2, 16
    feeds: dict[str, np.ndarray] = {}
    for value in session.get_inputs():
        if value.name == "input_ids":
            feeds[value.name] = _local_text_ids(batch * seq, config["vocab_size"]).reshape(batch, seq)
        elif value.name == "attention_mask":
            feeds[value.name] = np.ones((batch, seq), dtype=np.int64)
        elif value.name == "token_type_ids":
            feeds[value.name] = np.zeros((batch, seq), dtype=np.int64)
        elif value.name == "position_ids":
            feeds[value.name] = np.tile(np.arange(seq, dtype=np.int64), (batch, 1))
        elif value.name == "pixel_values":
            feeds[value.name] = _digit_images(batch, config["num_channels"], config["image_size"])
        else:
            raise AssertionError(f"no test input for {value.name}")
    return feeds


def _cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """The loss ``transformers`` computes: a language model's logits predict the next id."""
    if logits.ndim == 3:
        logits, labels = logits[:, :-1], labels[:, 1:]
    flat = logits.reshape(-1, logits.shape[-1]).astype(np.float64)
    flat = flat - flat.max(axis=1, keepdims=True)
    log_softmax = flat - np.log(np.exp(flat).sum(axis=1, keepdims=True))
    return float(-log_softmax[np.arange(len(flat)), labels.reshape(-1)].mean())


def max_rel(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


@pytest.fixture(scope="module", params=CASES, ids=lambda case: case.id)
def grown_folder(request: pytest.FixtureRequest, hf_export: Callable[[str, str], tuple[Path, dict[str, Any]]],
                 tmp_path_factory: pytest.TempPathFactory) -> tuple[Case, Path, Path, Config, str]:
    """(case, grown.onnx, the written folder, the original config, the export's stdout)."""
    case: Case = request.param
    path, info = hf_export(case.model, case.exporter)
    folder = tmp_path_factory.mktemp(case.id.replace(":", "-")) / "original"
    original = original_folder(case.model, path, info, folder)
    source = folder / "model.onnx"
    for k, growth in enumerate(case.growths):
        grown = folder / f"grown{k}.onnx"
        code, stdout, stderr = run("widen", str(source), *growth(original), "-q", "-o", str(grown))
        assert code == 0, stdout + stderr
        source = grown
    out = folder.parent / "grown-hf"
    # optimum's config.json lies beside the grown model; the dynamo user names the folder
    config = [] if "files" in info else ["--config", str(folder)]
    code, stdout, stderr = run("export", str(source), "--to", "hf", *config, "-o", str(out))
    assert code == 0, stdout + stderr
    return case, source, out, original, stdout


def test_config_is_the_original_with_the_grown_sizes(grown_folder: tuple[Case, Path, Path, Config, str]) -> None:
    case, _, out, original, stdout = grown_folder
    written = json.loads((out / "config.json").read_text())
    changed = case.changed(original)
    assert {k: v for k, v in written.items() if original.get(k) != v} == changed
    assert set(written) - set(original) <= set(changed)
    assert "PASSED" in stdout and "candidate: transformers model" in stdout
    for name, text in COMPANIONS.items():
        assert (out / name).read_text() == (original_folder_of(out) / name).read_text()
    assert not (out / "model.onnx").exists()


def original_folder_of(out: Path) -> Path:
    return out.parent / "original"


def test_from_pretrained_matches_onnxruntime_and_trains(grown_folder: tuple[Case, Path, Path, Config, str]) -> None:
    case, grown, out, original, _ = grown_folder
    config = json.loads((out / "config.json").read_text())
    cls = getattr(transformers, config["architectures"][0])
    model, info = cls.from_pretrained(str(out), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    model.eval()
    session = ort.InferenceSession(str(grown), providers=["CPUExecutionProvider"])
    feeds = feeds_for(session, config)
    expected = session.run(None, feeds)[0]
    inputs = {k: torch.from_numpy(v) for k, v in feeds.items()}
    with torch.no_grad():
        logits = model(**inputs).logits.numpy()
    assert logits.shape == expected.shape
    assert max_rel(logits, expected) <= 1e-5
    if getattr(model.config, "tie_word_embeddings", False) and hasattr(model, "lm_head"):
        assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()

    labels = case.labels(config, inputs)
    with torch.no_grad():
        start = model(**inputs, labels=labels).loss.item()
    if case.keeps_loss:  # the grown model starts where the original is
        first = ort.InferenceSession(str(original_folder_of(out) / "model.onnx"), providers=["CPUExecutionProvider"])
        before = _cross_entropy(first.run(None, {k: feeds[k] for k in (i.name for i in first.get_inputs())})[0],
                                labels.numpy())
        assert abs(start - before) <= 1e-5 * abs(before), (start, before)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(20):
        loss = model(**inputs, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        end = model(**inputs, labels=labels).loss.item()
    assert np.isfinite(end) and end < start, (start, end)


def test_ungrown_model_round_trips_to_its_own_weights_in_shards(
        hf_export: Callable[[str, str], tuple[Path, dict[str, Any]]], tmp_path: Path) -> None:
    path, info = hf_export("llama", "dynamo")
    folder = tmp_path / "original"
    original = original_folder("llama", path, info, folder)
    out = tmp_path / "hf"
    code, stdout, stderr = run("export", str(folder / "model.onnx"), "--to", "hf", "--config", str(folder),
                               "--max-shard-size", "30KB", "-o", str(out))
    assert code == 0, stdout + stderr
    assert json.loads((out / "config.json").read_text()) == original
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 1 and not (out / "model.safetensors").exists()
    written: dict[str, np.ndarray] = {}
    for shard in shards:
        written.update(load_file(out / shard))
    expected = {k: v.numpy() for k, v in build_model("llama").state_dict().items()}
    assert set(written) == set(expected)
    for name, array in expected.items():
        np.testing.assert_array_equal(written[name], array, err_msg=name)


@pytest.fixture
def llama_folder(hf_export: Callable[[str, str], tuple[Path, dict[str, Any]]], tmp_path: Path) -> Path:
    """The LLaMA dynamo export in a folder with its config.json."""
    path, info = hf_export("llama", "dynamo")
    original_folder("llama", path, info, tmp_path / "m")
    return tmp_path / "m"


def _edit_config(folder: Path, edit: Callable[[Config], None]) -> None:
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))


def test_refused_without_a_config(llama_folder: Path) -> None:
    (llama_folder / "config.json").unlink()
    out = llama_folder.parent / "out"
    assert_refused(llama_folder.parent, ["export", str(llama_folder / "model.onnx"), "--to", "hf", "-o", str(out)],
                   "--to hf starts from the original model's config.json: give it with --config", out)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: c.update(model_type="mamba"), "this config's model_type is 'mamba'"),
    (lambda c: c.pop("model_type"), 'the config has no "model_type"'),
    (lambda c: c.pop("architectures"), 'the config has no "architectures" entry'),
    (lambda c: c.update(tie_word_embeddings=True), "the config ties lm_head.weight to model.embed_tokens.weight"),
    (lambda c: c.update(intermediate_size=c["intermediate_size"] + 8),
     "the config is not the one the model was grown from"),
], ids=["unknown-family", "no-model-type", "no-architectures", "tied-config-over-untied-weights", "other-config"])
def test_refused_config(llama_folder: Path, edit: Callable[[Config], None], message: str) -> None:
    config = json.loads((llama_folder / "config.json").read_text())
    grown = llama_folder / "grown.onnx"
    width = str(2 * config["intermediate_size"])
    code, stdout, stderr = run("widen", str(llama_folder / "model.onnx"), "--node", "model.layers.0.mlp.up_proj",
                               "--to", width, "--node", "model.layers.1.mlp.up_proj", "--to", width, "-q",
                               "-o", str(grown))
    assert code == 0, stdout + stderr
    _edit_config(llama_folder, edit)
    out = llama_folder.parent / "out"
    assert_refused(llama_folder.parent, ["export", str(grown), "--to", "hf", "-o", str(out)], message, out)


def test_hf_options_are_refused_by_other_targets(llama_folder: Path) -> None:
    out = llama_folder.parent / "w.safetensors"
    assert_refused(llama_folder.parent, ["export", str(llama_folder / "model.onnx"), "--to", "state-dict",
                                         "--config", str(llama_folder), "-o", str(out)],
                   "--config is an option of --to hf, not of --to state-dict", out)


def test_a_folder_that_computes_something_else_is_not_written(llama_folder: Path) -> None:
    """A config that loads but describes another function (ReLU for SiLU): the check on the
    written folder fails, exit 1, and the folder is gone."""
    _edit_config(llama_folder, lambda c: c.update(hidden_act="relu"))
    out = llama_folder.parent / "out"
    assert_refused(llama_folder.parent, ["export", str(llama_folder / "model.onnx"), "--to", "hf", "-o", str(out)],
                   "the transformers model does not compute what the ONNX model computes; nothing written", out,
                   code=1)


def test_refused_when_layers_differ(llama_folder: Path) -> None:
    width = json.loads((llama_folder / "config.json").read_text())["intermediate_size"]
    grown = llama_folder / "grown.onnx"
    code, stdout, stderr = run("widen", str(llama_folder / "model.onnx"), "--node", "model.layers.0.mlp.up_proj",
                               "--to", str(2 * width), "-q", "-o", str(grown))
    assert code == 0, stdout + stderr
    out = llama_folder.parent / "out"
    assert_refused(llama_folder.parent, ["export", str(grown), "--to", "hf", "-o", str(out)],
                   f"one intermediate_size for every layer, but model.layers.0.mlp.up_proj.weight gives {2 * width} "
                   f"and model.layers.1.mlp.up_proj.weight {width}: grow model.layers.*.mlp.up_proj to the same width "
                   "in every layer", out)


def test_refused_after_a_layer_inserted_inside_a_block(llama_folder: Path) -> None:
    grown = llama_folder / "deep.onnx"
    code, stdout, stderr = run("deepen", str(llama_folder / "model.onnx"), "--after", "model.layers.0.mlp.down_proj",
                               "-q", "-o", str(grown))
    assert code == 0, stdout + stderr
    out = llama_folder.parent / "out"
    assert_refused(llama_folder.parent, ["export", str(grown), "--to", "hf", "-o", str(out)],
                   "a LlamaForCausalLM has no place for model.layers.0.mlp.down_proj_deep.weight", out)


@pytest.mark.parametrize("block", ["model.layers.0", "model.layers.*"])
def test_inserted_blocks_load_with_more_layers(llama_folder: Path, block: str) -> None:
    """deepen --block copies whole decoder blocks, renumbered as LLaMA numbers them: the folder's
    config has the new layer count, and its model computes what the grown ONNX computes (the
    export's own check: from_pretrained against onnxruntime)."""
    layers = json.loads((llama_folder / "config.json").read_text())["num_hidden_layers"]
    grown = llama_folder / "deep.onnx"
    code, stdout, stderr = run("deepen", str(llama_folder / "model.onnx"), "--block", block, "-q", "-o", str(grown))
    assert code == 0, stdout + stderr
    out = llama_folder.parent / "out"
    code, stdout, stderr = run("export", str(grown), "--to", "hf", "-o", str(out))
    assert code == 0 and "PASSED" in stdout and "candidate: transformers model" in stdout, stdout + stderr
    added = 1 if block == "model.layers.0" else layers
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == layers + added


def test_with_past_cache_matches_onnxruntime(hf_export: Callable[[str, str], tuple[Path, dict[str, Any]]],
                                             tmp_path: Path) -> None:
    """optimum's LLaMA with past, every FFN ×2, checked on inputs drawn by role: the folder's
    logits and new cache equal onnxruntime's on a consistent past."""
    path, info = hf_export("llama", "optimum:text-generation-with-past")
    folder = tmp_path / "original"
    original = original_folder("llama", path, info, folder)
    grown = folder / "grown.onnx"
    code, stdout, stderr = run("widen", str(folder / "model.onnx"),
                               *_ffn("model.layers.{i}.mlp.up_proj", "intermediate_size")(original),
                               "-q", "-o", str(grown))
    assert code == 0, stdout + stderr
    out = tmp_path / "hf"
    code, stdout, stderr = run("export", str(grown), "--to", "hf", "-o", str(out))
    assert code == 0, stdout + stderr
    assert "past_key_values.0.key" in stdout and "candidate: transformers model" in stdout

    config = json.loads((out / "config.json").read_text())
    assert config["intermediate_size"] == 2 * original["intermediate_size"]
    model, loading = transformers.LlamaForCausalLM.from_pretrained(str(out), output_loading_info=True)
    assert not loading["missing_keys"] and not loading["unexpected_keys"], loading
    model.eval()
    rng = np.random.default_rng(4)
    batch, past, seq = 2, 3, 4
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    feeds: dict[str, np.ndarray] = {
        "input_ids": rng.integers(0, config["vocab_size"], (batch, seq), dtype=np.int64),
        "attention_mask": np.ones((batch, past + seq), dtype=np.int64),
        "position_ids": np.tile(np.arange(past, past + seq, dtype=np.int64), (batch, 1)),
    }
    cache = transformers.DynamicCache()
    for layer in range(config["num_hidden_layers"]):
        for kind in ("key", "value"):
            feeds[f"past_key_values.{layer}.{kind}"] = rng.standard_normal(
                (batch, kv_heads, past, head_dim)).astype(np.float32)
        cache.update(torch.from_numpy(feeds[f"past_key_values.{layer}.key"]),
                     torch.from_numpy(feeds[f"past_key_values.{layer}.value"]), layer)
    session = ort.InferenceSession(str(grown), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    expected = dict(zip(names, session.run(names, feeds)))
    cache_argument = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    with torch.no_grad():
        result = model(**{k: torch.from_numpy(v) for k, v in feeds.items() if not k.startswith("past")},
                       **{cache_argument: cache}, use_cache=True)
    assert max_rel(result.logits.numpy(), expected["logits"]) <= 1e-5
    assert len(result.past_key_values.layers) == config["num_hidden_layers"]
    for layer, cached in enumerate(result.past_key_values.layers):
        assert max_rel(cached.keys.numpy(), expected[f"present.{layer}.key"]) <= 1e-5
        assert max_rel(cached.values.numpy(), expected[f"present.{layer}.value"]) <= 1e-5


@pytest.mark.parametrize(("name", "growth", "message"), [
    ("gpt2", ["--node", "transformer.h.*.attn", "--heads", "2x"],
     "so n_embd 32 with 8 heads of 8 cannot be written: grow n_embd to 64 in the same command "
     "(--node 'transformer.wte' --to 64), or keep 4 heads"),
    ("bert", ["--node", "bert.embeddings.word_embeddings", "--to", "2x", "--node", "*.attention.self", "--heads", "2x"],
     "bert.pooler.dense.weight has shape [32, 64], but a BertForSequenceClassification built from the new "
     "config.json has [64, 64]: the config cannot describe this model; grow bert.pooler.dense to 64 as well "
     "(--node 'bert.pooler.dense' --to 64)"),
], ids=["gpt2-heads-alone", "bert-hidden-without-pooler"])
def test_refusal_names_what_to_grow_as_well(hf_export: Callable[[str, str], tuple[Path, dict[str, Any]]],
                                            tmp_path: Path, name: str, growth: list[str], message: str) -> None:
    """Exact in ONNX, but no config of the family holds it: the refusal says what to grow too."""
    path, info = hf_export(name, "dynamo")
    folder = tmp_path / "original"
    original_folder(name, path, info, folder)
    grown = folder / "grown.onnx"
    code, stdout, stderr = run("widen", str(folder / "model.onnx"), *growth, "-q", "-o", str(grown))
    assert code == 0, stdout + stderr
    out = tmp_path / "hf"
    assert_refused(tmp_path, ["export", str(grown), "--to", "hf", "--config", str(folder), "-o", str(out)], message,
                   out)


#: Grown folders loaded by the other transformers line: both layouts of ViT's names, and the
#: families transformers 5 did not rename.
OTHER_LINE = [case for case in CASES if case.growth == "hidden" and case.model in ("vit", "llama", "gpt2", "bert")
              and not case.exporter.startswith("optimum:text-generation")]


def test_folders_load_in_the_other_transformers_line(
        hf_export: Callable[[str, str], tuple[Path, dict[str, Any]]], tmp_path: Path) -> None:
    """A folder written here (transformers 5) loads in the 4.57 line, which optimum's exporter
    installs (its environment), with no missing or unexpected keys, and its logits equal
    onnxruntime's on the grown ONNX. transformers 5 renamed ViT's modules: the folder holds
    the names save_pretrained writes, which both lines load."""
    other = optimum_python()
    if other is None:
        pytest.skip("no optimum environment (.venv-optimum, or ONNXGROW_OPTIMUM_PYTHON): no second transformers line")
    specs, expected = [], {}
    for k, case in enumerate(OTHER_LINE):
        path, info = hf_export(case.model, case.exporter)
        folder = tmp_path / f"case{k}" / "original"
        folder.parent.mkdir()
        original = original_folder(case.model, path, info, folder)
        grown, out = folder / "grown.onnx", folder.parent / "hf"
        code, stdout, stderr = run("widen", str(folder / "model.onnx"), *case.growths[0](original), "-q",
                                   "-o", str(grown))
        assert code == 0, stdout + stderr
        config = [] if "files" in info else ["--config", str(folder)]
        code, stdout, stderr = run("export", str(grown), "--to", "hf", *config, "-o", str(out))
        assert code == 0, stdout + stderr
        session = ort.InferenceSession(str(grown), providers=["CPUExecutionProvider"])
        feeds = feeds_for(session, json.loads((out / "config.json").read_text()))
        np.savez(folder.parent / "feeds.npz", **feeds)
        expected[str(out)] = session.run(None, feeds)[0]
        specs.append({"folder": str(out), "feeds": str(folder.parent / "feeds.npz"),
                      "logits": str(folder.parent / "logits.npy")})
    (tmp_path / "spec.json").write_text(json.dumps(specs))
    done = subprocess.run([other, "-m", "tests.helpers.hf_folder_load", str(tmp_path / "spec.json")], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["transformers"].startswith("4.57"), report["transformers"]
    for spec in specs:
        assert report["loaded"][spec["folder"]] == {"missing_keys": [], "unexpected_keys": [],
                                                    "mismatched_keys": []}, spec["folder"]
        assert max_rel(np.load(spec["logits"]), expected[spec["folder"]]) <= 1e-5, spec["folder"]


def test_refused_when_the_head_is_not_grown_with_the_vocabulary(llama_folder: Path) -> None:
    """Untied LLaMA: a vocabulary grown without its head; the refusal names ``--head``."""
    grown = llama_folder / "grown.onnx"
    code, stdout, stderr = run("widen", str(llama_folder / "model.onnx"), "--node", "model.embed_tokens",
                               "--rows", "72", "-q", "-o", str(grown))
    assert code == 0, stdout + stderr
    out = llama_folder.parent / "out"
    assert_refused(llama_folder.parent, ["export", str(grown), "--to", "hf", "-o", str(out)],
                   "lm_head.weight has 64 rows but a LlamaForCausalLM has one vocab_size (72, the rows of "
                   "model.embed_tokens.weight): grow the untied head with the vocabulary (--node model.embed_tokens "
                   "--rows 72 --head lm_head)", out)


def test_sizes_the_config_class_refuses_are_one_line(llama_folder: Path) -> None:
    """LLaMA heads ×1.5 (6 heads of 8 over a hidden size of 32) is exact in ONNX and its
    config can say it (``head_dim``), but transformers 5's LlamaConfig validator refuses a
    hidden size its heads do not divide: one line, exit 2, nothing written. Where the
    installed transformers has no such validator, the folder is written and checked."""
    grown = llama_folder / "grown.onnx"
    code, stdout, stderr = run("widen", str(llama_folder / "model.onnx"), "--node", "*.self_attn",
                               "--heads", "1.5x", "-q", "-o", str(grown))
    assert code == 0, stdout + stderr
    out = llama_folder.parent / "out"
    try:
        transformers.LlamaConfig(hidden_size=32, num_attention_heads=6, num_key_value_heads=2, head_dim=8)
    except Exception:  # noqa: BLE001 - the validator's error, whatever its class
        assert_refused(llama_folder.parent, ["export", str(grown), "--to", "hf", "-o", str(out)],
                       f"transformers {transformers.__version__} refuses the new config.json (The hidden size (32) "
                       "is not a multiple of the number of attention heads (6)): its llama config cannot describe "
                       "this model", out)
    else:
        code, stdout, stderr = run("export", str(grown), "--to", "hf", "-o", str(out))
        assert code == 0 and "PASSED" in stdout, stdout + stderr
