"""``onnxgrow inspect``: what a model offers for growth, and the names that reach it.

For every layer: the name to type, op, width, the activation after it, its channel
group (layers that must be widened together), what a widening would touch (the
contracting layers), whether it can be widened (or why not), whether a last layer can
grow its output classes instead (``--new-outputs``: its channels reach model outputs, and
with the old probabilities exact where a Softmax follows), and its other names.
For every attention module: its head count, key/value head count and head size, and
whether ``--heads`` can grow it (the counts it takes exactly, or why not). When no layer can
be widened, one line says why the model offers nothing (``why``). Layers inside If branches
and Loop/Scan bodies are listed like the others.
For every residual stream (:mod:`onnxgrow.structure`): its blocks as the framework names
them, their kind, norm position, branches and shortcuts, and the channel group that widens
the stream (the layers that write it and those that read it); each layer says which block
it lies in and whether its group is a stream's.
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
from onnxgrow.deepening.block_plan import exact_inits
from onnxgrow.errors import GrowError
from onnxgrow.graph import node_label
from onnxgrow.lineage import describe, read_history
from onnxgrow.model_io import external_tensors, load_model, weight_bytes
from onnxgrow.names import NameIndex, distinct_display
from onnxgrow.shapes import infer_shapes
from onnxgrow.structure import Attention, Block, ModelStructure, ResidualStream, find_structure
from onnxgrow.structure.flow import DataFlow
from onnxgrow.widening import Layer, find_layers, plan_group
from onnxgrow.widening import new_outputs as classes
from onnxgrow.widening.context import GroupContext
from onnxgrow.widening.heads import exact_counts, growth_kinds, query_embedding
from onnxgrow.widening.layers import NotGrowable
from onnxgrow.widening.tied import tied_lookup


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
    block: str | None = None  # the block it lies in (``model.layers.3``)
    stream: str | None = None  # the residual stream whose channels its group widens


@dataclass
class AttentionInfo:
    """An attention module: head counts, its projections, whether ``--heads`` can grow it:
    ``growths`` are the kinds of head growth that plan (``heads``, ``per-group``, ``groups``:
    :func:`onnxgrow.widening.heads.growth_kinds`), ``exact`` words their counts, ``reason``
    says why the others are refused."""

    name: str
    heads: int
    kv_heads: int
    head_dim: int
    projections: list[str]
    growable: bool
    exact: str
    reason: str = ""
    growths: list[str] = field(default_factory=list)


@dataclass
class BlockInfo:
    """A block on a residual stream (docs/design.md §11)."""

    name: str
    stream: str
    container: str | None
    index: int
    kind: str
    norm: str
    branches: list[str]
    shortcut: list[str]
    outputs: list[str]
    attentions: list[str]
    width: int | None
    entry: str
    exit: str
    side_inputs: list[str]
    nodes: int
    #: The ``deepen --block`` inits whose copy of it is exact (``["zero"]``), else why none is.
    exact_init: list[str] = field(default_factory=list)
    init_note: str = ""


@dataclass
class StreamGroupInfo:
    """A channel group of a residual stream: the layers writing it (``group``) and those
    reading it (``touches``), as widening it would; a transformer's stream has one, a
    ResNet's one per stage width."""

    width: int
    widenable: bool
    group: list[str]
    touches: list[str]
    reason: str


