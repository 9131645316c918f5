"""Attention modules: projections whose outputs a Reshape splits into heads.

A projection whose output ``[.., H·d]`` is reshaped to ``[.., H, d]`` (a *head split*)
feeds ``H`` attention heads of ``head_dim`` ``d``: directly, through a bias ``Add``, a
``Cast`` or ``Identity``, a Reshape that keeps the last axis (GPT-2's Conv1D views its
output back to ``[B, T, H·d]``), or, for a fused ``qkv`` projection, a Split into equal
parts (``parts`` = 3). A split of one head counts only in a 4-D target (``[B, T, 1, d]``):
``x.view(-1, d)`` also keeps an axis of ``d``.

The projections with head splits are grouped into attention modules by their parent module
path (node metadata, scoped node names, weight names: :mod:`onnxgrow.names`), so a graph
without module names has no attention modules. Of a module's splits, the one with the most
heads is the query; keys and values may have fewer (grouped-query attention: ``kv_heads``).
An attention is *cross* attention when its keys or values read another tensor than its
queries (a decoder reading the encoder's output).

Each split's *role* is read from where its heads go: the first MatMul of two computed
tensors they reach is the scores ``q·kᵀ`` (its output reaches a Softmax: the first operand
is the query, the second the key) or the context ``probs·v`` (its first operand comes from
a Softmax: the second is the value). A fused ``qkv`` split plays all three (``qkv``).

An attention with a key/value *cache* (optimum's ``-with-past`` exports) concatenates model
inputs (``past_key_values.0.key``) with its keys and values and hands the result out as model
outputs (``present.0.key``): :meth:`Attention.cache` finds both, between the key and value
projections and the MatMuls that read their heads.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import onnx_ir as ir

from onnxgrow.errors import GrowError, RefusedError
from onnxgrow.graph import rank_of
from onnxgrow.names import module_path, weight_prefix
from onnxgrow.shape_values import Const, constant_ints, entries
from onnxgrow.structure.projections import Projection, find_projections

#: Ops a projection's output may pass before its head split (bias, casts).
_BEFORE_SPLIT = frozenset({"Add", "Identity", "Cast"})
#: Contrib ops that compute attention in one kernel.
FUSED_ATTENTION_OPS = frozenset({"Attention", "MultiHeadAttention", "GroupQueryAttention",
                                 "PackedAttention", "PackedMultiHeadAttention", "DecoderMaskedMultiHeadAttention"})


@dataclass(frozen=True)
class HeadSplit:
    """A projection whose output feeds heads: ``parts`` blocks (3 for fused qkv) of ``heads``
    heads of ``head_dim`` columns, and its role: ``query``, ``key``, ``value``, ``qkv`` or
    None (not read)."""

    projection: Projection
    heads: int
    head_dim: int
    parts: int = 1
    role: str | None = None

    @property
    def node(self) -> ir.Node:
        return self.projection.node


@dataclass
class Attention:
    """An attention module: its path (and the other names of it), its projections with head
    splits, and (when it lies in a residual block) the output projection after the heads merge."""

    path: str
    splits: list[HeadSplit] = field(default_factory=list)
    names: set[str] = field(default_factory=set)
    output: Projection | None = None

    def answers_to(self, name: str) -> bool:
        """``name`` is one of the module's paths, or their tail (``layer.0.attention.self``)."""
        return any(n == name or n.endswith(("." + name, "/" + name)) for n in self.names)

    def lies_below(self, name: str) -> bool:
        """``name`` is a module above this one (``encoder.layer.0.attention`` above ``...self``)."""
        return any(f".{n}.".find(f".{name}.") >= 0 or n.startswith(name + "/") for n in self.names)

    @property
    def query(self) -> HeadSplit:
        """The split with the most heads (of those, the one read as the query)."""
        return max(self.splits, key=lambda s: (s.heads, s.role in ("query", "qkv")))

    @property
    def heads(self) -> int:
        return self.query.heads

    @property
    def kv_heads(self) -> int:
        others = [s.heads for s in self.splits if s is not self.query]
        return min(others) if others else self.heads

    @property
    def head_dim(self) -> int:
        return self.query.head_dim

    @property
    def fused_qkv(self) -> bool:
        """One projection computes queries, keys and values (GPT-2's ``c_attn``)."""
        return self.query.parts > 1

    @property
    def cross(self) -> bool:
        """Keys or values read another tensor than the queries do."""
        return any(s.projection.input is not self.query.projection.input for s in self.splits)

    @property
    def projections(self) -> list[Projection]:
        """The projections with head splits, in graph order of discovery."""
        return [s.projection for s in self.splits]

    def split(self, role: str) -> HeadSplit | None:
        """The split playing ``role`` (``query``, ``key``, ``value``; a fused qkv plays each)."""
        return next((s for s in self.splits if s.role in (role, "qkv")), None)

    def cache(self) -> tuple[list[ir.Value], list[ir.Value]]:
        """The key/value cache: the model inputs concatenated with the keys and values
        (past), and the model outputs they become (present); empty without a cache."""
        past: list[ir.Value] = []
        present: list[ir.Value] = []
        for split in self.splits:
            if split.role == "query":
                continue
            for value in _until_matmul(split.projection.output):
                if value.is_graph_output() and value not in present:
                    present.append(value)
                producer = value.producer()
                if producer is not None and producer.op_type == "Concat":
                    past += [v for v in producer.inputs if v is not None and v.is_graph_input() and v not in past]
        return past, present


