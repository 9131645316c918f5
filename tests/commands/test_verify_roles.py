"""``verify`` and the check on write on real exporters' graphs, with no ``--inputs``.

Before inputs were drawn by role, every optimum text-generation-with-past export failed
onnxgrow's own check (every dynamic dimension at 2: the past length, the positions and the
mask disagreed), optimum's
ViT was drawn with 2 channels, and a voice detector's ``if sr == 16000`` ran one branch only.
Here every optimum export of tests/helpers/hf_zoo.py's tiny models (and T5's multi-file
text2text exports), a dynamo export taking a cache under names of its own, and TorchScript
and torch.cond voice detectors are checked with no inputs given: the check passes, says what
it drew by role (sizes read from the model's config, not written here), and a growth's check
on write passes too. On optimum's cached LLaMA and GPT-2, ``verify ORIGINAL GROWN`` passes
an FFN growth and fails the grown model with one weight nudged; the old draw's sizes do not
run the reference, and its ids below 10 miss a wrong embedding row that ids drawn over the
vocabulary find. Optimum's exports need the optimum environment (``.venv-optimum`` or
``ONNXGROW_OPTIMUM_PYTHON``; else they skip).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import onnxgrow
from onnxgrow.model_io import load_model
from onnxgrow.options import VerifyOptions
from onnxgrow.verification.inputs import DEFAULT_DYNAMIC_DIM, DEFAULT_PAST_LENGTH, sample_feeds
from tests.helpers.cli import run
from tests.helpers.paths import REPO

pytestmark = [pytest.mark.torch]
torch = pytest.importorskip("torch")

P, T = DEFAULT_PAST_LENGTH, DEFAULT_DYNAMIC_DIM

OPTIMUM_CASES = [
    ("llama", "text-generation"), ("llama", "text-generation-with-past"),
    ("llama-tied", "text-generation"), ("llama-tied", "text-generation-with-past"),
    ("qwen2", "text-generation"), ("qwen2", "text-generation-with-past"),
    ("gpt2", "text-generation"), ("gpt2", "text-generation-with-past"),
    ("bert", "text-classification"), ("bert", "feature-extraction"),
    ("vit", "image-classification"), ("t5", "feature-extraction"),
]
#: The FFN layer widened in each decoder's first block (its name ends so).
FFN_INPUT = ("mlp.up_proj", "mlp.c_fc")


def _drawn(stdout: str) -> str:
    (line,) = [ln for ln in stdout.splitlines() if ln.startswith("drawn:    by role: ")]
    return line.removeprefix("drawn:    by role: ")


def _expected_draws(name: str, task: str, config: dict[str, Any]) -> list[str]:
    """What the check must say it drew for ``name``'s ``task`` export, from the model's config."""
    if name == "vit":
        size, channels = config["image_size"], config["num_channels"]
        return [f"pixel_values [{T}, {channels}, {size}, {size}] (as its first Conv takes)"]
    ids = f"input_ids ids in [0, {config['vocab_size']})"
    if name == "bert":
        return [ids, "attention_mask ones", "token_type_ids zeros"]
    if name == "t5":
        return [ids, "attention_mask ones", f"decoder_input_ids ids in [0, {config['vocab_size']})"]
    if not task.endswith("-with-past"):
        return [ids, "attention_mask ones", f"position_ids 0..{T - 1}"]
    layers = config.get("num_hidden_layers") or config["n_layer"]
    return [ids, f"attention_mask ones over past {P} + new {T}", f"position_ids {P}..{P + T - 1}",
            f"{2 * layers} key/value caches of past length {P}"]


@pytest.fixture(scope="session")
def optimum_export(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """``(name, task) -> (path, sidecar)``: optimum-cli's export, made once per session."""
    pytest.importorskip("transformers")
    from tests.helpers.hf_zoo import export, hf_directory, optimum_available

    directory = hf_directory(tmp_path_factory.getbasetemp())

    def get(name: str, task: str) -> tuple[Path, dict[str, Any]]:
        if not optimum_available():
            pytest.skip("no optimum environment (.venv-optimum, or ONNXGROW_OPTIMUM_PYTHON) to test optimum's exports")
        return export(name, f"optimum:{task}", directory)

    return get


