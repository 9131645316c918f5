"""``onnxgrow export --to hf`` on real ``transformers`` models (tests/helpers/hf_zoo.py).

The matrix: every tiny model of the families ``--to hf`` writes (LLaMA untied and tied,
Qwen2, GPT-2, BERT, ViT) × every export of it (dynamo with transformers 5, dynamo with the
4.57 line, optimum's task, and optimum's ``text-generation-with-past``) × every growth a
config of the family can describe:

- every FFN ×2 and ×1.5, by one pattern;
- every attention's heads ×2 and ×1.5, where the config keeps its own head size (LLaMA,
  Qwen2; GPT-2, BERT and ViT derive it from the hidden size, so their heads grow with it, and
  alone are refused: ``test_refusal_names_what_to_grow_as_well``); LLaMA's ×1.5 (6 heads over
  a hidden size of 32) is refused by transformers 5's config class:
  ``test_sizes_the_config_class_refuses_are_one_line``;
- key/value heads ×2 with the heads, where there is no cache (a cache's shape would change);
- the hidden size ×2 with the heads ×2 in one command (BERT's pooler with it), except where
  that changes a cache (GPT-2's key/value heads are its heads);
- the vocabulary +8, the head tied or named with ``--head``; one label more.

Each grows the export through the CLI (with its check on write), writes the folder through the
CLI, and checks it the way a user would use it:

- the grown ONNX is exact on the old inputs (old token ids, and a cache of 3 past tokens where
  the export has one): max rel ≤ 1e-5 over the old logits;
- the config is the original's with exactly the grown sizes changed (computed from the
  original config, not written down), companion files copied;
- ``from_pretrained`` loads the folder with no missing, unexpected or mismatched keys in both
  ``transformers`` lines (this process's, and the 4.57 line's in the optimum environment), and
  its logits (and new cache) equal onnxruntime's on the grown ONNX (max rel ≤ 1e-5);
- its loss starts at the original model's wherever the growth preserves the function, and 20
  AdamW steps on local data (the Python standard library's own source text; scikit-learn's
  digits for ViT) lower it.

Bad input: one line, exit 2, nothing written, input untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap as stdlib_text
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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

from tests.helpers.hf_folder_load import PAST_PREFIX, load, model_inputs
from tests.helpers.hf_growth import block_container, ffn_pattern
from tests.helpers.hf_zoo import (
    MODELS,
    build_model,
    export,
    hf_directory,
    optimum_python,
    skip_without_other_environment,
)
from tests.helpers.paths import REPO

pytestmark = [pytest.mark.torch, pytest.mark.transformers]

Config = dict[str, Any]
Info = dict[str, Any]
#: ``load(folder, feeds.npz, logits.npy) -> report`` in the other transformers line
OtherLine = Callable[[Path, Path, Path], dict[str, Any]]
#: Files a user's original folder has besides config.json; --to hf copies them.
COMPANIONS = {"generation_config.json": '{"bos_token_id": 0, "eos_token_id": 0}\n',
              "tokenizer_config.json": '{"model_max_length": 64}\n'}
TOLERANCE = 1e-5
PAST = 3  # past tokens in the cache of a with-past export's inputs


@dataclass(frozen=True)
class Family:
    """What a user of the family types and where its config keeps the sizes."""

    stream: str  # the layer that writes the residual stream first (its table, for --rows)
    ffn: tuple[str, ...]  # the FFN's first projection within a block (one of these, by transformers line)
    ffn_key: str
    hidden_key: str
    heads_key: str
    own_head_size: bool  # the config keeps the head size (head_dim): heads grow alone
    grouped: bool  # grouped-query attention: key/value heads grow too
    #: "lm": a head over the vocabulary; "classifier": labels; "base": an encoder-decoder's hidden states
    #: (the residual stream is its output: the hidden size cannot grow)
    kind: str
    pooler: str | None = None  # a layer outside the stream whose width the config ties to the hidden size
    head_size_key: str = "head_dim"  # where a config that keeps the head size keeps it
    #: --node patterns of every FFN and of every kind of attention, where the blocks are in two stacks
    ffn_patterns: tuple[str, ...] = ()
    attention_patterns: tuple[str, ...] = ()

    def ffn_args(self, info: Info, factor: str) -> list[str]:
        """Every FFN's first projection grown to ``factor`` (one pattern per stack)."""
        patterns = self.ffn_patterns or (ffn_pattern(info, self.ffn),)
        return [a for pattern in patterns for a in ("--node", pattern, "--to", factor)]

    def heads_args(self, info: Info, *growth: str) -> list[str]:
        """Every attention's heads grown by ``growth`` (``--heads 2x``; one pattern per kind)."""
        patterns = self.attention_patterns or (f"{block_container(info)}.*",)
        return [a for pattern in patterns for a in ("--node", pattern, *growth)]

    def ffn_width(self, config: Config) -> int:
        """The FFN's width (GPT-2's config leaves ``n_inner`` null: four times the hidden size)."""
        return int(config.get(self.ffn_key) or 4 * config[self.hidden_key])


