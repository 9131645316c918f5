"""The Keras layers behind an ONNX graph's weights, each with its variables in Keras
layout and order (the Keras twin of :mod:`onnxgrow.parameter_names`).

One rule per ONNX op (:data:`KERAS_LAYOUT_RULES`), reading the array the node sees:

- ``MatMul`` with a 2-D constant, ``Gemm`` → **Dense**: ``kernel [in, out]`` (Gemm's
  ``transB`` undone, ``alpha`` folded in), ``bias [out]`` from the ``Add`` that follows a
  MatMul or Gemm's C (times ``beta``).
- ``Conv`` → **Conv1D/2D/3D**: ``kernel [k..., in/groups, out]`` from ONNX
  ``[out, in/groups, k...]``, ``bias``. A conv with one filter group per input channel
  (``group == in``) is a **DepthwiseConv2D**: ``kernel [kh, kw, in, multiplier]``.
- ``BatchNormalization`` → **BatchNormalization**: ``gamma, beta, moving_mean,
  moving_variance``. tf2onnx also writes a Keras BatchNormalization as ``Mul``/``Add`` by
  per-channel constants in the layer's ``batchnorm`` scope, or folds it into the conv
  before it (the conv's bias is then named in that scope). Those become a
  BatchNormalization with ``moving_mean 0`` and ``moving_variance 1 - epsilon``
  (``epsilon`` Keras' default 0.001), so it computes ``gamma · x + beta``; the
  weights a fold left in the conv stay there. Each such layer is noted.
- ``LayerNormalization`` → **LayerNormalization**: ``gamma, beta``; tf2onnx writes a
  Keras one as ``moments``, then ``Mul`` by gamma and ``Add`` of beta in its scope.
- ``Gather`` of a 2-D constant on axis 0 → **Embedding**: ``embeddings``.

Biases: a Dense or conv layer without a bias in the ONNX model gets a zero one (a
converter drops an all-zero bias; Keras layers have one by default), noted. A conv right
before a BatchNormalization keeps its bias only with ``bias_before_norm=True`` (Keras'
default ``use_bias=True``); with False (``Conv2D(use_bias=False)`` as in
``keras.applications``) the bias moves into the BatchNormalization, exactly.

The Keras layer name is the name ``model.summary()`` prints, found from the node's (or
for a conv, its weight's) name scope by :func:`keras_layer_name`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from onnxgrow.errors import GrowError
from onnxgrow.names import is_keras3_graph, keras_layer_path
from onnxgrow.parameter_names import constant_ref

#: Keras' BatchNormalization epsilon, for the layers tf2onnx rewrote or folded.
KERAS_NORM_EPSILON = 1e-3
#: The variables of each Keras layer class, in the order Keras stores them.
KERAS_VARIABLES: dict[str, tuple[str, ...]] = {
    "Dense": ("kernel", "bias"),
    "Conv1D": ("kernel", "bias"),
    "Conv2D": ("kernel", "bias"),
    "Conv3D": ("kernel", "bias"),
    "DepthwiseConv2D": ("kernel", "bias"),
    "BatchNormalization": ("gamma", "beta", "moving_mean", "moving_variance"),
    "LayerNormalization": ("gamma", "beta"),
    "Embedding": ("embeddings",),
}
_NORM_SCOPES = ("/batchnorm/", "/FusedBatchNorm")


def keras_layer_name(name: str | None, keras3: bool) -> str | None:
    """The Keras layer a tf2onnx node or tensor name belongs to (``model_1/fc1_1/MatMul`` →
    ``fc1``; see :func:`onnxgrow.names.keras_layer_path`), None without a layer scope."""
    path = keras_layer_path(name, keras3)
    return path.rsplit("/", 1)[-1] if path else None


@dataclass
class KerasLayer:
    """One Keras layer's variables (Keras layout), keyed by Keras variable name in order. A
    variable taken from a weight as it is or transposed is a view of the weight (of the
    memory-mapped file, for external data), not a copy."""

    name: str
    kind: str
    variables: dict[str, np.ndarray]
    node: str

    def ordered(self) -> list[np.ndarray]:
        """The variables in Keras' order (``layer.get_weights()``)."""
        return [self.variables[v] for v in KERAS_VARIABLES[self.kind] if v in self.variables]


@dataclass
class KerasWeights:
    """The layers in graph order, and what mapping them noticed."""

    layers: list[KerasLayer] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def layer(self, name: str) -> KerasLayer | None:
        return next((layer for layer in self.layers if layer.name == name), None)


