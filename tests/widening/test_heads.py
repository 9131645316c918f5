"""Growing attention heads on Hugging Face-style transformers exported by both torch exporters.

Every accepted head count is checked by running the original and the grown model in
onnxruntime on the same random inputs (max rel ≤ 1e-5, besides the check on write), and
the grown weights load with ``load_state_dict(strict=True)`` into the same module class
built with the new head count, which then computes what onnxruntime does. Refused
counts and inputs say why in one line, exit 2, nothing written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

import onnxgrow
from onnxgrow.errors import GrowError
from onnxgrow.lineage import describe, read_history
from tests.helpers.cli import assert_refused, run

pytest.importorskip("torch")

import torch

from tests.helpers.attention_zoo import MODELS, build, export

pytestmark = pytest.mark.torch

MHA_MODELS = ["bert", "gpt2", "t5", "vit", "distilbert"]
EXPORTERS = ["legacy", "dynamo"]
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """``(model, exporter) -> path``, each exported once for the module."""
    folder = tmp_path_factory.mktemp("attention")
    cache: dict[tuple[str, str], Path] = {}

    def get(name: str, exporter: str) -> Path:
        if (name, exporter) not in cache:
            cache[name, exporter] = export(name, exporter == "dynamo", folder / f"{name}-{exporter}.onnx")
        return cache[name, exporter]

    return get


def _inputs(name: str, batch: int = 3, seed: int = 7) -> np.ndarray:
    config = MODELS[name].config
    rng = np.random.default_rng(seed)
    if name == "vit":
        return rng.standard_normal((batch, 3, 8, 8)).astype(np.float32)
    ids = rng.integers(1, config.vocab, (batch, config.seq)).astype(np.int64)
    ids[0, -1] = 0
    return ids


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def max_rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))


def _all_attentions(path: Path) -> list[str]:
    return [a.name for a in onnxgrow.inspect_model(path).attentions]


def _grow(src: Path, out: Path, heads: int, kv_heads: int | None = None, **options: object) -> onnxgrow.WidenReport:
    names = _all_attentions(src)
    return onnxgrow.widen_file(src, out, heads={n: heads for n in names},
                               kv_heads={n: kv_heads for n in names} if kv_heads else None, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", MHA_MODELS)
@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize(("heads", "init", "noise"),
                         [(3, "net2wider", 0.0), (4, "net2wider", 0.1), (5, "zero-pad", 0.0)])
def test_heads_grow_exactly(exported, tmp_path: Path, name: str, exporter: str, heads: int, init: str,
                            noise: float) -> None:  # type: ignore[no-untyped-def]
    src = exported(name, exporter)
    out = tmp_path / "grown.onnx"
    report = _grow(src, out, heads, init=init, noise=noise)
    counts = [g.heads for g in report.groups]
    assert counts and all(c is not None and (c.old_heads, c.new_heads, c.head_dim) == (2, heads, 8) for c in counts)
    x = _inputs(name)
    assert max_rel(_run(src, x), _run(out, x)) <= TOLERANCE
    grown = onnxgrow.inspect_model(out).attentions
    assert {a.heads for a in grown} == {heads} and {a.head_dim for a in grown} == {8}


def test_t5_position_bias_ties_the_layers_it_is_shared_by(exported, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The legacy export computes the relative bias once and adds it in both layers: their
    heads grow together, and the bias table gets the new heads' columns."""
    src, out = exported("t5", "legacy"), tmp_path / "t5.onnx"
    report = onnxgrow.widen_file(src, out, heads={"block.0.layer.0.SelfAttention": 4})
    (group,) = report.groups
    assert group.heads is not None and group.heads.together == ("block.1.layer.0.SelfAttention",)
    changes = {c.name: c for c in group.changes}
    assert changes["block.0.layer.0.SelfAttention.relative_attention_bias.weight"].new_shape == (8, 4)
    entry = read_history(onnxgrow.load_model(out))[-1]
    assert describe(entry).startswith("attention block.0.layer.0.SelfAttention: 2 → 4 heads, net2wider, "
                                      "together with attention block.1.layer.0.SelfAttention")


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize(("heads", "kv_heads", "units"), [(6, None, 3), (8, None, 4), (6, 3, 3), (8, 4, 4)])
def test_grouped_query_attention_grows_exactly(exported, tmp_path: Path, exporter: str, heads: int,
                                               kv_heads: int | None, units: int) -> None:  # type: ignore[no-untyped-def]
    """LLaMA GQA (4 query heads, 2 key/value heads, rotary, repeat_kv by Expand + Reshape; the
    TorchScript exporter computes the Reshape's head count at run time, key/value heads times
    the repeat): query heads per key/value head grow (the Expand makes the new copies), or
    key/value heads grow with their query groups."""
    src, out = exported("llama", exporter), tmp_path / "llama.onnx"
    report = onnxgrow.widen_file(src, out, heads={"layers.0.self_attn": heads},
                                 kv_heads={"layers.0.self_attn": kv_heads} if kv_heads else None)
    (group,) = report.groups
    assert group.heads is not None
    assert (group.heads.new_heads, group.heads.new_kv_heads) == (heads, kv_heads or 2)
    assert group.new_width == units
    grown_kv = {"q_proj"} if kv_heads is None else {"q_proj", "k_proj", "v_proj"}
    assert {layer.rsplit(".", 1)[1] for layer in group.layers} == grown_kv
    x = _inputs("llama")
    assert max_rel(_run(src, x), _run(out, x)) <= TOLERANCE
    (attention,) = onnxgrow.inspect_model(out).attentions
    assert (attention.heads, attention.kv_heads, attention.head_dim) == (heads, kv_heads or 2, 4)


