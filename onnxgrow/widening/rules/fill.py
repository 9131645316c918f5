"""ConstantOfShape: a tensor filled with one value, of a shape computed at run time.

Every position holds the same value, so the channels may lie along any of its axes: a copy
of a unit holds what the unit held, and so does a fresh unit. T5 adds
``torch.zeros((1, n_heads, q_len, k_len))`` as the position bias of its cross-attention,
a zero tensor over the heads, computed once and added in every decoder layer (those layers'
cross-attention heads then grow together). The shape's entry for the channel axis must give
the widened size (:func:`~onnxgrow.widening.rules.shape_values.size_entry_problem`: a
constant is rewritten, a size read at run time must follow). The node is reached from its
output only: its input is a shape, which carries no channels.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxgrow.widening.context import GroupContext, Known
from onnxgrow.widening.rules.registry import rule
from onnxgrow.widening.rules.shape_values import entries, rewrite_size_entry, size_entry_problem


@rule("ConstantOfShape")
class ConstantOfShapeRule:
    """The channels arise in a filled tensor; its shape entry grows with them."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        y = node.outputs[0]
        if y not in known:
            ctx.refuse(node, "the channels reach its shape input")
        embedding = known[y]
        target = entries(node.inputs[0], (node, 0))
        if target is None or len(target) < -embedding.axis:
            ctx.refuse(node, "its shape is computed at run time in a way onnxgrow cannot follow")
        entry = target[embedding.axis]
        ctx.check_when_closed(node, lambda: size_entry_problem(ctx, entry, embedding.layout, "its shape"))

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        embedding = known[node.outputs[0]]
        target = entries(node.inputs[0], (node, 0))
        assert target is not None
        rewrite_size_entry(ctx, target[embedding.axis], embedding.layout, node, 0)
