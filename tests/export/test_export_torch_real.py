"""``export --to torch`` on real exports: tiny Hugging Face ``transformers`` models (random
weights from small configs, nothing downloaded) exported by ``torch.onnx.export(dynamo=True)``
and, where it is installed, by ``optimum-cli``; a ``torch.cond`` model (dynamo's ``If``); and
``F.interpolate`` in every mode through both exporters (``Resize``).

Each PyTorch module must run and compute what onnxruntime computes (max relative error
≤ 1e-5), on random inputs or, for decoders with a KV cache, on inputs whose lengths agree.

optimum pins its own ``transformers``, so it lives in an environment of its own:
the optimum environment (``.venv-optimum`` or ``ONNXGROW_OPTIMUM_PYTHON``, see
``tests/helpers/hf_zoo.py``: its Python builds and saves the tiny model and runs optimum-cli);
without it those cases are skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
import warnings
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import onnx
import pytest

from onnxgrow.export import export_model
from onnxgrow.options import VerifyOptions
from tests.helpers.export_cache import shared_directory, write_once
from tests.helpers.hf_zoo import optimum_python

pytest.importorskip("torch")

import torch

pytestmark = pytest.mark.torch
needs_transformers = pytest.mark.skipif(find_spec("transformers") is None, reason="needs transformers")

MAX_REL_ERROR = 1e-5
VOCAB = 64
_DECODER = {"vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64}
#: name → (model class, config class, config): grouped-query attention in LLaMA and Qwen2.
TINY: dict[str, tuple[str, str, dict[str, object]]] = {
    "llama": ("LlamaForCausalLM", "LlamaConfig", _DECODER),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Config", _DECODER),
    "gpt2": ("GPT2LMHeadModel", "GPT2Config", {"vocab_size": VOCAB, "n_embd": 32, "n_layer": 2, "n_head": 4,
                                               "n_positions": 64, "bos_token_id": 0, "eos_token_id": 0}),
    "bert": ("BertForSequenceClassification", "BertConfig",
             {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
              "intermediate_size": 64, "num_labels": 3, "max_position_embeddings": 64}),
    "vit": ("ViTForImageClassification", "ViTConfig",
            {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
             "intermediate_size": 64, "num_labels": 3}),
}
IMAGE = (2, 3, 32, 32)


def tiny_model(name: str) -> torch.nn.Module:
    import transformers

    model_class, config_class, config = TINY[name]
    torch.manual_seed(0)
    model = getattr(transformers, model_class)(getattr(transformers, config_class)(**config, use_cache=False))
    return model.eval()


class Logits(torch.nn.Module):
    """The model's first output (the logits) as a plain tensor, from inputs given in the
    order of ``names``."""

    def __init__(self, model: torch.nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model = model
        self.names = names

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.names, inputs)), return_dict=False)[0]


def dynamo_export(name: str, path: Path, *, with_mask: bool = True) -> None:
    """Batch and sequence dynamic, as users export; ``with_mask=False``: input_ids only."""
    batch, seq = torch.export.Dim("batch", max=64), torch.export.Dim("seq", max=60)
    if name == "vit":
        names, example = ["pixel_values"], (torch.randn(*IMAGE),)
        shapes: tuple[dict[int, torch.export.Dim], ...] = ({0: batch},)
    else:
        ids = torch.randint(0, VOCAB, (2, 7))
        names = ["input_ids", "attention_mask"] if with_mask else ["input_ids"]
        example = (ids, torch.ones_like(ids)) if with_mask else (ids,)
        shapes = tuple({0: batch, 1: seq} for _ in example)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Logits(tiny_model(name), names), example, str(path), dynamo=True, external_data=False,
                          input_names=names, dynamic_shapes=(shapes,))


def export_checked(source: Path, tmp_path: Path, options: VerifyOptions) -> float:
    """Export to PyTorch (which compares the loaded module with onnxruntime) and return the
    max relative error it measured."""
    report = export_model(source, tmp_path / "model.torch.pt", "torch", verify=options)
    assert report.verification is not None and report.verification.passed, report.verification
    return report.verification.max_rel_error


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shared_directory(tmp_path_factory.getbasetemp(), "transformers_exports")


@needs_transformers
@pytest.mark.parametrize("name", sorted(TINY))
def test_dynamo_export_runs_in_pytorch(name: str, exports: Path, tmp_path: Path) -> None:
    source = write_once(exports / f"{name}-dynamo.onnx", lambda path: dynamo_export(name, path))
    shapes = {"pixel_values": list(IMAGE)} if name == "vit" else {"input_ids": [2, 5], "attention_mask": [2, 5]}
    assert export_checked(source, tmp_path, VerifyOptions(samples=2, input_shapes=shapes)) <= MAX_REL_ERROR


@needs_transformers
def test_llama_exported_with_input_ids_only_runs_in_pytorch(exports: Path, tmp_path: Path) -> None:
    """Without an attention mask the dynamo export computes the positions with CumSum."""
    source = write_once(exports / "llama-ids-dynamo.onnx", lambda path: dynamo_export("llama", path, with_mask=False))
    assert export_checked(source, tmp_path, VerifyOptions(input_shapes={"input_ids": [2, 5]})) <= MAX_REL_ERROR


class Cond(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)
        self.fc2 = torch.nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cond(x.sum() > 0, lambda v: self.fc(v).relu(), lambda v: self.fc2(v) * 2, (x,))


def test_torch_cond_exported_as_if_runs_both_branches(tmp_path: Path) -> None:
    """dynamo writes ``torch.cond`` as an ``If`` whose branches read the outer weights by name."""
    path = tmp_path / "cond.onnx"
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Cond().eval(), (torch.randn(2, 4),), str(path), dynamo=True, external_data=False,
                          input_names=["x"])
    rng = np.random.default_rng(0)
    samples = [{"x": np.abs(rng.standard_normal((2, 4))).astype(np.float32) * sign} for sign in (1, -1)]
    assert export_checked(path, tmp_path, VerifyOptions(inputs=samples)) <= MAX_REL_ERROR


class Upsampling(torch.nn.Module):
    """``F.interpolate`` as U-Nets and detection necks use it: nearest ×2, bilinear (half-pixel
    and align-corners to a size), bicubic."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.conv(x)
        interpolate = torch.nn.functional.interpolate
        doubled = (interpolate(x, scale_factor=2, mode="nearest")
                   + interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
                   + interpolate(x, scale_factor=2, mode="bicubic", align_corners=False))
        return (doubled, interpolate(x, size=(11, 9), mode="bilinear", align_corners=True),
                interpolate(x, size=(3, 7), mode="nearest"))


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_interpolate_exported_as_resize_runs_in_pytorch(dynamo: bool, tmp_path: Path) -> None:
    path = tmp_path / "upsampling.onnx"
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Upsampling().eval(), (torch.randn(2, 3, 6, 5),), str(path), dynamo=dynamo,
                          external_data=False, input_names=["x"])
    assert sum(n.op_type == "Resize" for n in onnx.load(str(path)).graph.node) == 5
    assert export_checked(path, tmp_path, VerifyOptions(samples=2)) <= MAX_REL_ERROR


