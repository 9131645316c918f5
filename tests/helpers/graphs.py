"""Small ONNX graphs for the rule and error tests, and the check that a widening is exact.

A graph is written one of three ways: in the ONNX text format (:func:`save_text`, the
shortest to read), as ``onnx.helper`` nodes (:func:`save_graph`, or :func:`save` with every
value typed), or whole by a builder (:func:`mlp`, :func:`cnn`). Every model is checked
(``onnx.checker``, full check) before it is saved. :func:`assert_widens_exactly` widens one
layer and has onnxruntime compare the result with the saved original.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
from onnx import TensorProto, helper, numpy_helper

from onnxgrow import load_model, verify, widen
from onnxgrow.widening import WidenReport
from onnxgrow.widening.layers import find_layer

OPSET = 17
MAX_REL_ERROR = 1e-5


def save(nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
         initializers: dict[str, np.ndarray], path: Path, opset: int = OPSET) -> Path:
    """Assemble a model from parts, check it, and save it."""
    graph = helper.make_graph(nodes, "g", inputs, outputs,
                              [numpy_helper.from_array(a, name=n) for n, a in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def _save_inferring_outputs(path: Path, nodes: Sequence[onnx.NodeProto], inputs: Sequence[onnx.ValueInfoProto],
                            outputs: Mapping[str, int], initializers: Mapping[str, np.ndarray], opset: int) -> Path:
    """:func:`save` with each output (name → element type) shaped by onnx shape inference."""
    arrays = {name: np.asarray(array) for name, array in initializers.items()}
    draft = helper.make_model(
        helper.make_graph(list(nodes), "g", list(inputs),
                          [helper.make_tensor_value_info(name, dtype, None) for name, dtype in outputs.items()],
                          [numpy_helper.from_array(array, name) for name, array in arrays.items()]),
        opset_imports=[helper.make_opsetid("", opset)])
    inferred = onnx.shape_inference.infer_shapes(draft, strict_mode=True)
    return save(list(nodes), list(inputs), list(inferred.graph.output), arrays, path, opset)


def save_graph(
    path: Path,
    nodes: Sequence[onnx.NodeProto],
    inputs: Mapping[str, Sequence[int | str]],
    outputs: Sequence[str],
    initializers: Mapping[str, np.ndarray],
    opset: int = 18,
) -> Path:
    """Save a checked model with float ``inputs`` (name → shape) and float ``outputs`` shaped
    by onnx shape inference."""
    input_infos = [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))
                   for name, shape in inputs.items()]
    return _save_inferring_outputs(path, nodes, input_infos, dict.fromkeys(outputs, TensorProto.FLOAT),
                                   initializers, opset)


def save_text(path: Path, text: str, initializers: Mapping[str, np.ndarray], opset: int = 18) -> Path:
    """Save a checked model whose graph is written in the ONNX text format
    (:func:`onnx.parser.parse_graph`), e.g.::

        g (float[2, 3, 4] x) => (float y) {
            [proj] h = MatMul (x, w)
            y = Softmax <axis = -1> (h)
        }

    with ``initializers`` (name → array) as its weights. ``[proj]`` names a node; a name
    with ``/`` or ``.`` is quoted (``["fc1/Gemm"]``, ``"fc1.weight"``). Outputs need only
    their element type: their shapes come from onnx shape inference."""
    graph = onnx.parser.parse_graph(text)
    outputs = {value.name: value.type.tensor_type.elem_type for value in graph.output}
    return _save_inferring_outputs(path, graph.node, graph.input, outputs, initializers, opset)


def weights(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Normal float32 weights."""
    return rng.standard_normal(shape).astype(np.float32)


def assert_widens_exactly(path: Path, layer: str, q: int) -> WidenReport:
    """Widen ``layer`` to ``q``; onnxruntime must find the grown model equal to the original."""
    grown, report = widen(load_model(path), {layer: q})
    check = verify(path, grown)
    assert check.passed and check.max_rel_error <= MAX_REL_ERROR, check.summary()
    assert find_layer(grown, layer).width == q
    return report


def activation_node(kind: str, x: str, y: str) -> list[onnx.NodeProto]:
    """One activation from the carrier list (Clip gets scalar bounds as inputs)."""
    if kind == "Clip":
        return [helper.make_node("Clip", [x, "clip_lo", "clip_hi"], [y])]
    attrs = {"alpha": 0.1} if kind == "LeakyRelu" else {}
    return [helper.make_node(kind, [x], [y], **attrs)]


