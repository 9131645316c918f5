"""The Keras op registry: one function per ONNX op type, building Keras 3 layers and ops.

An op function receives a :class:`KerasCall` and the node's inputs: symbolic Keras
tensors for run-time values, :class:`Weight` for named weights (as the ONNX node reads
them), numpy arrays for other constants, ``None`` for omitted inputs. Ops with weights
(Gemm, MatMul, Conv, normalisations, Gather on an embedding table, PRelu) create
built-in Keras layers holding them as trainable variables, so the saved ``.keras`` file
loads with ``keras.saving.load_model`` without onnxgrow. Everything else uses
``keras.ops``, which Keras serialises inside the functional model.

Layout: Keras runs convolutions channels-last (every backend, on CPU). A run-time value
whose ONNX layout is channels-first (NCHW) may be held as :class:`ChannelsLast`, its
tensor in NHWC order. Ops registered with ``layout=CHANNELS_LAST`` take and give such
values themselves (Conv, pooling, BatchNormalization, Pad, Transpose, Squeeze, Shape,
Reshape); ``layout=ELEMENTWISE`` ops run on the channels-last tensor as is (their constants
permuted alike) and give a ChannelsLast result; every other op sees the ONNX layout (a
Transpose in the Keras model). So the NHWC↔NCHW Transposes tf2onnx writes around a
channels-last network cancel out, and a Keras model rebuilt from it has none.

Shapes: ``Shape`` gives a :class:`ShapeValue` when a size is known only at run time (the
batch); ops on shapes (:data:`SHAPE_OPS`: Gather, Cast, Slice, Concat, Unsqueeze, Squeeze
and a Reshape that reads one) compute it at build time, so tf2onnx's dynamic-batch
Flatten (Shape → Gather → Slice → Concat → Reshape) becomes one ``reshape(x, (-1, n))``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxgrow.errors import GrowError
from onnxgrow.export.keras_layout import keras_layer_name, norm_layer_of
from onnxgrow.export.windows import window_pads as onnx_window_pads


@dataclass(frozen=True)
class Weight:
    """A named weight as the ONNX node reads it (``onnx_name``: the initializer's name)."""

    name: str
    array: np.ndarray
    buffer: bool = False
    onnx_name: str = ""


@dataclass(frozen=True)
class ChannelsLast:
    """A run-time value of ONNX layout ``(N, C, *spatial)`` held as the Keras tensor
    ``(N, *spatial, C)``."""

    tensor: Any

    @property
    def rank(self) -> int:
        return len(self.tensor.shape)

    def onnx_shape(self) -> tuple[int | None, ...]:
        shape = tuple(self.tensor.shape)
        return (shape[0], shape[-1], *shape[1:-1])


@dataclass(frozen=True)
class ShapeValue:
    """A shape (or some of its sizes) known when the model is built: ``None`` for a size
    known only at run time. ``scalar``: a single size (0-D), not a list."""

    dims: tuple[int | None, ...]
    scalar: bool = False


def to_channels_last(perm_rank: int) -> tuple[int, ...]:
    """The permutation NCHW → NHWC for a rank."""
    return (0, *range(2, perm_rank), 1)


def to_channels_first(perm_rank: int) -> tuple[int, ...]:
    """The permutation NHWC → NCHW for a rank."""
    return (0, perm_rank - 1, *range(1, perm_rank - 1))


def onnx_layout(value: Any) -> Any:
    """A ChannelsLast value transposed back to the ONNX layout; anything else as is."""
    if isinstance(value, ChannelsLast):
        from keras import ops

        return ops.transpose(value.tensor, to_channels_first(value.rank))
    return value


def keras_axis(axis: int, rank: int) -> int:
    """Where ONNX axis ``axis`` of a ChannelsLast value of ``rank`` is in its tensor."""
    axis %= rank
    return 0 if axis == 0 else rank - 1 if axis == 1 else axis - 1


@dataclass
class LayerNames:
    """Unique Keras layer names made from framework names (``layer1.0.conv1`` → ``layer1_0_conv1``),
    and what the export noted about weights: those kept as constants, and how many layers
    each weight seeded (a tied weight seeds several, untied in Keras)."""

    keras3: bool = False  # the graph came from Keras 3 through tf2onnx (see onnxgrow.names)
    used: set[str] = field(default_factory=set)
    frozen: list[str] = field(default_factory=list)
    variables: dict[str, int] = field(default_factory=dict)  # weight name → Keras layers made from it

    def make(self, base: str) -> str:
        text = re.sub(r"\W+", "_", base).strip("_") or "layer"
        name, k = text, 1
        while name in self.used:
            name = f"{text}_{k}"
            k += 1
        self.used.add(name)
        return name


@dataclass
class KerasCall:
    """What a Keras op function knows besides its inputs."""

    attrs: Mapping[str, Any]
    opset: int
    node: str
    op_type: str
    outputs: int
    names: LayerNames

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def refuse(self, why: str) -> GrowError:
        return GrowError(f"cannot export {self.op_type} node {self.node!r} to Keras: {why}")

    def layer_name(self, weight: Weight | None) -> str:
        """The name of a new layer holding ``weight``: the Keras layer of a TensorFlow
        converter's name scope (the weight's, else the node's: ``model_1/fc1_1/MatMul`` →
        ``fc1``), else the weight's module (``fc1.weight`` → ``fc1``), else the node's name."""
        if weight is not None:
            self.names.variables[weight.name] = self.names.variables.get(weight.name, 0) + 1
        scoped = None if self.node.startswith("/") else self.node
        keras3 = self.names.keras3
        weight_scope = weight.onnx_name if weight is not None and not norm_layer_of(weight.onnx_name, keras3) else None
        base = keras_layer_name(weight_scope, keras3) or keras_layer_name(scoped, keras3)
        if base is None:
            base = weight.name.rpartition(".")[0] if weight is not None and "." in weight.name else self.node
        return self.names.make(base)

    def constant(self, value: Any) -> Any:
        """An input where Keras needs no variable: a Weight here is kept as a constant (noted)."""
        if isinstance(value, Weight):
            if value.name not in self.names.frozen:
                self.names.frozen.append(value.name)
            return value.array
        return value


KerasInput = Any | Weight | np.ndarray | None
KerasFunction = Callable[[KerasCall, list[KerasInput]], Any]


#: What an op does with ChannelsLast inputs (see the module docstring).
ONNX_LAYOUT, ELEMENTWISE, CHANNELS_LAST = "onnx", "elementwise", "channels_last"


@dataclass(frozen=True)
class KerasOp:
    function: KerasFunction
    outputs: int = 1
    layout: str = ONNX_LAYOUT


KERAS_OPS: dict[str, KerasOp] = {}
#: Ops computing on :class:`ShapeValue` inputs at build time.
SHAPE_OPS: dict[str, KerasFunction] = {}


def keras_op(*op_types: str, outputs: int = 1, layout: str = ONNX_LAYOUT) -> Callable[[KerasFunction], KerasFunction]:
    """Register the decorated function for ``op_types`` of the default ONNX domain."""

    def register(function: KerasFunction) -> KerasFunction:
        for op_type in op_types:
            if op_type in KERAS_OPS:
                raise ValueError(f"two Keras functions for {op_type}")
            KERAS_OPS[op_type] = KerasOp(function, outputs, layout)
        return function

    return register


def shape_op(*op_types: str) -> Callable[[KerasFunction], KerasFunction]:
    """Register the decorated function for ``op_types`` with a :class:`ShapeValue` input."""

    def register(function: KerasFunction) -> KerasFunction:
        for op_type in op_types:
            SHAPE_OPS[op_type] = function
        return function

    return register


def array_of(value: KerasInput) -> np.ndarray | None:
    """The numpy value of a constant input (a Weight's array too), else None."""
    if isinstance(value, Weight):
        return value.array
    return value if isinstance(value, np.ndarray) else None


def int_list(call: KerasCall, value: KerasInput, what: str) -> list[int]:
    """A constant integer input (shape, axes) as Python ints; refuse a run-time one."""
    array = array_of(value)
    if array is None:
        raise call.refuse(f"{what} must be a constant")
    return [int(v) for v in array.reshape(-1)]


def axes_of(call: KerasCall, inputs: list[KerasInput], index: int) -> list[int] | None:
    """Axes from input ``index`` (newer opsets) or the ``axes`` attribute."""
    if len(inputs) > index and inputs[index] is not None:
        return int_list(call, inputs[index], "axes")
    axes = call.attr("axes")
    return None if axes is None else list(axes)


def rank_of(x: Any) -> int:
    return len(x.shape)


def spatial_sizes(x: Any) -> list[int | None]:
    """The spatial sizes of a run-time value (NCHW tensor or ChannelsLast)."""
    return list(x.onnx_shape()[2:]) if isinstance(x, ChannelsLast) else list(x.shape[2:])


def window_pads(call: KerasCall, x: Any, kernel: list[int], strides: list[int],
                dilations: list[int]) -> tuple[list[int], list[int]]:
    """Begin and end padding of each spatial axis of the symbolic ``x``."""
    try:
        return onnx_window_pads(call.attrs, spatial_sizes(x), kernel, strides, dilations)
    except ValueError as exc:
        raise call.refuse(str(exc)) from None


def _elementwise_inputs(inputs: list[KerasInput]) -> list[KerasInput] | None:
    """The inputs of an elementwise op on a ChannelsLast value, all in channels-last order
    (constants permuted alike); None when a run-time input is in the ONNX layout."""
    layouts = [v for v in inputs if isinstance(v, ChannelsLast)]
    if not layouts:
        return None
    rank = layouts[0].rank
    result: list[KerasInput] = []
    for value in inputs:
        array = array_of(value)
        if isinstance(value, ChannelsLast):
            if value.rank != rank:
                return None
            result.append(value.tensor)
        elif value is None or (array is not None and array.ndim == 0):
            result.append(value)
        elif array is not None and array.ndim <= rank:
            permuted = np.ascontiguousarray(np.transpose(array.reshape((1,) * (rank - array.ndim) + array.shape),
                                                        to_channels_last(rank)))
            result.append(Weight(value.name, permuted, value.buffer, value.onnx_name)
                          if isinstance(value, Weight) else permuted)
        else:
            return None
    return result


def run_op(call: KerasCall, inputs: list[KerasInput]) -> Any:
    """Call the function registered for ``call.op_type`` with its inputs in the layout it
    takes (see the module docstring)."""
    if any(isinstance(v, ShapeValue) for v in inputs):
        function = SHAPE_OPS.get(call.op_type)
        if function is None:
            raise call.refuse("it computes on a tensor's run-time shape, which only "
                              f"{', '.join(sorted(SHAPE_OPS))} may do")
        return function(call, inputs)
    op = KERAS_OPS[call.op_type]
    if op.layout == CHANNELS_LAST:
        return op.function(call, inputs)
    if op.layout == ELEMENTWISE:
        channels_last = _elementwise_inputs(inputs)
        if channels_last is not None:
            result = op.function(call, channels_last)
            return ChannelsLast(result)
    return op.function(call, [onnx_layout(v) for v in inputs])