@pytest.mark.transformers
@pytest.mark.parametrize(("name", "task"), OPTIMUM_CASES)
def test_optimum_exports_verify_with_no_inputs(optimum_export, name: str, task: str,  # type: ignore[no-untyped-def]
                                               tmp_path: Path) -> None:
    path, info = optimum_export(name, task)
    code, stdout, stderr = run("verify", str(path), str(path))
    assert code == 0, stdout + stderr
    assert _drawn(stdout) == ", ".join(_expected_draws(name, task, info["config"])), stdout
    if name in ("vit", "bert", "t5"):
        return
    # a growth's check on write draws the same way: widen the first block's FFN
    ffn, width = _first_ffn(path, info)
    out = tmp_path / "wide.onnx"
    code, stdout, stderr = run("widen", str(path), "--node", ffn, "--to", str(width + 16), "-o", str(out))
    assert code == 0 and "PASSED" in stdout, stdout + stderr
    assert "drawn by role: " + ", ".join(_expected_draws(name, task, info["config"])[:1]) in stdout


def _first_ffn(path: Path, info: dict[str, Any]) -> tuple[str, int]:
    """The FFN input layer of a decoder's first block (by the framework's name) and its width."""
    ffn = next(layer for layer in info["linear"][next(iter(info["linear"]))] if layer.endswith(FFN_INPUT))
    return ffn, {i.name: i.width for i in onnxgrow.inspect_model(path).layers if i.width}[ffn]


def _nudged(src: Path, dst: Path, pick: Callable[[onnx.TensorProto], bool], where: tuple[int | slice, ...]) -> str:
    """``src`` saved as ``dst`` with 0.05 added at ``where`` (an index) in the first initializer
    ``pick`` chooses (its name returned)."""
    model = onnx.load(str(src))
    tensor = next(t for t in model.graph.initializer if pick(t))
    array = numpy_helper.to_array(tensor).copy()
    array[where] += np.float32(0.05)
    tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    onnx.save(model, str(dst))
    return tensor.name


# ----- a growth of optimum's cached decoders, checked with no inputs ------------------------------


@pytest.mark.transformers
@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_a_grown_cached_decoder_passes_and_a_broken_one_fails(optimum_export, name: str,  # type: ignore[no-untyped-def]
                                                               tmp_path: Path) -> None:
    """optimum's with-past export, the first block's FFN twice as wide: ``verify ORIGINAL GROWN``
    with no inputs passes within 1e-5 on ids, mask, positions and caches drawn by role, and fails
    once one weight of the grown FFN is nudged. The sizes the old draw gave (every dynamic
    dimension 2, so a mask shorter than past + new) do not even run the reference."""
    task = "text-generation-with-past"
    path, info = optimum_export(name, task)
    drawn = ", ".join(_expected_draws(name, task, info["config"]))
    ffn, width = _first_ffn(path, info)
    grown = tmp_path / "wide.onnx"
    code, stdout, stderr = run("widen", str(path), "--node", ffn, "--to", str(2 * width), "-o", str(grown))
    assert code == 0, stdout + stderr

    code, stdout, stderr = run("verify", str(path), str(grown))
    assert code == 0 and "PASSED" in stdout and _drawn(stdout) == drawn, stdout + stderr
    report = onnxgrow.verify(path, grown)
    assert report.passed and report.max_rel_error <= 1e-5, report.summary()
    assert report.inputs["attention_mask"]["shape"] == [T, P + T]
    assert {tuple(report.inputs[f"past_key_values.{k}.{kind}"]["shape"][::2]) for k in range(2)
            for kind in ("key", "value")} == {(T, P)}

    before = {t.name: list(t.dims) for t in onnx.load(str(path)).graph.initializer}
    broken = tmp_path / "broken.onnx"
    weight = _nudged(grown, broken, lambda t: t.name in before and list(t.dims) != before[t.name], (0, 0))
    code, stdout, stderr = run("verify", str(path), str(broken))
    assert code == 1 and "FAILED" in stdout and _drawn(stdout) == drawn, (weight, stdout + stderr)

    code, stdout, stderr = run("verify", str(path), str(grown), "--input-shapes", f"attention_mask:[{T},{T}]")
    assert code == 2 and stderr.startswith("error: the reference model fails on these inputs"), stdout + stderr
    assert stderr.count("\n") == 1 and "(random inputs, drawn by role: input_ids ids in" in stderr, stderr


