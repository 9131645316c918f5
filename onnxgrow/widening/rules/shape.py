"""Shape and Size of a tensor that carries the channels.

They produce no channels, but they read the tensor's size at run time, and after
widening the channel axis reads larger. That is harmless when the read size only
moves through index ops (or is divided by a constant) and is then dropped (``x.size(0)``
reads the batch), or lands in the target shape of a Reshape or Expand (``x.view(-1, x.size(-1))``;
GPT-2's ``hidden_states.view(input_shape + (hidden_states.size(-1),))``, read before the
blocks, applied after the final norm; a channel shuffle's ``view(n, g, c // g, h, w)``;
TorchScript's ``repeat_kv``, which expands and views the keys to sizes read from them):
that node must then be in the channel group, and its rule checks that the entry gives
its output the widened size. Anything else — building a mask or a range from it, a
scale, Size (the element count) — would compute something else after widening and is
refused, naming the node that uses the size.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxgrow.graph import node_label
from onnxgrow.widening.context import GroupContext, Known
from onnxgrow.widening.rules.registry import rule
from onnxgrow.widening.rules.shape_values import DimOf, readers_of_dim


@rule("Shape", "Size")
class ShapeRule:
    """The read channel count may only feed the target shape of Reshapes in the group."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        x, out = node.inputs[0], node.outputs[0]
        if out in known or x not in known:
            ctx.refuse(node, "a shape cannot carry channels")
        if node.op_type == "Size":
            if out.uses() or out.is_graph_output():
                ctx.refuse(node, "the model uses the element count, which grows with the channels")
            return
        if out.is_graph_output():
            ctx.refuse(node, f"the model outputs the shape {out.name!r}, which grows with the channels")
        assert x is not None
        channel = DimOf(x, known[x].axis)
        for reader, index in readers_of_dim(out, channel):
            if reader.op_type in ("Reshape", "Expand") and index == 1:
                if reader.inputs[0] is not x:
                    ctx.require_together(node, [reader], "the model reads the channel count at run time into "
                                                         "the target shape of")
                continue
            ctx.refuse(node, f"the model reads the channel count at run time and {node_label(reader)} "
                             "computes with it, so it would see the widened count")

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        """Nothing to change: the shape is read at run time."""
