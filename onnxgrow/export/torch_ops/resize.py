"""Resize: nearest, linear and cubic resampling, one axis at a time, as onnxruntime computes it.

Each resized axis maps every output index ``x`` to a coordinate in the input (the
``coordinate_transformation_mode``), in float32 like onnxruntime (a float32 scale, float32
tensor arithmetic):

- ``half_pixel`` (the default): ``(x + 0.5) / scale - 0.5``; ``pytorch_half_pixel`` the same,
  but 0 when the output has one element; ``tf_half_pixel_for_nn``: ``(x + 0.5) / scale``;
- ``asymmetric`` (the only mode of opset 10): ``x / scale``;
- ``align_corners``: ``x · (in - 1) / (out - 1)``, 0 for a one-element output;
- ``half_pixel_symmetric``: half_pixel shifted so that the sampled span is centred.

``nearest`` rounds the coordinate (``nearest_mode``; opset 10 rounds down when enlarging and
up when shrinking) and clamps it into the axis. ``linear`` clamps the coordinate and blends
the two neighbours. ``cubic`` blends the four neighbours ``⌊c⌋-1 … ⌊c⌋+2`` (edges repeated)
with Keys' coefficients for ``cubic_coeff_a``; ``exclude_outside`` gives the neighbours
past an edge no weight and renormalises. Scales give ``out = ⌊in · scale⌋``; sizes give
``scale = out / in`` (``keep_aspect_ratio_policy`` applies one scale to every axis given).
An axis whose scale is 1 is copied; an output shaped like the input is the input.

Gradients flow through the sampled values; ``tf_crop_and_resize`` and ``antialias`` are refused.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from onnxgrow.export.torch_ops.registry import Inputs, OpCall, Tensor, normalize_axis, torch_op

Coordinates = Callable[[Tensor, float, int, int], Tensor]


def _half_pixel_symmetric(x: Tensor, scale: float, size_out: int, size_in: int) -> Tensor:
    adjustment = np.float32(size_out) / (np.float32(scale) * np.float32(size_in))
    offset = np.float32(size_in / 2) * (np.float32(1) - adjustment)
    return (float(offset) + (x.double() + 0.5) / float(np.float32(scale)) - 0.5).float()


_COORDINATES: dict[str, Coordinates] = {
    "half_pixel": lambda x, scale, size_out, size_in: (x + 0.5) / scale - 0.5,
    "pytorch_half_pixel": lambda x, scale, size_out, size_in: (
        (x + 0.5) / scale - 0.5 if size_out > 1 else torch.zeros_like(x)),
    "tf_half_pixel_for_nn": lambda x, scale, size_out, size_in: (x + 0.5) / scale,
    "asymmetric": lambda x, scale, size_out, size_in: x / scale,
    "align_corners": lambda x, scale, size_out, size_in: (
        x * float(size_in - 1) / float(size_out - 1) if size_out > 1 else torch.zeros_like(x)),
    "half_pixel_symmetric": _half_pixel_symmetric,
}

_ROUNDING: dict[str, Callable[[Tensor], Tensor]] = {
    "round_prefer_floor": lambda c: torch.ceil(c - 0.5),
    "round_prefer_ceil": lambda c: torch.floor(c + 0.5),
    "floor": torch.floor,
    "ceil": torch.ceil,
}


def _along(weights: Tensor, axis: int, rank: int) -> Tensor:
    """``weights`` (one per output index) shaped to broadcast along ``axis``."""
    return weights.reshape([-1 if k == axis else 1 for k in range(rank)])


def _nearest(call: OpCall, x: Tensor, axis: int, coordinate: Tensor, scale: float) -> Tensor:
    if call.opset < 11:
        rounded = torch.ceil(coordinate) if scale < 1 else torch.floor(coordinate)
    else:
        mode = call.attr("nearest_mode", "round_prefer_floor")
        if mode not in _ROUNDING:
            raise call.refuse(f"nearest_mode {mode!r} is not supported")
        rounded = _ROUNDING[mode](coordinate)
    index = rounded.clamp(0, x.shape[axis] - 1).long()
    return torch.index_select(x, axis, index)


def _linear(call: OpCall, x: Tensor, axis: int, coordinate: Tensor, scale: float) -> Tensor:
    """The two neighbours of the clamped coordinate, weighted by closeness (half each at the last)."""
    last = x.shape[axis] - 1
    coordinate = coordinate.clamp(0, last)
    low = coordinate.long().clamp(max=last)
    high = (low + 1).clamp(max=last)
    to_low, to_high = (coordinate - low).abs(), (coordinate - high).abs()
    same = low == high
    to_low, to_high = torch.where(same, 0.5, to_low), torch.where(same, 0.5, to_high)
    rank = x.dim()
    return (torch.index_select(x, axis, low) * _along(to_high, axis, rank).to(x.dtype)
            + torch.index_select(x, axis, high) * _along(to_low, axis, rank).to(x.dtype))


def _cubic_coefficients(s: Tensor, a: float) -> list[Tensor]:
    """Keys' weights of the neighbours at distances ``1 + s``, ``s``, ``1 - s``, ``2 - s``."""
    far, near = s + 1, 1 - s
    return [((a * far - 5 * a) * far + 8 * a) * far - 4 * a,
            ((a + 2) * s - (a + 3)) * s * s + 1,
            ((a + 2) * near - (a + 3)) * near * near + 1,
            ((a * (near + 1) - 5 * a) * (near + 1) + 8 * a) * (near + 1) - 4 * a]