@pytest.mark.transformers
def test_ids_reaching_their_table_through_a_reshape_cover_the_vocabulary(optimum_export,  # type: ignore[no-untyped-def]
                                                                         tmp_path: Path) -> None:
    """optimum's GPT-2 reshapes ``input_ids`` before its embedding Gather, so the old draw took
    them from [0, 10) and a wrong embedding row from 10 on passed. Drawn by role they are in
    [0, vocab_size): the wrong rows fail the check, and the same sample with its ids below 10
    does not see them."""
    path, info = optimum_export("gpt2", "text-generation-with-past")
    vocab = info["config"]["vocab_size"]
    broken = tmp_path / "broken.onnx"
    # one element of each row (a whole row shifted alike is what the LayerNorm after it takes away)
    _nudged(path, broken, lambda t: t.name.endswith("wte.weight") and t.dims[0] == vocab, (slice(10, None), 0))
    report = onnxgrow.verify(path, broken)
    assert not report.passed and f"input_ids ids in [0, {vocab})" in report.drawn, report.summary()

    feeds = sample_feeds(load_model(path), VerifyOptions()).feeds[0]
    assert feeds["input_ids"].max() >= 10
    below_ten = {**feeds, "input_ids": feeds["input_ids"] % 10}
    assert onnxgrow.verify(path, broken, VerifyOptions(inputs=[below_ten])).passed


