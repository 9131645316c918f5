"""Random ONNX graphs for the fuzz suite, built with onnx.helper (independently of onnxgrow).

A :class:`GraphBuilder` emits layers in one of four naming styles (legacy PyTorch
``/fc1/Gemm``, dynamo ``node_Gemm_3`` with ``pkg.torch.onnx.name_scopes``, tf2onnx
scopes, or no node names at all with anonymous weights), in one of four dtypes, at
any opset from 13 up to the newest both onnx and onnxruntime support. Fragments:
MLP, CNN (optionally with BatchNorm, depthwise conv, pooling, Flatten/Reshape or
global pooling), residual stream (optionally LayerNorm over it), transformer FFN
(3-D tokens, exporter-style Reshape pairs, decomposed GELU).

Every growable layer is recorded with the names that must reach it and what a valid
widening request must do: ``grow`` (exact), ``refuse`` (a GrowError), or ``either``.
Hypothesis strategies at the bottom draw whole cases.

Two fixed models in a chosen dtype (:func:`dtype_mlp`, :func:`dtype_cnn`) serve the dtype,
pipeline and grown-tensor tests.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

NUMPY_DTYPES = {
    TensorProto.FLOAT: np.float32,
    TensorProto.FLOAT16: np.float16,
    TensorProto.DOUBLE: np.float64,
    TensorProto.BFLOAT16: ml_dtypes.bfloat16,
}
DTYPES = list(NUMPY_DTYPES)
MIN_OPSET = 13
NAMING_STYLES = ("legacy", "dynamo", "tf", "anonymous")


@functools.cache
def max_opset() -> int:
    """The newest default-domain opset onnx defines and onnxruntime loads (probed once)."""
    import onnxruntime as ort

    for opset in range(onnx.defs.onnx_opset_version(), MIN_OPSET - 1, -1):
        graph = helper.make_graph(
            [helper.make_node("Relu", ["x"], ["y"])], "probe",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = helper.find_min_ir_version_for([helper.make_opsetid("", opset)])
        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001 - any refusal means "not supported"
            continue
        return opset
    raise RuntimeError("onnxruntime loads no opset >= 13")


def supports(op: str, dtype: int, opset: int) -> bool:
    """Whether the ONNX schema of ``op`` at ``opset`` accepts ``dtype`` for its first input."""
    try:
        schema = onnx.defs.get_schema(op, opset, "")
    except onnx.defs.SchemaError:
        return False
    wanted = {TensorProto.FLOAT: "tensor(float)", TensorProto.FLOAT16: "tensor(float16)",
              TensorProto.DOUBLE: "tensor(double)", TensorProto.BFLOAT16: "tensor(bfloat16)"}[dtype]
    for constraint in schema.type_constraints:
        if constraint.type_param_str == schema.inputs[0].type_str:
            return wanted in constraint.allowed_type_strs
    return True


@functools.cache
def runs_on_cpu(op: str, dtype: int, opset: int) -> bool:
    """Whether onnxruntime's CPU provider has a kernel for unary use of ``op`` in ``dtype``
    (bfloat16: in float32, as the checks run bfloat16 models)."""
    import onnxruntime as ort

    if dtype == TensorProto.BFLOAT16:
        dtype = TensorProto.FLOAT
    shape = [1, 2, 4, 4]
    inputs, inits, attrs = ["x"], [], {}
    if op == "Conv":
        inits = [numpy_helper.from_array(np.ones((2, 2, 1, 1), NUMPY_DTYPES[dtype]), "w")]
        inputs.append("w")
    elif op in ("MaxPool", "AveragePool"):
        attrs = {"kernel_shape": [2, 2]}
    elif op == "LayerNormalization":
        inits = [numpy_helper.from_array(np.ones(4, NUMPY_DTYPES[dtype]), "scale")]
        inputs.append("scale")
    elif op == "BatchNormalization":
        for name in "sbmv":
            inits.append(numpy_helper.from_array(np.ones(2, NUMPY_DTYPES[dtype]), name))
            inputs.append(name)
    graph = helper.make_graph([helper.make_node(op, inputs, ["y"], **attrs)], "probe",
                              [helper.make_tensor_value_info("x", dtype, shape)],
                              [helper.make_tensor_value_info("y", dtype, None)], inits)
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = helper.find_min_ir_version_for(opsets)
    try:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        session.run(None, {"x": np.ones(shape, NUMPY_DTYPES[dtype])})
    except Exception:  # noqa: BLE001 - any failure means "no kernel"
        return False
    return True


def available(op: str, dtype: int, opset: int) -> bool:
    """``op`` is valid in ``dtype`` at ``opset`` and onnxruntime can run it here."""
    return supports(op, dtype, opset) and runs_on_cpu(op, dtype, opset)


def activations_for(dtype: int, opset: int) -> list[str]:
    """Carrier activations valid and runnable in ``dtype`` at ``opset``."""
    acts = ["Relu", "LeakyRelu", "Tanh", "Sigmoid", "Clip", "Softplus", "Elu", "HardSigmoid", "HardSwish", "Gelu"]
    return [a for a in acts if available(a, dtype, opset)]


@dataclass
class LayerSpec:
    """A growable layer: names that must resolve to it, its width, what widening must do."""

    names: list[str]
    width: int
    op: str
    expect: str = "grow"  # grow | refuse | either
    multiple_of: int | None = None  # uniform duplication required (LayerNorm over channels)
    why: str = ""

    def expectation(self, width: int, init: str) -> str:
        """``grow``, ``refuse`` or ``either`` for a valid request of ``width`` with ``init``."""
        if self.expect == "grow" and self.multiple_of and (width % self.multiple_of or init != "net2wider"):
            return "refuse"  # LayerNorm over the channels: exact only for uniform copies
        return self.expect


@dataclass
class FuzzModel:
    """A generated model and what the fuzz oracle knows about it."""

    proto: onnx.ModelProto
    dtype: int
    opset: int
    fragment: str
    layers: list[LayerSpec]
    input_shapes: dict[str, list[int]]
    other_node_names: list[str] = field(default_factory=list)

    @property
    def numpy_dtype(self) -> Any:
        return NUMPY_DTYPES[self.dtype]


class GraphBuilder:
    """Emit nodes and initializers for one model, with names in one naming style."""

    def __init__(self, dtype: int, opset: int, naming: str, rng: np.random.Generator) -> None:
        self.dtype, self.opset, self.naming, self.rng = dtype, opset, naming, rng
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.value_count = 0
        self.op_counts: dict[str, int] = {}
        self.layers: list[LayerSpec] = []
        self.other_node_names: list[str] = []
        self.dynamic_size: dict[str, int] = {}  # concrete size of a named dynamic dim for verification

    # ----- naming ---------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        self.value_count += 1
        return f"{hint}_{self.value_count}"

    def node(self, op: str, inputs: list[str], outputs: list[str] | None = None, *,
             scope: str | None = None, **attrs: Any) -> str:
        """Append a node; returns its first output. ``scope`` is the module it belongs to."""
        outputs = outputs or [self.fresh(op.lower())]
        index = self.op_counts.get(op, 0)
        self.op_counts[op] = index + 1
        module = scope or f"{op.lower()}{index}"
        if self.naming == "legacy":
            name = f"/{scope}/{op}" if scope else f"/{op}_{index}"
        elif self.naming == "dynamo":
            name = f"node_{op}_{index}"
        elif self.naming == "tf":
            name = f"model/{module}/{op}"
        else:
            name = ""
        node = helper.make_node(op, inputs, outputs, name=name or None, **attrs)
        if self.naming == "dynamo" and scope:
            entry = node.metadata_props.add()
            entry.key, entry.value = "pkg.torch.onnx.name_scopes", repr(["", scope, f"{op.lower()}_{index}"])
        self.nodes.append(node)
        if name and not scope:
            self.other_node_names.append(name)
        return outputs[0]

    def generated_name(self, op: str) -> str:
        """The name onnxgrow generates for the next unnamed ``op`` node: ``<op>_<index>``."""
        return f"{op}_{self.op_counts.get(op, 0)}"

    def weight(self, scope: str, kind: str, array: np.ndarray) -> str:
        """Register a weight; named like the exporter of the naming style would."""
        if self.naming == "anonymous":
            name = self.fresh(f"onnx::{kind}")
        elif self.naming == "tf":
            name = f"model/{scope}/{'kernel' if kind == 'weight' else kind}"
        else:
            name = f"{scope}.{kind}"
        self.inits.append(numpy_helper.from_array(array.astype(NUMPY_DTYPES[self.dtype]), name))
        return name

    def constant(self, array: np.ndarray, hint: str = "const") -> str:
        name = self.fresh(hint)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def scalar(self, value: float) -> str:
        return self.constant(np.array(value, dtype=NUMPY_DTYPES[self.dtype]), "scalar")

    def layer_names(self, scope: str, op: str, weight: str) -> list[str]:
        """Names the user can type for a layer of ``scope`` about to be emitted."""
        names = [weight]
        if self.naming == "legacy":
            names += [f"/{scope}/{op}", scope]
        elif self.naming == "dynamo":
            names += [f"node_{op}_{self.op_counts.get(op, 0)}", scope]
        elif self.naming == "tf":
            names += [f"model/{scope}/{op}", f"model/{scope}"]
        else:
            names.append(self.generated_name(op))
        return names

    def random(self, *shape: int, scale: float = 1.0) -> np.ndarray:
        fan_in = max(int(np.prod(shape[1:])) if len(shape) > 1 else 1, 1)
        return self.rng.standard_normal(shape) * scale / math.sqrt(fan_in)

    # ----- layers ---------------------------------------------------------------------
    def dense(self, x: str, k: int, n: int, scope: str, style: str, expect: str = "grow",
              rank3: bool = False) -> str:
        """A fully connected layer in one of the exporters' styles."""
        w = self.random(n, k)
        b = self.rng.standard_normal(n) * 0.1
        if style in ("gemm_t", "gemm") and not rank3:
            trans = style == "gemm_t"
            wname = self.weight(scope, "weight", w if trans else np.ascontiguousarray(w.T))
            bname = self.weight(scope, "bias", b)
            self.layers.append(LayerSpec(self.layer_names(scope, "Gemm", wname), n, "Gemm", expect))
            return self.node("Gemm", [x, wname, bname], scope=scope, transB=int(trans))
        if style == "matmul_transposed":  # constant folding off: MatMul(x, Transpose(W))
            wname = self.weight(scope, "weight", w)
            names = self.layer_names(scope, "MatMul", wname)
            wt = self.node("Transpose", [wname], perm=[1, 0])
        else:
            wname = self.weight(scope, "weight", np.ascontiguousarray(w.T))
            names = self.layer_names(scope, "MatMul", wname)
            wt = wname
        self.layers.append(LayerSpec(names, n, "MatMul", expect))
        h = self.node("MatMul", [x, wt], scope=scope)
        return self.node("Add", [h, self.weight(scope, "bias", b)], scope=scope)

    def activation(self, x: str, kind: str) -> str:
        if kind == "Clip":
            return self.node("Clip", [x, self.scalar(0.0), self.scalar(6.0)])
        if kind == "LeakyRelu":
            return self.node("LeakyRelu", [x], alpha=0.1)
        return self.node(kind, [x])

    def conv(self, x: str, c_in: int, c_out: int, kernel: int, scope: str, expect: str = "grow") -> str:
        w = self.random(c_out, c_in, kernel, kernel)
        b = self.rng.standard_normal(c_out) * 0.1
        wname = self.weight(scope, "weight", w)
        self.layers.append(LayerSpec(self.layer_names(scope, "Conv", wname), c_out, "Conv", expect))
        return self.node("Conv", [x, wname, self.weight(scope, "bias", b)], scope=scope,
                         pads=[kernel // 2] * 4)

    def depthwise(self, x: str, channels: int, scope: str) -> str:
        w = self.random(channels, 1, 3, 3)
        wname = self.weight(scope, "weight", w)
        return self.node("Conv", [x, wname], scope=scope, group=channels, pads=[1, 1, 1, 1])

    def batchnorm(self, x: str, channels: int, scope: str) -> str:
        params = [self.rng.uniform(0.5, 1.5, channels), self.rng.standard_normal(channels) * 0.1,
                  self.rng.standard_normal(channels) * 0.1, self.rng.uniform(0.5, 1.5, channels)]
        kinds = ("weight", "bias", "running_mean", "running_var")
        names = [self.weight(scope, kind, p) for kind, p in zip(kinds, params)]
        return self.node("BatchNormalization", [x, *names], scope=scope)

    def layernorm(self, x: str, width: int, scope: str) -> str:
        scale = self.weight(scope, "weight", self.rng.uniform(0.5, 1.5, width))
        bias = self.weight(scope, "bias", self.rng.standard_normal(width) * 0.1)
        return self.node("LayerNormalization", [x, scale, bias], scope=scope, axis=-1)

    def model(self, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto]) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "fuzz", inputs, outputs, self.inits)
        opsets = [helper.make_opsetid("", self.opset)]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="onnxgrow-fuzz")
        model.ir_version = helper.find_min_ir_version_for(opsets)
        return model

    def value(self, name: str, shape: list[int | str | None]) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, self.dtype, shape)


