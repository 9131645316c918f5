"""The segmented check (docs/design.md §6): both models cut at the same values, run segment
by segment, compared at every cut; the same verdict as the whole-model check.

- The planner on hand-built graphs: segments within the weight budget, cuts where few values
  cross, preferred values, subgraphs kept whole, cuts paired by name across a deepening,
  widened values left uncompared.
- Agreement: on the hand-written transformers (tests/helpers/attention_zoo.py, tests/helpers/lm_zoo.py),
  on real ``transformers`` models (tests/helpers/hf_tiny.py) and on every export of the transformers
  matrix (tests/helpers/hf_zoo.py), grown and perturbed, the segmented verdict reports the errors the
  whole-model verdict does (relative difference <= 1e-6).
- Where: a weight perturbed in one block is reported at the first cut after it.
- Memory: a model larger than --max-memory is checked in a subprocess whose peak RSS stays
  within its largest segment + 0.5 GiB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import ml_dtypes
import numpy as np
import onnx
import onnx_ir as ir
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnxgrow import GrowError, GrowOptions, VerifyOptions, deepen_file, inspect_model, verify, widen_file
from onnxgrow.cli import main
from onnxgrow.model_io import load_model, save_model
from onnxgrow.verification import VerifyReport, memory, segments
from onnxgrow.verification.memory import ORT_MEMORY_FACTOR, model_weight_bytes
from onnxgrow.verification.segments import layout, plan_segments
from tests.helpers import scale
from tests.helpers.export_cache import shared_directory, write_once
from tests.helpers.paths import REPO
from tests.helpers.verify_graphs import save

NO_CHECK = GrowOptions(verify=None)


# --- hand-built graphs -----------------------------------------------------------------


def chain(path: Path, layers: int = 6, width: int = 16, seed: int = 0, external: bool = True) -> Path:
    """x[2, width] → (Gemm fcK → Relu actK) × layers → y: every weight ``width² + width`` floats."""
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for k in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"fc{k}.weight"),
                  numpy_helper.from_array(rng.standard_normal(width).astype(np.float32) * 0.1, f"fc{k}.bias")]
        nodes += [helper.make_node("Gemm", [prev, f"fc{k}.weight", f"fc{k}.bias"], [f"h{k}"], name=f"fc{k}", transB=1),
                  helper.make_node("Relu", [f"h{k}"], [f"a{k}"], name=f"act{k}")]
        prev = f"a{k}"
    nodes.append(helper.make_node("Identity", [prev], ["y"], name="out"))
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return save(model, path, external=external)


def perturb(source: Path, target: Path, initializer: str, factor: float = 1.01) -> Path:
    """A copy of ``source`` with one initializer scaled by ``factor``."""
    model = load_model(source)
    value = model.graph.initializers[initializer]
    assert value.const_value is not None
    value.const_value = ir.Tensor(value.const_value.numpy() * np.asarray(factor, value.const_value.numpy().dtype),
                                  name=initializer)
    save_model(model, target)
    return target


def nudge(source: Path, target: Path, initializer: str, scale: float = 0.5) -> Path:
    """A copy of ``source`` with seeded noise (``scale`` × the weight's spread) added to one
    initializer: a change no normalisation after it undoes (scaling a query, or a branch
    a LayerNorm then rescales, can stay within the tolerance)."""
    model = load_model(source)
    value = model.graph.initializers[initializer]
    assert value.const_value is not None
    array = value.const_value.numpy()
    noise = np.random.default_rng(0).standard_normal(array.shape) * scale * (float(array.std()) or 1.0)
    value.const_value = ir.Tensor((array + noise).astype(array.dtype), name=initializer)
    save_model(model, target)
    return target


def quarter(model: Path) -> int:
    """A --max-memory under which a model's weights make about four segments."""
    return max(int(model_weight_bytes(load_model(model)) * ORT_MEMORY_FACTOR / 4), 1)


def check_both(reference: Path, candidate: Path, max_memory: int, **options: object) -> tuple[VerifyReport, ...]:
    """The whole-model and the segmented verdicts on the same inputs."""
    whole = verify(reference, candidate, VerifyOptions(**options))  # type: ignore[arg-type]
    parts = verify(reference, candidate, VerifyOptions(max_memory=max_memory, **options))  # type: ignore[arg-type]
    assert whole.mode == "whole" and parts.mode == "segmented", (whole.mode, parts.mode)
    return whole, parts


def assert_agree(whole: VerifyReport, parts: VerifyReport) -> None:
    """Same verdict, same outputs, errors within a relative 1e-6 of each other."""
    assert (whole.passed, whole.reason) == (parts.passed, parts.reason)
    assert [o.name for o in whole.outputs] == [o.name for o in parts.outputs]
    for a, b in zip(whole.outputs, parts.outputs):
        assert a.passed == b.passed, a.name
        for x, y in ((a.max_abs_error, b.max_abs_error), (a.max_rel_error, b.max_rel_error)):
            assert abs(x - y) <= 1e-6 * max(abs(x), abs(y)), (a.name, x, y)


def test_segments_stay_within_the_budget_and_cut_where_one_value_crosses(tmp_path: Path) -> None:
    model = load_model(chain(tmp_path / "c.onnx", layers=8))
    lay = layout(model)
    layer_bytes = (16 * 16 + 16) * 4
    plan = plan_segments(lay, None, budget=3 * layer_bytes)
    assert plan.count == 3  # 8 layers, at most 3 a segment
    assert all(len(names) == 1 for names in plan.cuts)  # a chain's cut is crossed by one value
    for segment in plan.reference:
        weights = {name for i in range(segment.start, segment.stop) for name, _ in lay.weights[i]}
        assert len(weights) * layer_bytes / 2 <= 3 * layer_bytes
        assert segment.stop > segment.start
    assert [s.start for s in plan.reference[1:]] == [s.stop for s in plan.reference[:-1]]
    # without a budget, one segment; with a node limit, none longer than it
    assert plan_segments(lay, None, budget=None).count == 1
    assert all(s.stop - s.start <= 5 for s in plan_segments(lay, None, None, max_nodes=5).reference)


def test_a_node_heavier_than_the_budget_keeps_the_weightless_nodes_after_it(tmp_path: Path) -> None:
    """A tied head, ``MatMul(x, Transpose(E))`` after a chain: the Transpose reads E, heavier
    than the budget, and makes a value of E's size from it alone; its MatMul reads no weight.
    They stay in one segment, so that no cut hands on the transposed E; a weight after them
    still ends that segment."""
    rng = np.random.default_rng(0)
    width, vocab = 16, 400  # E: 25.6 KB, each chain layer 1.1 KB
    base = onnx.load(chain(tmp_path / "c.onnx", layers=4))
    graph = base.graph
    graph.initializer.append(numpy_helper.from_array(rng.standard_normal((vocab, width)).astype(np.float32), "E"))
    graph.initializer.append(numpy_helper.from_array(np.ones(vocab, np.float32), "scale"))
    out = graph.node[-1]
    graph.node.remove(out)
    graph.node.extend([helper.make_node("Transpose", ["E"], ["E_t"], name="head_t", perm=[1, 0]),
                       helper.make_node("MatMul", ["a3", "E_t"], ["logits"], name="head"),
                       helper.make_node("Mul", ["logits", "scale"], ["y"], name="scaled")])
    graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, vocab]))
    path = save(base, tmp_path / "tied.onnx", external=True)
    lay = layout(load_model(path))
    plan = plan_segments(lay, None, budget=3 * (width * width + width) * 4)
    assert plan.count >= 3
    assert not any("E_t" in names for names in plan.cuts)
    names = [[lay.nodes[i].name for i in range(s.start, s.stop)] for s in plan.reference]
    assert ["head_t", "head"] in names  # the Mul after them reads a weight: a segment of its own
    assert names[-1] == ["scaled"]
    report = verify(path, path, VerifyOptions(max_memory=int(3 * (width * width + width) * 4 * ORT_MEMORY_FACTOR)))
    assert report.passed and report.mode == "segmented" and report.segments == plan.count
    assert max(report.segment_bytes) == vocab * width * 4


