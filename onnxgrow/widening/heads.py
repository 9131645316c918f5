"""Attention heads: finding attention modules and growing their head count.

Heads are a block map over head_dim blocks. A projection whose output ``[.., H·d]`` is
reshaped to ``[.., H, d]`` (a *head split*) feeds attention heads; growing ``H`` to
``H2`` chooses a head map ``h: {0..H2-1} → {0..H-1}`` (identity on the first ``H``, new
heads copy existing ones, seeded and balanced) and applies it as a channel map whose
units are whole heads: in the projection's output, unit ``h`` is the block
``Channel(1, d)`` of ``d`` columns. The widening planner then carries that map through
the head split, the Transpose to ``[B, H, T, d]``, the scores and values MatMuls (the
head axis is a batch axis: queries, keys and values join one group), Softmax over the
keys, the merge back to ``[.., H2·d]``, and the output projection, which contracts it:
its input rows of every copy of a head are divided by the head's copy count (or, with
``zero-pad``, the new heads' rows are zero). ``d`` and the 1/sqrt(d) scale do not change.
A fused ``qkv`` projection carries ``Channel(3, d)``: three blocks of heads.

Grouped-query attention (``K`` key/value heads, ``H = K·r`` query heads, keys and values
repeated ``r`` times by ``repeat_kv``) has two exact growths:

- more query heads per key/value head (``H2 = K·r2``, key/value heads kept): the units
  are the ``r`` query heads of a group, ``Channel(K, d)`` on the query projection; the
  repeat (an Expand of a size-1 axis) creates the new copies of keys and values;
- more key/value heads with their query groups (``H2 = K2·r``): the units are key/value
  heads, ``Channel(1, r·d)`` on the query projection and ``Channel(1, d)`` on keys and
  values.

Any other ``H2`` is refused with the values that are exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import onnx_ir as ir

from onnxgrow.errors import GrowError, RefusedError
from onnxgrow.graph import rank_of
from onnxgrow.names import module_path, weight_prefix
from onnxgrow.widening.layers import Layer
from onnxgrow.widening.layout import AxisLayout, Channel, Embedding
from onnxgrow.widening.rules.shape_values import Const, constant_ints, entries

#: Ops a projection's output may pass before its head split (bias, casts).
_BEFORE_SPLIT = frozenset({"Add", "Identity", "Cast"})
#: Contrib ops that compute attention in one kernel.
FUSED_ATTENTION_OPS = frozenset({"Attention", "MultiHeadAttention", "GroupQueryAttention",
                                 "PackedAttention", "PackedMultiHeadAttention", "DecoderMaskedMultiHeadAttention"})


@dataclass(frozen=True)
class HeadSplit:
    """A projection whose output feeds heads: ``parts`` blocks (3 for fused qkv) of ``heads``
    heads of ``head_dim`` columns."""

    layer: Layer
    heads: int
    head_dim: int
    parts: int = 1


@dataclass
class Attention:
    """An attention module: its path (and the other names of it), its projections with head splits."""

    path: str
    splits: list[HeadSplit] = field(default_factory=list)
    names: set[str] = field(default_factory=set)

    def answers_to(self, name: str) -> bool:
        """``name`` is one of the module's paths, or their tail (``layer.0.attention.self``)."""
        return any(n == name or n.endswith(("." + name, "/" + name)) for n in self.names)

    def lies_below(self, name: str) -> bool:
        """``name`` is a module above this one (``encoder.layer.0.attention`` above ``...self``)."""
        return any(f".{n}.".find(f".{name}.") >= 0 or n.startswith(name + "/") for n in self.names)

    @property
    def query(self) -> HeadSplit:
        return max(self.splits, key=lambda s: s.heads)

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


@dataclass(frozen=True)
class HeadCounts:
    """An attention's head counts before and after growing its heads, and the attention
    modules a shared position bias grows with it."""

    attention: str
    old_heads: int
    new_heads: int
    old_kv_heads: int
    new_kv_heads: int
    head_dim: int
    together: tuple[str, ...] = ()


@dataclass(frozen=True)
class HeadPlan:
    """How a head growth maps onto a channel group: units, their layout on the query
    projection, and the new unit count."""

    width: int
    layout: AxisLayout
    new_units: int
    new_heads: int
    new_kv_heads: int


def _parent_paths(layer: Layer) -> list[str]:
    """The module paths of a projection's parent (node metadata, scopes, weight names), best first."""
    paths = [module_path(layer.node) or "", *layer.names.full]
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


def head_split(layer: Layer) -> HeadSplit | None:
    """The head split fed by ``layer``'s output, through a bias and a fused-qkv Split."""
    value = layer.node.outputs[0]
    width = layer.width
    for _ in range(8):
        found = _split_of(value, width)
        if found is not None:
            return HeadSplit(layer, found[0], found[1])
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
            return None if found is None else HeadSplit(layer, found[0], found[1], parts)
        if node.op_type not in _BEFORE_SPLIT and not (node.op_type == "Reshape" and _keeps_last(node, width)):
            return None
        value = node.outputs[0]
    return None