ACTIVATIONS = ["Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "Softplus", "Elu", "Gelu",
               "HardSigmoid", "HardSwish"]


def mlp(path: Path, widths: Sequence[int], activations: Sequence[str], seed: int = 0,
        styles: Sequence[str] | None = None) -> Path:
    """``x → dense_1 → act → ... → dense_k`` with layers named ``dense_i``.

    ``styles[i]`` is ``gemm_t`` (Gemm transB=1), ``gemm`` (transB=0) or ``matmul``
    (MatMul + bias Add); the opset is 20 when Gelu is used.
    """
    rng = np.random.default_rng(seed)
    styles = list(styles or ["gemm_t"] * (len(widths) - 1))
    nodes: list[onnx.NodeProto] = []
    inits: dict[str, np.ndarray] = {"clip_lo": np.array(0.0, np.float32), "clip_hi": np.array(6.0, np.float32)}
    current = "x"
    for i in range(len(widths) - 1):
        k, n = widths[i], widths[i + 1]
        w = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
        b = rng.standard_normal(n).astype(np.float32) * 0.1
        name = f"dense_{i + 1}"
        out = f"{name}_out"
        if styles[i] == "matmul":
            inits[f"{name}.weight"] = np.ascontiguousarray(w.T)
            inits[f"{name}.bias"] = b
            nodes.append(helper.make_node("MatMul", [current, f"{name}.weight"], [f"{name}_mm"], name=f"{name}/MatMul"))
            nodes.append(helper.make_node("Add", [f"{name}_mm", f"{name}.bias"], [out], name=f"{name}/Add"))
        else:
            trans = styles[i] == "gemm_t"
            inits[f"{name}.weight"] = w if trans else np.ascontiguousarray(w.T)
            inits[f"{name}.bias"] = b
            nodes.append(helper.make_node("Gemm", [current, f"{name}.weight", f"{name}.bias"], [out],
                                          name=f"{name}/Gemm", transB=int(trans)))
        current = out
        if i < len(widths) - 2:
            act_out = f"act_{i + 1}"
            nodes += activation_node(activations[i % len(activations)], current, act_out)
            current = act_out
    nodes.append(helper.make_node("Identity", [current], ["y"]))
    opset = 20 if "Gelu" in activations else OPSET
    return save(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", widths[0]])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", widths[-1]])], inits, path, opset)


def cnn(path: Path, channels: Sequence[int], activations: Sequence[str], classes: int = 3,
        size: int = 8, kernel: int = 3, pool: bool = True, seed: int = 0) -> Path:
    """``conv_1 → act → [MaxPool] → ... → Flatten → fc`` with NCHW images of ``size``."""
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: dict[str, np.ndarray] = {"clip_lo": np.array(0.0, np.float32), "clip_hi": np.array(6.0, np.float32)}
    current, spatial = "x", size
    for i in range(len(channels) - 1):
        c_in, c_out = channels[i], channels[i + 1]
        name = f"conv_{i + 1}"
        filters = rng.standard_normal((c_out, c_in, kernel, kernel)) / np.sqrt(c_in * kernel**2)
        inits[f"{name}.weight"] = filters.astype(np.float32)
        inits[f"{name}.bias"] = (rng.standard_normal(c_out) * 0.1).astype(np.float32)
        nodes.append(helper.make_node("Conv", [current, f"{name}.weight", f"{name}.bias"], [f"{name}_out"],
                                      name=f"{name}/Conv", pads=[kernel // 2] * 4))
        nodes += activation_node(activations[i % len(activations)], f"{name}_out", f"{name}_act")
        current = f"{name}_act"
        if pool and spatial % 2 == 0 and spatial > 2:
            nodes.append(helper.make_node("MaxPool", [current], [f"{name}_pool"], kernel_shape=[2, 2], strides=[2, 2]))
            current, spatial = f"{name}_pool", spatial // 2
    nodes.append(helper.make_node("Flatten", [current], ["flat"], axis=1))
    features = channels[-1] * spatial * spatial
    inits["fc.weight"] = (rng.standard_normal((classes, features)) / np.sqrt(features)).astype(np.float32)
    inits["fc.bias"] = np.zeros(classes, np.float32)
    nodes.append(helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["y"], name="fc/Gemm", transB=1))
    opset = 20 if "Gelu" in activations else OPSET
    return save(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", channels[0], size, size])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", classes])], inits, path, opset)
