"""The PyTorch op registry: one function per ONNX op type, computing the op's ONNX semantics.

An op function receives an :class:`OpCall` (the node's attributes as Python values, the
model's opset, whether the module is training, the node's name for messages, and its
subgraphs as functions that run them) and the node's inputs as tensors (``None`` for an
omitted optional input), and returns the node's output tensor or a tuple of them. Weights
arrive as the module's ``nn.Parameter``\\ s (in the layout the ONNX node expects), so
gradients flow into them.

Adding an op is one ``@torch_op("OpType")`` function in a module of this package, plus
a test comparing it with onnxruntime.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from onnxgrow.errors import GrowError

Tensor = torch.Tensor
OpResult = Tensor | Sequence[Tensor]


@dataclass(frozen=True)
class OpCall:
    """What an op function knows besides its inputs."""

    attrs: Mapping[str, Any]
    opset: int
    training: bool
    node: str
    op_type: str
    outputs: int = 1  # how many outputs the node has
    #: subgraph attribute name (an If's then_branch, else_branch) → runs it, returns its outputs
    branches: Mapping[str, Callable[[], tuple[Tensor, ...]]] = field(default_factory=dict)

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def refuse(self, why: str) -> GrowError:
        """A GrowError naming this node, to raise."""
        return GrowError(f"cannot run {self.op_type} node {self.node!r} in PyTorch: {why}")


class Inputs:
    """A node's inputs as an op function reads them.

    ``inputs[i]`` is a required input: a GrowError naming the node when the model omits
    it. ``inputs.optional(i)`` is None for an omitted optional input (an empty name, or
    none past the end); ``inputs.present()`` lists the given ones (variadic ops).
    """

    def __init__(self, call: OpCall, values: Sequence[Tensor | None]) -> None:
        self._call = call
        self._values = list(values)

    def __len__(self) -> int:
        return len(self._values)

    def __getitem__(self, index: int) -> Tensor:
        value = self.optional(index)
        if value is None:
            raise self._call.refuse(f"its input {index} is missing")
        return value

    def optional(self, index: int) -> Tensor | None:
        return self._values[index] if index < len(self._values) else None

    def present(self) -> list[Tensor]:
        return [value for value in self._values if value is not None]

    def ints(self, index: int) -> list[int]:
        """Required input ``index``, a 1-D integer tensor (shape, axes, pads), as Python ints."""
        return ints(self[index])

    def optional_ints(self, index: int) -> list[int] | None:
        value = self.optional(index)
        return None if value is None else ints(value)


OpFunction = Callable[[OpCall, Inputs], OpResult]


@dataclass(frozen=True)
class TorchOp:
    """A registered op: its function and how many outputs it computes."""

    function: OpFunction
    outputs: int = 1


TORCH_OPS: dict[str, TorchOp] = {}


def torch_op(*op_types: str, outputs: int = 1) -> Callable[[OpFunction], OpFunction]:
    """Register the decorated function for ``op_types`` of the default ONNX domain."""

    def register(function: OpFunction) -> OpFunction:
        for op_type in op_types:
            if op_type in TORCH_OPS:
                raise ValueError(f"two PyTorch functions for {op_type}")
            TORCH_OPS[op_type] = TorchOp(function, outputs)
        return function

    return register


def ints(tensor: Tensor) -> list[int]:
    """A 1-D integer tensor (shape, axes, pads) as Python ints."""
    return [int(v) for v in tensor.reshape(-1).tolist()]


def axes_from(call: OpCall, inputs: Inputs, index: int) -> list[int] | None:
    """Axes given as input ``index`` (newer opsets) or as the ``axes`` attribute."""
    given = inputs.optional_ints(index)
    if given is not None:
        return given
    axes = call.attr("axes")
    return None if axes is None else list(axes)


def normalize_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis
