"""Binary and variadic elementwise ops (numpy broadcasting), comparisons, Where, Cast."""

from __future__ import annotations

from collections.abc import Callable
from functools import reduce

import numpy as np
import onnx_ir as ir
import torch

from onnxgrow.export.torch_ops.registry import Inputs, OpCall, Tensor, torch_op


def _div(a: Tensor, b: Tensor) -> Tensor:
    """Integer division truncates in ONNX."""
    if a.dtype.is_floating_point:
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


_BINARY: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": _div, "Pow": torch.pow,
    "Equal": torch.eq, "Greater": torch.gt, "Less": torch.lt, "GreaterOrEqual": torch.ge,
    "LessOrEqual": torch.le, "And": torch.logical_and, "Or": torch.logical_or,
    "Xor": torch.logical_xor,
}
_VARIADIC: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "Max": torch.maximum, "Min": torch.minimum, "Sum": torch.add,
}


def _binary(call: OpCall, inputs: Inputs) -> Tensor:
    a, b = inputs[0], inputs[1]
    result = _BINARY[call.op_type](a, b)
    return result.to(a.dtype) if call.op_type == "Pow" else result


def _variadic(call: OpCall, inputs: Inputs) -> Tensor:
    return reduce(_VARIADIC[call.op_type], inputs.present())


torch_op(*_BINARY)(_binary)
torch_op(*_VARIADIC)(_variadic)


@torch_op("Mean")
def mean(call: OpCall, inputs: Inputs) -> Tensor:
    present = inputs.present()
    return reduce(torch.add, present) / len(present)


@torch_op("Mod")
def mod(call: OpCall, inputs: Inputs) -> Tensor:
    """``fmod=1``: the sign of the dividend (C fmod); else of the divisor (Python %)."""
    a, b = inputs[0], inputs[1]
    return torch.fmod(a, b) if call.attr("fmod", 0) else torch.remainder(a, b)


@torch_op("Where")
def where(call: OpCall, inputs: Inputs) -> Tensor:
    return torch.where(inputs[0], inputs[1], inputs[2])


def torch_dtype(onnx_type: int) -> torch.dtype:
    """The torch dtype of an ONNX element type."""
    return torch.from_numpy(np.empty(0, dtype=ir.DataType(onnx_type).numpy())).dtype


@torch_op("Cast")
def cast(call: OpCall, inputs: Inputs) -> Tensor:
    return inputs[0].to(torch_dtype(call.attr("to")))


@torch_op("CastLike")
def cast_like(call: OpCall, inputs: Inputs) -> Tensor:
    return inputs[0].to(inputs[1].dtype)