class _Context:
    """What the rules share: the layers found so far, by node output, and the options."""

    def __init__(self, graph: ir.Graph, bias_before_norm: bool) -> None:
        self.keras3 = is_keras3_graph(graph)
        #: layers whose scope computes ``moments`` (tf2onnx's LayerNormalization)
        self.moments = {keras_layer_name(n.name.split("/moments/")[0] + "/moments", self.keras3)
                        for n in graph if n.name and "/moments/" in n.name}
        self.result = KerasWeights()
        self.bias_before_norm = bias_before_norm
        self.by_output: dict[int, KerasLayer] = {}  # id(output value) → the layer computing it
        self.zero_bias: list[KerasLayer] = []

    def layer_of(self, node: ir.Node) -> str | None:
        """The Keras layer of a node: its scope's, else its weight's (input 1)."""
        return keras_layer_name(node.name, self.keras3) or _weight_layer(node, self)

    def add(self, node: ir.Node, kind: str, name: str | None, variables: dict[str, np.ndarray]) -> KerasLayer:
        label = node.name or node.op_type
        if name is None:
            raise GrowError(f"cannot export Keras weights: {node.op_type} node {label!r} has no Keras layer "
                            "name (its name has no layer scope)")
        if self.result.layer(name) is not None:
            raise GrowError(f"cannot export Keras weights: two layers are named {name!r} "
                            f"(the second is {node.op_type} node {label!r})")
        layer = KerasLayer(name, kind, variables, label)
        self.result.layers.append(layer)
        self.by_output[id(node.outputs[0])] = layer
        return layer


def _const(value: ir.Value | None) -> np.ndarray | None:
    ref = constant_ref(value)
    return ref.array() if ref is not None and ref.dtype.is_floating_point() else None


def _single_consumer(value: ir.Value, op_type: str) -> ir.Node | None:
    users = [use.node for use in value.uses()]
    return users[0] if len(users) == 1 and users[0].op_type == op_type else None


def _per_channel(array: np.ndarray | None, channels: int) -> np.ndarray | None:
    """A constant broadcast along one axis of ``channels`` entries (``[C]``, ``[1, C, 1, 1]``) as ``[C]``."""
    if array is None or array.size != channels or max(array.shape, default=1) != channels:
        return None
    return array.reshape(channels)


def _dense_bias(node: ir.Node, units: int) -> tuple[np.ndarray | None, ir.Node | None]:
    """The bias the ``Add`` after a MatMul puts on its output (also after the Reshape back to
    3-D of tf2onnx's Dense over 3-D input), and that Add."""
    reshape = _single_consumer(node.outputs[0], "Reshape")
    output = (reshape or node).outputs[0]
    add = _single_consumer(output, "Add")
    if add is None:
        return None, None
    other = add.inputs[1] if add.inputs[0] is output else add.inputs[0]
    bias = _per_channel(_const(other), units)
    return (bias, add) if bias is not None and (_const(other).ndim == 1) else (None, None)  # type: ignore[union-attr]


def _dense(node: ir.Node, kernel: np.ndarray, bias: np.ndarray | None, context: _Context,
           output: ir.Value) -> None:
    layer = context.add(node, "Dense", context.layer_of(node), {"kernel": kernel})
    if bias is None:
        bias = np.zeros(kernel.shape[1], kernel.dtype)
        context.zero_bias.append(layer)
    layer.variables["bias"] = bias
    context.by_output[id(output)] = layer


def _weight_layer(node: ir.Node, context: _Context) -> str | None:
    weight = node.inputs[1] if len(node.inputs) > 1 else None
    ref = constant_ref(weight)
    return keras_layer_name(ref.root.name, context.keras3) if ref is not None else None


def _matmul(node: ir.Node, context: _Context) -> None:
    kernel = _const(node.inputs[1])
    if kernel is None or kernel.ndim != 2:
        return
    bias, add = _dense_bias(node, kernel.shape[1])
    _dense(node, kernel, bias, context, add.outputs[0] if add is not None else node.outputs[0])


def _gemm(node: ir.Node, context: _Context) -> None:
    b = _const(node.inputs[1])
    if b is None or bool(node.attributes.get_int("transA", 0)):
        return
    kernel = _scaled(b.T if node.attributes.get_int("transB", 0) else b, node.attributes.get_float("alpha", 1.0))
    c = _const(node.inputs[2]) if len(node.inputs) > 2 else None
    bias = _per_channel(c, kernel.shape[1])
    if bias is not None:
        bias = _scaled(bias, node.attributes.get_float("beta", 1.0))
    _dense(node, kernel, bias, context, node.outputs[0])


def _scaled(array: np.ndarray, factor: float) -> np.ndarray:
    """``array * factor`` in its dtype; ``array`` itself (a view of the weights, not a copy)
    when the factor is 1, which changes no value."""
    return array if factor == 1.0 else array * np.asarray(factor, array.dtype)