# ----- fragments -------------------------------------------------------------------------
def build_mlp(b: GraphBuilder, draw: st.DrawFn, batch: int | str | None) -> tuple[list, list]:
    acts = activations_for(b.dtype, b.opset)
    widths = draw(st.lists(st.integers(1, 8), min_size=3, max_size=5))
    x = "x"
    for i in range(len(widths) - 1):
        last = i == len(widths) - 2
        style = draw(st.sampled_from(["gemm_t", "gemm", "matmul", "matmul_transposed"]))
        x = b.dense(x, widths[i], widths[i + 1], f"fc{i + 1}", style, "refuse" if last else "grow")
        if not last:
            x = b.activation(x, draw(st.sampled_from(acts)))
    if available("Softmax", b.dtype, b.opset) and draw(st.booleans()):
        x = b.node("Softmax", [x], axis=-1)
    b.node("Identity", [x], ["y"])
    return [b.value("x", [batch, widths[0]])], [b.value("y", [batch, widths[-1]])]


def build_cnn(b: GraphBuilder, draw: st.DrawFn, batch: int | str | None) -> tuple[list, list]:
    acts = activations_for(b.dtype, b.opset)
    channels = draw(st.lists(st.integers(1, 6), min_size=2, max_size=4))
    size = draw(st.sampled_from([4, 6, 8]))
    dynamic_spatial = draw(st.booleans()) and draw(st.booleans())
    head = draw(st.sampled_from(["flatten", "reshape", "global_pool"]))
    x, spatial = "x", size
    for i in range(len(channels) - 1):
        x = b.conv(x, channels[i], channels[i + 1], draw(st.sampled_from([1, 3])), f"conv{i + 1}")
        if draw(st.booleans()):
            x = b.batchnorm(x, channels[i + 1], f"bn{i + 1}")
        x = b.activation(x, draw(st.sampled_from(acts)))
        if channels[i + 1] > 1 and draw(st.booleans()):  # group=1 would be a plain conv
            x = b.depthwise(x, channels[i + 1], f"dw{i + 1}")
        if spatial % 2 == 0 and spatial > 2 and draw(st.booleans()):
            pool = draw(st.sampled_from(["MaxPool", "AveragePool"]))
            x = b.node(pool, [x], kernel_shape=[2, 2], strides=[2, 2])
            spatial //= 2
    if head == "global_pool":
        x = b.node("GlobalAveragePool", [x])
        x = b.node("Flatten", [x], axis=1)
        features = channels[-1]
    elif head == "flatten":
        x = b.node("Flatten", [x], axis=1)
        features = channels[-1] * spatial * spatial
    else:
        x = b.node("Reshape", [x, b.constant(np.array([0, -1], np.int64), "shape")])
        features = channels[-1] * spatial * spatial
    if dynamic_spatial and head != "global_pool":
        b.layers[-1].expect = "refuse"  # Flatten/Reshape would merge the channels with dynamic axes
        b.layers[-1].why = "flatten over dynamic spatial axes"
    hidden = draw(st.integers(1, 6))
    x = b.dense(x, features, hidden, "fc1", draw(st.sampled_from(["gemm_t", "gemm", "matmul"])))
    x = b.activation(x, draw(st.sampled_from(acts)))
    b.dense(x, hidden, 3, "fc2", "gemm_t", "refuse")
    b.nodes[-1].output[0] = "y"
    b.dynamic_size.update(height=size, width=size)
    spatial_dim: int | str = "height" if dynamic_spatial else size
    width_dim: int | str = "width" if dynamic_spatial else size
    return ([b.value("x", [batch, channels[0], spatial_dim, width_dim])], [b.value("y", [batch, 3])])