def test_cuts_prefer_the_values_they_are_told(tmp_path: Path) -> None:
    """Every position of a chain is crossed by one value; a preferred one wins over a later one."""
    model = load_model(chain(tmp_path / "c.onnx", layers=6))
    budget = 3 * (16 * 16 + 16) * 4
    plain = plan_segments(layout(model), None, budget)
    assert plain.cuts[0] == ["a2"]  # the latest cut within the budget
    preferred = plan_segments(layout(model, prefer={"h1"}), None, budget)
    assert preferred.cuts[0] == ["h1"]


def test_a_subgraph_stays_in_one_segment_and_its_outer_reads_cross(tmp_path: Path) -> None:
    """An If whose branches read an activation and an initializer of the outer graph."""
    width = 8
    rng = np.random.default_rng(0)
    then = helper.make_graph([helper.make_node("MatMul", ["a0", "W"], ["t"])], "then", [],
                             [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Neg", ["a0"], ["e"])], "else", [],
                              [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("Relu", ["x"], ["a0"], name="act0"),
             helper.make_node("Sigmoid", ["x"], ["s"], name="sig"),
             helper.make_node("ReduceSum", ["s"], ["total"], name="sum", keepdims=0),
             helper.make_node("Greater", ["total", "zero"], ["c"], name="cond"),
             helper.make_node("If", ["c"], ["b"], name="branch", then_branch=then, else_branch=other),
             helper.make_node("Add", ["b", "a0"], ["y"], name="out")]
    inits = [numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32), "W"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    ref = save(model, tmp_path / "if.onnx")
    lay = layout(load_model(ref))
    branch = next(i for i, n in enumerate(lay.nodes) if n.op_type == "If")
    assert "a0" in lay.crossings([branch])[0]  # read inside the branch: it crosses up to the If
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(
        rng.standard_normal((width, width)).astype(np.float32), "W"))
    other_w = save(model, tmp_path / "if2.onnx")
    for candidate in (ref, other_w):
        assert_agree(*check_both(ref, candidate, max_memory=1, samples=3))


def test_cuts_pair_by_name_across_a_deepening(tmp_path: Path) -> None:
    """Deepening inserts nodes; the cuts where the chain keeps its names pair up."""
    source = chain(tmp_path / "c.onnx", layers=6)
    deep = tmp_path / "deep.onnx"
    deepen_file(source, deep, "fc2", options=NO_CHECK)
    whole, parts = check_both(source, deep, max_memory=quarter(source))
    assert_agree(whole, parts)
    assert parts.passed and parts.cuts_compared >= 2
    ref_lay, cand_lay = layout(load_model(source)), layout(load_model(deep))
    assert len(cand_lay.nodes) > len(ref_lay.nodes)
    # every cut a pair of positions crossed by the same names in both models
    plan = plan_segments(ref_lay, cand_lay, budget=1)
    assert plan.candidate is not None and plan.count > 3
    cand_cuts = cand_lay.crossings([s.start for s in plan.candidate[1:]])
    assert cand_cuts == plan.cuts == ref_lay.crossings([s.start for s in plan.reference[1:]])
    assert sum(s.stop - s.start for s in plan.candidate) == len(cand_lay.nodes)


def test_values_whose_shape_changed_are_not_compared(tmp_path: Path) -> None:
    source = chain(tmp_path / "c.onnx", layers=4)
    wide = tmp_path / "wide.onnx"
    widen_file(source, wide, {"fc1": 24}, options=NO_CHECK)
    whole, parts = check_both(source, wide, max_memory=1)
    assert_agree(whole, parts)
    skipped = {name for cut in parts.cuts for name in cut.not_compared}
    # every Gemm is heavier than the budget, so each segment is a Gemm and the Relu after it (a
    # weightless node does not make a segment of its own): a1, fc1's activation, crosses a cut
    # with 24 channels instead of 16
    assert skipped == {"a1"}
    assert all(cut.passed for cut in parts.cuts)
    assert "not compared (shape changed, or not floating point): a1" in "\n".join(parts.lines())


def test_unchanged_segments_run_once_and_misplaced_weights_are_caught(tmp_path: Path) -> None:
    source = chain(tmp_path / "c.onnx", layers=6)
    copy = tmp_path / "copy" / "c.onnx"
    copy.parent.mkdir()
    save_model(load_model(source), copy, external_data=True)  # the same weights in another data file
    same = verify(source, copy, VerifyOptions(max_memory=1))
    assert same.passed and same.segments > 3
    assert same.reused_segments == same.segments  # every segment is the reference's: none runs twice
    broken = perturb(source, tmp_path / "broken.onnx", "fc4.weight", 1 + 1e-3)
    report = verify(source, broken, VerifyOptions(max_memory=1))
    assert not report.passed
    first = report.first_failed_cut
    # the first cut after the changed layer: fc4's segment ends with the Relu after it
    assert first is not None and first.after == "act4"
    assert all(cut.passed for cut in report.cuts[:report.cuts.index(first)])
    assert 0 < report.reused_segments < report.segments  # the segments before it did not run twice


def test_bfloat16_segments_run_as_float32_twins(tmp_path: Path) -> None:
    def bf16_mlp(path: Path, seed: int) -> Path:
        r = np.random.default_rng(seed)
        nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="fc1"),
                 helper.make_node("Relu", ["h"], ["a"], name="act"),
                 helper.make_node("MatMul", ["a", "W2"], ["y"], name="fc2")]
        inits = [helper.make_tensor(name, TensorProto.BFLOAT16, shape,
                                    r.standard_normal(shape).astype(ml_dtypes.bfloat16).tobytes(), raw=True)
                 for name, shape in (("W1", (8, 16)), ("W2", (16, 4)))]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [2, 8])],
                                  [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [2, 4])], inits)
        return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)]), path, external=True)

    ref = bf16_mlp(tmp_path / "a.onnx", 0)
    for candidate in (ref, bf16_mlp(tmp_path / "b.onnx", 1)):
        whole, parts = check_both(ref, candidate, max_memory=1)
        assert_agree(whole, parts)
        assert parts.segments >= 2 and parts.extra.get("computed_as") == "float32 twins of bfloat16 models"


