"""If, Loop and Scan: the channels cross into and out of subgraphs (docs/design.md §1).

The nodes inside a branch or body are planned by their own rules, like any node; these
rules only tie the values that the subgraph boundary says are one tensor:

- **If**: output ``k`` of the node is output ``k`` of each branch. All carry the channels
  alike or none does; the branches must agree: a branch whose output is a constant or a
  model input, or whose size along the channel axis differs from the other's, is refused
  naming the If (the other branch would not have grown).
- **Loop**: loop-carried value ``k`` is the node's input ``2 + k``, the body's input
  ``2 + k`` and output ``1 + k``, and the node's output ``k``; a scan output ``j`` of the
  body (``1 + N + j``) is stacked on a new leading axis into the node's output ``N + j``,
  so it keeps its axis counted from the end. The trip count, the condition and the
  iteration number carry no channels.
- **Scan**: a state ``k`` is the node's input ``k``, the body's input and output ``k`` and
  the node's output ``k``; a scan input is sliced along its scan axis into the body's
  input, a body's scan output stacked along its scan axis into the node's output: the
  channel axis counted from the end moves by one when the scan axis lies after it, and
  a scan along the channel axis is refused.

A value tracked on either side of the boundary tracks the others (the planner queues
the holding node when a subgraph's input or output becomes tracked). Nothing to rewrite:
the subgraphs' nodes rewrite their own weights, and every tracked value gets its new shape.
"""

from __future__ import annotations

import onnx_ir as ir

from onnxgrow.constants import find_constant
from onnxgrow.graph import dim_at, rank_of
from onnxgrow.widening.context import GroupContext, Known, embedding_rank
from onnxgrow.widening.layout import Embedding
from onnxgrow.widening.rules.registry import rule


def _tie(ctx: GroupContext, node: ir.Node, known: Known, values: list[ir.Value]) -> None:
    """``values`` are one tensor across the boundary (same rank): each carries what one carries."""
    found = next((known[v] for v in values if v in known), None)
    if found is None:
        return
    for value in values:
        ctx.track(value, found.with_axis(found.axis, rank_of(value) or found.rank), node)


def _refuse_boundary(ctx: GroupContext, node: ir.Node, known: Known, values: list[ir.Value | None],
                     what: str) -> None:
    """Refuse when one of ``values`` (no tensor of channels: a trip count, a condition) is tracked."""
    if any(v is not None and v in known for v in values):
        ctx.refuse(node, f"its {what} would carry the channels")


def _subgraph(node: ir.Node, name: str) -> ir.Graph:
    return node.attributes[name].as_graph()


@rule("If")
class IfRule:
    """Each output of the If is the same output of both branches."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        _refuse_boundary(ctx, node, known, [node.inputs[0]], "condition")
        branches = [(name, _subgraph(node, name)) for name in ("then_branch", "else_branch")]
        for k, out in enumerate(node.outputs):
            sides = [out, *(g.outputs[k] for _, g in branches)]
            found = next((known[v] for v in sides if v in known), None)
            if found is None:
                continue
            sizes = {name: dim_at(g.outputs[k], found.axis) for name, g in branches}
            static = {size for size in sizes.values() if isinstance(size, int)}
            if len(static) > 1:
                listed = ", ".join(f"{size} in {name}" for name, size in sizes.items())
                ctx.refuse(node, f"its branches disagree on the channels of output {out.name!r} "
                                 f"(axis {found.axis}: {listed}), so one branch would not grow")
            for name, g in branches:
                value = g.outputs[k]
                if value not in known and find_constant(value) is not None:
                    ctx.refuse(node, f"its branches disagree on the channels of output {out.name!r}: "
                                     f"{name} returns the constant {value.name!r}, which would not grow")
                if value not in known and any(value is v for v in ctx.graph.inputs):
                    ctx.refuse(node, f"its branches disagree on the channels of output {out.name!r}: "
                                     f"{name} returns model input {value.name!r}, which would not grow")
            _tie(ctx, node, known, sides)

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        """Nothing to change: the branches' nodes rewrite themselves."""


@rule("Loop")
class LoopRule:
    """Loop-carried values keep their shape; scan outputs gain a leading axis."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        body = _subgraph(node, "body")
        carried = len(node.inputs) - 2
        _refuse_boundary(ctx, node, known, [*node.inputs[:2], *body.inputs[:2], body.outputs[0]],
                         "trip count or condition")
        for k in range(carried):
            start = node.inputs[2 + k]
            assert start is not None
            _tie(ctx, node, known, [start, body.inputs[2 + k], body.outputs[1 + k], node.outputs[k]])
        for j in range(len(node.outputs) - carried):  # stacked on a new axis 0: the same axis from the end
            _tie(ctx, node, known, [body.outputs[1 + carried + j], node.outputs[carried + j]])

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        """Nothing to change: the body's nodes rewrite themselves."""


@rule("Scan")
class ScanRule:
    """States keep their shape; scan inputs and outputs lose or gain their scan axis."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        body = _subgraph(node, "body")
        scanned = node.attributes.get_int("num_scan_inputs", 0)
        states = len(node.inputs) - scanned
        for k in range(states):
            start = node.inputs[k]
            assert start is not None
            _tie(ctx, node, known, [start, body.inputs[k], body.outputs[k], node.outputs[k]])
        in_axes = list(node.attributes.get_ints("scan_input_axes", [0] * scanned))
        for i in range(scanned):
            full = node.inputs[states + i]
            assert full is not None
            self._slice(ctx, node, known, full, body.inputs[states + i], in_axes[i])
        stacked = len(node.outputs) - states
        out_axes = list(node.attributes.get_ints("scan_output_axes", [0] * stacked))
        for j in range(stacked):
            self._slice(ctx, node, known, node.outputs[states + j], body.outputs[states + j], out_axes[j])

    def _slice(self, ctx: GroupContext, node: ir.Node, known: Known, full: ir.Value, part: ir.Value,
               scan_axis: int) -> None:
        """``part`` is one slice of ``full`` along ``scan_axis`` (axis of ``full``, counted from the front
        when not negative)."""
        found = known.get(full) or known.get(part)
        if found is None:
            return
        rank = rank_of(full) or (embedding_rank(known[full], full) if full in known else None)
        if rank is None and part in known:
            part_rank = embedding_rank(known[part], part)
            rank = part_rank + 1 if part_rank is not None else None
        if rank is None:
            ctx.refuse(node, f"the scan axis of {full.name!r} cannot be placed (unknown rank)")
        scan = scan_axis % rank
        if full in known:
            channel = rank + known[full].axis
            if channel == scan:
                ctx.refuse(node, f"it scans {full.name!r} along the channels")
            full_axis = known[full].axis
            part_axis = full_axis + 1 if scan > channel else full_axis
        else:
            part_axis = known[part].axis
            position = (rank - 1) + part_axis  # in the slice
            full_axis = part_axis - 1 if scan > position else part_axis
        ctx.track(full, Embedding(full_axis, rank, found.layout), node)
        ctx.track(part, Embedding(part_axis, rank - 1, found.layout), node)

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None:
        """Nothing to change: the body's nodes rewrite themselves."""
