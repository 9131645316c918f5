"""Attention heads on real ``transformers`` exports (tests/helpers/hf_zoo.py): the graphs users have.

LLaMA and Qwen2 with grouped-query attention (LLaMA: sdpa, dynamic shapes; eager, static shapes), GPT-2,
BERT, ViT and BART, each exported by ``torch.onnx.export(dynamo=True)`` with transformers
5.25, and (where the optimum environment is: ``.venv-optimum`` or ``ONNXGROW_OPTIMUM_PYTHON``)
by the dynamo exporter with the transformers line optimum installs (4.57) and by
``optimum-cli export onnx``; LLaMA, Qwen2 and GPT-2 also with a key/value cache
(``text-generation-with-past``); T5 (its position bias shared by every layer) by the
TorchScript exporter and optimum, as the dynamo exporter cannot export it.

For every attention module ``inspect`` lists and every kind of head growth (all heads;
for grouped-query attention, query heads per key/value head, and key/value heads with
their groups), ×2 and ×1.5: ``inspect`` offers the kind exactly when the growth is done.
Each growth done is checked on write with consistent inputs (a cache's past length, its
mask and positions agree), then run by onnxruntime on other seeded inputs (another batch
and length where the export leaves them dynamic) against the original: every output within
max rel 1e-5; the grown model has the new head counts. With a cache, key/value head growth
(for GPT-2, whose every head is its own key/value head, any head growth) is refused in one
line naming the cache's model inputs and outputs.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import onnxgrow
from onnxgrow.errors import GrowError
from onnxgrow.inspect import AttentionInfo
from onnxgrow.options import GrowOptions, VerifyOptions
from onnxgrow.widening.heads import GROUPS, HEADS, PER_GROUP
from tests.helpers.cli import assert_refused

pytestmark = [pytest.mark.torch, pytest.mark.transformers]
pytest.importorskip("transformers")

from tests.helpers.hf_zoo import MODELS, export, hf_directory, skip_without_other_environment  # noqa: E402

TOLERANCE = 1e-5
FAMILIES = ("llama", "llama-eager", "qwen2", "gpt2", "bert", "vit", "t5", "bart")
CASES = [(name, exporter) for name in FAMILIES for exporter in MODELS[name].exporters
         if (name, exporter) != ("t5", "dynamo")]  # the exporter fails (tests/structure/test_structure_hf.py)
WITH_PAST = ("llama", "optimum:text-generation-with-past")
PAST = 3  # the cache's past length in the inputs drawn here


def _counts(name: str) -> tuple[int, int]:
    """The query and key/value head counts of ``name``'s config (every attention alike here)."""
    config = MODELS[name].config
    heads = next(config[key] for key in ("num_attention_heads", "n_head", "num_heads", "encoder_attention_heads")
                 if key in config)
    return heads, config.get("num_key_value_heads", heads)


def _attention_count(name: str) -> int:
    """How many attention modules ``name`` has: one per layer; an encoder-decoder's decoder
    layers have two (self- and cross-attention)."""
    config = MODELS[name].config
    if "num_layers" in config:
        return 3 * config["num_layers"]
    if "encoder_layers" in config:
        return config["encoder_layers"] + 2 * config["decoder_layers"]
    return config.get("num_hidden_layers", config.get("n_layer"))


@dataclass(frozen=True)
class Growth:
    """A head growth of every attention module: its kind and the new counts."""

    kind: str
    heads: int
    kv_heads: int

    @property
    def id(self) -> str:
        return f"{self.kind}-{self.heads}q-{self.kv_heads}kv"


