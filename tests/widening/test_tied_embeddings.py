"""Tied embeddings stay tied, on real ``transformers`` exports (tests/helpers/hf_zoo.py).

A tied LM head reads the embedding table transposed: the exporters store it once more, folded
(``val_386`` for dynamo, ``onnx::MatMul_790`` for optimum), equal to the table transposed. A
hidden-size growth copies the table's columns, ``E' = E[:, src]``, and the head contracts the
same axis, so the head can read ``E'ᵀ`` only when the copies' shares go elsewhere: onto the
final norm's scale. The grown ONNX keeps the head equal to the table transposed, so the state
dict names both weights with one value and loads strictly into the family's own class with
``tie_word_embeddings=True``, computing what onnxruntime computes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("torch")
pytest.importorskip("transformers")

from tests.helpers.cli import run  # noqa: E402
from tests.helpers.hf_growth import feeds, framework_logits, hf_exports, max_rel, run_onnx  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.transformers]

TIED = [("llama-tied", "dynamo"), ("llama-tied", "optimum:text-generation")]


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return hf_exports(tmp_path_factory)


def _grow(source: Path, tmp_path: Path, *args: str) -> Path:
    out = tmp_path / "grown.onnx"
    code, stdout, stderr = run("widen", str(source), *args, "-o", str(out), "-q")
    assert code == 0, stdout + stderr
    return out


def _state_dict(path: Path, tmp_path: Path) -> Path:
    out = tmp_path / "grown.safetensors"
    code, stdout, stderr = run("export", str(path), "--to", "state-dict", "-o", str(out))
    assert code == 0, stdout + stderr
    return out


@pytest.mark.parametrize(("name", "exporter"), TIED)
def test_hidden_growth_of_a_tied_llama_loads_strictly_into_its_tied_config(exports: Any, tmp_path: Path,
                                                                           name: str, exporter: str) -> None:
    """The silent case once seen: hidden ×2 untied the head, the state dict wrote two different
    tables (or the head under a node name) and a strict load into the tied config was off."""
    from safetensors.numpy import load_file

    source, info = exports(name, exporter)
    config = info["config"]
    hidden = config["hidden_size"]
    grown = _grow(source, tmp_path, "--node", "model.embed_tokens", "--to", str(2 * hidden))
    state = _state_dict(grown, tmp_path)
    tensors = load_file(str(state))
    np.testing.assert_array_equal(tensors["lm_head.weight"], tensors["model.embed_tokens.weight"])
    inputs = feeds(grown)
    changes = {"hidden_size": 2 * hidden, "head_dim": config["head_dim"], "tie_word_embeddings": True}
    assert max_rel(run_onnx(grown, inputs), framework_logits(name, exporter, config, changes, state, inputs)) <= 1e-5
    assert max_rel(run_onnx(source, inputs), run_onnx(grown, inputs)) <= 1e-5


# ----- the algebra on hand-written graphs --------------------------------------------------------

HEADS = ("transpose", "folded", "gemm")


def tied_lm(path: Path, hidden: int, vocab: int, norm: str, head: str, seed: int = 0, extra: str = "") -> Path:
    """``ids → table → a residual ReLU FFN → norm → head``, the head tied to the table: it reads
    ``Transpose(E)`` (``transpose``), ``E`` by a Gemm with ``transB=1`` after a Reshape
    (``gemm``), or a constant equal to ``Eᵀ`` (``folded``, as exporters store it). ``norm``:
    ``rms`` (decomposed, its weight a Mul), ``layer`` (LayerNormalization with a bias) or
    ``none``. ``extra``: lines added to the graph, computing ``aux`` (a second output; the
    weight ``w2t [hidden, 2]`` is there for them)."""
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((vocab, hidden)).astype(np.float32)
    weights = {"E": table, "w1": rng.standard_normal((hidden, 2 * hidden)).astype(np.float32),
               "w2": rng.standard_normal((2 * hidden, hidden)).astype(np.float32) / 4,
               "gamma": rng.uniform(0.5, 1.5, hidden).astype(np.float32),
               "beta": rng.standard_normal(hidden).astype(np.float32) / 10,
               "axes": np.array([-1], dtype=np.int64), "eps": np.array(1e-5, dtype=np.float32),
               "flat": np.array([-1, hidden], dtype=np.int64), "ET": np.ascontiguousarray(table.T),
               "w2t": rng.standard_normal((hidden, 2)).astype(np.float32)}
    norms = {
        "rms": """sq = Mul (s, s)
                  ms = ReduceMean <keepdims = 1> (sq, axes)
                  me = Add (ms, eps)
                  rt = Sqrt (me)
                  n = Div (s, rt)
                  o = Mul (n, gamma)""",
        "layer": "o = LayerNormalization <axis = -1> (s, gamma, beta)",
        "none": "o = Identity (s)",
    }
    heads = {
        "transpose": """Et = Transpose <perm = [1, 0]> (E)
                        [lm_head] logits = MatMul (o, Et)""",
        "folded": "[lm_head] logits = MatMul (o, ET)",
        "gemm": """o2 = Reshape (o, flat)
                   [lm_head] logits = Gemm <transB = 1> (o2, E)""",
    }
    used = {"E", "w1", "w2", *(["gamma", "axes", "eps"] if norm == "rms" else ["gamma", "beta"] if norm == "layer"
                               else []), *(["ET"] if head == "folded" else ["flat"] if head == "gemm" else []),
            *(["w2t"] if "w2t" in extra else [])}
    text = f"""g (int64[2, 5] ids) => (float logits{extra and ', float aux'}) {{
        [embed] h = Gather (E, ids)
        [fc1] a = MatMul (h, w1)
        r = Relu (a)
        [fc2] f = MatMul (r, w2)
        s = Add (h, f)
        {norms[norm]}
        {heads[head]}
        {extra}
    }}"""
    from tests.helpers.graphs import save_text

    return save_text(path, text, {k: v for k, v in weights.items() if k in used})


def _head_weight(model: Any) -> np.ndarray:
    """The head's weight as the Gemm/MatMul sees it, ``[hidden, vocab]``."""
    from onnxgrow.constants import find_constant

    node = next(n for n in model.graph if n.name == "lm_head")
    ref = find_constant(node.inputs[1])
    array = ref.array()
    return array.T if node.op_type == "Gemm" else array


