"""Op rules for widening, one module per op family; importing this package registers them."""

from onnxgrow.widening.rules import (  # noqa: F401
    control_flow,
    conv,
    elementwise,
    expand,
    fill,
    gather,
    gemm,
    layout_ops,
    matmul,
    normalization,
    pad,
    pooling,
    quantized,
    reduction,
    reshape,
    resize,
    shape,
)
from onnxgrow.widening.rules.registry import PRODUCERS, RULES, Producer, rule_for

__all__ = ["PRODUCERS", "RULES", "Producer", "rule_for"]