@pytest.mark.parametrize(("heads", "kv_heads", "message"), [
    (5, None, ("cannot grow attention 'layers.0.self_attn' from 4 to 5 heads exactly (2 key/value heads, 2 query "
               "heads each); exact head counts: a multiple of 2")),
    (8, 3, "growing key/value heads keeps 2 query heads each (6 heads)"),
    (6, 1, "must be at least its current 2"),
    (4, None, "must be an integer larger than its current 4"),
])
def test_grouped_query_attention_refuses_inexact_counts(exported, heads: int, kv_heads: int | None,
                                                        message: str) -> None:  # type: ignore[no-untyped-def]
    src = exported("llama", "dynamo")
    with pytest.raises(GrowError, match=None) as caught:
        onnxgrow.widen(src, heads={"layers.0.self_attn": heads},
                       kv_heads={"layers.0.self_attn": kv_heads} if kv_heads else None)
    assert message in str(caught.value)


STATE_DICT_CASES = [(name, exporter, 3, None) for name in MHA_MODELS for exporter in EXPORTERS] + [
    ("llama", "dynamo", 6, None), ("llama", "dynamo", 6, 3)]


@pytest.mark.parametrize(("name", "exporter", "heads", "kv_heads"), STATE_DICT_CASES)
def test_grown_state_dict_loads_strictly_into_the_config_with_more_heads(
        exported, tmp_path: Path, name: str, exporter: str, heads: int, kv_heads: int | None) -> None:  # type: ignore[no-untyped-def]
    src, out = exported(name, exporter), tmp_path / "grown.onnx"
    _grow(src, out, heads, kv_heads)
    tensors = onnxgrow.state_dict(out).tensors
    config = MODELS[name].config
    changes = {"heads": heads}
    if config.kv_heads is not None:
        changes["kv_heads"] = kv_heads or config.kv_heads
    model = build(name, **changes)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}, strict=True)
    x = _inputs(name)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert max_rel(expected, _run(out, x)) <= TOLERANCE


MAP_CASES = [("gpt2", "legacy", 3, None, 0.0), ("bert", "dynamo", 4, None, 0.1), ("llama", "dynamo", 8, 4, 0.0)]


