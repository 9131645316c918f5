"""Convolutions (1-D, 2-D, 3-D): an identity kernel keeping the spatial size.

The new conv has the layer's spatial rank and kernel size, made odd where it is even
(``k - 1``) so it has a centre tap. The identity kernel is 1 at the centre tap of
filter ``c`` on input channel ``c`` and 0 elsewhere; stride 1, dilation 1, pads
``k // 2`` on both sides, group 1, bias 0: each output pixel is its input pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxgrow.deepening.kinds.registry import LayerKind, kind
from onnxgrow.deepening.splice import Splice
from onnxgrow.graph import const_shape


def odd_kernel(kernel: tuple[int, ...]) -> tuple[int, ...]:
    """Each size made odd (``k`` or ``k - 1``, at least 1) so the kernel has a centre tap."""
    return tuple(k if k % 2 else max(k - 1, 1) for k in kernel)


def identity_filters(n: int, kernel: tuple[int, ...]) -> np.ndarray:
    """Filters ``[n, n, *kernel]``: 1 at the centre tap of filter c on channel c."""
    weights = np.zeros((n, n, *kernel))
    channels = np.arange(n)
    centre = tuple(np.full(n, k // 2) for k in kernel)
    weights[(channels, channels) + centre] = 1.0
    return weights


@dataclass(frozen=True)
class ConvKind:
    kernel: tuple[int, ...]

    def emit(self, splice: Splice, x: ir.Value, n: int, scope: str, *, identity: bool) -> ir.Value:
        filters = identity_filters(n, self.kernel) if identity else np.zeros((n, n, *self.kernel))
        weight = splice.weight(f"{scope}.weight", filters)
        bias = splice.weight(f"{scope}.bias", np.zeros(n))
        rank = len(self.kernel)
        pads = [k // 2 for k in self.kernel]
        attributes = [
            ir.AttrInt64s("kernel_shape", list(self.kernel)),
            ir.AttrInt64s("pads", pads + pads),
            ir.AttrInt64s("strides", [1] * rank),
            ir.AttrInt64s("dilations", [1] * rank),
            ir.AttrInt64("group", 1),
        ]
        return splice.node("Conv", [x, weight, bias], f"{scope}/Conv", like=x, attributes=attributes)

    def weight_values(self, n: int) -> int:
        return n * n * math.prod(self.kernel)


@kind("Conv")
def conv_kind(node: ir.Node) -> LayerKind:
    shape = const_shape(node.inputs[1])
    if shape is None or len(shape) < 3:
        raise ValueError(f"Conv node {node.name!r} has no constant filters")  # find_layers admits none such
    return ConvKind(odd_kernel(tuple(shape[2:])))
