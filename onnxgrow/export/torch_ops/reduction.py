"""Reductions (ReduceMean, ReduceSum, ReduceMax, ReduceMin, ReduceProd, ReduceL1/L2,
ReduceSumSquare, ReduceLogSumExp), ArgMax/ArgMin and the running sum CumSum.

Axes are the ``axes`` attribute before opset 18 (13 for ReduceSum) and an input after;
no axes reduce everything, unless ``noop_with_empty_axes`` makes that the identity.
"""

from __future__ import annotations

import torch

from onnxgrow.export.torch_ops.registry import Inputs, OpCall, Tensor, axes_from, normalize_axis, torch_op


def _prod(x: Tensor, dim: list[int], keepdim: bool) -> Tensor:
    for axis in sorted(dim, reverse=True):
        x = torch.prod(x, dim=axis, keepdim=keepdim)
    return x


_REDUCE = {
    "ReduceMean": lambda x, d, k: torch.mean(x, dim=d, keepdim=k),
    "ReduceSum": lambda x, d, k: torch.sum(x, dim=d, keepdim=k),
    "ReduceMax": lambda x, d, k: torch.amax(x, dim=d, keepdim=k),
    "ReduceMin": lambda x, d, k: torch.amin(x, dim=d, keepdim=k),
    "ReduceProd": _prod,
    "ReduceL1": lambda x, d, k: torch.sum(x.abs(), dim=d, keepdim=k),
    "ReduceL2": lambda x, d, k: torch.sqrt(torch.sum(x * x, dim=d, keepdim=k)),
    "ReduceSumSquare": lambda x, d, k: torch.sum(x * x, dim=d, keepdim=k),
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, dim=d, keepdim=k),
}


def _reduce(call: OpCall, inputs: Inputs) -> Tensor:
    x = inputs[0]
    axes = axes_from(call, inputs, 1)
    if not axes:
        if call.attr("noop_with_empty_axes", 0):
            return x
        axes = list(range(x.dim()))
    dims = sorted({normalize_axis(a, x.dim()) for a in axes})
    return _REDUCE[call.op_type](x, dims, bool(call.attr("keepdims", 1)))


torch_op(*_REDUCE)(_reduce)


def _arg(call: OpCall, inputs: Inputs, function) -> Tensor:
    """``select_last_index`` picks the last of equal extremes (searched on the flipped axis)."""
    x = inputs[0]
    axis = normalize_axis(call.attr("axis", 0), x.dim())
    keepdims = bool(call.attr("keepdims", 1))
    if call.attr("select_last_index", 0):
        flipped = function(torch.flip(x, dims=[axis]), dim=axis, keepdim=keepdims)
        return x.shape[axis] - 1 - flipped
    return function(x, dim=axis, keepdim=keepdims)


@torch_op("ArgMax")
def arg_max(call: OpCall, inputs: Inputs) -> Tensor:
    return _arg(call, inputs, torch.argmax)


@torch_op("ArgMin")
def arg_min(call: OpCall, inputs: Inputs) -> Tensor:
    return _arg(call, inputs, torch.argmin)


@torch_op("CumSum")
def cum_sum(call: OpCall, inputs: Inputs) -> Tensor:
    """Running sums along the axis given as input 1, in the input's dtype; ``reverse``
    sums from the end, ``exclusive`` leaves each element out of its own sum (the sums
    shifted by one, a zero first)."""
    x = inputs[0]
    axis = normalize_axis(inputs.ints(1)[0], x.dim())
    if call.attr("reverse", 0):
        x = torch.flip(x, dims=[axis])
    sums = torch.cumsum(x, dim=axis, dtype=x.dtype)
    if call.attr("exclusive", 0):
        zero = torch.zeros_like(x.narrow(axis, 0, min(1, x.shape[axis])))
        sums = torch.cat([zero, sums.narrow(axis, 0, x.shape[axis] - zero.shape[axis])], dim=axis)
    return torch.flip(sums, dims=[axis]) if call.attr("reverse", 0) else sums