_LLAMA = Family("model.embed_tokens", ("mlp.up_proj",), "intermediate_size", "hidden_size", "num_attention_heads",
                own_head_size=True, grouped=True, kind="lm")
FAMILIES = {
    "llama": _LLAMA, "llama-tied": _LLAMA, "qwen2": _LLAMA,
    "gpt2": Family("transformer.wte", ("mlp.c_fc",), "n_inner", "n_embd", "n_head", own_head_size=False,
                   grouped=False, kind="lm"),
    "bert": Family("bert.embeddings.word_embeddings", ("intermediate.dense",), "intermediate_size", "hidden_size",
                   "num_attention_heads", own_head_size=False, grouped=False, kind="classifier",
                   pooler="bert.pooler.dense"),
    "vit": Family("vit.embeddings.patch_embeddings.projection", ("intermediate.dense", "mlp.fc1"),
                  "intermediate_size", "hidden_size", "num_attention_heads", own_head_size=False, grouped=False,
                  kind="classifier"),
    "t5": Family("shared", ("DenseReluDense.wi",), "d_ff", "d_model", "num_heads", own_head_size=True, grouped=False,
                 kind="base", head_size_key="d_kv", ffn_patterns=("encoder.block.*.layer.1.DenseReluDense.wi",
                                            "decoder.block.*.layer.2.DenseReluDense.wi"),
                 attention_patterns=("*.SelfAttention", "*.EncDecAttention")),
}


@dataclass(frozen=True)
class Growth:
    """A growth of the matrix: the ``widen`` arguments and the config keys it changes (key →
    new value), both from the family, the original config and the export's sidecar."""

    name: str
    args: Callable[[Family, Config, Info], list[str]]
    changed: Callable[[Family, Config], Config]
    applies: Callable[[str, Family, str], bool]  # (model, family, exporter)
    keeps_loss: bool = True  # new labels and new token rows change the softmax


def _with_past(exporter: str) -> bool:
    return exporter.endswith("-with-past")


def _ffn(factor: str, times: float) -> Growth:
    return Growth(f"ffn-{factor}",
                  lambda f, c, info: f.ffn_args(info, factor),
                  lambda f, c: {f.ffn_key: int(times * f.ffn_width(c))},
                  lambda model, f, exporter: True)