def test_many_nodes_are_checked_in_segments_even_when_they_fit(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    source = chain(tmp_path / "c.onnx", layers=6)
    wide = tmp_path / "wide.onnx"
    widen_file(source, wide, {"fc3": 20}, options=NO_CHECK)
    whole = verify(source, wide)
    monkeypatch.setattr(sys.modules["onnxgrow.verification"], "SEGMENTED_FROM_NODES", 10)
    monkeypatch.setattr(sys.modules["onnxgrow.verification.segmented"], "SEGMENT_NODES", 4)
    parts = verify(source, wide)
    assert whole.mode == "whole" and parts.mode == "segmented" and parts.segments >= 3
    assert_agree(whole, parts)
    assert parts.reused_segments >= 1  # the layers before fc3 did not run twice

    def refuse(model, providers, optimize=False, *, external_folder=None, label=""):  # type: ignore[no-untyped-def]
        raise GrowError(f"{label}: onnxruntime cannot load this model: refused by the test")

    monkeypatch.setattr(sys.modules["onnxgrow.verification.segment_models"], "open_session", refuse)
    fallback = verify(source, wide)  # segments only saved time: the whole models settle it
    assert fallback.mode == "whole"
    assert_agree(whole, fallback)
    with pytest.raises(GrowError, match=r"segment 1 of \d+ of the reference .*a larger --max-memory checks it whole"):
        verify(source, wide, VerifyOptions(max_memory=1))  # it does not fit: no whole check to fall back on


def test_in_memory_models_and_framework_candidates(tmp_path: Path) -> None:
    """In-memory models are saved and cut like files; a framework runner (an export's check)
    runs whole beside a segmented reference; progress ends at its total."""
    source = chain(tmp_path / "c.onnx", layers=5)
    broken = perturb(source, tmp_path / "broken.onnx", "fc2.weight")
    whole, parts = check_both(source, broken, max_memory=1)
    steps: list[tuple[int, int]] = []
    in_memory = verify(load_model(source), load_model(broken), VerifyOptions(max_memory=1),
                       progress=lambda done, total: steps.append((done, total)))
    assert in_memory.mode == "segmented" and in_memory.segments == parts.segments
    assert_agree(whole, in_memory)
    assert steps[-1][0] == steps[-1][1] and len({total for _, total in steps}) == 1
    ort = pytest.importorskip("onnxruntime")
    for model, passes in ((source, True), (broken, False)):
        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])

        def runner(feeds, session=session):  # type: ignore[no-untyped-def]
            return dict(zip(["y"], session.run(["y"], dict(feeds))))

        framework = verify(source, None, VerifyOptions(max_memory=1), candidate_runner=runner,
                           candidate_label="a runner")
        assert framework.mode == "segmented" and framework.segments > 3 and not framework.cuts
        assert framework.passed is passes
        if not passes:
            assert_agree(whole, framework)


