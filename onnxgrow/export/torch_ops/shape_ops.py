"""Ops that move, select or describe data: Flatten, Reshape, Transpose, Concat, Split,
Slice, Squeeze, Unsqueeze, Shape, Size, Expand, Tile, Pad, Range, Trilu,
ConstantOfShape, Identity, Dropout."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from onnxgrow.export.torch_ops.registry import Inputs, OpCall, Tensor, axes_from, normalize_axis, torch_op


@torch_op("Identity")
def identity(call: OpCall, inputs: Inputs) -> Tensor:
    return inputs[0]


@torch_op("Dropout")
def dropout(call: OpCall, inputs: Inputs) -> Tensor:
    """Identity in eval (the ONNX inference semantics); drops with the node's ratio while
    the module trains, like the ``nn.Dropout`` it came from."""
    ratio = call.attr("ratio", 0.5)
    if inputs.optional(1) is not None:
        ratio = float(inputs[1].item())
    return torch.nn.functional.dropout(inputs[0], ratio, training=call.training)


@torch_op("Flatten")
def flatten(call: OpCall, inputs: Inputs) -> Tensor:
    x = inputs[0]
    axis = normalize_axis(call.attr("axis", 1), x.dim())
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@torch_op("Reshape")
def reshape(call: OpCall, inputs: Inputs) -> Tensor:
    """A 0 copies the input's size at that position unless ``allowzero``."""
    x, shape = inputs[0], inputs.ints(1)
    if not call.attr("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


@torch_op("Transpose")
def transpose(call: OpCall, inputs: Inputs) -> Tensor:
    x = inputs[0]
    perm = call.attr("perm")
    return x.permute(list(perm) if perm is not None else list(reversed(range(x.dim()))))


@torch_op("Concat")
def concat(call: OpCall, inputs: Inputs) -> Tensor:
    return torch.cat(inputs.present(), dim=call.attr("axis"))


def _split_sizes(call: OpCall, inputs: Inputs, size: int) -> list[int]:
    if inputs.optional(1) is not None:
        return inputs.ints(1)
    if call.attr("split") is not None:
        return list(call.attr("split"))
    parts = call.attr("num_outputs") or call.outputs
    chunk = math.ceil(size / parts)
    return [min(chunk, size - k * chunk) for k in range(parts)]


@torch_op("Split", outputs=64)
def split(call: OpCall, inputs: Inputs) -> tuple[Tensor, ...]:
    x = inputs[0]
    axis = normalize_axis(call.attr("axis", 0), x.dim())
    return tuple(torch.split(x, _split_sizes(call, inputs, x.shape[axis]), dim=axis))


@torch_op("Slice")
def slice_(call: OpCall, inputs: Inputs) -> Tensor:
    """Starts/ends/axes/steps are inputs from opset 10, attributes before; bounds are clamped
    like numpy's, negative steps walk backwards."""
    x = inputs[0]
    if call.opset < 10:
        starts, ends = list(call.attr("starts")), list(call.attr("ends"))
        axes, steps = call.attr("axes"), None
    else:
        starts, ends = inputs.ints(1), inputs.ints(2)
        axes = inputs.optional_ints(3)
        steps = inputs.optional_ints(4)
    axes = list(axes) if axes is not None else list(range(len(starts)))
    steps = steps or [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = normalize_axis(axis, x.dim())
        index = range(x.shape[axis])[slice(start, end, step)]
        if step == 1:
            x = x.narrow(axis, index.start, len(index)) if len(index) else x.narrow(axis, 0, 0)
        else:
            x = x.index_select(axis, torch.tensor(list(index), dtype=torch.long, device=x.device))
    return x


@torch_op("Squeeze")
def squeeze(call: OpCall, inputs: Inputs) -> Tensor:
    x = inputs[0]
    axes = axes_from(call, inputs, 1)
    if axes is None:
        return x.squeeze()
    return x.squeeze(tuple(normalize_axis(a, x.dim()) for a in axes))


@torch_op("Unsqueeze")
def unsqueeze(call: OpCall, inputs: Inputs) -> Tensor:
    """Axes index the output, so they are inserted in increasing order."""
    x = inputs[0]
    axes = axes_from(call, inputs, 1) or []
    rank = x.dim() + len(axes)
    for axis in sorted(normalize_axis(a, rank) for a in axes):
        x = x.unsqueeze(axis)
    return x


@torch_op("Shape")
def shape(call: OpCall, inputs: Inputs) -> Tensor:
    dims = list(inputs[0].shape)
    start, end = call.attr("start", 0), call.attr("end")
    return torch.tensor(dims[start:end], dtype=torch.int64, device=inputs[0].device)


@torch_op("Size")
def size(call: OpCall, inputs: Inputs) -> Tensor:
    return torch.tensor(inputs[0].numel(), dtype=torch.int64, device=inputs[0].device)


@torch_op("Expand")
def expand(call: OpCall, inputs: Inputs) -> Tensor:
    """Bidirectional broadcasting: the result has the broadcast of both shapes."""
    x = inputs[0]
    target = torch.broadcast_shapes(tuple(x.shape), tuple(inputs.ints(1)))
    return x.expand(target)


@torch_op("Tile")
def tile(call: OpCall, inputs: Inputs) -> Tensor:
    return inputs[0].repeat(inputs.ints(1))


@torch_op("Pad")
def pad(call: OpCall, inputs: Inputs) -> Tensor:
    """Pads are an input from opset 11 (with optional value and axes), an attribute before."""
    x = inputs[0]
    if call.opset < 11:
        pads, value, axes = list(call.attr("pads")), call.attr("value", 0.0), None
    else:
        pads = inputs.ints(1)
        value = float(inputs[2]) if inputs.optional(2) is not None else 0.0
        axes = inputs.optional_ints(3)
    axes = [normalize_axis(a, x.dim()) for a in axes] if axes is not None else list(range(x.dim()))
    count = len(axes)
    begins = dict(zip(axes, pads[:count]))
    ends = dict(zip(axes, pads[count:]))
    pairs: list[int] = []
    for axis in reversed(range(x.dim())):
        pairs += [begins.get(axis, 0), ends.get(axis, 0)]
    mode = call.attr("mode", "constant")
    torch_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}.get(mode)
    if torch_mode is None:
        raise call.refuse(f"pad mode {mode!r} is not supported")
    if torch_mode == "constant":
        return F.pad(x, pairs, mode="constant", value=value)
    while pairs and pairs[-2:] == [0, 0]:  # PyTorch pads only trailing axes in these modes
        pairs = pairs[:-2]
    if len(pairs) // 2 > x.dim() - 2:
        raise call.refuse(f"{mode} padding of the first two axes is not supported")
    return F.pad(x, pairs, mode=torch_mode)


@torch_op("Range")
def range_(call: OpCall, inputs: Inputs) -> Tensor:
    start, limit, delta = inputs[0], inputs[1], inputs[2]
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype, device=start.device)


@torch_op("Trilu")
def trilu(call: OpCall, inputs: Inputs) -> Tensor:
    """The upper (``upper=1``, the default) or lower triangle of the last two axes, from
    diagonal ``k`` (input 1, default 0); a causal mask built at run time."""
    k = int(inputs[1].item()) if inputs.optional(1) is not None else 0
    return torch.triu(inputs[0], k) if call.attr("upper", 1) else torch.tril(inputs[0], k)


@torch_op("ConstantOfShape")
def constant_of_shape(call: OpCall, inputs: Inputs) -> Tensor:
    """Filled with the one-element ``value`` tensor (float 0 when absent), in its dtype."""
    value = call.attr("value")
    fill = torch.from_numpy(np.array(value).reshape(-1)[:1].reshape(())) if value is not None else torch.zeros(())
    return fill.to(inputs[0].device).expand(inputs.ints(0)).clone()
