"""Cutting the graphs of two models into segments that run one after the other (docs/design.md §6).

A *cut* is a position in a topological order of a main graph's nodes. The values that
*cross* it (made by a node before it, read by a node at or after it; graph inputs and
initializers are not counted, every segment gets those directly) are all that one
segment hands to the next. Nodes are never split, so a subgraph (If, Loop, Scan) stays
inside its node's segment; the values its body reads from the outer graph count as
read by that node.

Choosing cuts:

- A position is a usable cut when every value crossing it is a tensor (or of unknown
  type), and, with a candidate, when the candidate has a position crossed by exactly the
  same value names, later than the candidate position of the cut before: the two models
  are then cut at the same values, paired by name. Where a growth kept the names of a
  stream (widening changes weights, not the stream's names; deepening inserts nodes
  between positions that keep theirs), the cuts pair; where it renamed the value that
  crosses a position, that position is not a cut.
- Segments are packed greedily: a segment grows until its weights (initializers read
  by its nodes, Constant tensors; an initializer read by two segments counts in both) or
  its node count, in either model, would pass the limit; it then ends at the best usable
  cut seen since it was half full (or since it started, when no cut lies there: the
  fewest values cross where a graph starts, and segments cut there would be needlessly
  small). A segment whose nodes up to its first usable cut pass the limit (a node
  heavier than the budget) may hold that much: it takes the nodes after it while they add
  no weight beyond that, so that no cut hands on what such a node makes from its weights
  alone (a tied LM head's transposed embedding) to a segment without weights of its own.
  Best: crossing a preferred value (``prefer``: the residual stream between
  blocks, from the structure module when it names them), then crossed by the fewest
  values, then by the fewest estimated bytes, then the latest. In a transformer the
  fewest values cross between blocks (the residual stream and the masks or rotary tables
  every block reads), so cuts land there. A single node larger than the budget is a
  segment of its own.
"""

from __future__ import annotations

import bisect
import heapq
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxgrow.verification.memory import constant_bytes, tensor_bytes

_MASK = (1 << 64) - 1
#: A graph of at least this many nodes is checked segment by segment even when it fits in
#: memory: onnxruntime's session set-up grows faster than the node count (measured on CPU:
#: 60-70 µs a node up to 5,000 nodes, 135 µs at 20,000).
SEGMENTED_FROM_NODES = 10_000
#: A segment holds at most this many nodes.
SEGMENT_NODES = 2_500
#: A segment ends at a cut where it is at least this full (of its weight budget or node
#: limit), where one exists: the fewest crossing values are found where a graph starts.
MIN_FILL = 0.5


@dataclass
class Layout:
    """One model's main graph in topological order, and what crosses each position.

    Position ``i`` lies before node ``i`` (``0..len(nodes)``); ``count[i]`` values cross
    it, ``key[i]`` is an order-free hash of their names, ``size[i]`` their estimated bytes,
    ``opaque[i]`` how many are not tensors, ``preferred[i]`` how many are preferred.
    """

    model: ir.Model
    nodes: list[ir.Node]
    reads: list[list[ir.Value]]
    position: dict[int, int]  # id(node) -> its index in ``nodes``
    last_read: dict[ir.Value, int]
    count: np.ndarray
    key: np.ndarray
    size: np.ndarray
    opaque: np.ndarray
    preferred: np.ndarray
    weights: list[list[tuple[str, int]]]  # per node: (initializer name or node key, bytes)

    def crossings(self, positions: Sequence[int]) -> list[list[str]]:
        """The names of the values crossing each of the increasing ``positions``, sorted."""
        found: list[list[str]] = [[] for _ in positions]
        for value, last in self.last_read.items():
            producer = value.producer()
            start = self.position[id(producer)] + 1 if producer is not None else 0
            k = bisect.bisect_left(positions, start)
            while k < len(positions) and positions[k] <= last:
                found[k].append(value.name or "")
                k += 1
        return [sorted(names) for names in found]


