"""Closing a channel group and rewriting it (DESIGN.md §1).

Planning starts from one producer's output and tracks every value that must carry the
same channels: forward through carriers to the contracting ops, backward through
joins (a residual ``Add`` ties the producers of both operands into one group), until
nothing new is reached. Every node touched is handled by its op's registered rule;
a node without a rule, a model output or input reached, or a rule's refusal stops the
plan with a :class:`RefusedError` naming the node. Nothing is modified while planning.

Rewriting then chooses the channel map, checks the group's constraints (uniform
duplication for normalisations over the axis), and calls every touched node's rule
once, in graph order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from onnxgrow.constants import ConstantRef, edit_constant, find_constant, make_initializer, remove_dead
from onnxgrow.errors import RefusedError
from onnxgrow.graph import node_label, subgraph_owner
from onnxgrow.names import generated_name
from onnxgrow.widening.channel_map import ChannelMap, Init, build_channel_map
from onnxgrow.widening.layout import AxisIndex, Embedding
from onnxgrow.widening.rules.registry import rule_for


@dataclass
class TensorChange:
    """One constant rewritten: its name and shapes before and after."""

    name: str
    old_shape: tuple[int, ...]
    new_shape: tuple[int, ...]
    node: str


@dataclass
class GroupContext:
    """The state of one channel group: tracked values, roles, constraints, and edits."""

    graph: ir.Graph
    width: int
    origin: str
    tracked: dict[ir.Value, Embedding] = field(default_factory=dict)
    producers: list[ir.Node] = field(default_factory=list)
    contractors: list[ir.Node] = field(default_factory=list)
    uniform_required: dict[str, str] = field(default_factory=dict)
    changes: list[TensorChange] = field(default_factory=list)
    cmap: ChannelMap | None = None
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    _queue: deque[ir.Node] = field(default_factory=deque)
    _indices: dict[ir.Value, AxisIndex] = field(default_factory=dict)

    # ----- planning -----------------------------------------------------------------
    def refuse(self, node: ir.Node | None, reason: str) -> RefusedError:
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
        if value.is_graph_output():
            self.refuse(
                via or value.producer(),
                f"the widened channels reach model output {value.name!r}; widening would change "
                "the model's interface",
            )
        if value.is_graph_input():
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

    def mark_producer(self, node: ir.Node) -> None:
        if node not in self.producers:
            self.producers.append(node)

    def mark_contractor(self, node: ir.Node) -> None:
        if node not in self.contractors:
            self.contractors.append(node)

    def require_uniform(self, node: ir.Node, reason: str) -> None:
        """The map must copy every unit equally often and add no fresh units."""
        self.uniform_required[node.name or generated_name(node) or node.op_type] = reason

    def close(self) -> None:
        """Propagate until no rule tracks anything new."""
        while self._queue:
            node = self._queue.popleft()
            if node.graph is not self.graph:
                owner = subgraph_owner(self.graph, node.graph) if node.graph is not None else None
                where = f"its subgraph {node.graph.name!r}" if node.graph is not None else "a subgraph"
                self.refuse(owner or node, f"the channels are used inside {where} (by {node_label(node)}); "
                                           "subgraphs are not rewritten")
            rule = rule_for(node)
            if rule is None:
                domain = f" of domain {node.domain!r}" if node.domain else ""
                self.refuse(node, f"no widening rule for op {node.op_type}{domain}")
            rule.propagate(self, node, self.known(node))

    def known(self, node: ir.Node) -> dict[ir.Value, Embedding]:
        """The tracked inputs and outputs of ``node``."""
        return {
            v: self.tracked[v]
            for v in (*node.inputs, *node.outputs)
            if v is not None and v in self.tracked
        }

    def touched_nodes(self) -> list[ir.Node]:
        """Every node with a tracked input or output, in graph order."""
        return [node for node in self.graph if self.known(node)]

    # ----- rewriting ----------------------------------------------------------------
    def rewrite(self, q: int, init: Init, noise: float, seed: int) -> None:
        """Choose the map, check constraints, and let every touched node's rule rewrite it."""
        self.cmap = build_channel_map(self.width, q, init, noise, seed)
        self.rng = np.random.default_rng(seed + 1)
        self.check(self.cmap)
        for node in self.touched_nodes():
            rule = rule_for(node)
            assert rule is not None
            rule.rewrite(self, node, self.known(node))
        for value, embedding in self.tracked.items():
            self._update_shape(value, embedding)

    def check(self, cmap: ChannelMap) -> None:
        """Refuse a map that breaks a constraint of the group (uniform duplication)."""
        if self.uniform_required and not cmap.uniform:
            where, why = next(iter(self.uniform_required.items()))
            raise RefusedError(
                f"cannot widen {self.origin} from {self.width} to {cmap.q} with {cmap.init.value}: "
                f"{why} at {where} is exact only when every unit is copied equally often "
                f"(net2wider to a multiple of {self.width})",
                where,
            )

    def index(self, value: ir.Value) -> AxisIndex:
        """The widened axis of a tracked value as index arrays."""
        assert self.cmap is not None
        if value not in self._indices:
            self._indices[value] = self.tracked[value].layout.expand(self.cmap)
        return self._indices[value]

    def edit(
        self, node: ir.Node, input_index: int, fn: Callable[[np.ndarray], np.ndarray]
    ) -> None:
        """Rewrite the constant at ``node.inputs[input_index]`` (never another node's view of it)."""
        before = node.inputs[input_index]
        ref = find_constant(before)
        if ref is None:
            self.refuse(node, f"input {input_index} must be a constant to be rewritten")
        old_shape = tuple(ref.tensor.shape.numpy())
        after = edit_constant(self.graph, node, input_index, fn)
        new_ref = find_constant(after)
        assert new_ref is not None
        self.changes.append(
            TensorChange(_root_name(new_ref), old_shape, tuple(new_ref.tensor.shape.numpy()), node.name or node.op_type)
        )

    def replace_with_constant(self, node: ir.Node, input_index: int, array: np.ndarray, name: str,
                              old_shape: tuple[int, ...]) -> None:
        """Feed ``node.inputs[input_index]`` the constant ``array`` instead of a value computed
        at run time (of ``old_shape``); the nodes that computed it go when nothing else uses them."""
        before = node.inputs[input_index]
        assert before is not None and before.dtype is not None
        node.replace_input_with(input_index, make_initializer(self.graph, name, array, before.dtype))
        remove_dead(self.graph, before)
        self.changes.append(TensorChange(node.inputs[input_index].name or name, old_shape,  # type: ignore[union-attr]
                                         tuple(array.shape), node.name or node.op_type))

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


def plan_group(graph: ir.Graph, origin: str, node: ir.Node, width: int, embedding: Embedding) -> GroupContext:
    """Close the channel group of ``node``'s first output (nothing is modified)."""
    ctx = GroupContext(graph, width, origin)
    ctx.track(node.outputs[0], embedding, via=node)
    ctx.close()
    return ctx