def growths(name: str) -> list[Growth]:
    """×2 and ×1.5 of each kind of head growth ``name``'s attention has."""
    h, k = _counts(name)
    if h == k:
        return [Growth(HEADS, 2 * h, 2 * h), Growth(HEADS, 3 * h // 2, 3 * h // 2)]
    return [Growth(PER_GROUP, 2 * h, k), Growth(PER_GROUP, 3 * h // 2, k), Growth(GROUPS, 2 * h, 2 * k)]


GROWTH_CASES = [pytest.param(name, exporter, growth, id=f"{name}-{exporter}-{growth.id}")
                for name, exporter in CASES for growth in growths(name)]


@dataclass(frozen=True)
class Export:
    path: Path
    attentions: list[AttentionInfo]


@pytest.fixture(scope="module")
def hf_case(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """``(name, exporter) -> Export`` (inspected once); optimum's skip without optimum."""
    directory = hf_directory(tmp_path_factory.getbasetemp())
    found: dict[tuple[str, str], Export] = {}

    def get(name: str, exporter: str) -> Export:
        skip_without_other_environment(exporter)
        if (name, exporter) not in found:
            path, _ = export(name, exporter, directory)
            found[name, exporter] = Export(path, onnxgrow.inspect_model(path).attentions)
        return found[name, exporter]

    return get


def feeds(path: Path, name: str, seed: int, batch: int, seq: int) -> dict[str, np.ndarray]:
    """Seeded inputs for every model input, by role, consistent with each other: token ids
    inside the vocabulary, a mask of ones over past and new tokens (the last new token of
    the first row masked out where there is no cache), positions continuing the past, caches
    of length :data:`PAST`, images of the config's size. Axes the export fixed keep their size."""
    config = MODELS[name].config
    rng = np.random.default_rng(seed)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()
    past = PAST if any(i.name.startswith("past_key_values") for i in inputs) else 0
    found: dict[str, np.ndarray] = {}
    for item in inputs:
        fixed = [d if isinstance(d, int) else None for d in item.shape]
        b = fixed[0] or batch
        s = fixed[1] if len(fixed) > 1 and fixed[1] else seq
        if item.name == "pixel_values":
            side = config["image_size"]
            found[item.name] = rng.standard_normal((b, config["num_channels"], side, side)).astype(np.float32)
        elif item.name in ("input_ids", "decoder_input_ids"):
            found[item.name] = rng.integers(3, config["vocab_size"], (b, s)).astype(np.int64)
        elif item.name == "attention_mask":
            mask = np.ones((b, past + s), np.int64)
            if not past:
                mask[0, -1] = 0
            found[item.name] = mask
        elif item.name == "token_type_ids":
            found[item.name] = np.zeros((b, s), np.int64)
        elif item.name == "position_ids":
            found[item.name] = np.tile(np.arange(past, past + s), (b, 1)).astype(np.int64)
        elif item.name.startswith("past_key_values"):
            found[item.name] = rng.standard_normal((b, fixed[1], past, fixed[3])).astype(np.float32)
        else:
            raise AssertionError(f"no role for input {item.name!r} of {path.name}")
    return found


def run(path: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, inputs)))


def max_rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))


def _grow(source: Path, out: Path, names: list[str], growth: Growth, inputs: dict[str, np.ndarray]) -> None:
    onnxgrow.widen_file(source, out, heads={n: growth.heads for n in names},
                        kv_heads={n: growth.kv_heads for n in names},
                        options=GrowOptions(verify=VerifyOptions(inputs=[inputs])))


@pytest.mark.parametrize(("name", "exporter", "growth"), GROWTH_CASES)
def test_inspect_offers_the_head_growths_that_are_done_and_they_are_exact(
        hf_case, tmp_path: Path, name: str, exporter: str, growth: Growth) -> None:  # type: ignore[no-untyped-def]
    case = hf_case(name, exporter)
    attentions = case.attentions
    assert len(attentions) == _attention_count(name)
    assert {(a.heads, a.kv_heads) for a in attentions} == {_counts(name)}
    offered = [growth.kind in a.growths for a in attentions]
    # a cache keeps its shape: key/value heads cannot grow (all heads, where each is its own key/value head)
    changes_cache = exporter.endswith("-with-past") and growth.kv_heads != _counts(name)[1]
    assert offered == [not changes_cache] * len(attentions), [a.reason for a in attentions]

    names = [a.name for a in attentions]
    out = tmp_path / "grown.onnx"
    check = feeds(case.path, name, seed=0, batch=2, seq=6)
    if not offered[0]:
        with pytest.raises(GrowError, match="key/value cache"):
            _grow(case.path, out, names, growth, check)
        assert not out.exists()
        return
    _grow(case.path, out, names, growth, check)

    inputs = feeds(case.path, name, seed=1, batch=3, seq=5)
    old, new = run(case.path, inputs), run(out, inputs)
    assert list(old) == list(new)
    errors = {key: max_rel(old[key], new[key]) for key in old}
    assert max(errors.values()) <= TOLERANCE, errors
    grown = onnxgrow.inspect_model(out).attentions
    assert [(a.name, a.heads, a.kv_heads, a.head_dim) for a in grown] == [
        (a.name, growth.heads, growth.kv_heads, a.head_dim) for a in attentions]


def test_a_key_value_cache_refuses_key_value_head_growth_naming_it(hf_case, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """One line naming the cache's inputs and outputs of the attention asked for, exit 2,
    nothing written; ``inspect`` says the same and offers only query heads per group."""
    case = hf_case(*WITH_PAST)
    source = tmp_path / "llama-with-past.onnx"
    shutil.copyfile(case.path, source)
    out = tmp_path / "grown.onnx"
    message = assert_refused(tmp_path, ["widen", str(source), "--node", "model.layers.1.self_attn", "--heads", "8",
                                        "--kv-heads", "4", "-o", str(out)], "key/value cache", out)
    for name in ("'past_key_values.1.key'", "'past_key_values.1.value'", "'present.1.key'", "'present.1.value'"):
        assert name in message
    assert "past_key_values.0" not in message
    for attention in case.attentions:
        assert attention.growths == [PER_GROUP]
        assert "--kv-heads" not in attention.exact
        assert "key/value cache" in attention.reason
