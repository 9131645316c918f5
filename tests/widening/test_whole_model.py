"""Whole-model growth in one command on real ``transformers`` exports.

Every tiny model of tests/helpers/hf_zoo.py, as each of its exports without a cache makes it
(dynamo with transformers 5; where the optimum environment is, dynamo with the 4.57 line and
optimum's), is grown through the CLI with patterns and multipliers:

- every FFN ×1.5 and ×2 by one pattern (``model.layers.*.mlp.up_proj --to 1.5x``);
- hidden ×2 with heads ×2 in one command, so the head size is what the config derives;
- the vocabulary +16, with a tied and an untied head;
- the labels +1 (new output classes).

Each result must compute what the original computed (max rel ≤ 1e-5 on the old token ids and
old logits, measured here again), write one lineage entry per grown layer, and load strictly
into the family's own class built from the config with the grown numbers (in the environment
that made the export), computing what onnxruntime computes. The names typed are read from the
export's sidecar (its blocks as the framework numbers them), not hard-coded per exporter.

Every case must grow: a refusal fails it. Bad input (a pattern matching nothing or several kinds, a multiple giving
no whole width) is refused in one line, nothing written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from onnxgrow.lineage import read_history  # noqa: E402
from onnxgrow.model_io import load_model  # noqa: E402
from tests.helpers.cli import run  # noqa: E402
from tests.helpers.hf_growth import (  # noqa: E402
    IMAGE,
    block_container,
    feeds,
    ffn_pattern,
    framework_logits,
    hf_exports,
    max_rel,
    run_onnx,
)
from tests.helpers.hf_zoo import MODELS  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.transformers]

TOLERANCE = 1e-5


@dataclass(frozen=True)
class Family:
    """What to type for a family and where its config keeps the numbers."""

    stream: str  # the layer that writes the residual stream first
    ffn: tuple[str, ...]  # the FFN's first projection, within a block (one of these)
    hidden: str
    heads: str
    ffn_key: str
    lm_head: bool = False
    classifier: bool = False
    pooler: str | None = None  # a layer outside the stream whose width the config sets to the hidden size


_LLAMA = Family("model.embed_tokens", ("mlp.up_proj",), "hidden_size", "num_attention_heads", "intermediate_size",
                lm_head=True)
FAMILIES = {
    "llama": _LLAMA, "llama-tied": _LLAMA, "qwen2": _LLAMA,
    "gpt2": Family("transformer.wte", ("mlp.c_fc",), "n_embd", "n_head", "n_inner", lm_head=True),
    "bert": Family("bert.embeddings.word_embeddings", ("intermediate.dense",), "hidden_size", "num_attention_heads",
                   "intermediate_size", classifier=True, pooler="bert.pooler.dense"),
    "vit": Family("vit.embeddings.patch_embeddings.projection", ("intermediate.dense", "mlp.fc1"), "hidden_size",
                  "num_attention_heads", "intermediate_size", classifier=True),
}
#: Every export of these families without a cache (tests/export/test_export_hf.py grows those with one).
CASES = [(name, exporter) for name in FAMILIES for exporter in MODELS[name].exporters
         if not exporter.endswith("-with-past")]


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return hf_exports(tmp_path_factory)


def _ffn_width(name: str, config: dict[str, Any]) -> int:
    """The FFN's width (GPT-2's config leaves ``n_inner`` unset: four times the hidden size)."""
    return int(config.get(FAMILIES[name].ffn_key) or 4 * config[FAMILIES[name].hidden])


def _shapes(name: str) -> list[str]:
    """``--input-shapes`` for the check (optimum's ViT leaves every image axis dynamic)."""
    return ["--input-shapes", "pixel_values:" + "x".join(map(str, (2, *IMAGE)))] if name == "vit" else []


def _grow(source: Path, out: Path, name: str, *args: str) -> str:
    code, stdout, stderr = run("widen", str(source), *args, *_shapes(name), "-o", str(out))
    assert code == 0, stdout + stderr
    return stdout


def _state_dict(path: Path) -> Path:
    out = path.with_suffix(".safetensors")
    code, stdout, stderr = run("export", str(path), "--to", "state-dict", "-o", str(out))
    assert code == 0, stdout + stderr
    return out


def _check(name: str, exporter: str, info: dict[str, Any], source: Path, grown: Path, changes: dict[str, Any],
           vocab: int = 64) -> None:
    """Exact on old inputs, and the state dict loads strictly into the grown config and
    computes what onnxruntime computes on the grown model (new ids included)."""
    old = feeds(source, vocab=64)
    assert max_rel(run_onnx(source, old), run_onnx(grown, old)[..., :_outputs(source, old)]) <= TOLERANCE
    inputs = feeds(grown, vocab=vocab, seed=1)
    state = _state_dict(grown)
    torch_out = framework_logits(name, exporter, info["config"], changes, state, inputs)
    assert max_rel(run_onnx(grown, inputs), torch_out) <= TOLERANCE


def _outputs(source: Path, inputs: dict[str, np.ndarray]) -> int:
    """The original's number of logits (old classes of a grown head come first)."""
    return int(run_onnx(source, inputs).shape[-1])


def _entries(path: Path, op: str) -> list[dict[str, Any]]:
    return [entry for entry in read_history(load_model(path)) if entry["op"] == op]


@pytest.mark.parametrize("factor", ["1.5x", "2x"])
@pytest.mark.parametrize(("name", "exporter"), CASES)
def test_every_ffn_grows_by_one_pattern(exports: Any, tmp_path: Path, name: str, exporter: str, factor: str) -> None:
    source, info = exports(name, exporter)
    config = info["config"]
    pattern = ffn_pattern(info, FAMILIES[name].ffn)
    grown = tmp_path / "ffn.onnx"
    _grow(source, grown, name, "--node", pattern, "--to", factor)
    key = FAMILIES[name].ffn_key
    width = _ffn_width(name, config)
    new = width * 3 // 2 if factor == "1.5x" else 2 * width
    entries = _entries(grown, "widen")
    blocks = len(info["blocks"][block_container(info)])
    assert [(e["old_width"], e["new_width"]) for e in entries] == [(width, new)] * blocks
    _check(name, exporter, info, source, grown, {key: new})


@pytest.mark.parametrize(("name", "exporter"), CASES)
def test_hidden_and_heads_grow_together(exports: Any, tmp_path: Path, name: str, exporter: str) -> None:
    """One command, one check: the stream ×2 and every attention's heads ×2, so the head size
    stays what ``hidden / heads`` gives (LLaMA's config keeps its explicit ``head_dim``); BERT's
    pooler, whose width its config ties to the hidden size, ×2 in the same command."""
    source, info = exports(name, exporter)
    config, family = info["config"], FAMILIES[name]
    grown = tmp_path / "wide.onnx"
    pooler = ["--node", family.pooler, "--to", "2x"] if family.pooler else []
    heads = ["--node", f"{block_container(info)}.*", "--heads", "2x"]
    code, stdout, stderr = run("widen", str(source), "--node", family.stream, "--to", "2x", *pooler, *heads,
                               *_shapes(name), "-o", str(grown))
    assert code == 0, stdout + stderr
    blocks = len(info["blocks"][block_container(info)])
    counts = [(e["old_heads"], e["new_heads"]) for e in _entries(grown, "widen-heads")]
    assert counts == [(config[family.heads], 2 * config[family.heads])] * blocks
    assert len(_entries(grown, "widen")) == 1 + bool(pooler)
    # the FFN keeps its width, which GPT-2's config derives from the hidden size unless told
    changes = {family.hidden: 2 * config[family.hidden], family.heads: 2 * config[family.heads],
               family.ffn_key: _ffn_width(name, config)}
    if "head_dim" in config:
        changes["head_dim"] = config["head_dim"]
    _check(name, exporter, info, source, grown, changes)


LM_CASES = [case for case in CASES if FAMILIES[case[0]].lm_head]


@pytest.mark.parametrize(("name", "exporter"), LM_CASES)
def test_vocabulary_grows_with_its_head(exports: Any, tmp_path: Path, name: str, exporter: str) -> None:
    """+16 rows: a tied head takes them as its new classes (and stays tied); an untied one is named."""
    source, info = exports(name, exporter)
    config = info["config"]
    tied = bool(config.get("tie_word_embeddings", True))
    grown = tmp_path / "vocab.onnx"
    head = [] if tied else ["--head", "lm_head"]
    stdout = _grow(source, grown, name, "--node", FAMILIES[name].stream, "--rows", "+16", *head)
    assert ("is tied to" in stdout) == tied, stdout
    (entry,) = _entries(grown, "vocabulary")
    assert (entry["old_rows"], entry["new_rows"], entry["tied"]) == (64, 80, tied)
    _check(name, exporter, info, source, grown, {"vocab_size": 80}, vocab=80)


CLASSIFIER_CASES = [case for case in CASES if FAMILIES[case[0]].classifier]


@pytest.mark.parametrize(("name", "exporter"), CLASSIFIER_CASES)
def test_one_more_label(exports: Any, tmp_path: Path, name: str, exporter: str) -> None:
    source, info = exports(name, exporter)
    grown = tmp_path / "labels.onnx"
    _grow(source, grown, name, "--node", "classifier", "--to", "+1", "--new-outputs")
    (entry,) = _entries(grown, "widen")
    assert (entry["old_width"], entry["new_width"], entry["new_outputs"]) == (3, 4, True)
    labels = {str(i): f"LABEL_{i}" for i in range(4)}
    _check(name, exporter, info, source, grown,
           {"num_labels": 4, "id2label": labels, "label2id": {v: int(k) for k, v in labels.items()}})


@pytest.mark.parametrize(("args", "message"), [
    (["--node", "model.layers.*.mlp.nothing", "--to", "2x"],
     "--node pattern 'model.layers.*.mlp.nothing' matches no layer; layers: model.embed_tokens, "
     "model.layers.{0,1}.self_attn.q_proj"),
    (["--node", "model.layers.*.mlp.*", "--to", "2x"],
     "--node pattern 'model.layers.*.mlp.*' matches layers of different kinds: model.layers.{0,1}.mlp.gate_proj; "
     "model.layers.{0,1}.mlp.up_proj; model.layers.{0,1}.mlp.down_proj; give one pattern per kind"),
    (["--node", "model.layers.*.mlp.up_proj", "--to", "1.3x"],
     "1.3x of 'model.layers.0.mlp.up_proj' (width 48) is 62.4, not a whole width; give a count (62 or 63)"),
])
def test_a_pattern_or_multiple_that_cannot_be_grown_is_refused(exports: Any, tmp_path: Path, args: list[str],
                                                               message: str) -> None:
    """A pattern matching nothing or layers of several kinds, a multiple giving no whole width:
    one line listing what it matched (or the whole widths around it), exit 2, nothing written."""
    import shutil

    from tests.helpers.cli import assert_refused

    source, _ = exports("llama", "dynamo")
    model = Path(shutil.copy(source, tmp_path / "llama.onnx"))
    out = tmp_path / "out.onnx"
    assert_refused(tmp_path, ["widen", str(model), *args, "-o", str(out)], message, out)


def test_a_pattern_matching_two_kinds_of_attention_is_refused(exports: Any, tmp_path: Path) -> None:
    """T5's self- and cross-attention are two kinds (their roles in the block): one pattern
    each, as the refusal lists them."""
    import shutil

    from tests.helpers.cli import assert_refused

    source, _ = exports("t5", "legacy")
    model = Path(shutil.copy(source, tmp_path / "t5.onnx"))
    out = tmp_path / "out.onnx"
    assert_refused(tmp_path, ["widen", str(model), "--node", "*Attention", "--heads", "2x", "-o", str(out)],
                   "--node pattern '*Attention' matches attention modules of different kinds: "
                   "encoder.block.{0,1}.layer.0.SelfAttention, decoder.block.{0,1}.layer.0.SelfAttention; "
                   "decoder.block.{0,1}.layer.1.EncDecAttention; give one pattern per kind", out)
