"""Attention heads: growing an attention module's head count.

Attention modules are found by :mod:`onnxgrow.structure.attention`.

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

With a key/value cache (model inputs concatenated with the keys and values, model outputs
they become: :meth:`~onnxgrow.structure.Attention.cache`), a growth that changes the
key/value heads would change those inputs and outputs: refused naming them. Query heads
still grow within their key/value groups (the repeat makes their keys and values; the cache
keeps its shape).

:func:`growth_kinds` lists the growths an attention admits (one example each), which
``inspect`` plans to offer only the counts that close; :func:`exact_counts` words them.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from onnxgrow.errors import GrowError
from onnxgrow.graph import rank_of
from onnxgrow.structure import Attention
from onnxgrow.widening.layout import AxisLayout, Channel, Embedding


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
    if plan.new_kv_heads != attention.kv_heads:
        _check_cache(attention)
    return plan


def _check_cache(attention: Attention) -> None:
    """Refuse a growth of the key/value heads of an attention with a key/value cache."""
    past, present = attention.cache()
    if not past and not present:
        return
    names = ", ".join(repr(v.name) for v in past)
    outputs = ", ".join(repr(v.name) for v in present)
    instead = (f"; with a cache only query heads grow, within their key/value groups (multiples of "
               f"{attention.kv_heads} with {attention.kv_heads} key/value heads)"
               if attention.kv_heads != attention.heads else "")
    raise GrowError(f"cannot grow the key/value heads of attention {attention.path!r}: they fill its key/value cache, "
                    f"whose model inputs {names or '(none)'} and outputs {outputs or '(none)'} would change shape"
                    f"{instead}")


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
    return Embedding(-1, rank_of(attention.query.node.outputs[0]), plan.layout)


#: The kinds of head growth: all heads (as many key/value heads as query heads), query heads
#: per key/value head (grouped-query attention, key/value heads kept), key/value heads with
#: their groups.
HEADS, PER_GROUP, GROUPS = "heads", "per-group", "groups"


def growth_kinds(attention: Attention) -> dict[str, HeadPlan | GrowError]:
    """Each kind of head growth ``attention`` has, as its smallest example plan (one more head,
    one more query head per key/value head, one more key/value head with its group), or why
    that kind is refused before planning (a single key/value head, a key/value cache)."""
    h, k = attention.heads, attention.kv_heads
    examples = {HEADS: (h + 1, None)} if h == k else {PER_GROUP: (h + k, k), GROUPS: (h + h // k, k + 1)}
    kinds: dict[str, HeadPlan | GrowError] = {}
    for kind, (heads, kv_heads) in examples.items():
        try:
            kinds[kind] = plan_heads(attention, heads, kv_heads)
        except GrowError as refused:
            kinds[kind] = refused
    return kinds


def exact_counts(attention: Attention, kinds: Collection[str]) -> str:
    """The head counts ``--heads`` takes exactly, in words, for the growth ``kinds`` that plan."""
    h, k = attention.heads, attention.kv_heads
    words = {HEADS: f"any count above {h}",
             PER_GROUP: f"multiples of {k} above {h} (query heads per key/value head grow)",
             GROUPS: f"multiples of {h // k} with --kv-heads COUNT/{h // k} (key/value heads grow with their groups)"}
    return ", or ".join(words[kind] for kind in (HEADS, PER_GROUP, GROUPS) if kind in kinds)
