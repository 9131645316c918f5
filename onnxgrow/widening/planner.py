"""Closing a channel group (docs/design.md §1).

Planning starts from one producer's output and tracks every value that must carry the
same channels: forward through carriers to the contracting ops, backward through
joins (a residual ``Add`` ties the producers of both operands into one group), until
nothing new is reached. Every node touched is handled by its op's registered rule;
a node without a rule, a node inside a subgraph, a model output or input reached, or a
rule's refusal stops the plan with a :class:`~onnxgrow.errors.RefusedError` naming the
node. Nothing is modified while planning.

Rewriting (:meth:`GroupContext.rewrite`) then chooses the channel map, checks the
group's constraints (uniform duplication for normalisations over the axis), and calls
every touched node's rule once, in graph order.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxgrow.graph import node_label, subgraph_owner
from onnxgrow.widening.context import GroupContext
from onnxgrow.widening.layout import Embedding
from onnxgrow.widening.rules.registry import rule_for


def plan_group(graph: ir.Graph, origin: str, node: ir.Node, width: int, embedding: Embedding,
               new_outputs: bool = False) -> GroupContext:
    """Close the channel group of ``node``'s first output (nothing is modified).

    ``origin`` names the request in refusals (``cannot widen 'fc1' at ...``); with
    ``new_outputs`` the group may reach model outputs (new classes of a last layer).
    """
    ctx = GroupContext(graph, width, origin, new_outputs=new_outputs)
    ctx.track(node.outputs[0], embedding, via=node)
    while (reached := ctx.next_pending()) is not None:
        if reached.graph is not graph:
            owner = subgraph_owner(graph, reached.graph) if reached.graph is not None else None
            where = f"its subgraph {reached.graph.name!r}" if reached.graph is not None else "a subgraph"
            ctx.refuse(owner or reached, f"the channels are used inside {where} (by {node_label(reached)}); "
                                         "subgraphs are not rewritten")
        rule = rule_for(reached)
        if rule is None:
            domain = f" of domain {reached.domain!r}" if reached.domain else ""
            ctx.refuse(reached, f"no widening rule for op {reached.op_type}{domain}")
        ctx.propagate(reached, rule)
    return ctx