def _parent_paths(projection: Projection) -> list[str]:
    """The module paths of a projection's parent (node metadata, scopes, weight names), best first."""
    paths = [module_path(projection.node) or "", *projection.names.full]
    parents = []
    for path in paths:
        if not path or weight_prefix(path) is not None:
            continue
        sep = "/" if "/" in path else "."
        if sep in path and (parent := path.rsplit(sep, 1)[0]) not in parents:
            parents.append(parent)
    return parents


def _split_of(value: ir.Value, width: int) -> tuple[int, int] | None:
    """``(heads, head_dim)`` when ``value`` (last axis ``width``) is reshaped to ``[.., heads, head_dim]``."""
    for use in value.uses():
        node = use.node
        if node.op_type != "Reshape" or use.idx != 0 or node.domain not in ("", "ai.onnx"):
            continue
        target = entries(node.inputs[1], (node, 1))
        out_rank = rank_of(node.outputs[0])
        if target is None or len(target) < 2 or (out_rank is not None and out_rank != len(target)):
            continue
        last = target[-1]
        dims = node.outputs[0].shape.dims if node.outputs[0].shape is not None else None
        d = last.value if isinstance(last, Const) and last.value > 0 else (
            dims[-1] if dims is not None and isinstance(dims[-1], int) else None)
        if not d or width % d or (width == d and len(target) < 4):
            continue  # one head only counts in a [B, T, 1, d] split (``x.view(-1, d)`` keeps an axis)
        heads = width // d
        before = target[-2]
        annotated = dims[-2] if dims is not None else None
        if (isinstance(before, Const) and before.value in (heads, -1)) or annotated == heads:
            return heads, d
    return None


