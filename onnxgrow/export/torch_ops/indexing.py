"""Ops that pick elements by index: Gather, GatherElements, GatherND.

Negative indices count from the end of the axis they index, as in ONNX.
"""

from __future__ import annotations

import math

import torch

from onnxgrow.export.torch_ops.registry import Inputs, OpCall, Tensor, normalize_axis, torch_op


def _from_the_end(indices: Tensor, size: int | Tensor) -> Tensor:
    """``indices`` as int64 with negative ones counted from ``size`` (the axis length)."""
    indices = indices.long()
    return torch.where(indices < 0, indices + size, indices)


@torch_op("Gather")
def gather(call: OpCall, inputs: Inputs) -> Tensor:
    """``out[..., idx..., ...]``: the indices' shape replaces ``axis`` (a scalar index drops it)."""
    data = inputs[0]
    axis = normalize_axis(call.attr("axis", 0), data.dim())
    indices = _from_the_end(inputs[1], data.shape[axis])
    picked = torch.index_select(data, axis, indices.reshape(-1))
    return picked.reshape(data.shape[:axis] + indices.shape + data.shape[axis + 1:])


@torch_op("GatherElements")
def gather_elements(call: OpCall, inputs: Inputs) -> Tensor:
    """``out[i][j] = data[index[i][j]][j]`` along ``axis``: ``torch.gather``."""
    data = inputs[0]
    axis = normalize_axis(call.attr("axis", 0), data.dim())
    return torch.gather(data, axis, _from_the_end(inputs[1], data.shape[axis]))


@torch_op("GatherND")
def gather_nd(call: OpCall, inputs: Inputs) -> Tensor:
    """The last axis of ``indices`` (length k) indexes the first k axes of ``data`` after
    its ``batch_dims`` leading axes, which ``data`` and ``indices`` share; the result has
    ``indices.shape[:-1] + data.shape[batch_dims + k:]``."""
    data, indices = inputs[0], inputs[1]
    batch_dims = call.attr("batch_dims", 0)
    depth = indices.shape[-1]
    batch = math.prod(data.shape[:batch_dims])
    picks = math.prod(indices.shape[batch_dims:-1])
    sizes = torch.tensor(data.shape[batch_dims:batch_dims + depth], dtype=torch.long, device=data.device)
    index = _from_the_end(indices, sizes).reshape(batch, picks, depth)
    rows = torch.arange(batch, device=data.device).reshape(batch, 1).expand(batch, picks)
    picked = data.reshape(batch, *data.shape[batch_dims:])[(rows,) + index.unbind(-1)]
    return picked.reshape(indices.shape[:-1] + data.shape[batch_dims + depth:])