# ----- optimum-cli ---------------------------------------------------------------------------

OPTIMUM_PYTHON = optimum_python()
_SAVE = textwrap.dedent("""
    import json, sys, torch, transformers
    model_class, config_class, config, folder = json.loads(sys.argv[1])
    torch.manual_seed(0)
    getattr(transformers, model_class)(getattr(transformers, config_class)(**config)).save_pretrained(folder)
""")
#: (model, optimum task) pairs; "-with-past" decoders take a KV cache.
OPTIMUM_CASES = [("llama", "text-generation"), ("llama", "text-generation-with-past"), ("qwen2", "text-generation"),
                 ("gpt2", "text-generation-with-past"), ("bert", "text-classification"),
                 ("bert", "feature-extraction"), ("vit", "image-classification")]


def optimum_export(name: str, task: str, path: Path) -> None:
    """Save the tiny model with optimum's own Python and export it with optimum-cli into ``path``'s folder."""
    assert OPTIMUM_PYTHON is not None
    folder = path.parent / f"{path.stem}-pretrained"
    model_class, config_class, config = TINY[name]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["HF_HUB_OFFLINE"] = "1"
    subprocess.run([OPTIMUM_PYTHON, "-c", _SAVE, json.dumps([model_class, config_class, config, str(folder)])],
                   check=True, env=env, timeout=600)
    out = path.parent / f"{path.stem}-optimum"
    subprocess.run([OPTIMUM_PYTHON, "-m", "optimum.commands.optimum_cli", "export", "onnx", "--model", str(folder),
                    "--task", task, str(out)], check=True, env=env, capture_output=True, timeout=900)
    (out / "model.onnx").rename(path)


def decoder_inputs(source: Path, past: int, new: int) -> dict[str, np.ndarray]:
    """Inputs of an optimum decoder with a KV cache: ``past`` cached positions, ``new`` tokens."""
    rng = np.random.default_rng(0)
    feeds: dict[str, np.ndarray] = {}
    for value in onnx.load(str(source), load_external_data=False).graph.input:
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        if value.name == "input_ids":
            feeds[value.name] = rng.integers(0, VOCAB, (2, new))
        elif value.name == "attention_mask":
            feeds[value.name] = np.ones((2, past + new), np.int64)
        elif value.name == "position_ids":
            feeds[value.name] = np.tile(np.arange(past, past + new), (2, 1))
        else:  # past_key_values.<i>.key/value: [batch, kv heads, past, head size]
            feeds[value.name] = rng.standard_normal((2, dims[1], past, dims[3])).astype(np.float32)
    return feeds


@pytest.mark.skipif(OPTIMUM_PYTHON is None, reason="no optimum environment (see tests/helpers/hf_zoo.py)")
@pytest.mark.parametrize("name, task", OPTIMUM_CASES, ids=[f"{n}-{t}" for n, t in OPTIMUM_CASES])
def test_optimum_export_runs_in_pytorch(name: str, task: str, exports: Path, tmp_path: Path) -> None:
    source = write_once(exports / f"{name}-{task}-optimum.onnx", lambda path: optimum_export(name, task, path))
    if task.endswith("-with-past"):
        options = VerifyOptions(inputs=[decoder_inputs(source, past=4, new=3)])
    elif name == "vit":  # optimum leaves channels and image size dynamic too
        options = VerifyOptions(input_shapes={"pixel_values": list(IMAGE)})
    else:
        options = VerifyOptions(samples=2)
    assert export_checked(source, tmp_path, options) <= MAX_REL_ERROR