def norm_layer_of(name: str | None, keras3: bool) -> str | None:
    """The BatchNormalization layer a name in a tf2onnx ``batchnorm`` scope (Keras 3) or a
    ``FusedBatchNorm`` op (tf.keras 2) belongs to."""
    return keras_layer_name(name, keras3) if name and any(scope in name for scope in _NORM_SCOPES) else None


def _conv(node: ir.Node, context: _Context) -> None:
    w = _const(node.inputs[1])
    if w is None:
        return
    rank = w.ndim - 2
    groups = node.attributes.get_int("group", 1)
    channels_in = w.shape[1] * groups
    bias_value = node.inputs[2] if len(node.inputs) > 2 else None
    bias = _const(bias_value)
    conv_name = _weight_layer(node, context)
    if conv_name is None or norm_layer_of(constant_ref(node.inputs[1]).root.name, context.keras3):  # type: ignore[union-attr]
        conv_name = keras_layer_name(node.name, context.keras3)
    if groups > 1 and groups == channels_in and w.shape[1] == 1 and rank == 2:
        kind = "DepthwiseConv2D"
        kernel = w.reshape(channels_in, w.shape[0] // channels_in, *w.shape[2:]).transpose(2, 3, 0, 1)
    else:
        kind = f"Conv{rank}D"
        kernel = np.transpose(w, (*range(2, rank + 2), 1, 0))
    layer = context.add(node, kind, conv_name, {"kernel": kernel})
    folded = (norm_layer_of(node.name, context.keras3) or norm_layer_of(node.outputs[0].name, context.keras3)
              or norm_layer_of(bias_value.name if bias_value is not None else None, context.keras3))
    if folded is not None and folded != conv_name:
        _folded_norm(node, layer, folded, bias, w.shape[0], context)
        return
    if bias is None:
        bias = np.zeros(w.shape[0], w.dtype)
        context.zero_bias.append(layer)
    layer.variables["bias"] = bias.reshape(-1)


def _identity_norm(channels: int, dtype: np.dtype) -> dict[str, np.ndarray]:
    return {"gamma": np.ones(channels, dtype), "beta": np.zeros(channels, dtype),
            "moving_mean": np.zeros(channels, dtype),
            "moving_variance": np.full(channels, 1 - KERAS_NORM_EPSILON, dtype)}


def _folded_norm(node: ir.Node, conv: KerasLayer, norm_name: str, bias: np.ndarray | None, channels: int,
                 context: _Context) -> None:
    """A BatchNormalization tf2onnx folded into ``conv``: its shift (the conv's bias) goes
    to the conv's bias or the norm's beta, and the norm is an identity otherwise."""
    dtype = conv.variables["kernel"].dtype
    shift = bias.reshape(-1) if bias is not None else np.zeros(channels, dtype)
    norm = context.add(node, "BatchNormalization", norm_name, _identity_norm(channels, dtype))
    if context.bias_before_norm:
        conv.variables["bias"] = shift
    else:
        norm.variables["beta"] = shift
    context.result.notes.append(
        f"BatchNormalization {norm_name} was folded into {conv.kind} {conv.name} by the converter: "
        f"{conv.name}'s kernel{' and bias' if context.bias_before_norm else ''} hold the folded values, "
        f"{norm_name} is written as gamma 1, {'beta 0' if context.bias_before_norm else 'beta the shift'}, "
        f"moving_mean 0, moving_variance {1 - KERAS_NORM_EPSILON:g} (for epsilon {KERAS_NORM_EPSILON:g})")


def _channels_of(value: ir.Value) -> int | None:
    dims = value.shape.dims if value.shape is not None else ()
    return dims[1] if len(dims) > 1 and isinstance(dims[1], int) else None


def _layer_norm_from_arithmetic(node: ir.Node, context: _Context) -> None:
    """tf2onnx's Keras LayerNormalization: ``moments`` of the input, then a ``Mul`` by gamma
    and an ``Add`` of beta (constants over the normalised axis) in the layer's scope."""
    name = keras_layer_name(node.name, context.keras3)
    constants = [a for a in (_const(v) for v in node.inputs) if a is not None and a.size > 1]
    if name is None or name not in context.moments or len(constants) != 1:
        return
    values = constants[0].reshape(-1)
    layer = context.result.layer(name)
    if layer is None:
        layer = context.add(node, "LayerNormalization", name,
                            {"gamma": np.ones_like(values), "beta": np.zeros_like(values)})
    layer.variables["gamma" if node.op_type == "Mul" else "beta"] = values


def _arithmetic(node: ir.Node, context: _Context) -> None:
    """A Mul/Add by constants: part of a BatchNormalization or LayerNormalization tf2onnx wrote."""
    if norm_layer_of(node.name, context.keras3) is not None:
        _norm_from_arithmetic(node, context)
    else:
        _layer_norm_from_arithmetic(node, context)


def _norm_from_arithmetic(node: ir.Node, context: _Context) -> None:
    """``Mul``/``Add`` by a per-channel constant in a tf2onnx ``batchnorm`` scope."""
    name = norm_layer_of(node.name, context.keras3)
    if name is None:
        return
    x, constant = (node.inputs[0], node.inputs[1]) if _const(node.inputs[0]) is None else (
        node.inputs[1], node.inputs[0])
    array = _const(constant)
    if x is None or array is None:
        return
    channels = max(array.shape, default=1)
    values = _per_channel(array, channels)
    if values is None:
        return
    layer = context.result.layer(name)
    source = context.by_output.get(id(x))
    if layer is None or layer.kind != "BatchNormalization":
        layer = context.add(node, "BatchNormalization", name, _identity_norm(channels, values.dtype))
        context.result.notes.append(
            f"BatchNormalization {name} was written by the converter as Mul/Add by constants: it is written "
            f"as gamma the scale, beta the shift, moving_mean 0, moving_variance {1 - KERAS_NORM_EPSILON:g} "
            f"(for epsilon {KERAS_NORM_EPSILON:g})")
        if source is not None and source.kind != "BatchNormalization":
            _move_bias_into_norm(source, layer, context)
    if node.op_type == "Mul":
        layer.variables["gamma"] = layer.variables["gamma"] * values
        layer.variables["beta"] = layer.variables["beta"] * values
    else:
        layer.variables["beta"] = layer.variables["beta"] + values
    context.by_output[id(node.outputs[0])] = layer


def _move_bias_into_norm(source: KerasLayer, norm: KerasLayer, context: _Context) -> None:
    """Without a bias before the norm, the layer's bias becomes the norm's (exact: it is
    added before the norm's scale and shift)."""
    if context.bias_before_norm or "bias" not in source.variables:
        return
    bias = source.variables.pop("bias")
    if source in context.zero_bias:
        context.zero_bias.remove(source)
    # (x + b - mean) / sd  ==  (x - (mean - b)) / sd
    norm.variables["moving_mean"] = norm.variables["moving_mean"] - bias


def _batch_norm(node: ir.Node, context: _Context) -> None:
    arrays = [_const(v) for v in node.inputs[1:5]]
    if any(a is None for a in arrays):
        return
    gamma, beta, mean, var = (a.reshape(-1) for a in arrays)  # type: ignore[union-attr]
    layer = context.add(node, "BatchNormalization", context.layer_of(node),
                        {"gamma": gamma, "beta": beta, "moving_mean": mean, "moving_variance": var})
    source = context.by_output.get(id(node.inputs[0]))
    if source is not None:
        _move_bias_into_norm(source, layer, context)


def _layer_norm(node: ir.Node, context: _Context) -> None:
    gamma = _const(node.inputs[1])
    if gamma is None:
        return
    beta = _const(node.inputs[2]) if len(node.inputs) > 2 else None
    context.add(node, "LayerNormalization", context.layer_of(node),
                {"gamma": gamma, "beta": beta if beta is not None else np.zeros_like(gamma)})


def _gather(node: ir.Node, context: _Context) -> None:
    table = _const(node.inputs[0])
    if table is None or table.ndim != 2 or node.attributes.get_int("axis", 0) != 0:
        return
    ref = constant_ref(node.inputs[0])
    context.add(node, "Embedding", keras_layer_name(node.name, context.keras3)
                or keras_layer_name(ref.root.name, context.keras3),  # type: ignore[union-attr]
                {"embeddings": table})


#: ONNX op → the rule that reads the Keras layer(s) behind one node.
KERAS_LAYOUT_RULES: dict[str, Callable[[ir.Node, _Context], None]] = {
    "MatMul": _matmul,
    "Gemm": _gemm,
    "Conv": _conv,
    "BatchNormalization": _batch_norm,
    "Mul": _arithmetic,
    "Add": _arithmetic,
    "LayerNormalization": _layer_norm,
    "Gather": _gather,
}


def keras_weights(model: ir.Model, *, bias_before_norm: bool = True) -> KerasWeights:
    """Every weighted Keras layer of ``model``'s main graph in graph order (see the module rules)."""
    context = _Context(model.graph, bias_before_norm)
    for node in model.graph:
        rule = KERAS_LAYOUT_RULES.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if rule is not None and id(node.outputs[0]) not in context.by_output:
            rule(node, context)
    context.result.notes += [f"{layer.kind} {layer.name}: no bias in the ONNX model (a converter drops an "
                             "all-zero bias); written as zeros" for layer in context.zero_bias]
    if not context.result.layers:
        raise GrowError("cannot export Keras weights: the model has no Dense, Conv, normalisation or "
                        "Embedding weights")
    return context.result
