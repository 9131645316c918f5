"""Conv and ConvTranspose (1-D, 2-D, 3-D, grouped)."""

from __future__ import annotations

import torch.nn.functional as F

from onnxgrow.export.torch_ops.padding import pad_input, symmetric, window_pads
from onnxgrow.export.torch_ops.registry import Inputs, OpCall, Tensor, torch_op

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _geometry(call: OpCall, w: Tensor) -> tuple[int, list[int], list[int], list[int]]:
    rank = w.dim() - 2
    kernel = list(call.attr("kernel_shape") or w.shape[2:])
    return rank, kernel, list(call.attr("strides") or [1] * rank), list(call.attr("dilations") or [1] * rank)


@torch_op("Conv")
def conv(call: OpCall, inputs: Inputs) -> Tensor:
    x, w = inputs[0], inputs[1]
    b = inputs.optional(2)
    rank, kernel, strides, dilations = _geometry(call, w)
    if rank not in _CONV:
        raise call.refuse(f"{rank}-D convolution is not supported")
    begins, ends = window_pads(call, x, kernel, strides, dilations)
    if not symmetric(begins, ends):
        x, begins = pad_input(x, begins, ends), [0] * rank
    return _CONV[rank](x, w, b, strides, begins, dilations, call.attr("group", 1))


@torch_op("ConvTranspose")
def conv_transpose(call: OpCall, inputs: Inputs) -> Tensor:
    """Computed unpadded, then the ONNX pads are cropped off each spatial end."""
    x, w = inputs[0], inputs[1]
    b = inputs.optional(2)
    rank, _, strides, dilations = _geometry(call, w)
    if rank not in _CONV_TRANSPOSE:
        raise call.refuse(f"{rank}-D transposed convolution is not supported")
    if call.attr("output_shape") is not None or call.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise call.refuse("output_shape and SAME auto_pad are not supported; give explicit pads")
    explicit = call.attr("auto_pad", "NOTSET") == "NOTSET"
    pads = list(call.attr("pads") or [0] * (2 * rank)) if explicit else [0] * (2 * rank)
    output_padding = list(call.attr("output_padding") or [0] * rank)
    y = _CONV_TRANSPOSE[rank](x, w, b, strides, 0, output_padding, call.attr("group", 1), dilations)
    for axis in range(rank):
        size = y.shape[2 + axis]
        y = y.narrow(2 + axis, pads[axis], size - pads[axis] - pads[rank + axis])
    return y
