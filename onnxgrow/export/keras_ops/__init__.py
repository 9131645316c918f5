"""Keras functions for ONNX ops, one module per op family; importing this package
registers them (and imports Keras: choose the backend first, see
:func:`onnxgrow.export.keras_model.import_keras`)."""

from onnxgrow.export.keras_ops import (  # noqa: F401
    activations,
    elementwise,
    layers,
    pooling,
    reduction,
    shape_ops,
    shape_values,
)
from onnxgrow.export.keras_ops.registry import KERAS_OPS, KerasCall, LayerNames, Weight, onnx_layout, run_op

__all__ = ["KERAS_OPS", "KerasCall", "LayerNames", "Weight", "onnx_layout", "run_op"]