def layout(model: ir.Model, prefer: Collection[str] = (), dims: Mapping[str, int] | None = None) -> Layout:
    """The :class:`Layout` of ``model``; ``dims`` sizes symbolic dimensions by name for the
    byte estimates (others count 1), ``prefer`` names the preferred values."""
    graph = model.graph
    nodes = list(graph)
    reads = [node_reads(node, graph) for node in nodes]
    order = topological_order(nodes, reads)
    if order is not None:
        nodes, reads = [nodes[i] for i in order], [reads[i] for i in order]
    position = {id(node): i for i, node in enumerate(nodes)}
    last_read: dict[ir.Value, int] = {}
    for i, values in enumerate(reads):
        for value in values:
            producer = value.producer()
            if producer is not None and id(producer) in position:  # not a graph input or initializer
                last_read[value] = i
    spans = [(position[id(v.producer())] + 1, last, v) for v, last in last_read.items()]
    spans = [(start, last, v) for start, last, v in spans if start <= last]
    starts = np.array([s for s, _, _ in spans], np.int64)
    stops = np.array([last + 1 for _, last, _ in spans], np.int64)
    n = len(nodes)

    def running(amounts: np.ndarray) -> np.ndarray:
        """Per position, the sum of ``amounts`` over the values crossing it."""
        diff = np.zeros(n + 2, amounts.dtype)
        np.add.at(diff, starts, amounts)
        np.subtract.at(diff, stops, amounts)
        return np.cumsum(diff, dtype=amounts.dtype)[:n + 1]

    values = [v for _, _, v in spans]
    count = running(np.ones(len(values), np.int64))
    key = running(np.array([hash(v.name or "") & _MASK for v in values], np.uint64))  # sums modulo 2**64
    size = running(np.array([_estimated_bytes(v, dims or {}) for v in values], np.float64))
    opaque = running(np.array([v.type is not None and not isinstance(v.type, ir.TensorType) for v in values],
                              np.int64))
    preferred = running(np.array([(v.name or "") in prefer for v in values], np.int64))
    sizes = {name: tensor_bytes(v.const_value) for name, v in graph.initializers.items() if v.const_value is not None}
    weights = [_node_weights(node, reads[i], sizes) for i, node in enumerate(nodes)]
    return Layout(model, nodes, reads, position, last_read, count, key, size, opaque, preferred, weights)


def topological_order(nodes: Sequence[ir.Node], reads: Sequence[Sequence[ir.Value]]) -> list[int] | None:
    """None when ``nodes`` are in a topological order already (ONNX requires one), else one
    (node indices) that keeps each node as early as its inputs allow, ties by the order
    given; ``reads[i]``: what node ``i`` reads. A cycle keeps the order given (None):
    onnxruntime will refuse it."""
    index = {id(node): i for i, node in enumerate(nodes)}
    preds = [{index[id(made_by)] for v in values if (made_by := v.producer()) is not None and id(made_by) in index}
             for values in reads]
    if all(p < i for i, ps in enumerate(preds) for p in ps):
        return None
    waiting = [len(ps) for ps in preds]
    users: list[list[int]] = [[] for _ in nodes]
    for i, ps in enumerate(preds):
        for p in ps:
            users[p].append(i)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    return order if len(order) == len(nodes) else None


def node_reads(node: ir.Node, graph: ir.Graph | None) -> list[ir.Value]:
    """The values ``node`` reads from its graph: its inputs, and the values its subgraphs
    read from outside themselves (``graph``: the node's graph; None: from any graph)."""
    values = [v for v in node.inputs if v is not None]
    inner: list[ir.Graph] = []
    for attr in node.attributes.values():
        if attr.type == ir.AttributeType.GRAPH:
            inner.append(attr.as_graph())
        elif attr.type == ir.AttributeType.GRAPHS:
            inner.extend(attr.as_graphs())
    if not inner:
        return values
    for sub in inner:
        owned = {id(g) for g in _graphs_in(sub)}
        for sub_node in ir.traversal.RecursiveGraphIterator(sub):
            for value in sub_node.inputs:
                if value is None or value.graph is None or id(value.graph) in owned:
                    continue
                if graph is None or value.graph is graph:
                    values.append(value)
    return list(dict.fromkeys(values))