def test_an_onnxruntime_too_old_for_segments_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ort = pytest.importorskip("onnxruntime")
    source = chain(tmp_path / "c.onnx", layers=4)  # weights in a data file
    monkeypatch.setattr(ort, "__version__", "1.20.1")
    with pytest.raises(GrowError, match=r"needs onnxruntime 1\.21 or later \(this is 1\.20\.1\)"):
        verify(source, source, VerifyOptions(max_memory=1))
    inline = chain(tmp_path / "inline.onnx", layers=4, external=False)  # no data file: no folder to give
    assert verify(inline, inline, VerifyOptions(max_memory=1)).mode == "segmented"


def test_default_limit_is_half_the_available_memory() -> None:
    available = memory.available_memory()
    if available is None:
        pytest.skip("this system does not say how much memory is available")
    limit = memory.memory_limit(VerifyOptions())
    assert limit is not None and abs(limit - available / 2) <= 0.05 * available  # read twice, moments apart
    assert memory.memory_limit(VerifyOptions(max_memory=123)) == 123


def schema_for(definition: str) -> dict:
    schema = json.loads(files("onnxgrow").joinpath("schemas/diff.schema.json").read_text())
    return {"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"}


def test_cli_max_memory_and_the_verdict(tmp_path: Path) -> None:
    source = chain(tmp_path / "c.onnx", layers=6)
    broken = perturb(source, tmp_path / "broken.onnx", "fc3.weight")
    runner = CliRunner()
    result = runner.invoke(main, ["verify", str(source), str(broken), "--max-memory", "2K", "--json", "-"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    jsonschema.validate(data, schema_for("verify_document"))
    assert data["mode"] == "segmented" and data["segments"] > 2 and data["max_memory"] == 2048
    # every weight of the chain is read by one segment: the segments' weights are the model's
    assert len(data["segment_bytes"]) == data["segments"]
    assert sum(data["segment_bytes"]) == model_weight_bytes(load_model(source))
    first = data["first_failed_cut"]
    assert data["cuts"][first - 1]["after"] == "act3" and not data["cuts"][first - 1]["passed"]  # a layer a segment
    assert f"checked segment by segment ({data['segments']} segments of at most " in result.stderr
    assert f"first difference beyond tolerance at cut {first} (after 'act3')" in result.stderr
    whole = runner.invoke(main, ["verify", str(source), str(source)])
    assert whole.exit_code == 0 and "checked whole" in whole.stdout
    bad = runner.invoke(main, ["verify", str(source), str(source), "--max-memory", "lots"])
    assert bad.exit_code == 2 and bad.stderr.startswith("error: --max-memory 'lots'") and bad.stderr.count("\n") == 1
    out = tmp_path / "wide.onnx"
    grown = runner.invoke(main, ["widen", str(source), "--node", "fc2", "--to", "24", "--max-memory", "1K", "-o",
                                 str(out), "-q"])
    assert grown.exit_code == 0, grown.output
    assert "checked segment by segment" in grown.stdout
    diff = runner.invoke(main, ["diff", str(source), str(out), "--numeric", "--max-memory", "1K", "--json", "-"])
    numeric = json.loads(diff.stdout)["numeric"]
    assert numeric["passed"] and numeric["mode"] == "segmented"


# --- transformers: the segmented verdict is the whole one -----------------------------

ZOO = ("bert", "gpt2", "llama", "t5", "vit", "distilbert")  # tests/helpers/attention_zoo.py's models


def _export(name: str, path: Path) -> None:
    """Export the model ``name`` of the matrix (see the module docstring) to ``path``."""
    pytest.importorskip("torch")
    family, _, rest = name.partition("-")
    if family == "zoo":
        from tests.helpers import attention_zoo

        model, _, exporter = rest.partition("-")
        attention_zoo.export(model, exporter == "dynamo", path)
    elif family == "lm":
        from tests.helpers import lm_zoo

        model, _, exporter = rest.partition("-")
        lm_zoo.export_lm(lm_zoo.build_lm(model), path, exporter == "dynamo")
    else:
        pytest.importorskip("transformers")
        from tests.helpers import hf_tiny

        hf_tiny.export(rest, path)


MATRIX = [*(f"zoo-{n}-legacy" for n in ZOO), "zoo-gpt2-dynamo", "lm-gpt2-dynamo", "lm-llama-legacy",
          "lm-llama-dynamo", "hf-llama", "hf-gpt2", "hf-bert"]


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    folder = shared_directory(tmp_path_factory.getbasetemp(), "segmented_exports")

    def get(name: str) -> Path:
        if name.startswith("hf-"):
            pytest.importorskip("transformers")
        return write_once(folder / f"{name}.onnx", lambda tmp: _export(name, tmp))

    return get


def grow(source: Path, target: Path) -> Path:
    """An exact growth of ``source``: widen an FFN (a layer grown with at most one other), else
    add an attention head, else deepen after a projection; the first the model accepts."""
    summary = inspect_model(source)
    attempts: list[Callable[[], object]] = [
        *(lambda x=x: widen_file(source, target, {x.name: x.width * 3 // 2}, options=NO_CHECK)
          for x in summary.layers if x.widenable and len(x.group) <= 2),
        *(lambda a=a: widen_file(source, target, heads={a.name: a.heads + 1}, options=NO_CHECK)
          for a in summary.attentions if a.growable),
        *(lambda x=x: deepen_file(source, target, x.name, options=NO_CHECK)
          for x in summary.layers if x.deepen not in (None, "-")),
    ]
    for attempt in attempts:
        try:
            attempt()
            return target
        except GrowError:
            continue
    raise AssertionError(f"no growth of {source} succeeded")


def middle_weight(source: Path) -> str:
    """The weight of the middle growable layer that has one."""
    model = load_model(source)
    nodes = {n.name: n for n in model.graph}
    layers = [x for x in inspect_model(source).layers if x.node in nodes]
    weights = [v.name for x in layers for v in nodes[x.node].inputs
               if v is not None and v.is_initializer() and v.const_value is not None and v.const_value.size > 1]
    return weights[len(weights) // 2]


@pytest.mark.torch
@pytest.mark.parametrize("name", MATRIX)
def test_segmented_check_agrees_with_the_whole_one(name: str, exports: Callable[[str], Path],
                                                   tmp_path: Path) -> None:
    _agree(exports(name), tmp_path)


def _hf_matrix() -> list[tuple[str, str]]:
    """Every export of tests/helpers/hf_zoo.py (none without transformers, none the dynamo
    exporter fails on: T5 with transformers 5)."""
    try:
        from tests.helpers.hf_zoo import CASES
    except ImportError:
        return []
    return [case for case in CASES if case != ("t5", "dynamo")]


@pytest.mark.torch
@pytest.mark.transformers
@pytest.mark.parametrize(("name", "exporter"), _hf_matrix())
def test_segmented_check_agrees_on_the_transformers_matrix(name: str, exporter: str, tmp_path: Path,
                                                           tmp_path_factory: pytest.TempPathFactory) -> None:
    """The same on every real export of the transformers matrix: both transformers lines,
    dynamo, TorchScript and optimum, with and without a key/value cache."""
    pytest.importorskip("transformers")
    from tests.helpers.hf_zoo import export, hf_directory, skip_without_other_environment

    skip_without_other_environment(exporter)
    source, _ = export(name, exporter, hf_directory(tmp_path_factory.getbasetemp()))
    _agree(source, tmp_path)


def _agree(source: Path, tmp_path: Path) -> None:
    """An exact growth of ``source`` and a perturbed copy, each checked whole and segment by
    segment: the verdicts agree, the growth passes at every cut, the perturbation fails at one."""
    grown = grow(source, tmp_path / "grown.onnx")
    whole, parts = check_both(source, grown, quarter(source), samples=2)
    assert_agree(whole, parts)
    assert whole.passed and parts.segments >= 3 and parts.cuts_compared >= 2
    assert all(cut.passed for cut in parts.cuts), parts.first_failed_cut  # an exact growth: no cut differs
    broken = nudge(source, tmp_path / "broken.onnx", middle_weight(source))
    for limit in (quarter(source), 1):  # about four segments; a cut at every usable position
        whole, parts = check_both(source, broken, limit, samples=2)
        assert_agree(whole, parts)
        assert not parts.passed and parts.first_failed_cut is not None


@pytest.mark.torch
@pytest.mark.parametrize("block", [0, 1, 2])
def test_a_broken_block_is_reported_at_the_first_cut_after_it(block: int, exports: Callable[[str], Path],
                                                              tmp_path: Path) -> None:
    source = exports("hf-llama")
    summary = inspect_model(source)
    layer = next(x for x in summary.layers if x.name.endswith(f"layers.{block}.mlp.down_proj"))
    order = [n.name for n in onnx.load(source, load_external_data=False).graph.node]
    node = next(n for n in load_model(source).graph if n.name == layer.node)
    weight = next(v.name for v in node.inputs if v is not None and v.is_initializer())
    broken = perturb(source, tmp_path / "broken.onnx", weight or "")
    layer_bytes = model_weight_bytes(load_model(source)) / 4  # about one block of three and the embeddings
    report = verify(source, broken, VerifyOptions(max_memory=int(layer_bytes * ORT_MEMORY_FACTOR)))
    assert not report.passed and report.mode == "segmented"
    first = report.first_failed_cut
    assert first is not None
    at = order.index(layer.node)
    assert order.index(first.after) >= at  # after the broken weight's node...
    earlier = report.cuts[:report.cuts.index(first)]
    assert all(cut.passed for cut in earlier)
    assert earlier or block == 0  # a later block has cuts before it
    assert not earlier or order.index(earlier[-1].after) < at  # ...and the first cut after it


# --- memory -------------------------------------------------------------------------------

_PEAK = """
import json, sys
import numpy as np, onnxruntime
from onnx import helper
from onnxgrow import VerifyOptions, verify
def rss(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", 1, [1])],
                          [helper.make_tensor_value_info("y", 1, [1])])
session = onnxruntime.InferenceSession(helper.make_model(graph).SerializeToString(), providers=["CPUExecutionProvider"])
session.run(None, {"x": np.ones(1, np.float32)})  # the libraries loaded and started before the baseline
del session
before = rss("VmHWM:")
report = verify(sys.argv[1], sys.argv[2], VerifyOptions(max_memory=int(sys.argv[3])))
print(json.dumps({"before": before, "peak": rss("VmHWM:"), "mode": report.mode, "segments": report.segments,
                  "passed": report.passed, "segment_bytes": report.segment_bytes}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak RSS from /proc")
def test_segmented_check_peak_memory(tmp_path: Path) -> None:
    """A 234 MB model checked under --max-memory 100MiB in a fresh process: its peak RSS stays
    within the largest segment + 0.5 GiB, and what the check adds to the process (the
    libraries loaded before) within the limit; a whole-model check adds more than the model."""
    built = scale.transformer(tmp_path / "t.onnx", layers=6, width=1024, ffn=2048, vocab=4000)
    wide = tmp_path / "w.onnx"
    widen_file(built.path, wide, {built.small_layer: built.small_width}, options=NO_CHECK)
    limit = 100 * 2**20
    assert built.weight_bytes > 2 * limit
    largest, result = _checked_in_a_fresh_process(built.path, wide, limit)
    assert result["peak"] <= largest + 2**29, (result, largest)
    assert result["peak"] - result["before"] <= limit, (result, largest)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak RSS from /proc")
def test_segmented_check_of_a_tied_head_holds_its_heaviest_segment_twice_at_most(tmp_path: Path) -> None:
    """A LLaMA-shaped model with a tied head (its 65.5 MB embedding read by the first node and
    transposed by the last: ``MatMul(x, Transpose(embedding))``), checked in a fresh process
    under a limit that the embedding alone passes: what the check adds to the process stays
    within twice the heaviest segment's weights (the head's segment holds the embedding and
    its transpose) + 64 MiB. It once added about seven times (800 MB): the planner cut between
    the Transpose and its MatMul, so the transposed embedding crossed a cut and was compared
    there in float64 copies, and every session's memory arena stayed alive with the outputs
    taken from it."""
    built = scale.llama(tmp_path / "l.onnx", layers=2, hidden=1024, ffn=2048, heads=8, kv_heads=2, vocab=16000,
                        tied=True)
    wide = tmp_path / "w.onnx"
    widen_file(built.path, wide, {built.small_layer: built.small_width}, options=NO_CHECK)
    largest, result = _checked_in_a_fresh_process(built.path, wide, 64 * 2**20)
    assert largest == 16000 * 1024 * 4  # the embedding's segments are the heaviest
    assert result["peak"] - result["before"] <= 2 * largest + 2**26, (result, largest)


def _checked_in_a_fresh_process(model: Path, wide: Path, limit: int) -> tuple[int, dict[str, Any]]:
    """``wide`` checked against ``model`` under ``--max-memory limit`` in a fresh process
    (:data:`_PEAK`): the plan's heaviest segment (its weight bytes) and the process's report,
    a passing segmented check whose verdict reports the plan's segments."""
    ref_lay, cand_lay = layout(load_model(model)), layout(load_model(wide))
    plan = plan_segments(ref_lay, cand_lay, memory.segment_budget(limit), segments.SEGMENT_NODES)
    assert plan.candidate is not None
    largest = max(_segment_bytes(lay, s) for lay, segs in ((ref_lay, plan.reference), (cand_lay, plan.candidate))
                  for s in segs)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", _PEAK, str(model), str(wide), str(limit)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    assert result["mode"] == "segmented" and result["passed"] and result["segments"] == plan.count
    assert len(result["segment_bytes"]) == plan.count and max(result["segment_bytes"]) == largest
    return largest, result


def _segment_bytes(lay: segments.Layout, segment: segments.Segment) -> int:
    seen: dict[str, int] = {}
    for i in range(segment.start, segment.stop):
        seen.update(lay.weights[i])
    return sum(seen.values())
