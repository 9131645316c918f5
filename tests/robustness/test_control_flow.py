"""Control flow (If/Loop/Scan) and unnamed nodes.

- Growth outside subgraphs works, exactly, and every subgraph is kept byte for byte, even
  one that captures a weight of the widened layer (that layer gets a copy of its own).
- A widened tensor used inside a subgraph (captured from the outer scope, at any depth) or
  passed to Loop/Scan grows through it (``tests/widening/test_subgraph_growth.py``); where it cannot
  (a loop state that starts as a constant), the refusal names the Loop of the main graph.
- Unnamed nodes answer to generated names ``<op>_<k>`` in inspect and after --node; the
  names are the same in every run and process, and only a grown node gets its name written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import onnxgrow
from tests.helpers.control_flow_graphs import captured_path_model, mlp_nodes, save_graph, value_info
from tests.helpers.paths import REPO
from tests.helpers.robustness import assert_checker_passes, assert_clean, run_cli, untouched


def side_branches_model(path: Path) -> Path:
    """The MLP plus an If that captures ``fc1.bias``, a Loop and a Scan, all off the widened path."""
    nodes, inits = mlp_nodes()
    inits |= {"two": np.array(2.0, np.float32), "trip": np.array(3, np.int64), "keep_going": np.array(True)}
    then_branch = helper.make_graph([helper.make_node("Identity", ["fc1.bias"], ["then_out"], name="then_id")],
                                    "then_branch", [], [value_info("then_out", shape=[4])])
    else_branch = helper.make_graph([helper.make_node("Mul", ["fc1.bias", "two"], ["else_out"], name="else_mul")],
                                    "else_branch", [], [value_info("else_out", shape=[4])])
    loop_body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"], name="body_cond"),
         helper.make_node("Mul", ["state_in", "two"], ["state_out"], name="body_mul")],
        "loop_body", [value_info("i", TensorProto.INT64, []), value_info("cond_in", TensorProto.BOOL, []),
                      value_info("state_in", shape=["N", 3])],
        [value_info("cond_out", TensorProto.BOOL, []), value_info("state_out", shape=["N", 3])])
    scan_body = helper.make_graph(
        [helper.make_node("Add", ["sum_in", "elem"], ["sum_out"], name="scan_add"),
         helper.make_node("Identity", ["sum_out"], ["running"], name="scan_id")],
        "scan_body", [value_info("sum_in", shape=[2]), value_info("elem", shape=[2])],
        [value_info("sum_out", shape=[2]), value_info("running", shape=[2])])
    nodes += [helper.make_node("If", ["cond"], ["z"], name="branch", then_branch=then_branch, else_branch=else_branch),
              helper.make_node("Loop", ["trip", "keep_going", "x"], ["looped"], name="loop", body=loop_body),
              helper.make_node("Scan", ["sum0", "seq"], ["total", "cumsum"], name="scan", body=scan_body,
                               num_scan_inputs=1)]
    inputs = [value_info("x", shape=["N", 3]), value_info("cond", TensorProto.BOOL, []), value_info("sum0", shape=[2]),
              value_info("seq", shape=["T", 2])]
    outputs = [value_info("y", shape=["N", 2]), value_info("z", shape=[4]), value_info("looped", shape=["N", 3]),
               value_info("total", shape=[2]), value_info("cumsum", shape=["T", 2])]
    return save_graph(nodes, inputs, outputs, inits, path)


def subgraph_bytes(path: Path) -> dict[str, bytes]:
    """Serialized bytes of every graph attribute of the main graph's nodes."""
    found = {}
    for node in onnx.load(str(path)).graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                found[f"{node.name}.{attr.name}"] = attr.g.SerializeToString(deterministic=True)
    return found