def _graphs_in(graph: ir.Graph) -> list[ir.Graph]:
    graphs = [graph]
    for node in ir.traversal.RecursiveGraphIterator(graph):
        for attr in node.attributes.values():
            if attr.type == ir.AttributeType.GRAPH:
                graphs.append(attr.as_graph())
            elif attr.type == ir.AttributeType.GRAPHS:
                graphs.extend(attr.as_graphs())
    return graphs


def _estimated_bytes(value: ir.Value, dims: Mapping[str, int]) -> float:
    if value.shape is None or value.dtype is None:
        return 0.0
    elements = 1
    for dim in value.shape.dims:
        elements *= dim if isinstance(dim, int) else dims.get(dim.value or "", 1)
    return float(elements * value.dtype.itemsize)


def _node_weights(node: ir.Node, reads: list[ir.Value], sizes: Mapping[str, int]) -> list[tuple[str, int]]:
    """(name, bytes) of the main-graph initializers ``node`` reads (``reads``, their sizes in
    ``sizes``), and of what it holds itself (Constant tensors, subgraph initializers), named
    after the node."""
    weights = [(v.name or "", sizes[v.name or ""]) for v in reads if v.is_initializer() and (v.name or "") in sizes]
    own = constant_bytes(node) if node.attributes else 0
    for attr in node.attributes.values():
        subs = [attr.as_graph()] if attr.type == ir.AttributeType.GRAPH else (
            list(attr.as_graphs()) if attr.type == ir.AttributeType.GRAPHS else [])
        for sub in subs:
            for g in _graphs_in(sub):
                own += sum(tensor_bytes(v.const_value) for v in g.initializers.values() if v.const_value is not None)
                own += sum(constant_bytes(n) for n in g)
    if own:
        weights.append((f"\0node{id(node)}", own))
    return weights


@dataclass(frozen=True)
class Segment:
    """Nodes ``start..stop-1`` of one model, what they read from earlier segments or the
    graph inputs (``inputs``), and what they hand on or give out (``outputs``)."""

    start: int
    stop: int
    inputs: list[str]
    outputs: list[str]


@dataclass(frozen=True)
class SegmentPlan:
    """Segments of the reference and, paired with them, of the candidate; ``cuts[k]`` names
    the values crossing the cut after segment ``k`` (one cut fewer than segments)."""

    reference: list[Segment]
    candidate: list[Segment] | None
    cuts: list[list[str]]
    after: list[str]  # the last reference node before each cut, for people

    @property
    def count(self) -> int:
        return len(self.reference)


def plan_segments(reference: Layout, candidate: Layout | None, budget: int | None,
                  max_nodes: int | None = None) -> SegmentPlan:
    """Cut both layouts at the same values into segments of at most ``budget`` weight bytes
    and ``max_nodes`` nodes each (None: no such limit) where a usable cut allows (see the
    module docstring)."""
    pairs = _usable_cuts(reference, candidate)
    positions = [i for i, _ in pairs]
    end = (len(reference.nodes), len(candidate.nodes) if candidate is not None else 0)
    chosen: list[tuple[int, int]] = []
    start = (0, 0)
    k = 0
    while k < len(pairs):
        ref_bytes = _Counter(reference, start[0])
        cand_bytes = _Counter(candidate, start[1]) if candidate is not None else None

        def fill(i: int, j: int) -> float:
            """How full a segment from ``start`` to (``i``, ``j``) is: its largest share of a limit."""
            shares = [0.0]
            if max_nodes is not None:
                shares.append(max(i - start[0], j - start[1]) / max_nodes)
            if budget is not None:
                shares.append(ref_bytes.upto(i) / budget)
                if cand_bytes is not None:
                    shares.append(cand_bytes.upto(j) / budget)
            return max(shares)

        best: dict[bool, tuple[tuple[float, ...], tuple[int, int]]] = {}  # by whether half full
        cap = 1.0  # a segment whose first cut lies past the limit (a heavy node) may hold that much
        while k < len(pairs):
            i, j = pairs[k]
            share = fill(i, j)
            if not best:
                cap = max(cap, share)
            elif share > cap:
                break
            rank = (-float(reference.preferred[i] > 0), float(reference.count[i]), float(reference.size[i]), -float(i))
            half = share >= MIN_FILL
            if half not in best or rank <= best[half][0]:
                best[half] = (rank, (i, j))
            k += 1
        if not best or (k == len(pairs) and fill(*end) <= cap):
            break
        cut = best.get(True, best.get(False))
        assert cut is not None
        chosen.append(cut[1])
        start = cut[1]
        k = bisect.bisect_right(positions, start[0])
    return _segments(reference, candidate, chosen)