@dataclass
class StreamInfo:
    """A residual stream: its blocks, width (None when it changes), the values between
    blocks, and its channel groups."""

    name: str
    blocks: list[str]
    width: int | None
    points: list[str]
    groups: list[StreamGroupInfo]


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
    #: When no layer can be widened: why the model offers nothing (:func:`why_nothing`).
    why: str = ""
    streams: list[StreamInfo] = field(default_factory=list)
    blocks: list[BlockInfo] = field(default_factory=list)

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
        if ctx is not None and ctx.width == layer.width and ctx.blocks == 1:  # blocks depend on where planning starts
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
        # an LM head tied to an embedding: its classes grow with the vocabulary, not --new-outputs
        lookup = tied_lookup(groups.graph, layer.node) if layer.op_type in ("MatMul", "Gemm") else None
        reason, last = str(exc), lookup is None and _takes_new_outputs(groups.graph, layer)
        if lookup is not None:
            table = displays.get(id(lookup), lookup.name or lookup.op_type)
            reason = (f"tied to the embedding {table}: grow the vocabulary with --node {table} --rows ROWS "
                      "(its new rows are this layer's new classes)")
        elif last:
            reason = "its outputs are model outputs: grow its classes with --new-outputs (old outputs stay exact)"
        return LayerInfo(layer.display, node_name, layer.op_type, layer.width, activation,
                         False, [], [], reason, aliases, deepen, last)
    group = [displays.get(id(n), n.name or n.op_type) for n in groups.in_order(ctx.producers)]
    touches = [displays.get(id(n), n.name or n.op_type) for n in groups.in_order(ctx.contractors)]
    reason = ""
    if ctx.uniform_required:
        where, why = groups.nearest_constraint(ctx, layer)
        reason = f"only to multiples of {layer.width} with net2wider ({why} at {where})"
    elif ctx.blocks > 1 and ctx.blocked_by is not None:
        node, why = ctx.blocked_by
        reason = f"only to multiples of {ctx.blocks} ({why} at {node_label(node)})"
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


def _attention_info(model: ir.Model, attention: Attention, displays: dict[int, str]) -> AttentionInfo:
    """The attention's head counts and the growths it admits: each kind of head growth
    (:func:`growth_kinds`) whose example plan closes is offered; the others say why not."""
    projections = [displays.get(id(split.node), split.projection.name) for split in attention.splits]
    offered: list[str] = []
    reasons: list[str] = []
    for kind, plan in growth_kinds(attention).items():
        try:
            if isinstance(plan, GrowError):
                raise plan
            plan_group(model.graph, f"attention {attention.path!r}", attention.query.node, plan.width,
                       query_embedding(attention, plan))
            offered.append(kind)
        except GrowError as exc:
            reasons.append(str(exc))
    return AttentionInfo(attention.path, attention.heads, attention.kv_heads, attention.head_dim, projections,
                         bool(offered), exact_counts(attention, offered), "; ".join(reasons), offered)


def _block_info(block: Block, stream: ResidualStream, displays: dict[int, str], flow: DataFlow) -> BlockInfo:
    def name(node: ir.Node) -> str:
        return displays.get(id(node), node.name or node.op_type)

    shortcut = [name(p.node) for r in block.residuals for p in r.shortcut_projections]
    outputs = [name(p.node) for p in block.output_projections]
    inits, why = exact_inits(block, flow)
    return BlockInfo(block.label, stream.name, block.container, block.index, block.kind.value,
                     block.norm_position.value, [r.kind.value for r in block.residuals], shortcut, outputs,
                     [a.path for a in block.attentions],
                     block.width, block.entry.name or "", block.exit.name or "",
                     [v.name or "" for v in block.side_inputs], len(block.nodes), inits, why)


def _stream_info(stream: ResidualStream, infos: dict[str, LayerInfo], displays: dict[int, str]) -> StreamInfo:
    """The stream and the channel groups of the layers writing it (its blocks' output
    projections). Writers that cannot be widened for the same reason (their own name aside)
    are listed together, as one group would be."""
    groups: list[StreamGroupInfo] = []
    for block in stream.blocks:
        for projection in block.output_projections:
            layer = infos.get(displays.get(id(projection.node), ""))
            if layer is None or any(layer.name in g.group for g in groups):
                continue
            if layer.widenable:
                groups.append(StreamGroupInfo(layer.width, True, layer.group, layer.touches, layer.reason))
                continue
            alike = next((g for g in groups if not g.widenable and g.width == layer.width
                          and g.reason.replace(repr(g.group[0]), "") == layer.reason.replace(repr(layer.name), "")),
                         None)
            if alike is None:
                groups.append(StreamGroupInfo(layer.width, False, [layer.name], [], layer.reason))
            else:
                alike.group.append(layer.name)
    return StreamInfo(stream.name, [b.label for b in stream.blocks], stream.width,
                      [v.name or "" for v in stream.points], groups)