def head_split(projection: Projection) -> HeadSplit | None:
    """The head split fed by ``projection``'s output, through a bias and a fused-qkv Split."""
    value = projection.output
    width = projection.width
    for _ in range(8):
        found = _split_of(value, width)
        if found is not None:
            return HeadSplit(projection, found[0], found[1], role=_role(value))
        consumers = value.consumers()
        if len(consumers) != 1:
            return None
        node = consumers[0]
        if node.op_type == "Split" and node.domain in ("", "ai.onnx"):
            parts = len(node.outputs)
            sizes = constant_ints(node, 1) if len(node.inputs) > 1 and node.inputs[1] is not None else None
            if width % parts or (sizes is not None and any(s * parts != width for s in sizes)):
                return None
            found = _split_of(node.outputs[0], width // parts)
            return None if found is None else HeadSplit(projection, found[0], found[1], parts, "qkv")
        if node.op_type not in _BEFORE_SPLIT and not (node.op_type == "Reshape" and _keeps_last(node, width)):
            return None
        value = node.outputs[0]
    return None


#: How far (in nodes) a split's heads are followed to the scores or context MatMul.
_ROLE_SEARCH = 64


def _role(value: ir.Value) -> str | None:
    """``query``, ``key`` or ``value``: where the heads of ``value`` meet the other operand."""
    stack, seen = [value], set[ir.Value]()
    while stack and len(seen) < _ROLE_SEARCH:
        current = stack.pop(0)
        if current in seen:
            continue
        seen.add(current)
        for use in current.uses():
            node = use.node
            if node.op_type == "MatMul" and all(v is not None and v.const_value is None for v in node.inputs):
                if _reaches_softmax(node.outputs[0]):
                    return "query" if use.idx == 0 else "key"
                return "value" if use.idx == 1 else None
            if not (node.op_type == "Reshape" and use.idx != 0):
                stack.extend(node.outputs)
    return None


def _until_matmul(value: ir.Value) -> list[ir.Value]:
    """The values computed from ``value`` up to the MatMuls of two computed tensors that read
    them (the scores and the context), within :data:`_ROLE_SEARCH` values. Sizes read from
    them (``Shape``, ``Size``) are not followed: they shape the attention's output, which
    reaches the model's outputs without being a cache."""
    queue, seen = [value], [value]
    while queue and len(seen) < _ROLE_SEARCH:
        current = queue.pop(0)
        for node in current.consumers():
            if node.op_type in ("Shape", "Size"):
                continue
            if node.op_type == "MatMul" and all(v is not None and v.const_value is None for v in node.inputs):
                continue
            for out in node.outputs:
                if out not in seen:
                    seen.append(out)
                    queue.append(out)
    return seen


def _reaches_softmax(value: ir.Value) -> bool:
    """A Softmax reads ``value`` through a few elementwise ops (scale, mask)."""
    stack, seen = [value], set[ir.Value]()
    while stack and len(seen) < 16:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        for node in current.consumers():
            if node.op_type == "Softmax":
                return True
            if node.op_type in ("Add", "Sub", "Mul", "Div", "Where", "Cast", "Identity"):
                stack.extend(node.outputs)
    return False


def _keeps_last(node: ir.Node, width: int) -> bool:
    """A Reshape that keeps the last axis (GPT-2's Conv1D view back to ``[B, T, width]``)."""
    dims = node.outputs[0].shape.dims if node.outputs[0].shape is not None else None
    return dims is not None and len(dims) > 0 and dims[-1] == width


def attentions_among(projections: Iterable[Projection]) -> list[Attention]:
    """Attention modules: the MatMul/Gemm projections with head splits, grouped by their parent
    module path (in the order their first projection comes)."""
    found: dict[str, Attention] = {}
    for projection in projections:
        if projection.op_type not in ("MatMul", "Gemm"):
            continue
        split = head_split(projection)
        parents = _parent_paths(projection)
        if split is None or not parents:
            continue
        attention = found.setdefault(parents[0], Attention(parents[0]))
        attention.splits.append(split)
        attention.names.update(parents)
    return list(found.values())


def find_attentions(model: ir.Model) -> list[Attention]:
    """The attention modules of ``model``'s main graph (its shapes inferred: head splits read
    the Reshape outputs' annotations where the targets are computed)."""
    return attentions_among(find_projections(model.graph).values())


def fused_attention_node(model: ir.Model) -> ir.Node | None:
    """A contrib attention kernel (com.microsoft Attention, MultiHeadAttention...) in the model."""
    for node in model.graph.all_nodes():
        if node.op_type in FUSED_ATTENTION_OPS and node.domain not in ("", "ai.onnx"):
            return node
    return None


def find_attention(model: ir.Model, name: str, attentions: list[Attention] | None = None) -> Attention:
    """The attention module ``name`` designates: its path, or a module above it holding one
    (``attentions``: those of ``model``, when already found)."""
    if attentions is None:
        attentions = find_attentions(model)
    hits = [a for a in attentions if a.answers_to(name)] or [a for a in attentions if a.lies_below(name)]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise GrowError(f"attention name {name!r} is ambiguous; it matches: {', '.join(a.path for a in hits)}")
    fused = fused_attention_node(model)
    if fused is not None:
        raise RefusedError(f"cannot grow the heads of {name!r}: attention is computed by the {fused.domain} "
                           f"{fused.op_type} node {fused.name!r}, a fused kernel whose head split onnxgrow "
                           "cannot rewrite", fused.name)
    known = ", ".join(a.path for a in attentions) or "none found"
    raise GrowError(f"no attention module named {name!r} (attention modules: {known})")