@pytest.mark.parametrize(("name", "exporter", "heads", "kv_heads", "noise"), MAP_CASES)
def test_growth_map_reproduces_the_grown_heads(exported, name: str, exporter: str, heads: int,  # type: ignore[no-untyped-def]
                                               kv_heads: int | None, noise: float) -> None:
    """The heads' growth map applied to the original state dict gives the grown weights, and
    it moves whole head blocks: position ``h*d + i`` of a grown projection copies ``g(h)*d + i``."""
    src = exported(name, exporter)
    names = _all_attentions(src)
    grown, report = onnxgrow.widen(src, heads={n: heads for n in names},
                                   kv_heads={n: kv_heads for n in names} if kv_heads else None, noise=noise, seed=5)
    growth_map = report.growth_map
    assert growth_map.weights
    before, after = onnxgrow.state_dict(src).tensors, onnxgrow.state_dict(grown).tensors
    mapped = onnxgrow.apply_growth_map(before, growth_map)
    changed = {w.name for w in growth_map.weights}
    assert changed <= set(after) and len(changed) >= 2
    for key in after:
        np.testing.assert_allclose(mapped[key], after[key], rtol=1e-6, atol=1e-7, err_msg=key)
    d = MODELS[name].config.head_dim
    for weight in growth_map.weights:
        for axis in weight.axes:
            blocks = axis.src.reshape(-1, d)
            fresh = (blocks < 0).all(axis=1)
            copied = blocks[~fresh]
            assert np.all(copied % d == np.arange(d)) and np.all(copied == copied[:, :1] + np.arange(d)), weight.name
            assert np.all(blocks[fresh] == -1) and (fresh | (blocks >= 0).all(axis=1)).all()


# ----- CLI, lineage, diff, inspect ---------------------------------------------------------------


def test_cli_grows_heads_and_diff_says_so(exported, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src, out = exported("llama", "dynamo"), tmp_path / "llama8.onnx"
    code, stdout, stderr = run("widen", str(src), "--node", "layers.0.self_attn", "--heads", "8", "-o", str(out))
    assert code == 0, stderr
    assert "grew attention layers.0.self_attn: 4 → 8 heads (2 → 2 key/value heads), head size 4 (net2wider)" in stdout
    assert "PASSED" in stdout
    entry = read_history(onnxgrow.load_model(out))[-1]
    assert entry["op"] == "widen-heads" and (entry["old_heads"], entry["new_heads"]) == (4, 8)
    assert entry["max_rel_error"] <= TOLERANCE
    code, stdout, _ = run("diff", str(src), str(out))
    assert code == 1
    assert "attention layers.0.self_attn: 4 → 8 heads (2 → 2 key/value heads), net2wider, seed 0" in stdout


def test_cli_module_above_the_attention_resolves_to_it(exported, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    src, out = exported("bert", "dynamo"), tmp_path / "bert.onnx"
    code, stdout, stderr = run("widen", str(src), "--node", "encoder.layer.0.attention", "--heads", "4",
                               "-o", str(out), "-q")
    assert code == 0, stderr
    assert "grew attention encoder.layer.0.attention.self: 2 → 4 heads, head size 8 (net2wider)" in stdout
    assert "contracting layers adjusted: encoder.layer.0.attention.output.dense" in stdout


def test_inspect_lists_attention_modules(exported) -> None:  # type: ignore[no-untyped-def]
    code, stdout, _ = run("inspect", str(exported("llama", "dynamo")))
    assert code == 0
    line = next(ln for ln in stdout.splitlines() if ln.strip().startswith("layers.0.self_attn "))
    assert line.split()[:5] == ["layers.0.self_attn", "4", "2", "4", "yes,"]
    (legacy,) = onnxgrow.inspect_model(exported("llama", "legacy")).attentions
    assert legacy.growable and legacy.growths == ["per-group", "groups"] and not legacy.reason
    (bert,) = onnxgrow.inspect_model(exported("bert", "legacy")).attentions
    assert (bert.name, bert.heads, bert.kv_heads, bert.head_dim, bert.growable) == (
        "encoder.layer.0.attention.self", 2, 2, 8, True)


def _fused_attention_model(path: Path) -> Path:
    """q/k/v projections into a com.microsoft MultiHeadAttention kernel."""
    rng = np.random.default_rng(0)
    weights = [helper.make_tensor(f"w{k}", TensorProto.FLOAT, [8, 8], rng.standard_normal(64).tolist())
               for k in "qkvo"]
    nodes = [helper.make_node("MatMul", ["x", f"w{k}"], [k], name=f"{k}_proj") for k in "qkv"]
    nodes.append(helper.make_node("MultiHeadAttention", ["q", "k", "v"], ["a"], name="mha", domain="com.microsoft",
                                  num_heads=2))
    nodes.append(helper.make_node("MatMul", ["a", "wo"], ["y"], name="o_proj"))
    graph = helper.make_graph(nodes, "fused", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])], weights)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets)
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize(("model", "args", "message"), [
    ("llama", ["--node", "layers.0.self_attn", "--heads", "5"],
     "cannot grow attention 'layers.0.self_attn' from 4 to 5 heads exactly"),
    ("llama", ["--node", "layers.0.self_attn", "--heads", "8", "--kv-heads", "3"],
     "grow the heads per group and the groups in two steps"),
    ("bert", ["--node", "encoder.layer.0.attention.self", "--heads", "2"], "larger than its current 2"),
    ("bert", ["--node", "encoder.layer.0.nothing", "--heads", "4"],
     "no attention module named 'encoder.layer.0.nothing' (attention modules: encoder.layer.0.attention.self)"),
    ("t5", ["--node", "SelfAttention", "--heads", "4"], "attention name 'SelfAttention' is ambiguous"),
    ("bert", ["--node", "encoder.layer.0.attention.self", "--heads", "4", "--to", "4"],
     "give one of --to (widths), --heads (head counts) or --rows (a vocabulary)"),
    ("bert", ["--node", "encoder.layer.0.attention.self", "--heads", "4", "--kv-heads", "4", "--kv-heads", "4"],
     "give one --kv-heads per --heads"),
])
def test_cli_bad_head_requests(exported, tmp_path: Path, model: str, args: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "model.onnx"
    src.write_bytes(exported(model, "dynamo").read_bytes())
    out = tmp_path / "out.onnx"
    assert_refused(tmp_path, ["widen", str(src), *args, "-o", str(out)], message, out)


def test_cli_refuses_fused_attention_kernels_naming_the_op(tmp_path: Path) -> None:
    src = _fused_attention_model(tmp_path / "fused.onnx")
    out = tmp_path / "out.onnx"
    assert_refused(tmp_path, ["widen", str(src), "--node", "q_proj", "--heads", "4", "-o", str(out)],
                   "attention is computed by the com.microsoft MultiHeadAttention node 'mha'", out)


# ----- random head counts, head sizes and GQA ratios ------------------------------------------------


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kv=st.integers(1, 3), ratio=st.integers(1, 3), head_dim=st.sampled_from([2, 4, 6]),
       extra=st.integers(1, 3), grow_kv=st.booleans(), seed=st.integers(0, 5))