def _heads_changed(family: Family, config: Config, times: float, kv_times: int = 1) -> Config:
    """Heads (and key/value heads) × ``times`` at the same head size: a config that derives the
    head size writes it out."""
    heads = config[family.heads_key]
    head_dim = {} if config.get(family.head_size_key) else {"head_dim": config[family.hidden_key] // heads}
    kv = {"num_key_value_heads": kv_times * config["num_key_value_heads"]} if kv_times != 1 else {}
    return {family.heads_key: int(times * heads), **head_dim, **kv}


def _heads(factor: str, times: float, models: tuple[str, ...] | None = None) -> Growth:
    return Growth(f"heads-{factor}",
                  lambda f, c, info: f.heads_args(info, "--heads", factor),
                  lambda f, c: _heads_changed(f, c, times),
                  lambda model, f, exporter: f.own_head_size and (models is None or model in models))


def _hidden_args(family: Family, config: Config, info: Info) -> list[str]:
    pooler = ["--node", family.pooler, "--to", "2x"] if family.pooler else []
    return ["--node", family.stream, "--to", "2x", *pooler, *family.heads_args(info, "--heads", "2x")]


def _hidden_changed(family: Family, config: Config) -> Config:
    """Hidden size and heads ×2; GPT-2's null ``n_inner`` (4 × ``n_embd``) is written out, as
    the FFN keeps its width."""
    inner = {family.ffn_key: family.ffn_width(config)} if not config.get(family.ffn_key) else {}
    return {family.hidden_key: 2 * config[family.hidden_key], family.heads_key: 2 * config[family.heads_key],
            **inner}


def _vocabulary_args(family: Family, config: Config, info: Info) -> list[str]:
    tied = config.get("tie_word_embeddings", True) or family.kind == "base"
    # the dynamo exporter names T5's shared table after its first reader
    table = "encoder.embed_tokens" if family.kind == "base" and info["exporter"].startswith("dynamo") else family.stream
    return ["--node", table, "--rows", "+8", *([] if tied else ["--head", "lm_head"])]


def _one_label_more(config: Config) -> Config:
    new = len(config["id2label"])
    return {"id2label": {**config["id2label"], str(new): f"LABEL_{new}"},
            "label2id": {**config["label2id"], f"LABEL_{new}": new}}


GROWTHS = (
    _ffn("2x", 2), _ffn("1.5x", 1.5),
    _heads("2x", 2),
    # LLaMA: 6 heads over hidden 32, refused by transformers 5's LlamaConfig (see the module docstring)
    _heads("1.5x", 1.5, models=("qwen2", "t5")),
    Growth("kv-heads-2x",
           lambda f, c, info: f.heads_args(info, "--heads", "2x", "--kv-heads", "2x"),
           lambda f, c: _heads_changed(f, c, 2, 2),
           lambda model, f, exporter: f.grouped and not _with_past(exporter)),
    Growth("hidden", _hidden_args, _hidden_changed,
           lambda model, f, exporter: f.kind != "base" and (f.grouped or not _with_past(exporter))),
    Growth("vocabulary", _vocabulary_args, lambda f, c: {"vocab_size": c["vocab_size"] + 8},
           lambda model, f, exporter: f.kind != "classifier", keeps_loss=False),
    Growth("label", lambda f, c, info: ["--node", "classifier", "--new-outputs", "--to", "+1"],
           lambda f, c: _one_label_more(c), lambda model, f, exporter: f.kind == "classifier", keeps_loss=False),
)


@dataclass(frozen=True)
class Case:
    model: str
    exporter: str
    growth: Growth

    @property
    def family(self) -> Family:
        return FAMILIES[self.model]

    @property
    def id(self) -> str:
        return f"{self.model}-{self.exporter}-{self.growth.name}"


#: the dynamo exporter fails on T5 with transformers 5 (tests/helpers/hf_zoo.py: ``legacy``)
CASES = [Case(model, exporter, growth) for model in FAMILIES for exporter in MODELS[model].exporters
         if (model, exporter) != ("t5", "dynamo")
         for growth in GROWTHS if growth.applies(model, FAMILIES[model], exporter)]


@pytest.fixture(scope="session")
def hf_export(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], tuple[Path, Info]]:
    """``(name, exporter) -> (model.onnx, sidecar)``; the optimum environment's skip without it."""
    directory = hf_directory(tmp_path_factory.getbasetemp())

    def get(name: str, exporter: str) -> tuple[Path, Info]:
        skip_without_other_environment(exporter)
        return export(name, exporter, directory)

    return get


@pytest.fixture(scope="session")
def other_line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtherLine | None]:
    """``load(folder, feeds.npz, logits.npy) -> report`` in the optimum environment's
    ``transformers`` (the 4.57 line), one server per test worker; None without that environment."""
    python = optimum_python()
    if python is None:
        yield None
        return
    log = tmp_path_factory.mktemp("other-line") / "stderr.txt"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    with log.open("w") as errors:
        server = subprocess.Popen([python, "-m", "tests.helpers.hf_folder_load", "--serve"], cwd=REPO, env=env,
                                  text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errors)
    assert server.stdin is not None and server.stdout is not None

    def answer() -> dict[str, Any]:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line, f"the other line's loader stopped: {log.read_text()[-3000:]}"
        return dict(json.loads(line))

    hello = answer()
    assert hello["transformers"].startswith("4.57"), hello

    def load_there(folder: Path, feeds: Path, logits: Path) -> dict[str, Any]:
        assert server.stdin is not None
        server.stdin.write(json.dumps({"folder": str(folder), "feeds": str(feeds), "logits": str(logits)}) + "\n")
        server.stdin.flush()
        return answer()

    yield load_there
    server.stdin.close()
    server.wait(timeout=60)


def original_folder(name: str, path: Path, info: Info, folder: Path) -> Config:
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