def _cubic(call: OpCall, x: Tensor, axis: int, coordinate: Tensor, scale: float) -> Tensor:
    size = x.shape[axis]
    base = torch.floor(coordinate)
    weights = _cubic_coefficients(coordinate - base, float(call.attr("cubic_coeff_a", -0.75)))
    taps = [base.long() + k for k in (-1, 0, 1, 2)]
    if call.attr("exclude_outside", 0):
        weights = [torch.where((tap < 0) | (tap >= size), 0.0, w) for tap, w in zip(taps, weights)]
        total = weights[0] + weights[1] + weights[2] + weights[3]
        weights = [w / total for w in weights]
    rank = x.dim()
    terms = [torch.index_select(x, axis, tap.clamp(0, size - 1)) * _along(w, axis, rank).to(x.dtype)
             for tap, w in zip(taps, weights)]
    return terms[0] + terms[1] + terms[2] + terms[3]


_MODES = {"nearest": _nearest, "linear": _linear, "cubic": _cubic}


def _scales_and_sizes(call: OpCall, inputs: Inputs, shape: list[int]) -> tuple[list[float], list[int]]:
    """Every axis's scale and output size, from the scales (opset 10: input 1; later: input 2)
    or the sizes (input 3), over ``axes`` when given."""
    rank = len(shape)
    axes = [normalize_axis(a, rank) for a in call.attr("axes", None) or range(rank)]
    scales_input = inputs.optional(1 if call.opset < 11 else 2)
    given_scales = [float(v) for v in scales_input.reshape(-1).tolist()] if scales_input is not None else []
    scales, sizes = [1.0] * rank, list(shape)
    if given_scales:
        for axis, scale in zip(axes, given_scales):
            scales[axis] = scale
            sizes[axis] = int(np.float32(scale) * np.float32(shape[axis]))
        return scales, sizes
    given_sizes = inputs.optional_ints(3) if call.opset >= 11 else None
    if not given_sizes:
        raise call.refuse("it has neither scales nor sizes")
    for axis, size in zip(axes, given_sizes):
        sizes[axis] = size
        scales[axis] = float(np.float32(size) / np.float32(shape[axis])) if shape[axis] else 1.0
    policy = call.attr("keep_aspect_ratio_policy", "stretch")
    if policy != "stretch":
        pick = {"not_larger": min, "not_smaller": max}.get(policy)
        if pick is None:
            raise call.refuse(f"keep_aspect_ratio_policy {policy!r} is not supported")
        common = pick(scales[axis] for axis in axes)
        for axis in axes:
            scales[axis] = common
            sizes[axis] = round(float(np.float32(common) * np.float32(shape[axis])))
    return scales, sizes


@torch_op("Resize")
def resize(call: OpCall, inputs: Inputs) -> Tensor:
    x = inputs[0]
    mode = call.attr("mode", "nearest")
    transform = "asymmetric" if call.opset < 11 else call.attr("coordinate_transformation_mode", "half_pixel")
    if mode not in _MODES:
        raise call.refuse(f"mode {mode!r} is not supported")
    if transform not in _COORDINATES:
        raise call.refuse(f"coordinate_transformation_mode {transform!r} is not supported")
    if call.attr("antialias", 0):
        raise call.refuse("antialiased resizing is not supported")
    if mode != "nearest" and not x.is_floating_point():
        raise call.refuse(f"{mode} resizing of {x.dtype} values is not supported")
    shape = list(x.shape)
    scales, sizes = _scales_and_sizes(call, inputs, shape)
    if sizes == shape:
        return x
    for axis, (scale, size_out) in enumerate(zip(scales, sizes)):
        if scale == 1.0:
            continue
        index = torch.arange(size_out, dtype=torch.float32, device=x.device)
        coordinate = _COORDINATES[transform](index, scale, size_out, shape[axis])
        x = _MODES[mode](call, x, axis, coordinate, scale)
    return x
