"""Which If branches a check ran (onnxgrow/verification/branches.py; docs/design.md §6).

A voice detector's ``if sr == 16000`` holds one network per branch. A check that draws ``sr``
from ``[0, 10)`` runs the else branch only, so a broken 16 kHz branch used to pass. Now an
input that an If compares with a constant is drawn on both sides of it (one sample each), the
verdict says how many samples ran each branch, and a rewritten branch no sample ran is named
as not checked. Hand-built graphs here; the real TorchScript and torch.cond exports in
tests/commands/test_verify_roles.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxgrow
from onnxgrow.options import VerifyOptions
from tests.helpers.control_flow_graphs import save_graph, value_info


def _branch(name: str, layers: list[str], out: str) -> onnx.GraphProto:
    """``x → layers[0] → Relu → layers[1] ... → out``: Gemms on weights of the main graph."""
    nodes, current = [], "x"
    for k, layer in enumerate(layers):
        target = out if k == len(layers) - 1 else f"{name}_{k}"
        nodes.append(helper.make_node("Gemm", [current, f"{layer}.weight", f"{layer}.bias"], [target],
                                      name=layer, transB=1))
        if k < len(layers) - 1:
            nodes.append(helper.make_node("Relu", [target], [f"{target}_relu"], name=f"{layer}_relu"))
            current = f"{target}_relu"
    return helper.make_graph(nodes, name, [], [value_info(out, shape=[1, 2])])


def detector(path: Path, condition: str) -> Path:
    """Two networks chosen by an If: ``fast`` (3 → 4 → 2) in the then branch, ``slow`` (3 → 2) in
    the else branch. ``condition``: ``sr == 16000``, ``sr > 8000``, ``flag`` (a boolean input)
    or ``sum(x) > 1000`` (computed from the data: never true on normal samples)."""
    rng = np.random.default_rng(0)
    inits = {"fast1.weight": rng.standard_normal((4, 3)), "fast1.bias": rng.standard_normal(4),
             "fast2.weight": rng.standard_normal((2, 4)), "fast2.bias": rng.standard_normal(2),
             "slow.weight": rng.standard_normal((2, 3)), "slow.bias": rng.standard_normal(2)}
    inits = {k: v.astype(np.float32) for k, v in inits.items()}
    inputs = [value_info("x", shape=[1, 3])]
    if condition == "sr == 16000":
        inits["rate"] = np.array(16000, np.int64)
        nodes = [helper.make_node("Equal", ["sr", "rate"], ["cond"], name="is_16k")]
        inputs.append(value_info("sr", TensorProto.INT64, []))
    elif condition == "sr > 8000":
        inits["rate"] = np.array(8000, np.int64)
        nodes = [helper.make_node("Greater", ["sr", "rate"], ["cond"], name="above_8k")]
        inputs.append(value_info("sr", TensorProto.INT64, []))
    elif condition == "flag":
        nodes = [helper.make_node("Identity", ["flag"], ["cond"])]
        inputs.append(value_info("flag", TensorProto.BOOL, []))
    else:
        inits["big"] = np.array(1000.0, np.float32)
        nodes = [helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
                 helper.make_node("Greater", ["total", "big"], ["cond"])]
    nodes.append(helper.make_node("If", ["cond"], ["y"], name="choose",
                                  then_branch=_branch("fast", ["fast1", "fast2"], "t"),
                                  else_branch=_branch("slow", ["slow"], "e")))
    return save_graph(nodes, inputs, [value_info("y", shape=[1, 2])], inits, path)


def perturbed(src: Path, dst: Path, weight: str) -> Path:
    model = onnx.load(str(src))
    for tensor in model.graph.initializer:
        if tensor.name == weight:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * 1.5, weight))
    onnx.save(model, str(dst))
    return dst


@pytest.mark.parametrize(("condition", "values"), [("sr == 16000", "sr 16000 then 16001"),
                                                   ("sr > 8000", "sr 7999 then 8001"),
                                                   ("flag", "flag 0 then 1")])
def test_a_switch_is_drawn_on_both_sides_so_every_branch_runs(condition: str, values: str, tmp_path: Path) -> None:
    src = detector(tmp_path / "detector.onnx", condition)
    grown, _ = onnxgrow.widen(onnxgrow.load_model(src), {"fast1": 7})
    report = onnxgrow.verify(src, grown)
    assert report.passed, report.summary()
    assert report.samples == 2
    assert report.drawn == [f"{values} by sample (for every If branch)"]
    (branch,) = report.branches
    assert branch.node == "If node 'choose'"
    assert branch.runs == {"then_branch": 1, "else_branch": 1} and branch.rewritten == ["then_branch"]
    assert "branches: If node 'choose': samples per branch: then_branch 1, else_branch 1; rewritten: then_branch" \
        in report.lines()
    # the then branch really ran: a wrong weight there fails the check
    broken = perturbed(src, tmp_path / "broken.onnx", "fast2.bias")
    failed = onnxgrow.verify(src, broken)
    assert not failed.passed and failed.branches[0].runs == {"then_branch": 1, "else_branch": 1}


def test_more_samples_than_values_are_random(tmp_path: Path) -> None:
    src = detector(tmp_path / "detector.onnx", "sr == 16000")
    report = onnxgrow.verify(src, src, VerifyOptions(samples=4))
    assert report.samples == 4
    assert report.branches[0].runs == {"then_branch": 1, "else_branch": 3}


def test_a_rewritten_branch_no_sample_ran_is_named_not_checked(tmp_path: Path) -> None:
    """Given inputs that take the else branch only, and a condition computed from the data that
    random samples never make true: the check passes on what ran, and says what did not."""
    src = detector(tmp_path / "detector.onnx", "sr == 16000")
    broken = perturbed(src, tmp_path / "broken.onnx", "fast2.bias")
    x = np.ones((1, 3), np.float32)
    report = onnxgrow.verify(src, broken, VerifyOptions(inputs=[{"x": x, "sr": np.array(8000, np.int64)}]))
    assert report.passed
    assert report.branches[0].runs == {"then_branch": 0, "else_branch": 1}
    assert report.branches[0].unchecked == ["then_branch"]
    assert "then_branch rewritten but never ran on these inputs: not checked" in report.reason
    assert "samples per branch: then_branch 0, else_branch 1 (only else_branch ran); rewritten: then_branch; " \
        "NOT CHECKED (never ran): then_branch" in report.summary()

    data = detector(tmp_path / "data.onnx", "sum(x) > 1000")
    broken = perturbed(data, tmp_path / "data_broken.onnx", "fast2.bias")
    report = onnxgrow.verify(data, broken, VerifyOptions(samples=3))
    assert report.passed and report.drawn == []
    assert report.branches[0].runs == {"then_branch": 0, "else_branch": 3}
    assert any(line.startswith("branches: If node 'choose': samples per branch: then_branch 0, else_branch 3 "
                               "(only else_branch ran)") for line in report.lines()), report.lines()
    assert "never ran" in report.reason
    # a growth in the branch that never runs is not checked either; a change in the one that runs is
    grown, _ = onnxgrow.widen(onnxgrow.load_model(data), {"fast1": 6})
    grown_check = onnxgrow.verify(data, grown)
    assert grown_check.branches[0].rewritten == ["then_branch"] and "never ran" in grown_check.reason
    slow_broken = perturbed(data, tmp_path / "slow_broken.onnx", "slow.weight")
    assert not onnxgrow.verify(data, slow_broken).passed


def test_an_if_inside_a_branch_is_reported_when_rewritten(tmp_path: Path) -> None:
    """The condition of an If nested in a branch is computed inside it: not determined, so a
    rewritten nested branch may not have been checked, and the verdict says so (here it never
    runs: the inner condition is ``sum(x) > 1000``)."""
    src = detector(tmp_path / "detector.onnx", "sr == 16000")
    model = onnx.load(str(src))
    outer = next(n for n in model.graph.node if n.op_type == "If")
    then_branch = next(a for a in outer.attribute if a.name == "then_branch")
    inner_cond = [helper.make_node("ReduceSum", ["x"], ["inner_total"], keepdims=0),
                  helper.make_node("Greater", ["inner_total", "inner_big"], ["inner_cond"])]
    # the inner branch names its output like the If it is inside, as optimum's merged decoders do
    inner_then = [onnx.NodeProto.FromString(n.SerializeToString()) for n in then_branch.g.node]
    inner = helper.make_node("If", ["inner_cond"], ["t"], name="inner",
                             then_branch=helper.make_graph(inner_then, "inner_then", [],
                                                           [value_info("t", shape=[1, 2])]),
                             else_branch=helper.make_graph(
                                 [helper.make_node("Gemm", ["x", "slow.weight", "slow.bias"], ["t_slow"], transB=1),
                                  helper.make_node("Neg", ["t_slow"], ["t_else"])],
                                 "inner_else", [], [value_info("t_else", shape=[1, 2])]))
    then_branch.g.ClearField("node")
    then_branch.g.node.extend([*inner_cond, inner])
    model.graph.initializer.append(numpy_helper.from_array(np.array(1000.0, np.float32), "inner_big"))
    onnx.checker.check_model(model, full_check=True)
    nested = tmp_path / "nested.onnx"
    onnx.save(model, str(nested))
    broken = perturbed(nested, tmp_path / "nested_broken.onnx", "fast2.bias")
    report = onnxgrow.verify(nested, broken)
    by_node = {b.node: b for b in report.branches}
    assert by_node["If node 'choose'"].runs == {"then_branch": 1, "else_branch": 1}
    assert by_node["If node 'inner'"].runs is None and by_node["If node 'inner'"].rewritten == ["then_branch"]
    assert report.passed  # the inner then branch never ran: its broken weight went unseen ...
    assert "If node 'inner': then_branch rewritten, and which branch the inputs take was not determined" \
        in report.reason  # ... and the verdict says it may not have been checked
