"""Gemm and MatMul."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from onnxgrow.export.torch_ops.registry import Inputs, OpCall, Tensor, torch_op


@torch_op("Gemm")
def gemm(call: OpCall, inputs: Inputs) -> Tensor:
    """``alpha · A' B' + beta · C`` with A' = Aᵀ when transA, B' = Bᵀ when transB."""
    a, b = inputs[0], inputs[1]
    c = inputs.optional(2)
    alpha, beta = call.attr("alpha", 1.0), call.attr("beta", 1.0)
    if call.attr("transA", 0):
        a = a.t()
    if call.attr("transB", 0) and alpha == 1.0 and beta == 1.0 and (c is None or c.dim() <= 1):
        return F.linear(a, b, c)
    y = a @ (b.t() if call.attr("transB", 0) else b)
    if alpha != 1.0:
        y = alpha * y
    if c is not None:
        y = y + (beta * c if beta != 1.0 else c)
    return y


@torch_op("MatMul")
def matmul(call: OpCall, inputs: Inputs) -> Tensor:
    return torch.matmul(inputs[0], inputs[1])
