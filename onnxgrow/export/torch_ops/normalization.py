"""BatchNormalization, LayerNormalization, InstanceNormalization, GroupNormalization, LRN.

BatchNormalization follows the module's mode like ``nn.BatchNorm``: in eval it uses the
running statistics (the ONNX inference semantics); in training it normalises with the
batch statistics and updates the running buffers in place with PyTorch's momentum
``1 - onnx_momentum``. ``num_batches_tracked`` is not counted: it only matters to
``nn.BatchNorm`` with ``momentum=None``, which ONNX cannot express.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from onnxgrow.export.torch_ops.registry import Inputs, OpCall, Tensor, normalize_axis, torch_op


@torch_op("BatchNormalization")
def batch_norm(call: OpCall, inputs: Inputs) -> Tensor:
    """A node exported with ``training_mode=1`` uses batch statistics in eval too, without
    updating the running ones (what onnxruntime computes)."""
    x, scale, bias, mean, var = (inputs[i] for i in range(5))
    if call.attr("training_mode", 0) and not call.training:
        return F.batch_norm(x, None, None, scale, bias, True, 0.0, call.attr("epsilon", 1e-5))
    return F.batch_norm(x, mean, var, scale, bias, call.training, 1.0 - call.attr("momentum", 0.9),
                        call.attr("epsilon", 1e-5))


@torch_op("LayerNormalization")
def layer_norm(call: OpCall, inputs: Inputs) -> Tensor:
    """Normalises over the axes from ``axis`` to the last; scale and bias broadcast."""
    x, scale = inputs[0], inputs[1]
    bias = inputs.optional(2)
    axis = normalize_axis(call.attr("axis", -1), x.dim())
    shape = tuple(x.shape[axis:])
    eps = call.attr("epsilon", 1e-5)
    if tuple(scale.shape) == shape and (bias is None or tuple(bias.shape) == shape):
        return F.layer_norm(x, shape, scale, bias, eps)
    y = F.layer_norm(x, shape, None, None, eps) * scale
    return y + bias if bias is not None else y


@torch_op("InstanceNormalization")
def instance_norm(call: OpCall, inputs: Inputs) -> Tensor:
    x, scale, bias = inputs[0], inputs[1], inputs[2]
    return F.instance_norm(x, weight=scale, bias=bias, eps=call.attr("epsilon", 1e-5))


@torch_op("GroupNormalization")
def group_norm(call: OpCall, inputs: Inputs) -> Tensor:
    """Opset 21 scales per channel; opset 18 per group (spread here over the group's channels)."""
    x, scale, bias = inputs[0], inputs[1], inputs[2]
    groups = call.attr("num_groups")
    channels = x.shape[1]
    if scale.numel() == groups and groups != channels:
        scale = torch.repeat_interleave(scale, channels // groups)
        bias = torch.repeat_interleave(bias, channels // groups)
    return F.group_norm(x, groups, scale, bias, call.attr("epsilon", 1e-5))


@torch_op("LRN")
def local_response_norm(call: OpCall, inputs: Inputs) -> Tensor:
    """``x / (bias + alpha/size · Σ x²)^beta``, the sum over the ``size`` channels from
    ``c - ⌊(size-1)/2⌋`` to ``c + ⌈(size-1)/2⌉`` (zeros past the edges). For an even
    size the window leans the other way from ``F.local_response_norm``'s, so the sum is
    pooled here."""
    x = inputs[0]
    size = call.attr("size")
    squares = (x * x).reshape(x.shape[0], 1, x.shape[1], -1)
    squares = F.pad(squares, (0, 0, (size - 1) // 2, size // 2))
    mean = F.avg_pool2d(squares, (size, 1), stride=1).reshape(x.shape)
    return x / (call.attr("bias", 1.0) + call.attr("alpha", 1e-4) * mean) ** call.attr("beta", 0.75)