def _keeps_last(node: ir.Node, width: int) -> bool:
    """A Reshape that keeps the last axis (GPT-2's Conv1D view back to ``[B, T, width]``)."""
    dims = node.outputs[0].shape.dims if node.outputs[0].shape is not None else None
    return dims is not None and len(dims) > 0 and dims[-1] == width


def find_attentions(layers: list[Layer]) -> list[Attention]:
    """Attention modules: projections with head splits grouped by their parent module path."""
    found: dict[str, Attention] = {}
    for layer in layers:
        if layer.op_type not in ("MatMul", "Gemm"):
            continue
        split = head_split(layer)
        parents = _parent_paths(layer)
        if split is None or not parents:
            continue
        attention = found.setdefault(parents[0], Attention(parents[0]))
        attention.splits.append(split)
        attention.names.update(parents)
    return list(found.values())


def fused_attention_node(model: ir.Model) -> ir.Node | None:
    """A contrib attention kernel (com.microsoft Attention, MultiHeadAttention...) in the model."""
    for node in model.graph.all_nodes():
        if node.op_type in FUSED_ATTENTION_OPS and node.domain not in ("", "ai.onnx"):
            return node
    return None


def find_attention(model: ir.Model, layers: list[Layer], name: str) -> Attention:
    """The attention module ``name`` designates: its path, or a module above it holding one."""
    attentions = find_attentions(layers)
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


def plan_heads(attention: Attention, heads: int, kv_heads: int | None = None) -> HeadPlan:
    """The channel-group view of growing ``attention`` to ``heads`` (and ``kv_heads``).

    A plan of one unit (a single head, or a single key/value head grown with its group) is
    refused: a head axis of size 1 looks like a broadcast one (a mask), so the group could
    not be closed soundly."""
    plan = _plan(attention, heads, kv_heads)
    if plan.width == 1:
        unit = "head" if attention.kv_heads == attention.heads else "key/value head"
        raise GrowError(f"cannot grow attention {attention.path!r} from a single {unit}: an axis of size 1 "
                        "cannot be told apart from a broadcast one"
                        + ("; grow the query heads per key/value head instead" if unit != "head" else ""))
    return plan


def _plan(attention: Attention, heads: int, kv_heads: int | None) -> HeadPlan:
    h, k, d = attention.heads, attention.kv_heads, attention.head_dim
    label = f"attention {attention.path!r}"
    if isinstance(heads, bool) or not isinstance(heads, int) or heads <= h:
        raise GrowError(f"the head count for {label} must be an integer larger than its current {h}, got {heads!r}")
    parts = attention.query.parts
    if k == h:
        if kv_heads not in (None, heads):
            raise GrowError(f"{label} has as many key/value heads as query heads ({h}); "
                            f"it grows them together (--kv-heads {heads})")
        return HeadPlan(h, AxisLayout((Channel(parts, d),)), heads, heads, heads)
    if h % k:
        raise GrowError(f"{label} has {h} query heads and {k} key/value heads, which do not divide")
    r = h // k
    exact = (f"exact head counts: a multiple of {k} with {k} key/value heads, or a multiple of {r} "
             f"with {r} query heads per key/value head")
    if kv_heads is None:
        kv_heads = k if heads % k == 0 else heads // r if heads % r == 0 else None
        if kv_heads is None:
            raise GrowError(f"cannot grow {label} from {h} to {heads} heads exactly ({k} key/value heads, "
                            f"{r} query heads each); {exact}")
    if kv_heads == k:
        if heads % k:
            raise GrowError(f"cannot grow {label} to {heads} heads with {k} key/value heads: {heads} is no "
                            f"multiple of {k}; {exact}")
        return HeadPlan(r, AxisLayout((Channel(k, d),)), heads // k, heads, k)
    if kv_heads < k:
        raise GrowError(f"the key/value head count for {label} must be at least its current {k}, got {kv_heads}")
    if heads != kv_heads * r:
        raise GrowError(f"cannot grow {label} to {heads} heads with {kv_heads} key/value heads: growing key/value "
                        f"heads keeps {r} query heads each ({kv_heads * r} heads); grow the heads per group "
                        "and the groups in two steps")
    return HeadPlan(k, AxisLayout((Channel(1, r * d),)), kv_heads, heads, kv_heads)


def query_embedding(attention: Attention, plan: HeadPlan) -> Embedding:
    """Where the planned units sit in the query projection's output."""
    return Embedding(-1, rank_of(attention.query.layer.node.outputs[0]), plan.layout)


def exact_counts(attention: Attention) -> str:
    """The head counts ``--heads`` takes exactly, in words."""
    h, k = attention.heads, attention.kv_heads
    if h == k:
        return f"any count above {h}"
    r = h // k
    return (f"multiples of {k} above {h} (query heads per key/value head grow), or multiples of {r} "
            f"with --kv-heads COUNT/{r} (key/value heads grow with their groups)")


def example_plan(attention: Attention) -> HeadPlan:
    """The smallest growth of ``attention``'s heads (one more head, or one more per group)."""
    return plan_heads(attention, attention.heads + attention.kv_heads if attention.kv_heads != attention.heads
                      else attention.heads + 1)
