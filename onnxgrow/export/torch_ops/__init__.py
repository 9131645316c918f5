"""PyTorch functions for ONNX ops, one module per op family; importing this package registers them."""

from onnxgrow.export.torch_ops import (  # noqa: F401
    activations,
    control_flow,
    conv,
    elementwise,
    indexing,
    linear,
    normalization,
    pooling,
    reduction,
    resize,
    shape_ops,
)
from onnxgrow.export.torch_ops.registry import TORCH_OPS, Inputs, OpCall, TorchOp

__all__ = ["TORCH_OPS", "Inputs", "OpCall", "TorchOp"]
