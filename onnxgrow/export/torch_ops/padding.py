"""Explicit padding of convolution and pooling inputs (the pads come from
:func:`onnxgrow.export.windows.window_pads`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F

from onnxgrow.export.torch_ops.registry import OpCall, Tensor
from onnxgrow.export.windows import window_pads as onnx_window_pads


def window_pads(call: OpCall, x: Tensor, kernel: Sequence[int], strides: Sequence[int],
                dilations: Sequence[int]) -> tuple[list[int], list[int]]:
    """Begin and end padding of each spatial axis of ``x``."""
    return onnx_window_pads(call.attrs, list(x.shape[2:]), kernel, strides, dilations)


def pad_input(x: Tensor, begins: Sequence[int], ends: Sequence[int], value: float = 0.0) -> Tensor:
    """``x`` padded explicitly on its spatial axes (F.pad lists the last axis first)."""
    pairs: list[int] = []
    for b, e in zip(reversed(begins), reversed(ends)):
        pairs += [b, e]
    return F.pad(x, pairs, value=value)


def symmetric(begins: Sequence[int], ends: Sequence[int]) -> bool:
    return list(begins) == list(ends)