def build_residual(b: GraphBuilder, draw: st.DrawFn, batch: int | str | None) -> tuple[list, list]:
    acts = activations_for(b.dtype, b.opset)
    d_in, d = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    blocks = draw(st.integers(1, 3))
    norm = available("LayerNormalization", b.dtype, b.opset) and draw(st.booleans())
    stream = b.dense("x", d_in, d, "fc_in", draw(st.sampled_from(["gemm_t", "matmul"])))
    stream_layers = [b.layers[-1]]
    for k in range(blocks):
        hidden = draw(st.integers(1, 6))
        h = b.dense(stream, d, hidden, f"block{k}.fc1", draw(st.sampled_from(["gemm_t", "gemm", "matmul"])))
        h = b.activation(h, draw(st.sampled_from(acts)))
        h = b.dense(h, hidden, d, f"block{k}.fc2", draw(st.sampled_from(["gemm_t", "matmul"])))
        stream_layers.append(b.layers[-1])
        stream = b.node("Add", [stream, h])
    if norm:
        stream = b.layernorm(stream, d, "norm")
        for layer in stream_layers:
            layer.multiple_of = d
    b.dense(stream, d, 2, "head", "gemm_t", "refuse")
    b.nodes[-1].output[0] = "y"
    return [b.value("x", [batch, d_in])], [b.value("y", [batch, 2])]


