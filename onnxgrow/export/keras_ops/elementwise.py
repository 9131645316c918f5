"""Binary and variadic elementwise ops, comparisons, Where, Cast (all run channels-last as is)."""

from __future__ import annotations

from functools import reduce
from typing import Any

import onnx_ir as ir
from keras import ops

from onnxgrow.export.keras_ops.registry import ELEMENTWISE, KerasCall, KerasInput, keras_op

_BINARY = {
    "Add": ops.add, "Sub": ops.subtract, "Mul": ops.multiply, "Div": ops.divide, "Pow": ops.power,
    "Equal": ops.equal, "Greater": ops.greater, "Less": ops.less, "GreaterOrEqual": ops.greater_equal,
    "LessOrEqual": ops.less_equal, "And": ops.logical_and, "Or": ops.logical_or, "Xor": ops.logical_xor,
}
_VARIADIC = {"Max": ops.maximum, "Min": ops.minimum, "Sum": ops.add}


def _binary(call: KerasCall, inputs: list[KerasInput]) -> Any:
    return _BINARY[call.op_type](call.constant(inputs[0]), call.constant(inputs[1]))


def _variadic(call: KerasCall, inputs: list[KerasInput]) -> Any:
    return reduce(_VARIADIC[call.op_type], [call.constant(t) for t in inputs if t is not None])


keras_op(*_BINARY, layout=ELEMENTWISE)(_binary)
keras_op(*_VARIADIC, layout=ELEMENTWISE)(_variadic)


@keras_op("Where", layout=ELEMENTWISE)
def where(call: KerasCall, inputs: list[KerasInput]) -> Any:
    return ops.where(*(call.constant(t) for t in inputs[:3]))


@keras_op("Cast", layout=ELEMENTWISE)
def cast(call: KerasCall, inputs: list[KerasInput]) -> Any:
    return ops.cast(inputs[0], ir.DataType(call.attr("to")).numpy().name)
