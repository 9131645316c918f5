"""``onnxgrow inspect``: what a model offers for growth, and the names that reach it.

For every layer: the name to type, op, width, the activation after it, its channel
group (layers that must be widened together), what a widening would touch (the
contracting layers), whether it can be widened (or why not), whether a last layer can
grow its output classes instead (``--new-outputs``: its channels reach model outputs, and
with the old probabilities exact where a Softmax follows), and its other names.
For every attention module: its head count, key/value head count and head size, and
whether ``--heads`` can grow it (the counts it takes exactly, or why not).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import onnx_ir as ir

from onnxgrow import collector
from onnxgrow.deepening import InsertionPoint, deepen_summary, find_insertion_point
from onnxgrow.deepening.activation import node_positions
from onnxgrow.errors import GrowError
from onnxgrow.lineage import describe, read_history
from onnxgrow.model_io import external_tensors, load_model, weight_bytes
from onnxgrow.shapes import infer_shapes
from onnxgrow.widening import Layer, find_layers, plan_group
from onnxgrow.widening import new_outputs as classes
from onnxgrow.widening.context import GroupContext
from onnxgrow.widening.heads import Attention, exact_counts, example_plan, find_attentions, query_embedding


@dataclass
class TensorInfo:
    name: str
    dtype: str
    shape: list[int | str]


@dataclass
class LayerInfo:
    name: str
    node: str
    op: str
    width: int
    activation: str | None
    widenable: bool
    group: list[str]
    touches: list[str]
    reason: str
    aliases: list[str]
    deepen: str | None = None
    new_outputs: bool = False  # a last layer: ``--new-outputs`` grows its classes


@dataclass
class AttentionInfo:
    """An attention module: head counts, its projections, whether ``--heads`` can grow it."""

    name: str
    heads: int
    kv_heads: int
    head_dim: int
    projections: list[str]
    growable: bool
    exact: str
    reason: str = ""


@dataclass
class ModelSummary:
    path: str
    ir_version: int
    opsets: dict[str, int]
    producer: str
    weight_bytes: int
    external_data: bool
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    layers: list[LayerInfo]
    not_growable: list[LayerInfo]
    history: list[str] = field(default_factory=list)
    attentions: list[AttentionInfo] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _tensor_info(value: ir.Value) -> TensorInfo:
    dims: list[int | str] = []
    if value.shape is not None:
        dims = [d if isinstance(d, int) else str(d) for d in value.shape.dims]
    return TensorInfo(value.name or "", value.dtype.name if value.dtype else "?", dims)


def _insertion_point(layer: Layer, positions: dict[int, int]) -> InsertionPoint | None:
    """Where a layer inserted after ``layer`` would go (Gemm, MatMul and Conv layers only)."""
    if layer.op_type not in ("Gemm", "MatMul", "Conv"):
        return None
    return find_insertion_point(layer.node, positions)


def _activation_label(layer: Layer, point: InsertionPoint | None) -> str | None:
    """The activation after the layer, decomposed ones too (``5-op Div/Erf/Add/Mul``)."""
    if layer.activation is not None:
        return layer.activation.op_type
    return point.label if point is not None else None


class _Groups:
    """Channel groups, each closed once.

    A group is the closure of the values that carry its channels; every producer in it
    starts the same closure, so the layers of a group share one plan (the residual stream
    of a transformer has two producers per block: planning it from each of them made
    ``inspect`` quadratic in depth). Members are listed in graph order, whichever layer is
    asked about, and a layer's note names the group's constraint nearest before it.
    """

    def __init__(self, graph: ir.Graph, positions: dict[int, int]) -> None:
        self.graph = graph
        self.positions = positions
        self._by_producer: dict[int, GroupContext] = {}
        self._named = {node.name: positions[id(node)] for node in graph if node.name}

    def plan(self, layer: Layer) -> GroupContext:
        """The group of ``layer``: a GrowError (naming the blocking node) when it cannot widen."""
        ctx = self._by_producer.get(id(layer.node))
        if ctx is not None and ctx.width == layer.width:
            seen = ctx.tracked.get(layer.node.outputs[0])
            own = layer.producer.embedding
            if seen is not None and (seen.axis, seen.layout) == (own.axis, own.layout):
                return ctx
        ctx = plan_group(self.graph, repr(layer.display), layer.node, layer.width, layer.producer.embedding)
        for node in ctx.producers:
            self._by_producer.setdefault(id(node), ctx)
        return ctx

    def in_order(self, nodes: list[ir.Node]) -> list[ir.Node]:
        return sorted(nodes, key=lambda n: self.positions.get(id(n), len(self.positions)))

    def nearest_constraint(self, ctx: GroupContext, layer: Layer) -> tuple[str, str]:
        """The group's constraint nearest before ``layer`` in graph order (the one its input passed),
        else the nearest after it."""
        here = self.positions.get(id(layer.node), 0)

        def distance(item: tuple[str, str]) -> tuple[int, int]:
            at = self._named.get(item[0])
            if at is None:
                return (2, 0)
            return (0, here - at) if at <= here else (1, at - here)
        return min(ctx.uniform_required.items(), key=distance)


def _layer_info(layer: Layer, displays: dict[int, str], positions: dict[int, int], groups: _Groups) -> LayerInfo:
    node_name = layer.names.exact[0] if layer.names.exact else ""  # generated when unnamed
    point = _insertion_point(layer, positions)
    activation = _activation_label(layer, point)
    aliases = [n for n in layer.names.all() if n != layer.display]
    deepen = deepen_summary(layer, point)
    try:
        ctx = groups.plan(layer)
    except GrowError as exc:
        reason, last = str(exc), _takes_new_outputs(groups.graph, layer)
        if last:
            reason = "its outputs are model outputs: grow its classes with --new-outputs (old outputs stay exact)"
        return LayerInfo(layer.display, node_name, layer.op_type, layer.width, activation,
                         False, [], [], reason, aliases, deepen, last)
    group = [displays.get(id(n), n.name or n.op_type) for n in groups.in_order(ctx.producers)]
    touches = [displays.get(id(n), n.name or n.op_type) for n in groups.in_order(ctx.contractors)]
    reason = ""
    if ctx.uniform_required:
        where, why = groups.nearest_constraint(ctx, layer)
        reason = f"only to multiples of {layer.width} with net2wider ({why} at {where})"
    return LayerInfo(layer.display, node_name, layer.op_type, layer.width, activation,
                     True, group, touches, reason, aliases, deepen)


def _takes_new_outputs(graph: ir.Graph, layer: Layer) -> bool:
    """Whether ``widen --new-outputs`` plans on ``layer`` (old probabilities exact)."""
    try:
        ctx = plan_group(graph, repr(layer.display), layer.node, layer.width, layer.producer.embedding,
                         new_outputs=True)
        classes.check_last_layer(ctx, repr(layer.display))
        classes.plan_probabilities(ctx, classes.OldProbabilities.EXACT)
    except GrowError:
        return False
    return True


def _attention_info(model: ir.Model, attention: Attention) -> AttentionInfo:
    projections = [split.layer.display for split in attention.splits]
    info = AttentionInfo(attention.path, attention.heads, attention.kv_heads, attention.head_dim, projections,
                         True, exact_counts(attention))
    try:
        plan = example_plan(attention)
        plan_group(model.graph, f"attention {attention.path!r}", attention.query.layer.node, plan.width,
                   query_embedding(attention, plan))
    except GrowError as exc:
        info.growable, info.reason = False, str(exc)
    return info


def _loaded(model: ir.Model | str | os.PathLike[str]) -> ir.Model:
    """``model`` loaded (if a path) with its shapes inferred."""
    if not isinstance(model, ir.Model):
        model = load_model(model, infer_shapes=True)
    infer_shapes(model)
    return model


def inspect_model(model: ir.Model | str | os.PathLike[str],
                  progress: Callable[[str, int, int], None] | None = None) -> ModelSummary:
    """Summarise ``model`` (a path or an ir.Model, which gains shape annotations);
    ``progress(stage, done, total)`` follows the load (total 0) and the layers planned."""
    report = progress or (lambda stage, done, total: None)
    path = "" if isinstance(model, ir.Model) else os.fspath(model)
    if not isinstance(model, ir.Model):
        report("loading", 0, 0)
    with collector.spared_after(functools.partial(_loaded, model)) as model:
        layers, refused = find_layers(model)
        displays = {id(layer.node): layer.display for layer in layers}
        positions = node_positions(model.graph)
        groups = _Groups(model.graph, positions)
        infos = []
        for k, layer in enumerate(layers):
            report("planning", k, len(layers))
            infos.append(_layer_info(layer, displays, positions, groups))
        report("planning", len(layers), len(layers))
    not_growable = [
        LayerInfo(item.names.display, item.node.name or "", item.node.op_type, 0, None, False, [], [],
                  item.reason, list(item.names.all()))
        for item in refused
    ]
    graph = model.graph
    initializers = set(graph.initializers)
    return ModelSummary(
        path=path,
        ir_version=model.ir_version,
        opsets=dict(model.opset_imports),
        producer=" ".join(p for p in (model.producer_name, model.producer_version) if p),
        weight_bytes=weight_bytes(model),
        external_data=any(True for _ in external_tensors(model)),
        inputs=[_tensor_info(v) for v in graph.inputs if v.name not in initializers],
        outputs=[_tensor_info(v) for v in graph.outputs],
        layers=infos,
        not_growable=not_growable,
        history=[describe(entry) for entry in read_history(model)],
        attentions=[_attention_info(model, a) for a in find_attentions(layers)],
    )
