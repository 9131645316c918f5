"""The rule API: what an op rule sees of a channel group, and may do to it (docs/design.md §8).

A :class:`GroupContext` holds one channel group while it is planned and rewritten. Rules
call it to track the values that carry the channels (:meth:`GroupContext.track`,
:meth:`GroupContext.carry`), to refuse naming their node (:meth:`GroupContext.refuse`),
to record constraints, and, once the channel map is chosen, to rewrite constants
(:meth:`GroupContext.edit`, which records every axis it grew for the growth map:
:class:`WeightEdit`). The planner (:mod:`onnxgrow.widening.planner`) closes the
group by calling every reached node's :class:`Rule`.

A growth that drives a group may also, before the rewrite, give a weight's edit itself
(:meth:`GroupContext.replace_edit`; :meth:`GroupContext.append_units` for new units: a
vocabulary's LM head takes the new embedding rows, which the rule's own edit of that weight
then appends instead; a tied LM head reads the grown table, :mod:`onnxgrow.widening.tied`), and let
a weight several nodes read grow in place for all of them
(:meth:`GroupContext.share`: the lookup of a tied table reads the rows appended for its
head). A group that may reach model outputs carries an
:class:`~onnxgrow.widening.new_outputs.OutputClasses` (``classes``).

A rule that needs the channels in equal blocks, each widened alike (the groups of a grouped
convolution, the halves of a Split), asks for them with :meth:`GroupContext.require_blocks`:
the planner then starts again with the origin's channels cut that much finer
(docs/design.md §1, block maps).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, NoReturn, Protocol

import numpy as np
import onnx_ir as ir

from onnxgrow.constants import ConstantRef, edit_constant, find_constant, make_initializer, remove_dead
from onnxgrow.errors import RefusedError
from onnxgrow.graph import CONTROL_FLOW_OPS, node_label, rank_of, subgraph_holders, subgraphs_of
from onnxgrow.grown_tensors import AxisEdit
from onnxgrow.names import generated_name
from onnxgrow.widening.channel_map import ChannelMap, Init, build_channel_map
from onnxgrow.widening.layout import AxisIndex, Embedding

if TYPE_CHECKING:  # new_outputs builds on this module
    from onnxgrow.widening.new_outputs import OutputClasses

#: The tracked inputs and outputs of one node, with the way each carries the channels. Keyed
#: by ``ir.Value | None`` so a rule may look up any ``node.inputs[i]``: an omitted input is
#: never tracked.
Known = Mapping[ir.Value | None, Embedding]


class Rule(Protocol):
    """How one op type carries, contracts or produces the widened channels (docs/design.md §8)."""

    def propagate(self, ctx: GroupContext, node: ir.Node, known: Known) -> None: ...

    def rewrite(self, ctx: GroupContext, node: ir.Node, known: Known) -> None: ...


@dataclass
class TensorChange:
    """One constant rewritten: its name and shapes before and after."""

    name: str
    old_shape: tuple[int, ...]
    new_shape: tuple[int, ...]
    node: str


def change_lines(changes: Sequence[TensorChange], compared: str) -> list[str]:
    """A report's lines for the tensors a growth rewrote, and what its check compares."""
    lines = [f"  {c.name}: {list(c.old_shape)} → {list(c.new_shape)}" for c in changes]
    return lines + [f"  checked: {compared}"] if compared else lines


def merge_changes(changes: Sequence[TensorChange]) -> list[TensorChange]:
    """One entry per tensor: first old shape, last new shape."""
    merged: dict[str, TensorChange] = {}
    for change in changes:
        first = merged.get(change.name, change)
        merged[change.name] = TensorChange(change.name, first.old_shape, change.new_shape, first.node)
    return list(merged.values())


@dataclass(frozen=True)
class AxisRecord:
    """One axis of a weight grown by an edit: position ``j`` now holds old position
    ``src[j]`` times ``scale[j]``; ``fresh`` marks the positions of new units (a gathered
    per-channel value still copies ``src`` there)."""

    kind: str  # "produce", "contract", "gather", "fill" or "append" (see onnxgrow.widening.rules.common)
    axis: int  # in the layout the editing node sees
    src: np.ndarray
    scale: np.ndarray
    fresh: np.ndarray