def feeds_for(session: ort.InferenceSession, config: Config, past: int = PAST) -> dict[str, np.ndarray]:
    """Inputs a user gives, consistent with each other: ids of local text in the original
    vocabulary (``config``'s), a mask of ones over past and new tokens, zero token types,
    positions continuing the past, a seeded cache of ``past`` tokens where the model takes
    one (its key/value heads and head size as the graph declares them), digit images."""
    batch, seq = 2, 16
    caches = [v for v in session.get_inputs() if v.name.startswith(PAST_PREFIX)]
    past = past if caches else 0
    rng = np.random.default_rng(4)
    feeds: dict[str, np.ndarray] = {}
    for value in session.get_inputs():
        if value.name in ("input_ids", "decoder_input_ids"):
            text = _local_text_ids(batch * (seq + 1), config["vocab_size"]).reshape(batch, seq + 1)
            feeds[value.name] = text[:, 1:] if value.name == "input_ids" else text[:, :-1]
        elif value.name == "attention_mask":
            feeds[value.name] = np.ones((batch, past + seq), dtype=np.int64)
        elif value.name == "token_type_ids":
            feeds[value.name] = np.zeros((batch, seq), dtype=np.int64)
        elif value.name == "position_ids":
            feeds[value.name] = np.tile(np.arange(past, past + seq, dtype=np.int64), (batch, 1))
        elif value.name == "pixel_values":
            feeds[value.name] = _digit_images(batch, config["num_channels"], config["image_size"])
        elif value in caches:
            _, kv_heads, _, head_dim = value.shape
            assert isinstance(kv_heads, int) and isinstance(head_dim, int), value
            feeds[value.name] = rng.standard_normal((batch, kv_heads, past, head_dim)).astype(np.float32)
        else:
            raise AssertionError(f"no test input for {value.name}")
    return feeds


def training_inputs(feeds: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The feeds without a cache: the new tokens alone, positions from 0."""
    found = {k: torch.from_numpy(v) for k, v in feeds.items() if not k.startswith(PAST_PREFIX)}
    seq = found["input_ids"].shape[1] if "input_ids" in found else 0
    if "attention_mask" in found:
        found["attention_mask"] = found["attention_mask"][:, -seq:]
    if "position_ids" in found:
        found["position_ids"] = torch.arange(seq).expand(found["position_ids"].shape)
    return found


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


def labels_for(case: Case, config: Config, inputs: dict[str, Any]) -> np.ndarray:
    """A language model's own ids (an encoder-decoder's decoder ids); class labels for a
    classifier's batch, the newest first."""
    if case.family.kind != "classifier":
        return np.asarray(inputs["decoder_input_ids" if case.family.kind == "base" else "input_ids"])
    batch = next(iter(inputs.values())).shape[0]
    return (np.arange(batch) - 1) % len(config["id2label"])


def scores(case: Case, model: Any, output: torch.Tensor) -> torch.Tensor:
    """What the loss is taken over: the model's logits, or for an encoder-decoder base model
    (T5Model) the logits its tied LM head gives, as T5ForConditionalGeneration computes them
    (the decoder's hidden states × d_model^-½ against the shared embedding)."""
    if case.family.kind != "base":
        return output
    return output * model.config.d_model ** -0.5 @ model.shared.weight.T


def loss(case: Case, model: Any, inputs: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """The training loss: the model's own, or the tied LM head's next-token loss (:func:`scores`)."""
    if case.family.kind != "base":
        return model(**inputs, labels=labels).loss
    logits = scores(case, model, model(**inputs)[0])
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1))


@dataclass(frozen=True)
class Grown:
    case: Case
    original: Path  # the original model.onnx, in the user's folder with its config
    grown: Path
    out: Path  # the folder --to hf wrote
    config: Config  # the original config
    stdout: str  # the export's


@pytest.fixture(scope="module", params=CASES, ids=lambda case: case.id)
def grown_folder(request: pytest.FixtureRequest, hf_export: Callable[[str, str], tuple[Path, Info]],
                 tmp_path_factory: pytest.TempPathFactory) -> Grown:
    case: Case = request.param
    path, info = hf_export(case.model, case.exporter)
    folder = tmp_path_factory.mktemp(case.id.replace(":", "-").replace("@", "-")) / "original"
    original = original_folder(case.model, path, info, folder)
    grown = folder / "grown.onnx"
    args = case.growth.args(case.family, original, info)
    code, stdout, stderr = run("widen", str(folder / "model.onnx"), *args, "-q", "-o", str(grown))
    assert code == 0, stdout + stderr
    out = folder.parent / "grown-hf"
    # optimum's config.json lies beside the grown model; the dynamo user names the folder
    config = [] if "files" in info else ["--config", str(folder)]
    code, stdout, stderr = run("export", str(grown), "--to", "hf", *config, "-o", str(out))
    assert code == 0, stdout + stderr
    return Grown(case, folder / "model.onnx", grown, out, original, stdout)


