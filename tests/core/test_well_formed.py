"""Malformed models are refused at load, in one line, by every command (onnxgrow/well_formed.py);
what onnx.checker is too strict about is kept.

The models are mlp_legacy edited (``tests/helpers/hostile_models.py: MALFORMED``): duplicate
initializers (onnxruntime runs the last copy, an export wrote the first), values defined twice,
inputs and outputs defined nowhere, duplicate node names, attributes, metadata keys, opsets and
functions, NUL in names, a required output left unnamed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxgrow import load_model
from onnxgrow.errors import GrowError
from tests.helpers.hostile_models import CHECKER_TOO_STRICT, MALFORMED, malformed, mlp_edited
from tests.helpers.robustness import assert_checker_passes, listing, run_cli

#: The commands every malformed model goes through: argument lists for (model, output folder).
COMMANDS = {
    "inspect": lambda m, out: ["inspect", m],
    "widen": lambda m, out: ["widen", m, "--node", "layer_2", "--to", 7, "-o", out / "w.onnx"],
    "deepen": lambda m, out: ["deepen", m, "--after", "layer_2", "-o", out / "d.onnx"],
    "verify": lambda m, out: ["verify", m, m, "-q", "--json", out / "v.json"],
    "diff": lambda m, out: ["diff", m, m, "--json", out / "d.json"],
    "export --to state-dict": lambda m, out: ["export", m, "--to", "state-dict", "-o", out / "s.safetensors"],
}


@pytest.mark.parametrize("case", list(MALFORMED))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_malformed_model_is_refused_at_load(tmp_path: Path, case: str, command: str) -> None:
    model = malformed(case, tmp_path / "model")
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli(*COMMANDS[command](model, out))
    assert result.exception is None and result.code == 2, (result.code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {model}: "), result.stderr
    assert MALFORMED[case][1] in lines[0], lines[0]
    assert listing(out) == set()


def test_the_duplicate_is_what_onnxruntime_runs(tmp_path: Path) -> None:
    """Why a duplicate initializer is refused: onnxruntime runs the last copy (zeros here),
    onnx-ir (and so every export) would read another one."""
    model = malformed("duplicate initializer", tmp_path)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    x = np.ones((2, 3), np.float32)
    y = session.run(None, {"x": x})[0]
    proto = onnx.load(str(model))
    bias = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    first_layer_with_zeros = np.maximum(bias["layer_1.bias"], 0)  # layer_1.weight = 0 (the last copy)
    hidden = np.maximum(first_layer_with_zeros @ bias["layer_2.weight"].T + bias["layer_2.bias"], 0)
    assert np.allclose(y, np.broadcast_to(hidden @ bias["layer_3.weight"].T + bias["layer_3.bias"], y.shape),
                       atol=1e-6)
    with pytest.raises(GrowError, match="two initializers are named 'layer_1.weight'"):
        load_model(model)


@pytest.mark.parametrize("case", list(CHECKER_TOO_STRICT))
def test_what_the_checker_is_too_strict_about_is_kept(tmp_path: Path, case: str) -> None:
    """onnxruntime runs these; the widened model is checked against the original by it."""
    model = malformed(case, tmp_path)
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(str(model), full_check=True)
    result = run_cli("widen", model, "--node", "layer_2", "--to", 7, "-o", tmp_path / "w.onnx")
    assert result.exception is None and result.code == 0, result.stderr
    assert "PASSED" in result.stdout
    if case == "nodes out of topological order":  # sorted at load, as onnxruntime sorts them
        assert_checker_passes(tmp_path / "w.onnx")
        assert [n.name for n in onnx.load(str(tmp_path / "w.onnx")).graph.node][:2] == ["/layer_1/Gemm", "/Relu"]


def test_a_cycle_is_refused(tmp_path: Path) -> None:
    def cycle(proto: onnx.ModelProto) -> None:
        proto.graph.node[0].input[0] = "/Relu_1_output_0"  # layer_1 reads what layer_2's Relu makes

    model = mlp_edited(cycle, tmp_path, "cycle")
    with pytest.raises(GrowError, match="its nodes form a cycle"):
        load_model(model)


def test_a_subgraph_input_may_shadow_an_outer_value(tmp_path: Path) -> None:
    """A Loop body input named like an outer value is allowed (onnx.checker and onnxruntime agree)."""
    from onnx import TensorProto as T
    from onnx import helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Add", ["x", "x"], ["x_out"])], "body",
        [helper.make_tensor_value_info("i", T.INT64, []), helper.make_tensor_value_info("c_in", T.BOOL, []),
         helper.make_tensor_value_info("x", T.FLOAT, [2])],
        [helper.make_tensor_value_info("c_out", T.BOOL, []), helper.make_tensor_value_info("x_out", T.FLOAT, [2])])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["n", "c", "x"], ["y"], name="loop", body=body)], "g",
        [helper.make_tensor_value_info("x", T.FLOAT, [2]), helper.make_tensor_value_info("n", T.INT64, []),
         helper.make_tensor_value_info("c", T.BOOL, [])], [helper.make_tensor_value_info("y", T.FLOAT, [2])])
    path = tmp_path / "loop.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    load_model(path)


@pytest.mark.parametrize("sorted_nodes", [True, False], ids=["in order", "out of order"])
def test_a_branch_may_name_its_output_like_its_if(tmp_path: Path, sorted_nodes: bool) -> None:
    """optimum's merged decoders name each branch's output like the If output it becomes: the
    If's outputs are not yet defined inside its branches, so this is no redefinition, and
    onnxruntime runs it. A value defined before the If (``x2``) still may not be defined again."""
    from onnx import TensorProto as T
    from onnx import helper

    def branch(name: str, op: str, output: str) -> onnx.GraphProto:
        return helper.make_graph([helper.make_node(op, ["x2"], [output])], name, [],
                                 [helper.make_tensor_value_info(output, T.FLOAT, [2])])

    def model(then_output: str) -> Path:
        nodes = [helper.make_node("Add", ["x", "x"], ["x2"], name="double"),
                 helper.make_node("If", ["c"], ["y"], name="if", then_branch=branch("then", "Neg", then_output),
                                  else_branch=branch("else", "Abs", "y"))]
        graph = helper.make_graph(nodes if sorted_nodes else nodes[::-1], "g",
                                  [helper.make_tensor_value_info("x", T.FLOAT, [2]),
                                   helper.make_tensor_value_info("c", T.BOOL, [])],
                                  [helper.make_tensor_value_info("y", T.FLOAT, [2])])
        path = tmp_path / f"{then_output}.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
        return path

    merged = model("y")
    session = ort.InferenceSession(str(merged), providers=["CPUExecutionProvider"])
    x = np.array([1.0, -2.0], np.float32)
    assert np.array_equal(session.run(None, {"x": x, "c": np.array(True)})[0], -2 * x)
    load_model(merged)
    with pytest.raises(GrowError, match="output 'x2' is also a value of an enclosing graph"):
        load_model(model("x2"))
