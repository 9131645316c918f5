"""MatMul with a constant 2-D weight ``B [K, N]``: ``Y = A @ B``.

- Producer: widening N gathers B's columns (a following bias Add is a per-channel
  constant of the broadcasting rule).
- Contractor: when A carries the channels on its last axis, B's rows are gathered and
  scaled by the shares.
A MatMul of two computed tensors (attention) cannot carry or contract the channels.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxgrow.graph import const_shape, model_input_behind, rank_of
from onnxgrow.widening.context import GroupContext, Known
from onnxgrow.widening.layout import Embedding
from onnxgrow.widening.rules.common import computing_node, contracting, is_quantization, producing, weight_problem
from onnxgrow.widening.rules.registry import Producer, producer, rule


@producer("MatMul")
def describe_matmul(node: ir.Node) -> Producer | str:
    b = node.inputs[1]
    shape = const_shape(b)
    if shape is None:
        if model_input_behind(b) is not None or is_quantization(computing_node(b)):
            return weight_problem(b, "weight")
        return "both operands are computed at run time (no constant weight)"
    if len(shape) != 2:
        return f"its constant operand has rank {len(shape)}; only 2-D weights are supported"
    return Producer(node, shape[1], Embedding(-1, rank_of(node.outputs[0])), b)  # type: ignore[arg-type]


@rule("MatMul")
class MatMulRule:
    """MatMul with a constant weight produces channels on N and contracts them on K."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        a, b = node.inputs[0], node.inputs[1]
        y = node.outputs[0]
        found = describe_matmul(node)
        if const_shape(b) is None and model_input_behind(b) is None:
            ctx.refuse(node, "it multiplies two tensors computed at run time (attention scores, for "
                             "instance), which mixes the channels with the other operand")
        if b in known or isinstance(found, str):
            ctx.refuse(node, found if isinstance(found, str) else "the channels reach its weight input")
        if y in known:
            if known[y].axis != -1 or not known[y].layout.is_plain or found.width != ctx.width:
                ctx.refuse(node, "output channels do not match the group")
            ctx.mark_producer(node)
        if a in known:
            if known[a].axis != -1:
                ctx.refuse(node, "the channels reach an axis MatMul does not contract")
            ctx.mark_contractor(node)

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        a, y = node.inputs[0], node.outputs[0]
        if y in known:
            idx = ctx.index(y)
            ctx.edit(node, 1, producing(1, idx, ctx.rng))
        if a in known:
            idx = ctx.index(a)
            ctx.edit(node, 1, contracting(0, idx, ctx.channel_map.init, ctx.rng))
