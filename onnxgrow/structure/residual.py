"""Residual connections and the residual stream they form (docs/design.md §11).

A *residual connection* is an ``Add`` of two computed tensors of the same shape (no
broadcasting) whose operands both descend from one value, the *entry*: their latest common
ancestor in graph order. Either one operand is the entry itself (an *identity shortcut*,
the other operand is the *branch*), or neither is (a *projection shortcut*: the shorter
side is the shortcut, a torchvision ``downsample``). The branch, and a projection shortcut,
must hold a projection: ``x + 0.044715·x³`` in a tanh GELU, a rotary ``q·cos + rot(q)·sin``
and an attention mask added to scores have none, so they are no residual connections.

Connections chain: the entry of one is the *exit* of the one before, which is the ``Add``'s
output (pre-norm), or that output after a *post region*: elementwise ops and
normalisations that read nothing else (a post-norm's LayerNorm, a ResNet's ReLU, a Cast).
The *residual stream* is a maximal chain. Chains are taken longest first; a chain whose
``Add`` lies inside the branch of a chain already taken is no stream (an attention's
``scores + position_bias`` in T5's second layer descends from the first layer's bias
through the whole first layer, so it looks like a connection, but it chains to nothing
and lies inside the second layer's attention). The last connection of a stream has the
post region its predecessor had (the same ops, read from its ``Add``), else none: the
final LayerNorm of a pre-norm model is the model's, not the last block's.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import onnx_ir as ir

from onnxgrow.graph import BINARY_OPS, UNARY_OPS
from onnxgrow.structure.attention import Attention
from onnxgrow.structure.flow import DataFlow
from onnxgrow.structure.norms import DECOMPOSED_OPS, NORM_OPS, Norm, find_norm, fused_norm, is_fused_norm
from onnxgrow.structure.projections import Projection

#: Ops a post region may hold.
POST_OPS = frozenset(UNARY_OPS) | frozenset(BINARY_OPS) | DECOMPOSED_OPS | frozenset(NORM_OPS)
#: At most this many nodes between a connection's Add and the next entry (a decomposed LayerNorm has 9).
MAX_POST_NODES = 32
#: Ops that change nothing at inference: they are no activation.
_PASS_OPS = frozenset({"Identity", "Dropout", "Cast"})


class ResidualKind(enum.Enum):
    """What a residual branch computes."""

    ATTENTION = "attention"
    CROSS_ATTENTION = "cross-attention"
    FFN = "ffn"
    CONV = "conv"
    OTHER = "other"


@dataclass(frozen=True)
class FFN:
    """A feed-forward branch: projections reading its (normalised) input, the gate among
    them (``gate_proj``, ``wi_0``: its activation multiplies the other), and the projection
    back to the stream."""

    inputs: tuple[Projection, ...]
    gate: Projection | None
    output: Projection

    @property
    def width(self) -> int:
        """The inner width (``intermediate_size``)."""
        return self.inputs[0].width


@dataclass(eq=False)
class Residual:
    """One residual connection on a stream: ``exit = post(shortcut(entry) + branch(entry))``.

    ``branch``: the nodes on a path from ``entry`` to the Add's branch operand; ``attached``:
    projections that read another tensor and feed only this branch, with the nodes between
    (a cross-attention's key and value projections of the encoder's output);
    ``projections``: those of both, in graph order; ``outputs``: the projections whose
    outputs reach the Add with no projection between (``o_proj``, ``down_proj``, ``conv2``).
    """

    entry: ir.Value
    add: ir.Node
    exit: ir.Value
    branch: tuple[ir.Node, ...]
    shortcut: tuple[ir.Node, ...] = ()
    post: tuple[ir.Node, ...] = ()
    attached: tuple[ir.Node, ...] = ()
    projections: tuple[Projection, ...] = ()
    shortcut_projections: tuple[Projection, ...] = ()
    outputs: tuple[Projection, ...] = ()
    pre_norm: Norm | None = None
    post_norm: Norm | None = None
    output_norm: Norm | None = None
    attentions: tuple[Attention, ...] = ()
    ffn: FFN | None = None
    kind: ResidualKind = ResidualKind.OTHER

    @property
    def identity_shortcut(self) -> bool:
        return not self.shortcut

    @property
    def nodes(self) -> tuple[ir.Node, ...]:
        """Attached nodes, branch, shortcut, the Add and the post region (each in graph order)."""
        return (*self.attached, *self.branch, *self.shortcut, self.add, *self.post)


@dataclass
class _Candidate:
    add: ir.Node
    entry: ir.Value
    operand: ir.Value  # the branch's output
    branch: list[ir.Node]
    shortcut: list[ir.Node] = field(default_factory=list)
    post: list[ir.Node] = field(default_factory=list)
    exit: ir.Value | None = None

    @property
    def nodes(self) -> list[ir.Node]:
        return [*self.branch, *self.shortcut, self.add, *self.post]


def _same_shape(a: ir.Value, b: ir.Value) -> bool:
    """No evidence that ``a + b`` broadcasts (shapes unknown count as the same)."""
    if a.shape is None or b.shape is None:
        return True
    if len(a.shape) != len(b.shape):
        return False
    for x, y in zip(a.shape.dims, b.shape.dims):
        if isinstance(x, int) and isinstance(y, int):
            if x != y:
                return False
        elif x == 1 or y == 1:
            return False
    return True


def _candidate(node: ir.Node, flow: DataFlow, projections: Mapping[ir.Node, Projection]) -> _Candidate | None:
    if node.op_type != "Add" or node.domain not in ("", "ai.onnx") or len(node.inputs) != 2:
        return None
    a, b = node.inputs
    if a is None or b is None or a is b or not (flow.is_computed(a) and flow.is_computed(b)) or not _same_shape(a, b):
        return None
    entry = flow.latest_common_ancestor(a, b)
    if entry is None:
        return None
    if entry is a or entry is b:
        operand = b if entry is a else a
        branch = flow.between(entry, operand)
        return _Candidate(node, entry, operand, branch) if any(n in projections for n in branch) else None
    sides = [(flow.between(entry, a), a), (flow.between(entry, b), b)]
    if not all(any(n in projections for n in side) for side, _ in sides):
        return None
    sides.sort(key=lambda side: len(side[0]))
    (shortcut, _), (branch, operand) = sides
    return _Candidate(node, entry, operand, branch, shortcut)


def _post_region(candidate: _Candidate, by_output: Mapping[ir.Value, _Candidate], flow: DataFlow,
                 projections: Mapping[ir.Node, Projection]) -> tuple[_Candidate, list[ir.Node]] | None:
    """The connection whose Add output ``candidate``'s entry is, or comes from through a post
    region (see the module rules), with that region; None when there is none."""
    entry = candidate.entry
    if entry in by_output:
        return by_output[entry], []
    region: set[ir.Node] = set()
    sources: set[ir.Value] = set()
    stack, seen = [entry], set()
    while stack:
        value = stack.pop()
        if value in seen:
            continue
        seen.add(value)
        if value in by_output:
            sources.add(value)
            continue
        node = value.producer()
        if (node is None or node in projections or node.op_type not in POST_OPS or len(region) >= MAX_POST_NODES
                or node.domain not in ("", "ai.onnx", "com.microsoft")):
            return None
        region.add(node)
        stack.extend(flow.computed_inputs(node))
    if len(sources) != 1:
        return None
    for node in region:
        if any(out is not entry and any(c not in region for c in out.consumers()) for out in node.outputs):
            return None
    return by_output[sources.pop()], flow.in_order(region)


def _post_like(add: ir.Node, template: list[ir.Node], flow: DataFlow) -> list[ir.Node]:
    """The nodes after ``add`` that repeat ``template``'s ops (a stream's last post region)."""
    if not template:
        return []
    wanted = Counter(node.op_type for node in template)
    members: list[ir.Node] = []
    reached = {add.outputs[0]}
    grew = True
    while grew and len(members) < len(template):
        grew = False
        for value in list(reached):
            for node in value.consumers():
                inputs = flow.computed_inputs(node)
                if node in members or not all(v in reached for v in inputs) or wanted[node.op_type] == 0:
                    continue
                members.append(node)
                reached.update(node.outputs)
                grew = True
    members = flow.in_order(members)
    if Counter(node.op_type for node in members) != wanted:
        return []
    leaving = [out for node in members for out in node.outputs
               if any(c not in members for c in out.consumers()) or out.is_graph_output()]
    return members if len(leaving) == 1 and leaving[0] is members[-1].outputs[0] else []


def find_chains(flow: DataFlow, projections: Mapping[ir.Node, Projection]) -> list[list[_Candidate]]:
    """The residual streams of the graph as chains of connections (see the module rules),
    in graph order of their first connection."""
    candidates = [c for node in flow.nodes if (c := _candidate(node, flow, projections)) is not None]
    by_output = {c.add.outputs[0]: c for c in candidates}
    successor: dict[int, _Candidate] = {}
    has_predecessor: set[int] = set()
    for candidate in candidates:
        found = _post_region(candidate, by_output, flow, projections)
        if found is None:
            continue
        before, region = found
        if id(before) in successor:
            continue  # a second connection reading the same stream point starts a chain of its own
        successor[id(before)] = candidate
        has_predecessor.add(id(candidate))
        before.post, before.exit = region, candidate.entry
    chains = []
    for candidate in candidates:
        if id(candidate) in has_predecessor:
            continue
        chain = [candidate]
        while id(chain[-1]) in successor:
            chain.append(successor[id(chain[-1])])
        chains.append(chain)
    taken: list[list[_Candidate]] = []
    covered: set[ir.Node] = set()
    for chain in sorted(chains, key=lambda c: (-len(c), flow.node_position(c[0].add))):
        if any(c.add in covered for c in chain):
            continue
        last = chain[-1]
        template = chain[-2].post if len(chain) > 1 else []
        if all(node.op_type in _PASS_OPS for node in template):
            template = []  # a Cast the next block's norm starts with (T5, optimum's LLaMA): no post region
        last.post = _post_like(last.add, template, flow)
        last.exit = last.post[-1].outputs[0] if last.post else last.add.outputs[0]
        taken.append(chain)
        covered.update(node for c in chain for node in c.nodes)
    return sorted(taken, key=lambda c: flow.node_position(c[0].add))


def build_residual(candidate: _Candidate, flow: DataFlow, projections: Mapping[ir.Node, Projection],
                   attentions: Mapping[ir.Node, Attention]) -> Residual:
    """The :class:`Residual` of a chained connection: its projections, norms, attentions
    (``attentions``: by their query projection's node), FFN."""
    branch, shortcut = tuple(candidate.branch), tuple(candidate.shortcut)
    inside = set(branch)
    mine = tuple(projections[n] for n in branch if n in projections)
    outputs, output_norm = _outputs(candidate.operand, inside, projections, flow)
    first = min((flow.node_position(p.node) for p in mine), default=0)
    pre_norm = find_norm([n for n in branch if flow.node_position(n) < first], candidate.entry, flow)
    post_norm = find_norm(candidate.post, candidate.add.outputs[0], flow) if candidate.post else None
    held = tuple(a for node in branch if (a := attentions.get(node)) is not None)
    if len(held) == 1 and len(outputs) == 1:
        held[0].output = outputs[0]
    ffn = None if held or _has_softmax(branch) else _ffn(mine, outputs, inside, flow)
    assert candidate.exit is not None
    return Residual(
        candidate.entry, candidate.add, candidate.exit, branch, shortcut, tuple(candidate.post),
        projections=mine, shortcut_projections=tuple(projections[n] for n in shortcut if n in projections),
        outputs=outputs, pre_norm=pre_norm, post_norm=post_norm, output_norm=output_norm, attentions=held,
        ffn=ffn, kind=_kind(mine, held, branch))


def _outputs(operand: ir.Value, inside: set[ir.Node], projections: Mapping[ir.Node, Projection],
             flow: DataFlow) -> tuple[tuple[Projection, ...], Norm | None]:
    """The projections whose outputs reach the branch's output with no projection between,
    and a normalisation on that way (a conv block's last BatchNorm). Integer tensors (the
    shapes a Reshape is given, indices) carry no values there and are not followed."""
    found: list[Projection] = []
    norm = None
    stack, seen = [operand], set()
    while stack:
        value = stack.pop()
        node = value.producer()
        if value in seen or node is None or node not in inside:
            continue
        seen.add(value)
        if node in projections:
            found.append(projections[node])
            continue
        if is_fused_norm(node) and norm is None:
            norm = fused_norm(node)
        stack.extend(v for v in node.inputs if v is not None and not _integer(v))
    return tuple(sorted(found, key=lambda p: flow.node_position(p.node))), norm


def _integer(value: ir.Value) -> bool:
    return value.dtype is not None and value.dtype.is_integer()


def _has_softmax(nodes: tuple[ir.Node, ...]) -> bool:
    return any(n.op_type == "Softmax" for n in nodes)


def _kind(mine: tuple[Projection, ...], held: tuple[Attention, ...], branch: tuple[ir.Node, ...]) -> ResidualKind:
    if any(p.op_type == "Conv" for p in mine):
        return ResidualKind.CONV
    if any(a.cross for a in held):
        return ResidualKind.CROSS_ATTENTION
    if held or _has_softmax(branch):
        return ResidualKind.ATTENTION
    return ResidualKind.FFN if mine else ResidualKind.OTHER


def _ffn(mine: tuple[Projection, ...], outputs: tuple[Projection, ...], inside: set[ir.Node],
         flow: DataFlow) -> FFN | None:
    """The FFN of a branch of MatMul/Gemm projections with one output projection."""
    if len(outputs) != 1 or any(p.op_type == "Conv" for p in mine) or len(mine) < 2:
        return None
    sources = _projection_sources(mine, inside, flow)
    inputs = tuple(p for p in mine if not sources.get(p.input) and p not in outputs)
    if not inputs:
        return None
    return FFN(inputs, _gate(inputs, sources, inside, flow), outputs[0])


def _projection_sources(mine: tuple[Projection, ...], inside: set[ir.Node],
                        flow: DataFlow) -> dict[ir.Value, frozenset[ir.Node]]:
    """For every value of the branch, the projections it is computed from."""
    sources: dict[ir.Value, frozenset[ir.Node]] = {}
    nodes = {p.node for p in mine}
    for node in flow.in_order(inside):
        found = frozenset().union(*(sources.get(v, frozenset()) for v in flow.computed_inputs(node)))
        for out in node.outputs:
            sources[out] = frozenset({node}) if node in nodes else found
    return sources


def _gate(inputs: tuple[Projection, ...], sources: dict[ir.Value, frozenset[ir.Node]], inside: set[ir.Node],
          flow: DataFlow) -> Projection | None:
    """Of two input projections multiplied together, the one passed through an activation first."""
    if len(inputs) != 2:
        return None
    for node in flow.in_order(inside):
        operands = flow.computed_inputs(node)
        if node.op_type != "Mul" or len(operands) != 2:
            continue
        sides = [sources.get(v, frozenset()) for v in operands]
        if {frozenset({p.node}) for p in inputs} != set(sides):
            continue
        for operand, side in zip(operands, sides):
            (start,) = side
            if any(n.op_type not in _PASS_OPS for n in flow.between(start.outputs[0], operand)):
                return next(p for p in inputs if p.node is start)
        return None
    return None


def attach_projections(residuals: list[Residual], projections: Mapping[ir.Node, Projection],
                       flow: DataFlow) -> None:
    """Give each connection the projections that read another tensor and feed only its
    branch, with the nodes between (``Residual.attached``, also in ``projections``)."""
    owner: dict[ir.Node, Residual] = {}
    taken: set[ir.Node] = set()
    for residual in residuals:
        owner.update((node, residual) for node in residual.branch)
        taken.update(residual.nodes)
    for node, projection in projections.items():
        if node in taken:
            continue
        found = _feeds_one_branch(node, owner, taken)
        if found is None:
            continue
        residual, region = found
        residual.attached = tuple(flow.in_order({*residual.attached, *region}))
        inside = set(residual.attached) | set(residual.branch)
        residual.projections = tuple(projections[n] for n in flow.in_order(inside) if n in projections)
        taken.update(region)


def _feeds_one_branch(start: ir.Node, owner: Mapping[ir.Node, Residual], taken: set[ir.Node]
                      ) -> tuple[Residual, list[ir.Node]] | None:
    """The connection whose branch alone reads what ``start`` computes, with the nodes between."""
    region: list[ir.Node] = [start]
    reached: set[Residual] = set()
    frontier = [start]
    while frontier:
        node = frontier.pop()
        for out in node.outputs:
            if out.is_graph_output():
                return None
            for consumer in out.consumers():
                if consumer in owner:
                    reached.add(owner[consumer])
                elif consumer in taken or len(region) >= MAX_POST_NODES:
                    return None
                elif consumer not in region:
                    region.append(consumer)
                    frontier.append(consumer)
    if len(reached) != 1:
        return None
    return reached.pop(), region


def adopt_post_norm(residual: Residual, path: str | None, flow: DataFlow) -> None:
    """A stream's only connection has no predecessor to say whether a norm after its Add is
    its post-norm (DistilBERT's ``sa_layer_norm``) or the model's final norm (LLaMA's
    ``model.norm``): it is the connection's when its module path lies under the connection's
    ``path``. Then it becomes the post region and the norm's output the exit."""
    if residual.post or not path:
        return
    start = residual.add.outputs[0]
    after = flow.nodes[flow.node_position(residual.add) + 1:][:MAX_POST_NODES]
    norm = find_norm(after, start, flow)
    if norm is None or norm.name is None or not norm.name.startswith(path + "."):
        return
    inside = set(norm.nodes)
    values = [start, *(out for node in norm.nodes for out in node.outputs if out is not norm.output)]
    if any(c not in inside for value in values for c in value.consumers()):
        return
    residual.post, residual.post_norm, residual.exit = norm.nodes, norm, norm.output