def _table(model: Any) -> np.ndarray:
    return model.graph.initializers["E"].const_value.numpy()


@settings(max_examples=12, deadline=None)
@given(hidden=st.sampled_from([3, 4, 6]), vocab=st.integers(5, 9), factor=st.sampled_from([2, 3]),
       norm=st.sampled_from(["rms", "layer"]), head=st.sampled_from(HEADS), noise=st.sampled_from([0.0, 0.3]),
       seed=st.integers(0, 3))
def test_hidden_growth_keeps_a_tied_head_tied(hidden: int, vocab: int, factor: int, norm: str, head: str,
                                              noise: float, seed: int) -> None:
    """Exact, and the head reads the grown table transposed: one initializer when it read
    the table itself, an equal copy when the exporter folded the transpose."""
    import onnxgrow
    from onnxgrow import load_model, verify

    with tempfile.TemporaryDirectory() as folder:
        path = tied_lm(Path(folder) / "lm.onnx", hidden, vocab, norm, head, seed)
        grown, report = onnxgrow.widen(load_model(path), {"embed": factor * hidden}, noise=noise, seed=seed)
        check = verify(path, grown)
        assert check.passed and check.max_rel_error <= 1e-5, check.summary()
        np.testing.assert_array_equal(_head_weight(grown), _table(grown).T)
        assert _table(grown).shape == (vocab, factor * hidden)
        if head != "folded":
            assert [name for name in grown.graph.initializers if name.startswith("E")] == ["E"]
        kept = "kept tied to embed: the copies' shares are in 'gamma'"
        assert any(kept in note for note in report.notes), report.notes


@pytest.mark.parametrize(("norm", "extra", "message"), [
    ("none", "", "lm_head' reads the table of Gather node 'embed' (tied embeddings) and no per-channel scale"),
    ("rms", "[probe] aux = MatMul (o, w2t)",
     "MatMul node 'probe' reads the values it reads, so the tie cannot be kept"),
])
def test_a_tie_that_cannot_be_kept_is_refused(tmp_path: Path, norm: str, extra: str, message: str) -> None:
    """No scale before the head to take the shares, or another node reading the scaled values:
    refused naming why, nothing written, rather than untie the head."""
    from tests.helpers.cli import assert_refused

    path = tied_lm(tmp_path / "lm.onnx", 4, 6, norm, "folded", extra=extra)
    out = tmp_path / "out.onnx"
    assert_refused(tmp_path, ["widen", str(path), "--node", "embed", "--to", "8", "-o", str(out)], message, out)


def test_new_classes_on_a_tied_head_are_refused_naming_the_vocabulary_growth(tmp_path: Path) -> None:
    from tests.helpers.cli import assert_refused

    path = tied_lm(tmp_path / "lm.onnx", 4, 6, "rms", "transpose")
    out = tmp_path / "out.onnx"
    assert_refused(tmp_path, ["widen", str(path), "--node", "lm_head", "--to", "8", "--new-outputs", "-o", str(out)],
                   "'lm_head' is tied to the embedding 'embed' (it reads its table): new classes would untie it; "
                   "grow the vocabulary with --node embed --rows ROWS", out)