#: The axis edits of the constant being rewritten, collected while :meth:`GroupContext.edit` runs.
EDIT_LOG: ContextVar[list[AxisRecord] | None] = ContextVar("EDIT_LOG", default=None)


@dataclass
class WeightEdit:
    """One constant input rewritten, and how each of its axes grew (for the growth map).

    ``root_axes[a]`` is the axis of the stored initializer ``name`` that the node sees as
    axis ``a`` (through the Transposes in between).
    """

    node: ir.Node
    input_index: int
    name: str
    root_axes: tuple[int, ...]
    axes: list[AxisRecord]
    old_shape: tuple[int, ...]  # of ``name``'s tensor before this edit


def chain_axes(ref: ConstantRef, rank: int) -> tuple[int, ...]:
    """For each axis the node sees, the root tensor's axis behind it."""
    axes = list(range(rank))
    for chain_node in ref.chain:
        if chain_node.op_type == "Transpose":
            perm = chain_node.attributes.get_ints("perm", None)
            perm = list(range(len(axes)))[::-1] if perm is None else list(perm)
            axes = [axes[p] for p in perm]
    return tuple(axes)


class MoreBlocks(Exception):
    """Raised by :meth:`GroupContext.require_blocks`: the group's units must be cut ``factor``
    times finer (at ``node``, for ``reason``); the planner starts again with them."""

    def __init__(self, factor: int, node: ir.Node, reason: str) -> None:
        super().__init__(reason)
        self.factor, self.node, self.reason = factor, node, reason


def embedding_rank(embedding: Embedding, *values: ir.Value | None) -> int | None:
    """The rank of a tracked tensor: the embedding's, else that of the first of ``values`` with a shape."""
    if embedding.rank is not None:
        return embedding.rank
    for value in values:
        rank = rank_of(value)
        if rank is not None:
            return rank
    return None


def any_embedding(known: Known) -> Embedding:
    """The embedding of one of the node's tracked values (rules whose values all carry it alike)."""
    return next(iter(known.values()))