def _mark_blocks(infos: list[LayerInfo], layers: list[Layer], structure: ModelStructure,
                 streams: list[StreamInfo]) -> None:
    """Each layer's block, and the stream whose group it belongs to."""
    in_block = {node: block.label for block in structure.blocks for node in block.nodes}
    groups = {tuple(g.group): s.name for s in streams for g in s.groups if g.widenable}
    for info, layer in zip(infos, layers):
        info.block = in_block.get(layer.node)
        info.stream = groups.get(tuple(info.group)) if info.widenable else None


def _loaded(model: ir.Model | str | os.PathLike[str], weights_as_constants: bool) -> ir.Model:
    """``model`` loaded (if a path) with its shapes inferred."""
    if not isinstance(model, ir.Model):
        model = load_model(model, infer_shapes=True, weights_as_constants=weights_as_constants)
    infer_shapes(model)
    return model


def inspect_model(model: ir.Model | str | os.PathLike[str],
                  progress: Callable[[str, int, int], None] | None = None, *,
                  weights_as_constants: bool = False) -> ModelSummary:
    """Summarise ``model`` (a path or an ir.Model, which gains shape annotations);
    ``progress(stage, done, total)`` follows the load (total 0) and the layers planned;
    ``weights_as_constants`` loads weights listed as inputs as constants (a path only,
    :func:`onnxgrow.model_io.load_model`)."""
    report = progress or (lambda stage, done, total: None)
    path = "" if isinstance(model, ir.Model) else os.fspath(model)
    if not isinstance(model, ir.Model):
        report("loading", 0, 0)
    with collector.spared_after(functools.partial(_loaded, model, weights_as_constants)) as model:
        layers, refused = find_layers(model)
        displays = {id(layer.node): layer.display for layer in layers}
        positions = node_positions(model.graph)
        groups = _Groups(model.graph, positions)
        infos = []
        for k, layer in enumerate(layers):
            report("planning", k, len(layers))
            infos.append(_layer_info(layer, displays, positions, groups))
        report("planning", len(layers), len(layers))
        structure = find_structure(model)
        flow = DataFlow(model.graph)
        by_name = {info.name: info for info in infos}
        streams = [_stream_info(stream, by_name, displays) for stream in structure.streams]
        _mark_blocks(infos, layers, structure, streams)
    everyone = NameIndex([*(layer.names for layer in layers), *(item.names for item in refused)])
    not_growable = [
        LayerInfo(distinct_display(item.names, everyone), item.node.name or "", item.node.op_type, 0, None, False,
                  [], [], item.reason, list(item.names.all()))
        for item in refused
    ]
    graph = model.graph
    initializers = set(graph.initializers)
    why = "" if any(info.widenable or info.new_outputs for info in infos) else why_nothing(model, refused, infos)
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
        attentions=[_attention_info(model, a, displays) for a in structure.attentions],
        streams=streams,
        blocks=[_block_info(b, stream, displays, flow) for stream in structure.streams for b in stream.blocks],
        why=why,
    )


def why_nothing(model: ir.Model, refused: list[NotGrowable], layers: list[LayerInfo]) -> str:
    """Why a model none of whose layers can be widened offers nothing, in one line: its weights
    are model inputs (an IR >= 4 model that lists its initializers as inputs), or its layers each
    meet a blocking node (the notes name it), or no node is a layer at all, or the first reason
    its candidate layers give."""
    graph = model.graph
    listed = [v for v in graph.inputs if v.const_value is not None]
    if listed:
        share = "every weight is" if len(listed) == len(graph.initializers) else f"{len(listed)} weights are"
        return (f"{share} a model input (IR {model.ir_version} lists initializers such as {listed[0].name!r} "
                "among the graph inputs, so callers may replace them at run time); --weights-as-constants "
                "treats them as constants")
    if layers:
        return f"none of its {len(layers)} layers can be widened; the notes name the node that blocks each"
    if not refused:
        return "no node is a Gemm, a MatMul with a constant weight, a Conv or an embedding Gather, " \
               "in the main graph or inside an If, Loop or Scan"
    first = refused[0]
    return f"none of its {len(refused)} candidate layers can be grown; {first.names.display}: {first.reason}"