def test_grown_onnx_is_exact_on_old_inputs(grown_folder: Grown) -> None:
    """Old ids (and a cache of past tokens): the old logits unchanged; a grown vocabulary or
    label set adds its new logits after them."""
    first = ort.InferenceSession(str(grown_folder.original), providers=["CPUExecutionProvider"])
    feeds = feeds_for(first, grown_folder.config)
    session = ort.InferenceSession(str(grown_folder.grown), providers=["CPUExecutionProvider"])
    before, after = first.run(None, feeds)[0], session.run(None, feeds)[0]
    assert after.shape[:-1] == before.shape[:-1]
    assert max_rel(after[..., :before.shape[-1]], before) <= TOLERANCE


def test_config_is_the_original_with_the_grown_sizes(grown_folder: Grown) -> None:
    case, out, original = grown_folder.case, grown_folder.out, grown_folder.config
    written = json.loads((out / "config.json").read_text())
    changed = case.growth.changed(case.family, original)
    assert {k: v for k, v in written.items() if original.get(k) != v} == changed
    assert set(written) - set(original) <= set(changed)
    assert "PASSED" in grown_folder.stdout and "candidate: transformers model" in grown_folder.stdout
    for name, text in COMPANIONS.items():
        assert (out / name).read_text() == (grown_folder.original.parent / name).read_text()
    assert not (out / "model.onnx").exists()


def test_from_pretrained_matches_onnxruntime_and_trains(grown_folder: Grown) -> None:
    case, out = grown_folder.case, grown_folder.out
    model, report = load(out)
    assert report == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}, report
    session = ort.InferenceSession(str(grown_folder.grown), providers=["CPUExecutionProvider"])
    feeds = feeds_for(session, grown_folder.config)
    names = [o.name for o in session.get_outputs()]
    expected = dict(zip(names, session.run(names, feeds), strict=True))
    with torch.no_grad():
        result = model(**model_inputs(model, feeds))
    first_output = result[0].numpy()  # the logits, or a base model's last hidden state
    assert first_output.shape == expected[names[0]].shape
    assert max_rel(first_output, expected[names[0]]) <= TOLERANCE
    for layer, cached in enumerate(result.past_key_values.layers if case.exporter.endswith("-with-past") else ()):
        assert max_rel(cached.keys.numpy(), expected[f"present.{layer}.key"]) <= TOLERANCE
        assert max_rel(cached.values.numpy(), expected[f"present.{layer}.value"]) <= TOLERANCE
    if getattr(model.config, "tie_word_embeddings", False) and hasattr(model, "lm_head"):
        assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()

    config = json.loads((out / "config.json").read_text())
    if case.growth.keeps_loss:  # the grown model starts where the original is
        first = ort.InferenceSession(str(grown_folder.original), providers=["CPUExecutionProvider"])
        labels = labels_for(case, config, feeds)
        with torch.no_grad():
            before = scores(case, model, torch.from_numpy(first.run(None, feeds)[0])).numpy()
            after = scores(case, model, result[0]).numpy()
        assert abs(_cross_entropy(after, labels) - _cross_entropy(before, labels)) <= 1e-5 * _cross_entropy(before,
                                                                                                          labels)
    inputs = training_inputs(feeds)
    labels = torch.from_numpy(labels_for(case, config, inputs))
    with torch.no_grad():
        start = loss(case, model, inputs, labels).item()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(20):
        step = loss(case, model, inputs, labels)
        optimizer.zero_grad()
        step.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        end = loss(case, model, inputs, labels).item()
    assert np.isfinite(end) and end < start, (start, end)


def test_folder_loads_in_the_other_transformers_line(
        grown_folder: Grown, other_line: OtherLine | None) -> None:
    """The same folder in the 4.57 line (the optimum environment): no missing or unexpected keys,
    logits equal onnxruntime's. transformers 5 renamed ViT's modules: the folder holds the
    names save_pretrained writes, which both lines load."""
    if other_line is None:
        pytest.skip("no optimum environment (.venv-optimum, or ONNXGROW_OPTIMUM_PYTHON): no second transformers line")
    session = ort.InferenceSession(str(grown_folder.grown), providers=["CPUExecutionProvider"])
    feeds = feeds_for(session, grown_folder.config)
    np.savez(grown_folder.out.parent / "feeds.npz", **feeds)
    logits = grown_folder.out.parent / "logits-4.57.npy"
    report = other_line(grown_folder.out, grown_folder.out.parent / "feeds.npz", logits)
    assert report == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}, report
    assert max_rel(np.load(logits), session.run(None, feeds)[0]) <= TOLERANCE


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