def build_ffn(b: GraphBuilder, draw: st.DrawFn, batch: int | str | None) -> tuple[list, list]:
    """Transformer FFN on [B, T, D]: x + W2·act(W1·x), then a head; W1's width F is growable."""
    d, f = draw(st.integers(1, 6)), draw(st.integers(1, 8))
    seq: int | str | None = draw(st.sampled_from([3, "seq", None]))
    static = isinstance(batch, int) and isinstance(seq, int)
    gelus = [g for g in ("Erf", "Gelu") if available(g, b.dtype, b.opset)]
    gelu = draw(st.sampled_from(["Relu", *gelus]))  # Erf: decomposed GELU
    flat = static and draw(st.booleans())  # exporter style: Reshape [B·T, D] → Gemm → Reshape back
    x = "x"
    if flat:
        x = b.node("Reshape", [x, b.constant(np.array([-1, d], np.int64), "shape")])
        h = b.dense(x, d, f, "ffn.fc1", "gemm_t")
        h = b.node("Reshape", [h, b.constant(np.array([batch, seq, f], np.int64), "shape")])
    else:
        h = b.dense(x, d, f, "ffn.fc1", "matmul", rank3=True)
    if gelu == "Erf":
        inner = b.node("Erf", [b.node("Div", [h, b.scalar(math.sqrt(2.0))])])
        gate = b.node("Mul", [b.node("Add", [inner, b.scalar(1.0)]), b.scalar(0.5)])
        h = b.node("Mul", [h, gate])
    else:
        h = b.activation(h, gelu)
    # x + h ties fc2's channels to the model input x, unless x has one channel and broadcasts.
    h = b.dense(h, f, d, "ffn.fc2", "matmul", "refuse" if d > 1 else "grow", rank3=True)
    out = b.node("Add", ["x", h])
    b.dense(out, d, 2, "head", "matmul", "refuse", rank3=True)
    b.nodes[-1].output[0] = "y"
    return [b.value("x", [batch, seq, d])], [b.value("y", [batch, seq, 2])]


