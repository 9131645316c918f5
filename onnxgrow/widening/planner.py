"""Closing a channel group (docs/design.md §1).

Planning starts from one producer's output and tracks every value that must carry the
same channels: forward through carriers to the contracting ops, backward through
joins (a residual ``Add`` ties the producers of both operands into one group), until
nothing new is reached. Every node touched is handled by its op's registered rule,
inside If/Loop/Scan subgraphs too: their nodes' rules carry the channels within a
branch or body, and the rules of the If, Loop and Scan nodes themselves tie a subgraph's
inputs and outputs to the node's (``rules/control_flow.py``). A node without a rule, a
model output or input reached, or a rule's refusal stops the plan with a
:class:`~onnxgrow.errors.RefusedError` naming the node. Nothing is modified while planning.

A rule that needs the channels in equal blocks (a grouped convolution's groups, a Split's
parts) raises :class:`~onnxgrow.widening.context.MoreBlocks`; planning then starts again
with the origin's channels in that many more blocks of fewer units each (a *block map*:
copies stay in their block), until no rule asks for more.

Rewriting (:meth:`GroupContext.rewrite`) then chooses the channel map, checks the
group's constraints (uniform duplication for normalisations over the axis), and calls
every touched node's rule once, in graph order.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxgrow.errors import RefusedError
from onnxgrow.graph import node_label
from onnxgrow.widening.context import GroupContext, MoreBlocks
from onnxgrow.widening.layout import AxisLayout, Channel, Embedding
from onnxgrow.widening.new_outputs import OutputClasses
from onnxgrow.widening.rules.registry import rule_for


def plan_group(graph: ir.Graph, origin: str, node: ir.Node, width: int, embedding: Embedding,
               new_outputs: bool = False) -> GroupContext:
    """Close the channel group of ``node``'s first output (nothing is modified).

    ``origin`` names the request in refusals (``cannot widen 'fc1' at ...``); with
    ``new_outputs`` the group may reach model outputs (new classes of a last layer), which it
    collects in its ``classes``.
    The group's ``width`` is its unit count: ``width`` over its ``blocks`` (1 unless a rule
    asked for blocks).
    """
    blocks, blocked_by = 1, None
    while True:
        try:
            ctx = GroupContext(graph, width // blocks, origin, blocks, blocked_by,
                               classes=OutputClasses() if new_outputs else None)
            return _close(ctx, node, _in_blocks(embedding, blocks))
        except MoreBlocks as more:
            if _in_blocks(embedding, blocks * more.factor) is None:
                raise RefusedError(f"cannot widen {origin} at {node_label(more.node)}: {more.reason}; the channels "
                                   "of the layer are no single block to cut", more.node.name) from None
            blocks, blocked_by = blocks * more.factor, (more.node, more.reason)


def _in_blocks(embedding: Embedding, blocks: int) -> Embedding | None:
    """The origin's embedding with its channels in ``blocks`` blocks (None when its layout is
    no single ``Channel`` segment)."""
    if blocks == 1:
        return embedding
    segments = embedding.layout.segments
    if len(segments) != 1 or not isinstance(segments[0], Channel):
        return None
    seg = segments[0]
    return embedding.with_layout(AxisLayout((Channel(seg.outer * blocks, seg.inner),)))


def _close(ctx: GroupContext, node: ir.Node, embedding: Embedding | None) -> GroupContext:
    """Track ``node``'s first output and run the rules of every node reached."""
    assert embedding is not None
    ctx.track(node.outputs[0], embedding, via=node)
    while (reached := ctx.next_pending()) is not None:
        rule = rule_for(reached)
        if rule is None:
            domain = f" of domain {reached.domain!r}" if reached.domain else ""
            ctx.refuse(reached, f"no widening rule for op {reached.op_type}{domain}")
        ctx.propagate(reached, rule)
    ctx.check_together()
    return ctx
