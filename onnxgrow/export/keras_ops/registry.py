"""The Keras op registry: one function per ONNX op type, building Keras 3 layers and ops.

An op function receives a :class:`KerasCall` and the node's inputs: symbolic Keras
tensors for run-time values, :class:`Weight` for named weights (as the ONNX node reads
them), numpy arrays for other constants, ``None`` for omitted inputs. Ops with weights
(Gemm, MatMul, Conv, normalisations, Gather on an embedding table, PRelu) create
built-in Keras layers holding them as trainable variables, so the saved ``.keras`` file
loads with ``keras.saving.load_model`` without onnxgrow. Everything else uses
``keras.ops``, which Keras serialises inside the functional model.

Data stays in the ONNX layout (NCHW); convolutions transpose to channels-last and back
around a channels-last Keras layer, which every backend runs on CPU.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxgrow.errors import GrowError
from onnxgrow.export.windows import window_pads as onnx_window_pads


@dataclass(frozen=True)
class Weight:
    """A named weight as the ONNX node reads it."""

    name: str
    array: np.ndarray
    buffer: bool = False


@dataclass
class LayerNames:
    """Unique Keras layer names made from framework names (``layer1.0.conv1`` → ``layer1_0_conv1``),
    and what the export noted about weights: those kept as constants, and how many layers
    each weight seeded (a tied weight seeds several, untied in Keras)."""

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
        """The name of a new layer holding ``weight``: from the weight's module (``fc1.weight``
        → ``fc1``), else the node's."""
        if weight is not None:
            self.names.variables[weight.name] = self.names.variables.get(weight.name, 0) + 1
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


@dataclass(frozen=True)
class KerasOp:
    function: KerasFunction
    outputs: int = 1


KERAS_OPS: dict[str, KerasOp] = {}


def keras_op(*op_types: str, outputs: int = 1) -> Callable[[KerasFunction], KerasFunction]:
    """Register the decorated function for ``op_types`` of the default ONNX domain."""

    def register(function: KerasFunction) -> KerasFunction:
        for op_type in op_types:
            if op_type in KERAS_OPS:
                raise ValueError(f"two Keras functions for {op_type}")
            KERAS_OPS[op_type] = KerasOp(function, outputs)
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


def window_pads(call: KerasCall, x: Any, kernel: list[int], strides: list[int],
                dilations: list[int]) -> tuple[list[int], list[int]]:
    """Begin and end padding of each spatial axis of the symbolic ``x``."""
    try:
        return onnx_window_pads(call.attrs, list(x.shape[2:]), kernel, strides, dilations)
    except ValueError as exc:
        raise call.refuse(str(exc)) from None