@dataclass
class GroupContext:
    """The state of one channel group: tracked values, roles, constraints, and edits."""

    graph: ir.Graph
    width: int
    origin: str
    #: The origin's channels are ``blocks`` blocks of ``width`` units, each widened alike (§1).
    blocks: int = 1
    #: The node that asked for the blocks, and why (named when a new width does not divide).
    blocked_by: tuple[ir.Node, str] | None = None
    tracked: dict[ir.Value, Embedding] = field(default_factory=dict)
    producers: list[ir.Node] = field(default_factory=list)
    contractors: list[ir.Node] = field(default_factory=list)
    uniform_required: dict[str, str] = field(default_factory=dict)
    together_required: list[tuple[ir.Node, list[ir.Node], str]] = field(default_factory=list)
    closing_checks: list[tuple[ir.Node, Callable[[], str]]] = field(default_factory=list)
    changes: list[TensorChange] = field(default_factory=list)
    cmap: ChannelMap | None = None
    #: Set when the group may reach model outputs (new classes) and normalise over them.
    classes: OutputClasses | None = None
    edits: list[WeightEdit] = field(default_factory=list)
    #: The generator rewrite() seeds; planning (every group ``inspect`` closes) never makes one.
    _rng: np.random.Generator | None = None
    _queue: deque[ir.Node] = field(default_factory=deque)
    _waiting: dict[ir.Node, None] = field(default_factory=dict)
    _order: dict[ir.Node, int] | None = None
    _propagated: dict[ir.Node, Known] = field(default_factory=dict)
    _rules: dict[ir.Node, Rule] = field(default_factory=dict)
    _indices: dict[ir.Value, AxisIndex] = field(default_factory=dict)
    _given: dict[tuple[ir.Node, int], Callable[[np.ndarray], np.ndarray]] = field(default_factory=dict)
    _shared: set[ir.Value] = field(default_factory=set)
    _holders: dict[ir.Value, list[ir.Node]] | None = None
    #: Dims derived where shape inference left them unknown (rules/known_dims.py), per value.
    dims_memo: dict[ir.Value, list[int | str | None] | None] = field(default_factory=dict)

    @property
    def rng(self) -> np.random.Generator:
        """The group's random generator (``seed + 1`` once rewrite() has chosen the map)."""
        if self._rng is None:
            self._rng = np.random.default_rng(0)
        return self._rng

    # ----- planning -----------------------------------------------------------------
    def refuse(self, node: ir.Node | None, reason: str) -> NoReturn:
        """Raise the refusal, naming the blocking node."""
        where = f" at {node_label(node)}" if node is not None else ""
        raise RefusedError(f"cannot widen {self.origin}{where}: {reason}", node.name if node else None)

    def track(self, value: ir.Value, embedding: Embedding, via: ir.Node | None = None) -> None:
        """``value`` carries the group's channels as ``embedding``."""
        known = self.tracked.get(value)
        if known is not None:
            if known.axis != embedding.axis or known.layout != embedding.layout:
                self.refuse(via, f"tensor {value.name!r} would carry the channels in two different ways")
            if known.rank is None and embedding.rank is not None:
                self.tracked[value] = embedding
            return
        model_output = value.is_graph_output() and any(v is value for v in self.graph.outputs)
        if model_output and self.classes is None:
            self.refuse(
                via or value.producer(),
                f"the widened channels reach model output {value.name!r}; widening would change "
                "the model's interface (to add output classes to the last layer, pass --new-outputs)",
            )
        if model_output:
            assert self.classes is not None
            self.classes.outputs[value] = embedding
        if value.is_graph_input() and any(v is value for v in self.graph.inputs):
            self.refuse(
                via,
                f"the channel group reaches model input {value.name!r}; widening would change "
                "the model's interface",
            )
        if value.const_value is not None or find_constant(value) is not None:
            self.refuse(via, f"constant {value.name!r} would have to carry the channels")
        self.tracked[value] = embedding
        producer = value.producer()
        if producer is not None:
            self._queue.append(producer)
        for consumer in value.consumers():
            self._queue.append(consumer)
        if value.is_graph_input() or value.is_graph_output():  # of a subgraph: its holder's rule passes it on
            self._queue.extend(self.holders().get(value, ()))

    def holders(self) -> dict[ir.Value, list[ir.Node]]:
        """The inputs and outputs of every subgraph, with the If/Loop/Scan nodes holding them
        (built once per group, when the channels first reach one)."""
        if self._holders is None:
            self._holders = subgraph_holders(self.graph)
        return self._holders

    def forward_only(self, node: ir.Node, known: Known, through: str) -> Embedding:
        """The embedding of ``node``'s input 0, for ops the channels cross only from input 0 on.

        Reached from an output (or another input) instead, the node is refused: the rule
        cannot say which channels of the input the output's channels come from.
        """
        x = node.inputs[0]
        if x is None or x not in known:
            self.refuse(node, f"cannot trace channels backward through {through}")
        return known[x]

    def carry(self, node: ir.Node, embedding: Embedding, values: Sequence[ir.Value | None],
              rank: int | None = None) -> None:
        """``values`` of ``node`` carry the channels unchanged: same axis and layout as ``embedding``.

        Each gets ``rank`` when given, else its own rank (or the embedding's when its shape is unknown).
        """
        for value in values:
            assert value is not None
            own = rank if rank is not None else rank_of(value) or embedding.rank
            self.track(value, embedding.with_axis(embedding.axis, own), node)

    def negative_axis(self, node: ir.Node, axis: int, rank: int | None) -> int:
        """The attribute ``axis`` of ``node`` counted from the end (``-1`` is the last axis).

        A non-negative axis needs the rank; without it the node is refused.
        """
        if axis < 0:
            return axis
        if rank is None:
            self.refuse(node, "its axis cannot be placed (unknown rank)")
        return axis - rank

    def require_constant(self, node: ir.Node, values: Sequence[ir.Value | None], what: str = "parameter") -> None:
        """Refuse ``node`` unless every given input is a constant (absent optional inputs pass)."""
        for value in values:
            if value is not None and find_constant(value) is None:
                self.refuse(node, f"its {what} {value.name!r} is computed at run time")

    def mark_producer(self, node: ir.Node) -> None:
        """``node`` produces the group's channels (its output units are copied)."""
        if node not in self.producers:
            self.producers.append(node)

    def mark_contractor(self, node: ir.Node) -> None:
        """``node`` contracts the group's channels (its input rows are split)."""
        if node not in self.contractors:
            self.contractors.append(node)

    def require_together(self, node: ir.Node, others: list[ir.Node], reason: str) -> None:
        """``others`` must be touched by the group too (checked once it is closed)."""
        self.together_required.append((node, others, reason))

    def check_when_closed(self, node: ir.Node, check: Callable[[], str]) -> None:
        """Once the group is closed, refuse ``node`` for the reason ``check()`` gives ('' when
        there is none): for a rule whose answer depends on which other values the group
        tracks (a target shape entry reading the size of a tensor the group may reach later)."""
        self.closing_checks.append((node, check))

    def mark_normaliser(self, node: ir.Node) -> None:
        """``node`` (Softmax, LogSoftmax) normalises over grown output classes (``classes`` set)."""
        assert self.classes is not None, "only a group that grows output classes normalises over them"
        if node not in self.classes.normalisers:
            self.classes.normalisers.append(node)

    def require_uniform(self, node: ir.Node, reason: str) -> None:
        """The map must copy every unit equally often and add no fresh units."""
        self.uniform_required[node.name or generated_name(node) or node.op_type] = reason

    def require_blocks(self, node: ir.Node, factor: int, reason: str) -> None:
        """The group's units must come in ``factor`` times as many blocks, each widened alike
        (copies stay in their block): planning starts again with the origin's channels cut
        that much finer (:class:`MoreBlocks`). Refused when the units do not divide."""
        if factor == 1:
            return
        if self.width % factor:
            total = self.width * self.blocks
            self.refuse(node, f"{reason}; the {total} channels of the layer cannot be cut into "
                              f"{self.blocks * factor} equal blocks")
        raise MoreBlocks(factor, node, reason)

    def units(self, q: int) -> int:
        """The new unit count for the origin's new width ``q``: refused, naming the node that
        asked for the blocks, when ``q`` is not a multiple of their count."""
        if q % self.blocks:
            node, reason = self.blocked_by if self.blocked_by is not None else (None, "")
            self.refuse(node, f"{reason}, so the new width must be a multiple of {self.blocks} "
                              f"(copies stay in their block); {q} is not")
        return q // self.blocks

    def wait_for_others(self, node: ir.Node) -> bool:
        """Whether ``node`` should wait until the other pending nodes have been propagated
        (a join whose untracked inputs they may still track): True, and ``node`` comes up
        again later, while any is queued or an earlier one (in graph order) waits too."""
        earlier = any(self._position(other) < self._position(node) for other in self._waiting if other is not node)
        if not self._queue and not earlier:
            return False
        self._propagated.pop(node, None)
        self._waiting[node] = None
        return True

    def next_pending(self) -> ir.Node | None:
        """A node that a newly tracked value reaches and whose rule has to look at it, or None.
        Nodes waiting for the others come last, the earliest in graph order first (it may
        track inputs of the later ones)."""
        if self._queue:
            return self._queue.popleft()
        if not self._waiting:
            return None
        first = min(self._waiting, key=self._position)
        del self._waiting[first]
        return first

    def _position(self, node: ir.Node) -> int:
        if self._order is None:
            self._order = {n: k for k, n in enumerate(self.graph)}
        return self._order.get(node, len(self._order))

    def propagate(self, node: ir.Node, rule: Rule) -> None:
        """Let ``rule`` (the one for ``node``) propagate the group through ``node``.

        A node is queued once per tracked value around it; when it comes up again with the
        same tracked inputs and outputs as at its last propagation, its rule would only
        repeat what it did (rules are deterministic in the node and what is known of it),
        so it is skipped.
        """
        self._rules[node] = rule
        known = self.known(node)
        if self._propagated.get(node) == known:
            return
        self._propagated[node] = known
        rule.propagate(self, node, known)

    def known(self, node: ir.Node) -> dict[ir.Value | None, Embedding]:
        """The tracked inputs and outputs of ``node`` (for an If, Loop or Scan, also those of
        its subgraphs)."""
        values: tuple[ir.Value | None, ...] = (*node.inputs, *node.outputs)
        if node.op_type in CONTROL_FLOW_OPS:
            values += tuple(v for _, g in subgraphs_of(node) for v in (*g.inputs, *g.outputs))
        return {v: self.tracked[v] for v in values if v is not None and v in self.tracked}

    def touched_nodes(self) -> list[ir.Node]:
        """Every node with a tracked input or output, in graph order (a subgraph's nodes after
        the node holding it)."""
        return [node for node in self.graph.all_nodes() if self.known(node)]

    # ----- given edits and shared weights -------------------------------------------
    def append_units(self, node: ir.Node, input_index: int, edit: Callable[[np.ndarray], np.ndarray]) -> None:
        """The growth gives the new units of the constant at ``node.inputs[input_index]``
        itself: ``edit`` is an :func:`~onnxgrow.widening.rules.common.appending` edit, which
        the growth map records as fresh units (see :meth:`replace_edit`)."""
        self.replace_edit(node, input_index, edit)

    def replace_edit(self, node: ir.Node, input_index: int, edit: Callable[[np.ndarray], np.ndarray]) -> None:
        """The growth gives the edit of the constant at ``node.inputs[input_index]`` itself:
        when the group is rewritten, ``edit`` replaces the rule's edit of that input (the rule
        must edit it: :meth:`rewrite` fails loudly on a given edit no rule asked for). It runs
        at that moment, so it may read the channel map (:meth:`index`), the constants edited
        before it (graph order) and draw from :attr:`rng`; it tells :data:`EDIT_LOG` what it
        grew, as the edits of :mod:`onnxgrow.widening.rules.common` do."""
        self._given[(node, input_index)] = edit

    def share(self, root: ir.Value) -> None:
        """Edits of the constant ``root`` change it in place for every node that reads it.

        Without this, an edit of a constant that other nodes read too gives the edited input a
        constant of its own. The caller vouches that every other reader accepts the change
        (appending rows to a table leaves what every old id reads as it was)."""
        self._shared.add(root)

    # ----- rewriting ----------------------------------------------------------------
    def rewrite(self, q: int, init: Init, noise: float, seed: int) -> None:
        """Choose the map, check constraints, and let every touched node's rule rewrite it.
        ``q`` is the origin's new width (in :attr:`blocks` blocks)."""
        self.cmap = build_channel_map(self.width, self.units(q), init, noise, seed)
        self._rng = np.random.default_rng(seed + 1)
        self.check(self.cmap)
        for node in self.touched_nodes():
            self._rules[node].rewrite(self, node, self.known(node))
        if self._given:
            node, index = next(iter(self._given))
            raise AssertionError(f"the edit given for input {index} of {node_label(node)} was not used: "
                                 "no rule edits that input")
        for value, embedding in self.tracked.items():
            self._update_shape(value, embedding)

    def check_together(self) -> None:
        """Refuse the closed group when a node that must change with it lies outside it, or a
        check left for the closed group fails (:meth:`check_when_closed`)."""
        for node, check in self.closing_checks:
            problem = check()
            if problem:
                self.refuse(node, problem)
        for node, others, reason in self.together_required:
            outside = [other for other in others if not self.known(other)]
            if outside:
                self.refuse(node, f"{reason} {node_label(outside[0])}, which the widening does not change")

    def check(self, cmap: ChannelMap) -> None:
        """Refuse a map that breaks a constraint of the group (uniform duplication, nodes that
        must change together)."""
        self.check_together()
        if self.uniform_required and not cmap.uniform:
            where, why = next(iter(self.uniform_required.items()))
            raise RefusedError(
                f"cannot widen {self.origin} from {self.width * self.blocks} to {cmap.q * self.blocks} with "
                f"{cmap.init.value}: {why} at {where} is exact only when every unit is copied equally often "
                f"(net2wider to a multiple of {self.width * self.blocks})",
                where,
            )

    @property
    def channel_map(self) -> ChannelMap:
        """The map chosen for the group; only while rewriting."""
        assert self.cmap is not None, "the channel map is chosen by rewrite()"
        return self.cmap

    def index(self, value: ir.Value | None) -> AxisIndex:
        """The widened axis of a tracked value as index arrays."""
        assert value is not None
        if value not in self._indices:
            self._indices[value] = self.tracked[value].layout.expand(self.channel_map)
        return self._indices[value]

    def edit(
        self, node: ir.Node, input_index: int, fn: Callable[[np.ndarray], np.ndarray]
    ) -> None:
        """Rewrite the constant at ``node.inputs[input_index]``: in place for every reader when its
        root is shared (:meth:`share`), else never another node's view of it. An input whose edit
        the growth gives (:meth:`replace_edit`, :meth:`append_units`) gets that edit instead of ``fn``."""
        before = node.inputs[input_index]
        ref = find_constant(before)
        if ref is None:
            self.refuse(node, f"input {input_index} must be a constant to be rewritten")
        fn = self._given.pop((node, input_index), fn)
        old_shape = tuple(ref.tensor.shape.numpy())
        old_view = tuple(ref.array().shape) if ref.reshaped else \
            tuple(old_shape[a] for a in chain_axes(ref, len(old_shape)))  # as the node sees it
        log: list[AxisRecord] = []
        token = EDIT_LOG.set(log)
        try:
            after = edit_constant(self.graph, node, input_index, fn, shared=ref.root in self._shared)
        finally:
            EDIT_LOG.reset(token)
        if not log and isinstance(fn, AxisEdit) and fn.record is not None:  # computed later, while it is saved
            record = fn.record(len(old_view))
            assert isinstance(record, AxisRecord)
            log.append(record)
        new_ref = find_constant(after)
        assert new_ref is not None
        if new_ref.reshaped:  # records move to the root's axes; axes the chain inserted did not grow it
            view_axes = new_ref.view_axes()
            log = [replace(r, axis=root) for r in log
                   if (root := view_axes[r.axis % len(view_axes)]) is not None]
            root_axes: tuple[int, ...] = tuple(range(len(old_shape)))
            root_old = list(old_shape)
        else:
            root_axes = chain_axes(new_ref, len(old_view))
            root_old = [0] * len(old_view)
            for view_axis, root_axis in enumerate(root_axes):
                root_old[root_axis] = old_view[view_axis]
        self.edits.append(WeightEdit(node, input_index, _root_name(new_ref), root_axes, log, tuple(root_old)))
        self.changes.append(
            TensorChange(_root_name(new_ref), old_shape, tuple(new_ref.tensor.shape.numpy()), node.name or node.op_type)
        )

    def replace_with_constant(self, node: ir.Node, input_index: int, array: np.ndarray, name: str,
                              old_shape: tuple[int, ...]) -> None:
        """Feed ``node.inputs[input_index]`` the constant ``array`` instead of a value computed
        at run time (of ``old_shape``); the nodes that computed it go when nothing else uses them."""
        before = node.inputs[input_index]
        assert before is not None and before.dtype is not None
        constant = make_initializer(self.graph, name, array, before.dtype)
        node.replace_input_with(input_index, constant)
        remove_dead(self.graph, before)
        self.changes.append(TensorChange(constant.name or name, old_shape, tuple(array.shape),
                                         node.name or node.op_type))

    def _update_shape(self, value: ir.Value, embedding: Embedding) -> None:
        if value.shape is None or value.type is None or self.cmap is None:
            return
        dims = list(value.shape.dims)
        axis = len(dims) + embedding.axis
        if 0 <= axis < len(dims) and isinstance(dims[axis], int):
            dims[axis] = embedding.layout.new_size(self.cmap.q)
            value.shape = ir.Shape(dims)


def _root_name(ref: ConstantRef) -> str:
    return ref.root.name or "?"
