"""Dense layers, in the model's own style.

- after a Gemm: ``Gemm(x, W, b)`` with the layer's ``transB`` (W is n×n, so the identity
  and the zero matrix read the same either way);
- after a MatMul (transformer exports, any input rank): ``MatMul(x, W)`` then
  ``Add(·, b)``, the bias as its own Add like the exporters write it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxgrow.deepening.kinds.registry import LayerKind, kind
from onnxgrow.deepening.splice import Splice


def square(n: int, identity: bool) -> np.ndarray:
    """The n×n identity or zero matrix."""
    return np.eye(n) if identity else np.zeros((n, n))


@dataclass(frozen=True)
class GemmKind:
    trans_b: int

    def emit(self, splice: Splice, x: ir.Value, n: int, scope: str, *, identity: bool) -> ir.Value:
        weight = splice.weight(f"{scope}.weight", square(n, identity))
        bias = splice.weight(f"{scope}.bias", np.zeros(n))
        return splice.node("Gemm", [x, weight, bias], f"{scope}/Gemm", like=x,
                           attributes=[ir.AttrInt64("transB", self.trans_b)])

    def weight_values(self, n: int) -> int:
        return n * n


@dataclass(frozen=True)
class MatMulKind:
    def emit(self, splice: Splice, x: ir.Value, n: int, scope: str, *, identity: bool) -> ir.Value:
        weight = splice.weight(f"{scope}.weight", square(n, identity))
        product = splice.node("MatMul", [x, weight], f"{scope}/MatMul", like=x)
        bias = splice.weight(f"{scope}.bias", np.zeros(n))
        return splice.node("Add", [product, bias], f"{scope}/Add", like=x)

    def weight_values(self, n: int) -> int:
        return n * n


@kind("Gemm")
def gemm_kind(node: ir.Node) -> LayerKind:
    return GemmKind(node.attributes.get_int("transB", 0))


@kind("MatMul")
def matmul_kind(node: ir.Node) -> LayerKind:
    return MatMulKind()
