"""ReduceMean, ReduceSum, ReduceMax, ReduceMin with constant axes."""

from __future__ import annotations

from typing import Any

from keras import ops

from onnxgrow.export.keras_ops.registry import KerasCall, KerasInput, axes_of, keras_op, rank_of

_REDUCE = {"ReduceMean": ops.mean, "ReduceSum": ops.sum, "ReduceMax": ops.max, "ReduceMin": ops.min}


def _reduce(call: KerasCall, inputs: list[KerasInput]) -> Any:
    x: Any = inputs[0]  # a run-time Keras tensor (untyped)
    axes = axes_of(call, inputs, 1)
    if not axes:
        if call.attr("noop_with_empty_axes", 0):
            return x
        axes = list(range(rank_of(x)))
    return _REDUCE[call.op_type](x, axis=tuple(sorted(axes)), keepdims=bool(call.attr("keepdims", 1)))


keras_op(*_REDUCE)(_reduce)
