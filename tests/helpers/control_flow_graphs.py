"""Small graphs with control flow (If, Loop, Scan) around an MLP, built with ``onnx.helper``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def save_graph(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
           inits: dict[str, np.ndarray], path: Path) -> Path:
    graph = helper.make_graph(nodes, "main", inputs, outputs, [numpy_helper.from_array(a, n) for n, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def value_info(name: str, dtype: int = TensorProto.FLOAT, shape: list | None = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def mlp_nodes(x: str = "x") -> tuple[list[onnx.NodeProto], dict[str, np.ndarray]]:
    """``fc1 (3→4) → Relu → fc2 (4→5) → Relu → fc3 (5→2) → y``."""
    rng = np.random.default_rng(0)
    inits = {"fc1.weight": rng.standard_normal((4, 3)), "fc1.bias": rng.standard_normal(4),
             "fc2.weight": rng.standard_normal((5, 4)), "fc2.bias": rng.standard_normal(5),
             "fc3.weight": rng.standard_normal((2, 5)), "fc3.bias": rng.standard_normal(2)}
    nodes = [helper.make_node("Gemm", [x, "fc1.weight", "fc1.bias"], ["h1"], name="fc1", transB=1),
             helper.make_node("Relu", ["h1"], ["a1"], name="relu1"),
             helper.make_node("Gemm", ["a1", "fc2.weight", "fc2.bias"], ["h2"], name="fc2", transB=1),
             helper.make_node("Relu", ["h2"], ["a2"], name="relu2"),
             helper.make_node("Gemm", ["a2", "fc3.weight", "fc3.bias"], ["y"], name="fc3", transB=1)]
    return nodes, {k: v.astype(np.float32) for k, v in inits.items()}


def captured_path_model(path: Path, holder: str) -> Path:
    """``fc1 → Relu → h`` then ``h`` reaches fc2 through an If branch (captured), a Loop state,
    a Scan input, or an If nested in a Loop body."""
    nodes, inits = mlp_nodes()
    nodes = nodes[:2]  # fc1, relu1 → a1
    inits = {k: v for k, v in inits.items() if k.startswith(("fc1", "fc2"))}
    inits |= {"trip": np.array(2, np.int64), "keep_going": np.array(True)}
    if holder == "If":
        then_branch = helper.make_graph([helper.make_node("Relu", ["a1"], ["t"], name="inner_relu")],
                                        "then_branch", [], [value_info("t", shape=["N", 4])])
        else_branch = helper.make_graph([helper.make_node("Neg", ["a1"], ["e"])], "else_branch", [],
                                        [value_info("e", shape=["N", 4])])
        nodes.append(helper.make_node("If", ["cond"], ["b"], name="holder", then_branch=then_branch,
                                      else_branch=else_branch))
    elif holder in ("Loop", "nested If in Loop"):
        if holder == "Loop":
            body_nodes = [helper.make_node("Relu", ["s_in"], ["s_out"], name="body_relu")]
        else:
            inner_then = helper.make_graph([helper.make_node("Add", ["s_in", "a1"], ["t"], name="deep_add")],
                                           "inner_then", [], [value_info("t", shape=["N", 4])])
            inner_else = helper.make_graph([helper.make_node("Identity", ["s_in"], ["e"])], "inner_else", [],
                                           [value_info("e", shape=["N", 4])])
            body_nodes = [helper.make_node("If", ["c_in"], ["s_out"], name="inner_if", then_branch=inner_then,
                                           else_branch=inner_else)]
        body = helper.make_graph(
            [helper.make_node("Identity", ["c_in"], ["c_out"]), *body_nodes], "loop_body",
            [value_info("i", TensorProto.INT64, []), value_info("c_in", TensorProto.BOOL, []),
             value_info("s_in", shape=["N", 4])],
            [value_info("c_out", TensorProto.BOOL, []), value_info("s_out", shape=["N", 4])])
        start = "a1" if holder == "Loop" else "zeros"
        if holder != "Loop":
            inits["zeros"] = np.zeros((2, 4), np.float32)
        nodes.append(helper.make_node("Loop", ["trip", "keep_going", start], ["b"], name="holder", body=body))
    else:  # Scan over the rows of h
        body = helper.make_graph([helper.make_node("Relu", ["row"], ["row_out"], name="scan_relu")], "scan_body",
                                 [value_info("row", shape=[4])], [value_info("row_out", shape=[4])])
        nodes.append(helper.make_node("Scan", ["a1"], ["b"], name="holder", body=body, num_scan_inputs=1))
    nodes.append(helper.make_node("Gemm", ["b", "fc2.weight", "fc2.bias"], ["y"], name="fc2", transB=1))
    inputs = [value_info("x", shape=[2, 3]), value_info("cond", TensorProto.BOOL, [])]
    return save_graph(nodes, inputs, [value_info("y", shape=[2, 5])], inits, path)
