"""Vocabulary growth (``widen --rows``): old ids exact, new ids run, tied and untied LM heads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import onnxgrow
from onnxgrow.errors import GrowError
from onnxgrow.lineage import read_history
from onnxgrow.options import VerifyOptions
from onnxgrow.verification import input_specs
from tests.helpers.cli import assert_refused, run
from tests.helpers.paths import fixture_path

pytest.importorskip("torch")

import torch

from tests.helpers.lm_zoo import build_lm, export_lm
from tests.helpers.torch_zoo import export as zoo_export
from tests.helpers.torch_zoo import shared_directory

pytestmark = pytest.mark.torch

EMBEDDING = {"gpt2": "wte", "llama": "embed_tokens"}
TABLE = {"gpt2": "transformer.wte.weight", "llama": "model.embed_tokens.weight"}
CASES = [(kind, tied, dynamo) for kind in ("gpt2", "llama") for tied in (True, False) for dynamo in (False, True)]


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, bool, bool], Path]:
    folder = tmp_path_factory.mktemp("lm")
    return {case: export_lm(build_lm(case[0], tied=case[1]), folder / f"{case[0]}-{case[1]}-{case[2]}.onnx", case[2])
            for case in CASES}


def _run(path: Path, ids: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input_ids": ids})[0]  # type: ignore[no-any-return]


def _names(state: dict[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in state.items()}


@pytest.mark.parametrize(("kind", "tied", "dynamo"), CASES)
def test_old_ids_exact_new_ids_run(exports: dict, kind: str, tied: bool, dynamo: bool, tmp_path: Path) -> None:
    path = exports[(kind, tied, dynamo)]
    out = tmp_path / "grown.onnx"
    head = None if tied else "lm_head"
    report = onnxgrow.grow_vocabulary_file(path, out, {EMBEDDING[kind]: 60}, head=head)
    check = report.verification
    assert check is not None and check.passed and check.max_rel_error <= 1e-5, check.summary()  # type: ignore[attr-defined]
    assert "ids of input_ids in [0, 50)" in check.summary()  # type: ignore[attr-defined]
    assert "logits restricted to the old 50 of 60 classes" in check.summary()  # type: ignore[attr-defined]
    assert report.groups[0].layers == [EMBEDDING[kind], "lm_head"]
    # old ids: the same logits (onnxruntime's optimised kernels may block a wider MatMul differently); new ids run
    old_ids = np.random.default_rng(0).integers(0, 50, (3, 6))
    np.testing.assert_allclose(_run(out, old_ids)[..., :50], _run(path, old_ids), rtol=1e-5, atol=1e-6)
    new_ids = np.random.default_rng(1).integers(50, 60, (3, 6))
    logits = _run(out, new_ids)
    assert logits.shape == (3, 6, 60) and np.all(np.isfinite(logits))
    # the grown model verified against itself draws new ids
    grown = onnxgrow.load_model(out)
    assert input_specs(grown)["input_ids"][2] == 60
    assert read_history(grown)[-1]["input_range"] == {"input_ids": 60}
    # export: the same names as the original's, the vocabulary ones grown; a tied head stays tied
    before, after = onnxgrow.state_dict(path).tensors, onnxgrow.state_dict(out).tensors
    assert set(after) == set(before)
    assert after[TABLE[kind]].shape == (60, 16) and after["lm_head.weight"].shape == (60, 16)
    table = after[TABLE[kind]]
    np.testing.assert_array_equal(table[50:], np.broadcast_to(before[TABLE[kind]].astype(np.float64).mean(0)
                                                              .astype(np.float32), (10, 16)))
    if tied:
        np.testing.assert_array_equal(after["lm_head.weight"], table)
    else:  # an untied head's new rows: the mean of its old rows, as the table's
        head = before["lm_head.weight"].astype(np.float64).mean(0).astype(np.float32)
        np.testing.assert_allclose(after["lm_head.weight"][50:], np.broadcast_to(head, (10, 16)), rtol=1e-6)


@pytest.mark.parametrize(("kind", "tied", "dynamo"), CASES)
def test_export_loads_strictly_into_the_bigger_vocabulary(exports: dict, kind: str, tied: bool, dynamo: bool,
                                                          tmp_path: Path) -> None:
    """The grown state dict loads with strict=True into the model class built with vocab 60
    (tied or not, both exporters) and computes what onnxruntime computes on the grown model."""
    path = exports[(kind, tied, dynamo)]
    grown, _ = onnxgrow.grow_vocabulary(path, {EMBEDDING[kind]: 60}, head=None if tied else "lm_head")
    exported = onnxgrow.state_dict(grown)
    assert not [n for n in exported.notes() if "lacks" in n or "kept as" in n], exported.notes()
    wider = build_lm(kind, vocab=60, tied=tied)
    wider.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in exported.tensors.items()}, strict=True)
    assert wider.lm_head.weight.shape == (60, 16)
    tmp = tmp_path / "strict.onnx"
    onnxgrow.save_model(grown, tmp)
    ids = np.random.default_rng(2).integers(0, 60, (2, 6))
    with torch.no_grad():
        np.testing.assert_allclose(wider(torch.from_numpy(ids)).numpy(), _run(tmp, ids), rtol=1e-5, atol=1e-5)


def test_a_folded_position_table_is_reported(tmp_path: Path) -> None:
    """Dynamo with a static sequence folds ``wpe(arange(T))`` into the constant ``embedding_1``:
    it is no parameter, and the note names the weight the state dict therefore lacks."""
    path = export_lm(build_lm("gpt2"), tmp_path / "static.onnx", dynamo=True, dynamic_seq=False)
    exported = onnxgrow.state_dict(path)
    assert "transformer.wpe.weight" not in exported.tensors and "embedding_1" not in exported.tensors
    assert any("'embedding_1'" in n and "computed from transformer.wpe.weight" in n and "optimize=False" in n
               for n in exported.notes()), exported.notes()
    # the torch export still computes the same logits, the folded rows kept as a constant
    module = onnxgrow.to_torch(path)
    ids = np.random.default_rng(4).integers(0, 50, (2, 6))
    with torch.no_grad():
        np.testing.assert_allclose(module(torch.from_numpy(ids)).numpy(), _run(path, ids), rtol=1e-5, atol=1e-5)


def test_legacy_paths_get_the_outer_module_back(exports: dict) -> None:
    """TinyLlamaLM's forward calls ``self.model.layers[0]`` directly, so the legacy scopes read
    ``/layers.0/mlp/up_proj``; the weights named ``model.layers.0...`` put ``model.`` back, for
    the state dict and for the names a user types."""
    path = exports[("llama", False, False)]
    assert "model.layers.0.mlp.up_proj.weight" in onnxgrow.state_dict(path).tensors
    grown, report = onnxgrow.widen(path, {"model.layers.0.mlp.up_proj": 30})
    assert report.groups[0].layers[0] == "model.layers.0.mlp.up_proj"
    assert onnxgrow.state_dict(grown).tensors["model.layers.0.mlp.down_proj.weight"].shape == (16, 30)


@pytest.mark.parametrize("init", ["zero-pad", "random-pad"])
def test_row_inits(exports: dict, init: str) -> None:
    path = exports[("llama", False, True)]
    first, r1 = onnxgrow.grow_vocabulary(path, {"embed_tokens": 55}, head="lm_head", init=init, seed=3)
    second, _ = onnxgrow.grow_vocabulary(path, {"embed_tokens": 55}, head="lm_head", init=init, seed=3)
    for weight in ("model.embed_tokens.weight", "lm_head.weight"):  # the untied head's new rows follow --init
        rows = onnxgrow.state_dict(first).tensors[weight][50:]
        np.testing.assert_array_equal(rows, onnxgrow.state_dict(second).tensors[weight][50:])
        assert np.all(rows == 0) if init == "zero-pad" else np.std(rows) > 0
    assert onnxgrow.verify(path, first, scope=r1.scope).passed


@settings(max_examples=5, deadline=None)
@given(extra=st.integers(1, 200))
def test_any_vocabulary_size(exports: dict, extra: int) -> None:
    path = exports[("gpt2", True, True)]
    grown, report = onnxgrow.grow_vocabulary(path, {"wte": 50 + extra})
    check = onnxgrow.verify(path, grown, scope=report.scope)
    assert check.passed and check.max_rel_error <= 1e-5, check.summary()
    # the tied table alone grew, under its head's name (stored twice: as the table and transposed for the head)
    grown_weights = report.growth_map.weights
    assert {w.name for w in grown_weights} == {"lm_head.weight"}
    assert {(w.old_shape, w.new_shape, tuple(a.axis for a in w.axes)) for w in grown_weights} == {
        ((50, 16), (50 + extra, 16), (0,))}
    table = report.growth_map.by_name()["lm_head.weight"]
    assert table.new_shape == (50 + extra, 16) and list(table.axes[0].src[50:]) == [-1] * extra


def test_embedding_without_head(tmp_path: Path) -> None:
    """A BERT-like encoder (no LM head): the table grows, every output stays exact on old ids."""
    path = zoo_export("bert", "dynamo", shared_directory(tmp_path))
    grown, report = onnxgrow.grow_vocabulary(path, {"word_embeddings": 32})
    assert report.notes and "no LM head grew" in report.notes[0]
    check = onnxgrow.verify(path, grown, VerifyOptions(samples=2), scope=report.scope)
    assert check.passed and check.max_rel_error <= 1e-5, check.summary()


def test_rows_not_larger_than_the_table(exports: dict, tmp_path: Path) -> None:
    src = tmp_path / "lm.onnx"
    src.write_bytes(exports[("llama", False, False)].read_bytes())
    out = tmp_path / "x.onnx"
    for rows in ("50", "20"):
        assert_refused(tmp_path, ["widen", str(src), "--node", "embed_tokens", "--rows", rows, "-o", str(out)],
                       f"--rows for 'embed_tokens' must be larger than its 50 rows, got {rows}", out)
    with pytest.raises(GrowError, match="--rows grows an embedding table"):
        onnxgrow.grow_vocabulary(fixture_path("mlp_legacy"), {"layer_1": 9})


@pytest.mark.parametrize(("tied", "rows"), [(True, 2**63), (False, 2**63), (False, 2**40), (True, 10**30)])
def test_rows_beyond_memory_are_refused_up_front(exports: dict, tmp_path: Path, tied: bool, rows: int) -> None:
    """``--rows 9223372036854775808`` was an ``iterator is too large`` traceback."""
    src = tmp_path / "lm.onnx"
    src.write_bytes(exports[("gpt2", tied, False)].read_bytes())
    out = tmp_path / "x.onnx"
    head = [] if tied else ["--head", "lm_head"]
    assert_refused(tmp_path, ["widen", str(src), "--node", "wte", "--rows", str(rows), *head, "-o", str(out)],
                   f"growing 'wte' from 50 to {rows} rows adds ", out)


def test_cli_rows_verify_diff_map(exports: dict, tmp_path: Path) -> None:
    src = tmp_path / "lm.onnx"
    src.write_bytes(exports[("llama", False, True)].read_bytes())
    out, map_out = tmp_path / "lm64.onnx", tmp_path / "lm64.json"
    code, stdout, stderr = run("widen", str(src), "--node", "embed_tokens", "--rows", "64", "--head", "lm_head",
                               "-o", str(out), "--map-out", str(map_out), "-q")
    assert code == 0, stderr
    assert "embed_tokens: 50 → 64 rows (mean)" in stdout
    code, stdout, _ = run("verify", str(src), str(out))
    assert code == 0 and "ids of input_ids in [0, 50)" in stdout
    code, stdout, _ = run("diff", str(src), str(out))
    assert "embed_tokens vocabulary 50 → 64 rows" in stdout
    weights = {w["name"]: w for w in json.loads(map_out.read_text())["weights"]}
    assert weights["model.embed_tokens.weight"]["axes"][0]["src"][50:] == [-1] * 14
    # export to PyTorch: the module is checked against onnxruntime on ids of the grown vocabulary
    code, stdout, stderr = run("export", str(out), "--to", "torch", "-o", str(tmp_path / "lm64.pt"))
    assert code == 0 and "PASSED" in stdout, stderr
    assert weights["lm_head.weight"]["new_shape"] == [64, 16] and weights["lm_head.weight"]["axes"][0]["axis"] == 0


def test_recorded_range_reaches_ids_behind_a_cast(tmp_path: Path) -> None:
    """int32 ids cast before the lookup: the check draws them below the table found behind the
    cast, the growth's check below the old range, and a later check of the grown model below
    the grown table (the range its lineage recorded)."""

    class CastIds(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(20, 4)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.emb(ids.long())

    torch.manual_seed(0)
    path = tmp_path / "cast.onnx"
    torch.onnx.export(CastIds().eval(), (torch.zeros(2, 3, dtype=torch.int32),), str(path), dynamo=False,
                      input_names=["input_ids"], output_names=["h"])
    assert input_specs(onnxgrow.load_model(path))["input_ids"][2] == 20  # the table behind the cast
    grown, report = onnxgrow.grow_vocabulary(path, {"emb": 30})
    assert report.scope is not None and report.scope.input_high == {"input_ids": 20}
    assert onnxgrow.verify(path, grown, scope=report.scope).passed
    assert input_specs(grown)["input_ids"][2] == 30


def test_cli_choices_are_the_library_s() -> None:
    from onnxgrow.cli.widen_cmd import OLD_PROBABILITIES_CHOICES, ROW_INIT_CHOICES
    from onnxgrow.widening.new_outputs import OldProbabilities
    from onnxgrow.widening.vocabulary import RowInit

    assert ROW_INIT_CHOICES == tuple(i.value for i in RowInit)
    assert OLD_PROBABILITIES_CHOICES == tuple(o.value for o in OldProbabilities)
