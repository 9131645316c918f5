"""``deepen --block`` on real ``transformers`` exports (tests/helpers/hf_zoo.py, 3 blocks each, so
the first, a middle and the last block differ).

- ``--init zero`` on pre-norm blocks (LLaMA, GPT-2, Qwen2, ViT; dynamo and optimum) is exact in
  onnxruntime at the first block, a middle one with two copies, the last, and the glob
  (every block followed by its copy);
- the grown model's weights load into the same ``transformers`` class built with the new block
  count with no missing key (the only extra names are the module's own non-persistent
  buffers, which the export stores too: LLaMA's ``rotary_emb.inv_freq``), the copies' output
  projections are zero and their other weights the source block's, and that module's logits are
  onnxruntime's;
- every block reads the same masks and rotary tables as before (shared, not copied);
- BERT (post-norm) refuses ``zero`` naming its LayerNorm and pointing to ``copy``; ``copy``
  writes a stack that loads into the deeper class and is reported CHANGED;
- a graph with a key/value cache is refused naming the cache outputs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("transformers")

import onnxruntime as ort
import torch

from onnxgrow import deepen_block, verify
from onnxgrow.export.hf_transformers import saved_names
from onnxgrow.export.state_dict_file import state_dict
from onnxgrow.model_io import load_model, save_model
from onnxgrow.structure import find_structure
from tests.helpers.cli import assert_refused, run
from tests.helpers.graphs import MAX_REL_ERROR
from tests.helpers.hf_zoo import build_model, example_inputs, export, hf_directory, skip_without_other_environment

pytestmark = [pytest.mark.torch, pytest.mark.transformers]

LAYERS = 3
PRE_NORM = [("llama", "dynamo"), ("llama", "optimum:text-generation"), ("llama-tied", "dynamo"),
            ("llama-tied", "optimum:text-generation"), ("gpt2", "dynamo"), ("gpt2", "optimum:text-generation"),
            ("qwen2", "dynamo"), ("qwen2", "optimum:text-generation"), ("vit", "dynamo"),
            ("vit", "optimum:image-classification")]
#: ``(which block, copies)``: ``*`` is the glob over every block.
WHERE = [("first", 1), ("middle", 2), ("last", 1), ("*", 1)]

Exported = tuple[Path, dict[str, Any]]


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Exported]:
    """``(name, exporter) -> (path, sidecar)`` of a 3-block export; optimum cases skip without optimum."""
    directory = hf_directory(tmp_path_factory.getbasetemp())

    def get(name: str, exporter: str) -> Exported:
        skip_without_other_environment(exporter)
        return export(name, exporter, directory, LAYERS)

    return get


def _blocks(info: dict[str, Any]) -> tuple[str, list[str]]:
    """The container and its blocks, as the torch module numbers them (the export's sidecar)."""
    ((container, names),) = info["blocks"].items()
    assert len(names) == LAYERS
    return container, names


def _request(info: dict[str, Any], where: str) -> tuple[str, list[int]]:
    container, names = _blocks(info)
    if where == "*":
        return f"{container}.*", list(range(LAYERS))
    index = {"first": 0, "middle": 1, "last": LAYERS - 1}[where]
    return names[index], [index]


def _export_names(module: torch.nn.Module, exported: set[str]) -> dict[str, str]:
    """Module name → the export's name for it. optimum exports with transformers 4.57, whose
    ViT modules transformers 5 renamed (``vit.encoder.layer.0.attention.attention.query`` is
    now ``vit.layers.0.attention.q_proj``); such an export holds the old names, the ones
    transformers 5 saves under (what ``--to hf`` writes)."""
    renamed = saved_names(module, module.state_dict())
    return renamed if exported & set(renamed.values()) else {}


def _parameters(module: torch.nn.Module, exported: set[str]) -> dict[str, torch.nn.Parameter]:
    """The module's parameters under the export's names."""
    names = _export_names(module, exported)
    return {names.get(n, n): p for n, p in module.named_parameters()}


def _load_deeper(name: str, path: Path, layers: int) -> torch.nn.Module:
    """The ``transformers`` model with ``layers`` blocks, holding the weights of the export
    ``path``: every parameter and persistent buffer given, nothing but its own buffers left over."""
    module = build_model(name, layers)
    tensors = {k: torch.from_numpy(np.array(v)) for k, v in state_dict(path).tensors.items()}
    to_module = {saved: own for own, saved in _export_names(module, set(tensors)).items()}
    tensors = {to_module.get(k, k): v for k, v in tensors.items()}
    result = module.load_state_dict(tensors, strict=False)
    assert result.missing_keys == [], result.missing_keys
    assert set(result.unexpected_keys) <= {n for n, _ in module.named_buffers()}, result.unexpected_keys
    return module


def _logits(name: str, module: torch.nn.Module, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The first output of ``module`` and of onnxruntime on ``path``, on the zoo's inputs (and
    the mask and positions optimum's exports also take: all ones, ``0..n-1``)."""
    inputs = example_inputs(name)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    if "input_ids" in inputs:
        batch, length = inputs["input_ids"].shape
        extra = {"attention_mask": torch.ones(batch, length, dtype=torch.long),
                 "position_ids": torch.arange(length).expand(batch, length)}
        inputs.update({key: value for key, value in extra.items() if key in names})
    with torch.no_grad():
        expected = module(**inputs)[0].numpy()
    (found, *_) = session.run(None, {key: inputs[key].numpy() for key in names})
    return expected, found


def _side_inputs(path: Path) -> dict[str, list[str]]:
    return {b.label: sorted(v.name or "" for v in b.side_inputs) for b in find_structure(load_model(path)).blocks}


@pytest.mark.parametrize(("where", "count"), WHERE)
@pytest.mark.parametrize(("name", "exporter"), PRE_NORM)
def test_zero_copies_of_pre_norm_blocks_are_exact_and_load_into_the_deeper_class(
        exported: Callable[[str, str], Exported], tmp_path: Path, name: str, exporter: str, where: str,
        count: int) -> None:
    path, info = exported(name, exporter)
    container, _ = _blocks(info)
    request, copied = _request(info, where)
    model, report = deepen_block(load_model(path), request, count=count)
    out = save_model(model, tmp_path / "deep.onnx")

    check = verify(path, out)
    assert check.passed and check.max_rel_error <= MAX_REL_ERROR, check.summary()
    layers = LAYERS + count * len(copied)
    assert report.layers == {container: (LAYERS, layers)}
    new_index = {k: k + count * sum(1 for s in copied if s < k) for k in range(LAYERS)}
    assert [b.name for b in report.inserted] == [f"{container}.{new_index[s] + t}" for s in copied
                                                 for t in range(1, count + 1)]

    deeper = _load_deeper(name, out, layers)
    expected, found = _logits(name, deeper, out)
    assert float(np.abs(expected - found).max() / np.abs(found).max()) <= MAX_REL_ERROR

    original = {k: torch.from_numpy(np.array(v)) for k, v in state_dict(path).tensors.items()}  # the export's
    params = _parameters(deeper, set(original))
    for block in report.inserted:
        zeroed = tuple(block.zeroed)
        assert zeroed, block
        mine = {n: p for n, p in params.items() if n.startswith(block.name + ".")}
        for param_name, param in mine.items():
            if param_name.startswith(zeroed):
                assert not param.any(), param_name
            else:
                source = block.source + param_name[len(block.name):]
                torch.testing.assert_close(param, original[source], rtol=0, atol=0)
        assert any(n.startswith(zeroed) for n in mine) and len(mine) > 2 * len(zeroed)

    before, after = _side_inputs(path), _side_inputs(out)
    assert len(after) == layers and all(after.values()) == all(before.values())  # optimum's ViT blocks read none
    assert {tuple(v) for v in after.values()} == {tuple(v) for v in before.values()}  # shared, not copied


def test_bert_zero_is_refused_naming_its_layer_norm_and_copy_stacks(exported: Callable[[str, str], Exported],
                                                                    tmp_path: Path) -> None:
    path, info = exported("bert", "dynamo")
    container, names = _blocks(info)
    out = tmp_path / "deep.onnx"
    assert_refused(tmp_path, ["deepen", str(path), "--block", names[1], "-o", str(out)],
                   f"is post-norm, its LayerNormalization {names[1]}.attention.output.LayerNorm normalises "
                   "x + f(x), and LN(x + 0) = LN(x) differs from x; --init copy", out)

    code, stdout, stderr = run("deepen", str(path), "--block", names[1], "--init", "copy", "-o", str(out))
    assert code == 0, stderr
    assert "CHANGED" in stdout and "not function-preserving by design" in stdout, stdout
    assert f"inserted block {names[2]} (copy of {names[1]}, every weight copied" in stdout
    deeper = _load_deeper("bert", out, LAYERS + 1)
    original = dict(build_model("bert", LAYERS).named_parameters())
    params = dict(deeper.named_parameters())
    copies = {n: p for n, p in params.items() if n.startswith(names[2] + ".")}
    assert copies
    for param_name, param in copies.items():
        torch.testing.assert_close(param, original[names[1] + param_name[len(names[2]):]], rtol=0, atol=0)
        torch.testing.assert_close(params[f"{container}.3" + param_name[len(names[2]):]],
                                   original[param_name], rtol=0, atol=0)  # the old block 2, renumbered
    expected, found = _logits("bert", deeper, out)
    assert float(np.abs(expected - found).max() / np.abs(found).max()) <= MAX_REL_ERROR


def test_a_key_value_cache_is_refused_naming_it(exported: Callable[[str, str], Exported], tmp_path: Path) -> None:
    path, info = exported("llama", "optimum:text-generation-with-past")
    _, names = _blocks(info)
    out = tmp_path / "deep.onnx"
    assert_refused(tmp_path, ["deepen", str(path), "--block", names[1], "-o", str(out)],
                   "writes the model outputs 'present.1.key', 'present.1.value' and reads "
                   "'past_key_values.1.key', 'past_key_values.1.value' (a key/value cache)", out)
