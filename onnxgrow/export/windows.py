"""ONNX ``pads``/``auto_pad`` of convolution and pooling windows, framework-neutral.

``pads`` lists every spatial axis' begin, then every end. ``auto_pad`` SAME_UPPER /
SAME_LOWER pads so that ``out = ceil(in / stride)``, the odd pixel at the end (UPPER) or
the beginning (LOWER); VALID means no padding.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def window_pads(attrs: Mapping[str, Any], sizes: Sequence[int | None], kernel: Sequence[int],
                strides: Sequence[int], dilations: Sequence[int]) -> tuple[list[int], list[int]]:
    """Begin and end padding of each spatial axis; ``sizes`` are the input's spatial sizes
    (needed for SAME only: ValueError when one is unknown)."""
    rank = len(kernel)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for size, k, s, d in zip(sizes, kernel, strides, dilations):
            if size is None:
                raise ValueError("SAME padding needs static spatial sizes")
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            begins.append(total // 2 if auto_pad == "SAME_UPPER" else total - total // 2)
            ends.append(total - begins[-1])
        return begins, ends
    if auto_pad == "VALID":
        return [0] * rank, [0] * rank
    pads = list(attrs.get("pads") or [0] * (2 * rank))
    return pads[:rank], pads[rank:]