def _optimum_files(task: str, folder: Path) -> list[Path]:
    """Every model optimum-cli writes for T5's ``task`` (several files: an encoder and decoders),
    through hf_zoo's script for the optimum environment."""
    from tests.helpers.hf_zoo import optimum_python

    spec = folder / "spec.json"
    spec.write_text(json.dumps({"name": "t5", "exporter": f"optimum:{task}", "folder": str(folder)}))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    python = optimum_python()
    assert python, "no optimum environment"
    done = subprocess.run([python, "-m", "tests.helpers.hf_zoo", "other", str(spec)],
                          env=env, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return sorted((folder / "onnx").glob("*.onnx"))


@pytest.mark.transformers
@pytest.mark.slow
def test_t5_text2text_exports_verify_with_no_inputs() -> None:
    pytest.importorskip("transformers")
    from tests.helpers.hf_zoo import optimum_available

    if not optimum_available():
        pytest.skip("no optimum environment (.venv-optimum, or ONNXGROW_OPTIMUM_PYTHON) to test optimum's exports")
    with tempfile.TemporaryDirectory() as tmp:
        files = _optimum_files("text2text-generation-with-past", Path(tmp))
        assert {f.name for f in files} == {"encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx",
                                           "decoder_model_merged.onnx"}
        for path in files:
            report = onnxgrow.verify(path, path)
            assert report.passed, (path.name, report.summary())
            if path.name != "encoder_model.onnx":
                assert "encoder_attention_mask ones" in report.drawn  # the encoder's length: no past in it
            if "past" in path.name or "merged" in path.name:
                # the decoder's self-attention caches; the encoder's are read, not concatenated
                assert f"4 key/value caches of past length {P}" in report.drawn, report.drawn
        merged = onnxgrow.verify(files[1], files[1])
        assert files[1].name == "decoder_model_merged.onnx"
        assert [b.runs for b in merged.branches] == [{"then_branch": 1, "else_branch": 1}]


# ----- a dynamo export that takes a cache, under names of its own -------------------------------


def _dynamo_with_cache(path: Path) -> Path:
    """LLaMA's decoding step through torch.onnx's dynamo exporter, its inputs named by the
    wrapper's arguments: ``tokens``, ``keep`` (the mask, its length a dimension of its own),
    ``where`` (positions), ``past_keys``/``past_values`` (lists: ``past_keys_0`` ...)."""
    pytest.importorskip("transformers")
    import transformers

    from tests.helpers.hf_zoo import build_model

    model = build_model("llama")
    config = model.config
    layers, kv_heads = config.num_hidden_layers, config.num_key_value_heads
    head_dim = config.hidden_size // config.num_attention_heads

    class Step(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, tokens, keep, where, past_keys, past_values):  # noqa: ANN001, ANN202
            cache = transformers.DynamicCache(config=config)
            for k in range(layers):
                cache.update(past_keys[k], past_values[k], k)
            return self.model(input_ids=tokens, attention_mask=keep, position_ids=where, past_key_values=cache,
                              use_cache=True).logits

    batch, new, past = 2, 3, 4
    args = (torch.randint(0, config.vocab_size, (batch, new)), torch.ones(batch, past + new, dtype=torch.long),
            torch.arange(past, past + new).expand(batch, new),
            [torch.randn(batch, kv_heads, past, head_dim) for _ in range(layers)],
            [torch.randn(batch, kv_heads, past, head_dim) for _ in range(layers)])
    b = torch.export.Dim("batch", min=1, max=64)
    s = torch.export.Dim("seq", min=1, max=64)
    p = torch.export.Dim("past", min=1, max=64)
    shapes = {"tokens": {0: b, 1: s}, "keep": {0: b, 1: torch.export.Dim("total", min=2, max=128)},
              "where": {0: b, 1: s}, "past_keys": [{0: b, 2: p}] * layers, "past_values": [{0: b, 2: p}] * layers}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(Step().eval(), args, dynamo=True, dynamic_shapes=shapes, verbose=False)
    assert program is not None
    program.save(str(path), external_data=False)
    return path


@pytest.mark.transformers
def test_a_dynamo_export_with_a_renamed_cache_verifies_with_no_inputs(tmp_path: Path) -> None:
    path = _dynamo_with_cache(tmp_path / "step.onnx")
    table = next(init.dims[0] for init in onnx.load(str(path)).graph.initializer
                 if init.name.endswith("embed_tokens.weight"))  # its rows: the vocabulary
    report = onnxgrow.verify(path, path)
    assert report.passed, report.summary()
    assert report.drawn == [f"tokens ids in [0, {table})", f"keep ones over past {P} + new {T}",
                            f"4 key/value caches of past length {P}"]
    assert report.inputs["keep"]["shape"] == [T, P + T]
    grown = tmp_path / "wide.onnx"
    code, stdout, stderr = run("widen", str(path), "--node", "model.model.layers.0.mlp.up_proj", "--to", "64",
                               "-o", str(grown))
    assert code == 0 and "PASSED" in stdout and "drawn by role: tokens ids" in stdout, stdout + stderr


# ----- If branches on real exports ------------------------------------------------------------------


def _detector(kind: str, path: Path) -> Path:
    """``if sr == 16000: fast(x) else: slow(x)`` (one small network per sampling rate), exported
    by TorchScript (a scripted If) or through ``torch.cond`` by the dynamo exporter."""
    torch.manual_seed(0)
    fast = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))
    slow = torch.nn.Sequential(torch.nn.Linear(4, 2))
    x = torch.randn(1, 4)

    class Scripted(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fast, self.slow = fast, slow

        def forward(self, x, sr: int):  # noqa: ANN001, ANN202 (TorchScript reads the annotations)
            if sr == 16000:
                return self.fast(x)
            return self.slow(x)

    class Cond(Scripted):
        def forward(self, x, sr):  # noqa: ANN001, ANN202
            return torch.cond(sr == 16000, lambda x: self.fast(x), lambda x: self.slow(x), (x,))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "scripted If":
            torch.onnx.export(torch.jit.script(Scripted().eval()), (x, torch.tensor(16000)), str(path), dynamo=False,
                              input_names=["x", "sr"], opset_version=16)
        else:
            torch.onnx.export(Cond().eval(), (x, torch.tensor(16000)), dynamo=True,
                              input_names=["x", "sr"]).save(str(path))
    return path


@pytest.mark.parametrize("kind", ["scripted If", "torch.cond"])
def test_a_growth_in_one_branch_is_checked_on_that_branch(kind: str, tmp_path: Path) -> None:
    src = _detector(kind, tmp_path / "detector.onnx")
    layer = next(i.name for i in onnxgrow.inspect_model(src).layers if i.name.startswith("fast") and i.widenable)
    out = tmp_path / "wide.onnx"
    code, stdout, stderr = run("widen", str(src), "--node", layer, "--to", "9", "-o", str(out))
    assert code == 0, stdout + stderr
    assert "sr 16000 then 16001 by sample (for every If branch)" in stdout
    assert "samples per branch: then_branch 1, else_branch 1; rewritten: then_branch" in stdout
    # the 16 kHz branch really ran: a wrong weight in it fails the check
    model = onnx.load(str(out))
    bias = next(t for t in model.graph.initializer if t.name == "fast.2.bias")
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + np.float32(0.5), bias.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    code, stdout, _ = run("verify", str(src), str(broken))
    assert code == 1 and "FAILED" in stdout, stdout
