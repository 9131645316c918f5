"""Small models for the verify and diff tests, built with onnx.helper.

Every builder returns an ``onnx.ModelProto``; weights come from a seeded generator so
two calls with the same arguments give the same model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from onnxgrow.lineage import append_history

OPSET = 17


def _model(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto],
           outputs: list[onnx.ValueInfoProto], inits: dict[str, np.ndarray],
           opset: int = OPSET) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", inputs, outputs,
        [numpy_helper.from_array(v, name=k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def mlp_weights(n_in: int = 4, hidden: int = 5, n_out: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "W1": rng.standard_normal((hidden, n_in)).astype(np.float32),
        "b1": rng.standard_normal(hidden).astype(np.float32),
        "W2": rng.standard_normal((n_out, hidden)).astype(np.float32),
        "b2": rng.standard_normal(n_out).astype(np.float32),
    }


def mlp(weights: dict[str, np.ndarray] | None = None, *, batch: int | str = "N",
        names: tuple[str, str, str] = ("fc1", "act1", "fc2"), opset: int = OPSET,
        alpha: float = 1.0, extra_relu: bool = False) -> onnx.ModelProto:
    """x[batch, in] → Gemm fc1 (transB) → Relu act1 → Gemm fc2 → y[batch, out]."""
    w = weights if weights is not None else mlp_weights()
    n_in, n_out = w["W1"].shape[1], w["W2"].shape[0]
    nodes = [
        helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], name=names[0], transB=1, alpha=alpha),
        helper.make_node("Relu", ["h"], ["a"], name=names[1]),
        helper.make_node("Gemm", ["a", "W2", "b2"], ["y"], name=names[2], transB=1),
    ]
    if extra_relu:  # relu(relu(v)) = relu(v): an added node that changes nothing
        nodes.insert(2, helper.make_node("Relu", ["a"], ["a2"], name="act_extra"))
        nodes[3].input[0] = "a2"
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, n_out])],
        w, opset,
    )


def net2wider(weights: dict[str, np.ndarray], new_hidden: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Exact Net2Wider of fc1 (docs/design.md §1): gather fc1 rows with g, divide fc2 columns by cnt."""
    hidden = weights["W1"].shape[0]
    rng = np.random.default_rng(seed)
    g = np.concatenate([np.arange(hidden), rng.integers(0, hidden, new_hidden - hidden)])
    cnt = np.bincount(g, minlength=hidden)
    return {
        "W1": weights["W1"][g],
        "b1": weights["b1"][g],
        "W2": (weights["W2"][:, g] / cnt[g]).astype(np.float32),
        "b2": weights["b2"],
    }


def with_history(model: onnx.ModelProto, entries: list[dict[str, Any]]) -> onnx.ModelProto:
    """The model with onnxgrow history entries appended through onnxgrow.lineage."""
    ir_model = ir.serde.deserialize_model(model)
    for entry in entries:
        append_history(ir_model, entry)
    return ir.serde.serialize_model(ir_model)


def widened_pair(old_hidden: int = 5, new_hidden: int = 7) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """A 4-old-2 MLP and its exact Net2Wider 4-new-2 version, with its lineage entry."""
    weights = mlp_weights(hidden=old_hidden)
    wide = mlp(net2wider(weights, new_hidden))
    entry = {"op": "widen", "node": "fc1", "old_width": old_hidden, "new_width": new_hidden,
             "init": "net2wider", "seed": 0, "together": ["fc1"]}
    return mlp(weights), with_history(wide, [entry])


def perturbed(weights: dict[str, np.ndarray], name: str, scale: float, seed: int = 1) -> dict[str, np.ndarray]:
    """A copy of ``weights`` with noise of std ``scale`` added to one tensor."""
    rng = np.random.default_rng(seed)
    out = dict(weights)
    out[name] = (weights[name] + scale * rng.standard_normal(weights[name].shape)).astype(np.float32)
    return out


def cnn(seed: int = 0, channels: int = 3) -> onnx.ModelProto:
    """img[N, 3, 8, 8] → Conv → Relu → GlobalAveragePool → Flatten → Gemm → logits[N, 2]."""
    rng = np.random.default_rng(seed)
    inits = {
        "Wc": rng.standard_normal((channels, 3, 3, 3)).astype(np.float32),
        "bc": rng.standard_normal(channels).astype(np.float32),
        "Wf": rng.standard_normal((2, channels)).astype(np.float32),
        "bf": rng.standard_normal(2).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["img", "Wc", "bc"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "Wf", "bf"], ["logits"], name="fc", transB=1),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("img", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        inits,
    )


def embedding(vocab: int = 11, dim: int = 4, seed: int = 0, unnamed: bool = False) -> onnx.ModelProto:
    """ids[N, T] int64 → Gather(E[vocab, dim]) → ReduceMean over T → Gemm → y[N, 2]."""
    rng = np.random.default_rng(seed)
    inits = {
        "E": rng.standard_normal((vocab, dim)).astype(np.float32),
        "axes": np.array([1], dtype=np.int64),
        "Wo": rng.standard_normal((2, dim)).astype(np.float32),
        "bo": rng.standard_normal(2).astype(np.float32),
    }
    names = ("", "", "") if unnamed else ("embed", "mean", "head")
    nodes = [
        helper.make_node("Gather", ["E", "ids"], ["e"], name=names[0]),
        helper.make_node("ReduceMean", ["e", "axes"], ["m"], name=names[1], keepdims=0),
        helper.make_node("Gemm", ["m", "Wo", "bo"], ["y"], name=names[2], transB=1),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", "T"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        inits, opset=18,
    )


def save(model: onnx.ModelProto, path: Path, external: bool = False) -> Path:
    """Save; ``external`` puts every tensor in ``<name>.data`` beside the model."""
    if external:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)  # saving as external data rewrites the proto
        onnx.save_model(copy, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=0)
    else:
        onnx.save_model(model, path)
    return path