FRAGMENTS = {"mlp": build_mlp, "cnn": build_cnn, "residual": build_residual, "ffn": build_ffn}


# ----- fixed models in one dtype (dtype, pipeline and grown-tensor tests) ------------------


def dtype_mlp(path: Path, dtype: int, widths: tuple[int, ...] = (3, 4, 5, 2), opset: int = 22) -> Path:
    """``fc1 → Tanh → fc2 → Relu → fc3`` (Gemm, MatMul+Add, Gemm) in ``dtype``."""
    b = GraphBuilder(dtype, opset, "legacy", np.random.default_rng(7))
    x = b.activation(b.dense("x", widths[0], widths[1], "fc1", "gemm_t"), "Tanh")
    x = b.activation(b.dense(x, widths[1], widths[2], "fc2", "matmul"), "Relu")
    b.dense(x, widths[2], widths[3], "fc3", "gemm", "refuse")
    b.nodes[-1].output[0] = "y"
    onnx.save(b.model([b.value("x", ["N", widths[0]])], [b.value("y", ["N", widths[3]])]), str(path))
    return path


def dtype_cnn(path: Path, dtype: int, opset: int = 22) -> Path:
    """``conv1 → Relu → MaxPool → conv2 → BatchNorm → Relu → Flatten → fc`` in ``dtype``."""
    b = GraphBuilder(dtype, opset, "legacy", np.random.default_rng(3))
    x = b.node("MaxPool", [b.activation(b.conv("x", 2, 3, 3, "conv1"), "Relu")], kernel_shape=[2, 2], strides=[2, 2])
    x = b.activation(b.batchnorm(b.conv(x, 3, 4, 3, "conv2"), 4, "bn2"), "Relu")
    b.dense(b.node("Flatten", [x], axis=1), 4 * 4 * 4, 2, "fc", "gemm_t", "refuse")
    b.nodes[-1].output[0] = "y"
    onnx.save(b.model([b.value("x", ["N", 2, 8, 8])], [b.value("y", ["N", 2])]), str(path))
    return path


@st.composite
def fuzz_models(draw: st.DrawFn, dtypes: list[int] | None = None) -> FuzzModel:
    """A random model of one fragment, dtype, opset, naming style and batch dimension."""
    dtype = draw(st.sampled_from(dtypes or DTYPES))
    opset = draw(st.integers(MIN_OPSET, max_opset()))
    cnn_ops = ("Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "BatchNormalization")
    fragments = [f for f in FRAGMENTS if f != "cnn" or all(available(op, dtype, opset) for op in cnn_ops)]
    fragment = draw(st.sampled_from(fragments))
    naming = draw(st.sampled_from(NAMING_STYLES))
    batch: int | str | None = draw(st.sampled_from([2, "batch", None]))
    builder = GraphBuilder(dtype, opset, naming, np.random.default_rng(draw(st.integers(0, 2**32 - 1))))
    inputs, outputs = FRAGMENTS[fragment](builder, draw, batch)
    proto = builder.model(inputs, outputs)
    onnx.checker.check_model(proto, full_check=True)
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else builder.dynamic_size.get(d.dim_param, 2)
                       for d in v.type.tensor_type.shape.dim] for v in inputs}
    return FuzzModel(proto, dtype, opset, fragment, builder.layers, shapes, builder.other_node_names)