def run_all(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def test_growth_outside_subgraphs_keeps_them_intact(tmp_path: Path) -> None:
    src = side_branches_model(tmp_path / "cf.onnx")
    out = tmp_path / "wide.onnx"
    with untouched(src):
        report = onnxgrow.widen_file(src, out, {"fc1": 7, "fc2": 9})
    assert report.verification.passed
    assert_checker_passes(out)
    assert subgraph_bytes(out) == subgraph_bytes(src) and len(subgraph_bytes(src)) == 4
    grown = onnx.load(str(out))
    captured = {i.name: i for i in grown.graph.initializer}
    assert list(captured["fc1.bias"].dims) == [4]  # the If still sees the original bias
    fc1 = next(n for n in grown.graph.node if n.name == "fc1")
    assert fc1.input[2] != "fc1.bias" and list(captured[fc1.input[2]].dims) == [7]
    rng = np.random.default_rng(5)
    for cond in (True, False):  # both branches, independently of onnxgrow.verify
        feeds = {"x": rng.standard_normal((3, 3)).astype(np.float32), "cond": np.array(cond),
                 "sum0": np.zeros(2, np.float32), "seq": rng.standard_normal((4, 2)).astype(np.float32)}
        before, after = run_all(src, feeds), run_all(out, feeds)
        for name, value in before.items():
            np.testing.assert_allclose(after[name], value, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("holder", ["nested If in Loop"])
def test_path_into_a_subgraph_is_refused_naming_its_node(tmp_path: Path, holder: str) -> None:
    src = captured_path_model(tmp_path / "cf.onnx", holder)
    out = tmp_path / "o.onnx"
    op = holder.split()[-1]
    with untouched(tmp_path):
        result = run_cli("widen", src, "--node", "fc1", "--to", 6, "-o", out)
    assert_clean(result, (2,))
    assert f"at {op} node 'holder'" in result.stderr, result.stderr
    info = next(i for i in onnxgrow.inspect_model(src).layers if i.node == "fc1")
    assert not info.widenable and f"{op} node 'holder'" in info.reason


# ----- unnamed nodes ----------------------------------------------------------------------
def unnamed_model(path: Path, relu_named: str = "") -> Path:
    """Three unnamed Gemms with anonymous weights; optionally a Relu named like a generated name."""
    rng = np.random.default_rng(3)
    widths = [3, 4, 5, 2]
    nodes, inits, current = [], {}, "x"
    for i in range(3):
        inits[f"W{i}"] = rng.standard_normal((widths[i + 1], widths[i])).astype(np.float32)
        nodes.append(helper.make_node("Gemm", [current, f"W{i}"], [f"g{i}"], transB=1))
        current = f"g{i}"
        if i < 2:
            nodes.append(helper.make_node("Relu", [current], [f"r{i}"], name=relu_named if i == 0 else ""))
            current = f"r{i}"
    nodes.append(helper.make_node("Softmax", [current], ["y"], axis=-1))
    return save_graph(nodes, [value_info("x", shape=["N", 3])], [value_info("y", shape=["N", 2])], inits, path)


def inspect_json(path: Path) -> dict:
    result = run_cli("inspect", path, "--json", "-")
    assert_clean(result, (0,))
    data = json.loads(result.stdout)
    data.pop("path")
    return data


def test_generated_names_in_inspect_are_stable(tmp_path: Path) -> None:
    src = unnamed_model(tmp_path / "u.onnx")
    first = inspect_json(src)
    assert [layer["node"] for layer in first["layers"]] == ["Gemm_0", "Gemm_1", "Gemm_2"]
    assert inspect_json(src) == first
    proc = subprocess.run([sys.executable, "-m", "onnxgrow", "inspect", str(src), "--json", "-"],
                          capture_output=True, text=True, check=True, cwd=REPO)
    other_process = json.loads(proc.stdout)
    other_process.pop("path")
    assert other_process == first
    assert "unnamed Softmax node 'Softmax_0'" in first["layers"][2]["reason"]
    assert all(not n.name for n in onnx.load(str(src)).graph.node), "inspect wrote names into the file"


def test_generated_name_is_usable_and_written_only_into_the_grown_node(tmp_path: Path) -> None:
    src = unnamed_model(tmp_path / "u.onnx")
    out = tmp_path / "wide.onnx"
    with untouched(src):
        result = run_cli("widen", src, "--node", "Gemm_1", "--to", 8, "-o", out)
    assert_clean(result, (0,))
    names = [n.name for n in onnx.load(str(out)).graph.node]
    assert names == ["", "", "Gemm_1", "", "", ""]
    grown_layers = {layer["node"]: layer["width"] for layer in inspect_json(out)["layers"]}
    assert grown_layers == {"Gemm_0": 4, "Gemm_1": 8, "Gemm_2": 2}
    assert_clean(run_cli("widen", out, "--node", "Gemm_0", "--to", 6, "-o", tmp_path / "again.onnx"), (0,))


def test_generated_name_taken_by_a_real_name(tmp_path: Path) -> None:
    """A Relu really named 'Gemm_0' keeps it; the unnamed first Gemm becomes 'Gemm_0_unnamed'."""
    src = unnamed_model(tmp_path / "u.onnx", relu_named="Gemm_0")
    layers = [layer["node"] for layer in inspect_json(src)["layers"]]
    assert layers == ["Gemm_0_unnamed", "Gemm_1", "Gemm_2"]
    result = run_cli("widen", src, "--node", "Gemm_0", "--to", 6, "-o", tmp_path / "o.onnx")
    assert_clean(result, (2,))
    assert "is a Relu node, not a growable layer" in result.stderr
    assert_clean(run_cli("widen", src, "--node", "Gemm_0_unnamed", "--to", 6, "-o", tmp_path / "o.onnx"), (0,))


def test_new_initializer_names_avoid_subgraph_names(tmp_path: Path) -> None:
    """Regression: the widened layer's own copy of a shared bias was named 'fc1.bias_1', a
    name a branch already used, and onnxruntime refused the model (SSA across subgraphs)."""
    proto = onnx.load(str(side_branches_model(tmp_path / "cf.onnx")))
    branch = next(n for n in proto.graph.node if n.op_type == "If")
    then_branch = next(a for a in branch.attribute if a.name == "then_branch").g
    then_branch.node[0].output[0] = then_branch.output[0].name = "fc1.bias_1"
    src = tmp_path / "clash.onnx"
    onnx.save(proto, str(src))
    out = tmp_path / "wide.onnx"
    assert onnxgrow.widen_file(src, out, {"fc1": 7}).verification.passed
    assert_checker_passes(out)