def test_random_gqa_shapes_grow_exactly(tmp_path_factory: pytest.TempPathFactory, kv: int, ratio: int,
                                        head_dim: int, extra: int, grow_kv: bool, seed: int) -> None:
    """LLaMA-like attention with random head counts, head sizes and query heads per key/value
    head: every growth ``plan_heads`` accepts is exact."""
    assume(ratio > 1 or kv > 1)
    grow_kv = grow_kv or ratio == 1
    assume(kv > 1 or not grow_kv)  # one unit: refused (test_single_head_is_refused)
    folder = tmp_path_factory.mktemp("gqa")
    heads = kv * ratio
    src = export("llama", True, folder / "src.onnx", heads=heads, kv_heads=kv, head_dim=head_dim)
    new_kv = kv + extra if grow_kv else kv
    new_heads = new_kv * ratio if new_kv != kv else kv * (ratio + extra)
    out = folder / "out.onnx"
    onnxgrow.widen_file(src, out, heads={"layers.0.self_attn": new_heads},
                        kv_heads={"layers.0.self_attn": new_kv}, seed=seed)
    x = _inputs("llama", seed=seed)
    assert max_rel(_run(src, x), _run(out, x)) <= TOLERANCE
    (attention,) = onnxgrow.inspect_model(out).attentions
    assert (attention.heads, attention.kv_heads, attention.head_dim) == (new_heads, new_kv, head_dim)


@pytest.mark.parametrize(("changes", "heads", "kv_heads", "message"), [
    ({"heads": 1, "kv_heads": 1}, 2, None, "from a single head"),
    ({"heads": 2, "kv_heads": 1}, 4, 2, "from a single key/value head"),
])
def test_single_head_is_refused(tmp_path: Path, changes: dict[str, int], heads: int, kv_heads: int | None,
                                message: str) -> None:
    src = export("llama", True, tmp_path / "one.onnx", head_dim=4, **changes)
    with pytest.raises(GrowError) as caught:
        onnxgrow.widen(src, heads={"layers.0.self_attn": heads},
                       kv_heads={"layers.0.self_attn": kv_heads} if kv_heads else None)
    assert message in str(caught.value)
