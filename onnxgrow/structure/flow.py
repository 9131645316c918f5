"""The data flow of one graph, read once: positions, computed values, ancestors, regions.

A value is *computed* when it is not a constant (an initializer that is no graph input, a
``Constant`` node's output, or either seen through Identity/Transpose: :func:`find_constant`).
The graph's nodes are in topological order (ONNX requires it), so a value's *position* is
its producer's index (-1 for graph inputs): every ancestor of a value has a smaller one.
Only computed values are followed; constants are nobody's ancestors.
"""

from __future__ import annotations

import heapq
import itertools

import onnx_ir as ir

from onnxgrow.constants import find_constant


class DataFlow:
    """Ancestry questions about the main graph of a model; nothing is modified."""

    def __init__(self, graph: ir.Graph) -> None:
        self.graph = graph
        self.nodes = list(graph)
        self._position = {node: k for k, node in enumerate(self.nodes)}
        self._computed: dict[ir.Value, bool] = {}

    def node_position(self, node: ir.Node) -> int:
        """The node's index in graph order (len(graph) for a node of another graph)."""
        return self._position.get(node, len(self.nodes))

    def position(self, value: ir.Value) -> int:
        """The index of the value's producer in graph order; -1 for a graph input."""
        producer = value.producer()
        return -1 if producer is None else self.node_position(producer)

    def is_computed(self, value: ir.Value | None) -> bool:
        """Whether ``value`` is computed at run time (not a constant, not absent)."""
        if value is None:
            return False
        known = self._computed.get(value)
        if known is None:
            known = self._computed[value] = find_constant(value) is None
        return known

    def computed_inputs(self, node: ir.Node) -> list[ir.Value]:
        """The node's computed inputs, each once, in input order."""
        found: list[ir.Value] = []
        for value in node.inputs:
            if value is not None and value not in found and self.is_computed(value):
                found.append(value)
        return found

    def in_order(self, nodes: list[ir.Node] | set[ir.Node]) -> list[ir.Node]:
        """``nodes`` sorted in graph order."""
        return sorted(nodes, key=self.node_position)

    def latest_common_ancestor(self, a: ir.Value, b: ir.Value) -> ir.Value | None:
        """The computed value latest in graph order that both ``a`` and ``b`` descend from (a
        value descends from itself); None when they share no computed ancestor.

        Values are visited latest first, so the first one reached from both sides is the
        answer; what lies before it in graph order is never visited.
        """
        if a is b:
            return a
        sides: dict[ir.Value, int] = {a: 1, b: 2}
        tie = itertools.count()  # heap entries never compare values
        heap = [(-self.position(v), next(tie), v) for v in (a, b)]
        heapq.heapify(heap)
        done: set[ir.Value] = set()
        while heap:
            _, _, value = heapq.heappop(heap)
            if value in done:
                continue
            done.add(value)
            if sides[value] == 3:
                return value
            producer = value.producer()
            if producer is None:
                continue
            for source in self.computed_inputs(producer):
                sides[source] = sides.get(source, 0) | sides[value]
                heapq.heappush(heap, (-self.position(source), next(tie), source))
        return None

    def between(self, start: ir.Value, end: ir.Value) -> list[ir.Node]:
        """The nodes on a path from ``start`` to ``end`` (``start``'s descendants that are
        ``end``'s ancestors, ``end``'s producer included), in graph order; empty when
        ``end`` is ``start`` or does not descend from it."""
        floor = self.position(start)
        candidates: set[ir.Node] = set()
        stack, seen = [end], {start}
        while stack:
            value = stack.pop()
            if value in seen:
                continue
            seen.add(value)
            producer = value.producer()
            if producer is None or self.node_position(producer) <= floor or producer in candidates:
                continue
            candidates.add(producer)
            stack.extend(self.computed_inputs(producer))
        reached, region = {start}, []
        for node in self.in_order(candidates):
            if any(value in reached for value in self.computed_inputs(node)):
                reached.update(node.outputs)
                region.append(node)
        return region if end in reached else []
