"""Quantized graphs: refused, naming the quantization op.

A widening would have to rewrite integer weights with their scales and zero points, and
the Net2Net split of a contracting row (dividing it among its copies) is not exact on an
integer grid. So:

- QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger are listed as layers that cannot
  be widened, with that reason;
- a channel group that reaches QuantizeLinear, DequantizeLinear or one of those ops
  (quantized activations on the path) is refused at that node;
- a float layer whose weight is computed by DequantizeLinear (a QDQ model's weights) is
  refused by :func:`onnxgrow.widening.rules.common.weight_problem`, naming that node.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxgrow.widening.context import GroupContext, Known
from onnxgrow.widening.rules.registry import Producer, producer, rule

#: Quantized layers: integer weights with scales and zero points.
QUANTIZED_LAYERS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger")
#: Every default-domain op that quantizes, dequantizes or computes on quantized tensors.
QUANTIZATION_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", *QUANTIZED_LAYERS})


@producer(*QUANTIZED_LAYERS)
def describe_quantized_layer(node: ir.Node) -> Producer | str:
    return (f"it is a quantized layer ({node.op_type}): its integer weights cannot be split "
            "exactly among copies; onnxgrow widens float layers only")


@rule(*sorted(QUANTIZATION_OPS))
class QuantizedRule:
    """The channels may not flow through quantization."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        ctx.refuse(node, "the channels would pass through quantization; onnxgrow widens float graphs only")

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        raise AssertionError("quantized ops are refused while planning")