class _Counter:
    """Weight bytes of a growing segment, from ``start`` on (an initializer counted once)."""

    def __init__(self, layout_: Layout, start: int) -> None:
        self.layout, self.at, self.seen, self.total = layout_, start, set[str](), 0

    def upto(self, stop: int) -> int:
        for i in range(self.at, stop):
            for name, nbytes in self.layout.weights[i]:
                if name not in self.seen:
                    self.seen.add(name)
                    self.total += nbytes
        self.at = max(self.at, stop)
        return self.total


def segment_weight_bytes(lay: Layout, segment: Segment) -> int:
    """The weight bytes ``segment`` holds: the initializers its nodes read (each once) and the
    tensors they hold themselves, as the plan counts them against its budget."""
    return _Counter(lay, segment.start).upto(segment.stop)


def _usable_cuts(reference: Layout, candidate: Layout | None) -> list[tuple[int, int]]:
    """Usable cut positions (reference, candidate), both increasing; the candidate position
    of each is the first later than the one before that is crossed by values of the same names."""
    n = len(reference.nodes)
    positions = [i for i in range(1, n) if reference.opaque[i] == 0]
    if candidate is None:
        return [(i, 0) for i in positions]
    by_key: dict[tuple[int, int], list[int]] = defaultdict(list)
    for j in range(1, len(candidate.nodes)):
        if candidate.opaque[j] == 0:
            by_key[(int(candidate.count[j]), int(candidate.key[j]))].append(j)
    pairs = []
    last = 0
    for i in positions:
        options = by_key.get((int(reference.count[i]), int(reference.key[i])))
        if not options:
            continue
        k = int(np.searchsorted(options, last, side="right"))
        if k < len(options):
            last = options[k]
            pairs.append((i, last))
    return pairs


def _segments(reference: Layout, candidate: Layout | None, chosen: Sequence[tuple[int, int]]) -> SegmentPlan:
    """The plan for cuts at ``chosen``; a cut whose crossing names differ between the models
    (a hash collision, in theory) is dropped."""
    ref_names = reference.crossings([i for i, _ in chosen])
    cand_names = candidate.crossings([j for _, j in chosen]) if candidate is not None else ref_names
    cuts, kept = [], []
    for pair, names, other in zip(chosen, ref_names, cand_names):
        if names == other:
            cuts.append(names)
            kept.append(pair)
    ref_bounds = [0, *(i for i, _ in kept), len(reference.nodes)]
    ref_segments = _bounded(reference, ref_bounds, cuts)
    cand_segments = None
    if candidate is not None:
        cand_segments = _bounded(candidate, [0, *(j for _, j in kept), len(candidate.nodes)], cuts)
    after = [_label(reference.nodes[i - 1], i - 1) for i, _ in kept]
    return SegmentPlan(ref_segments, cand_segments, cuts, after)


def _bounded(lay: Layout, bounds: list[int], cuts: list[list[str]]) -> list[Segment]:
    outputs = {v.name or "" for v in lay.model.graph.outputs}
    segments = []
    for k in range(len(bounds) - 1):
        start, stop = bounds[k], bounds[k + 1]
        made = {v.name for i in range(start, stop) for v in lay.nodes[i].outputs if v is not None}
        inputs = sorted({v.name or "" for i in range(start, stop) for v in lay.reads[i]
                         if v.name not in made and not v.is_initializer()})
        hand_on = set(cuts[k]) if k < len(cuts) else set()
        given = sorted(name for name in made if name in hand_on or name in outputs)
        segments.append(Segment(start, stop, inputs, [n for n in given if n]))
    return segments


def _label(node: ir.Node, index: int) -> str:
    """A node as people find it: its name, else its op type and position."""
    return node.name or f"{node.op_type} #{index}"
