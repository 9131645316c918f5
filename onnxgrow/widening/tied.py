"""Tied embeddings: an LM head that reads its embedding table, transposed (docs/design.md §9).

A head is *tied* to a lookup ``Gather(E, ids)`` (``E [V, D]``) when its weight is ``E``
itself, through a Transpose, or a constant equal to ``E`` transposed (what the dynamo
exporter and optimum store: the transpose folded into an initializer of its own). Exporters
write a tied head's weight under the table's name only when the two are equal, and a
``transformers`` config with ``tie_word_embeddings`` loads one tensor for both, so a growth
must keep them equal or refuse.

Growing the vocabulary keeps the tie by construction (:mod:`onnxgrow.widening.vocabulary`:
the head's new classes are the new rows). Growing the hidden size ``D`` does not by itself:
the stream copies the table's columns, ``E' = E[:, src]``, while the head contracts the same
axis, ``W' = E'ᵀ·diag(coef)``. The copies' shares move instead onto the last per-channel
scale before the head (a final norm's weight, and its bias): ``γ'[j] = γ[src j]·coef[j]``,
``β'[j] = β[src j]·coef[j]``, and the head reads ``E'ᵀ`` unscaled. That is exact because
every op between that scale and the head acts on each channel alike and linearly (casts,
reshapes, transposes, scalar multiplications), so ``diag(coef)`` commutes to the head;
the normalisation before the scale sees uniformly copied channels (the norm's rule
requires it), so its output channels are copies too. Where no such scale exists, or
something else reads the scaled values, :func:`keep_ties` refuses naming why rather than
untie the head.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

import numpy as np
import onnx_ir as ir

from onnxgrow.constants import PASS_THROUGH_OPS, ConstantRef, find_constant
from onnxgrow.graph import const_shape, node_label
from onnxgrow.widening.context import EDIT_LOG, AxisRecord, GroupContext
from onnxgrow.widening.rules.common import broadcast_axis, contract

#: Ops between the head's scale and the head that act on each channel alike and linearly.
_COMMUTING = frozenset({"Identity", "Cast", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose"})
#: Fused normalisations and their per-channel inputs (scale, bias).
_NORMS = {"LayerNormalization": (1, 2), "RMSNormalization": (1,), "SimplifiedLayerNormalization": (1,)}


def head_width_axis(node: ir.Node) -> int | None:
    """The axis of a head's weight (as the node sees it) that runs over the vocabulary:
    1 for MatMul ``[D, V]``, Gemm by ``transB``; None for other ops."""
    if node.op_type == "MatMul":
        return 1
    if node.op_type == "Gemm":
        return 0 if node.attributes.get_int("transB", 0) else 1
    return None


def lookup_table(node: ir.Node) -> ConstantRef | None:
    """The constant 2-D table an embedding lookup ``Gather(table, ids)`` on axis 0 reads."""
    if node.op_type != "Gather" or node.attributes.get_int("axis", 0) != 0:
        return None
    ref = find_constant(node.inputs[0])
    return ref if ref is not None and len(ref.tensor.shape) == 2 else None


def reads_table(head: ir.Node, table: ConstantRef) -> bool:
    """Whether the MatMul/Gemm ``head``'s weight is ``table``: the same initializer, or a
    constant equal to it transposed (as the head sees it)."""
    axis = head_width_axis(head)
    ref = find_constant(head.inputs[1]) if axis is not None and len(head.inputs) > 1 else None
    if ref is None:
        return False
    if ref.root is table.root:
        return True
    view = ref.array()
    rows, columns = (int(d) for d in table.tensor.shape.numpy())
    if view.shape != ((rows, columns) if axis == 0 else (columns, rows)):
        return False
    array = table.array()
    return bool(np.array_equal(view, array if axis == 0 else array.T))


def tied_lookup(graph: ir.Graph, head: ir.Node) -> ir.Node | None:
    """The embedding lookup whose table the MatMul/Gemm ``head`` reads (:func:`reads_table`), if any."""
    for node in graph.all_nodes():
        table = lookup_table(node)
        if table is not None and reads_table(head, table):
            return node
    return None


@dataclass(frozen=True)
class Tie:
    """A lookup and the head tied to it in one channel group, and the per-channel constants
    (``(node, input index, axis)``) that take the copies' shares instead of the head."""

    lookup: ir.Node
    head: ir.Node
    table: ir.Value
    scales: tuple[tuple[ir.Node, int, int], ...]

    def words(self, name: Callable[[ir.Node], str]) -> str:
        """``lm_head kept tied to model.embed_tokens: the copies' shares are in model.norm.weight``."""
        held = ", ".join(repr(value.name) for node, i, _ in self.scales if (value := node.inputs[i]) is not None)
        return f"{name(self.head)} kept tied to {name(self.lookup)}: the copies' shares are in {held}"


def find_ties(ctx: GroupContext) -> list[Tie]:
    """The tied (lookup, head) pairs of the closed group ``ctx``: a lookup that produces its
    channels and a head that contracts them reading the lookup's table. Refused (naming the
    node) when the tie cannot be kept (see the module docstring)."""
    ties = []
    for lookup in ctx.producers:
        table = lookup_table(lookup)
        if table is None:
            continue
        for head in ctx.contractors:
            if head_width_axis(head) is not None and reads_table(head, table):
                ties.append(Tie(lookup, head, table.root, _scales(ctx, lookup, head)))
                head_ref = find_constant(head.inputs[1])
                if head_ref is not None and head_ref.root is table.root:
                    _check_readers(ctx, table.root, lookup, head)
    return ties


def keep_ties(ctx: GroupContext) -> list[Tie]:
    """Make the group's rewrite keep every tied head tied (see the module docstring): the
    scales before each head take the shares, the head reads the grown table. Reads only
    until the group is rewritten; refuses like :func:`find_ties`."""
    ties = find_ties(ctx)
    for tie in ties:
        for node, index, axis in tie.scales:
            ctx.replace_edit(node, index, _taking_shares(ctx, node, axis))
        head_ref = find_constant(tie.head.inputs[1])
        assert head_ref is not None
        if head_ref.root is tie.table:  # one initializer: the lookup's edit grows it for both
            ctx.share(tie.table)
            ctx.replace_edit(tie.head, 1, lambda weight: weight)
        else:
            ctx.replace_edit(tie.head, 1, _reading_table(ctx, tie))
    return ties


def _taking_shares(ctx: GroupContext, node: ir.Node, axis: int) -> Callable[[np.ndarray], np.ndarray]:
    """A per-channel constant copied and scaled by the shares, as a contracting layer's rows."""
    return lambda array: contract(array, axis, ctx.index(node.outputs[0]), ctx.channel_map.init, ctx.rng)


def _reading_table(ctx: GroupContext, tie: Tie) -> Callable[[np.ndarray], np.ndarray]:
    """The head's own weight replaced by the grown table as the head sees it (the lookup,
    earlier in graph order, is rewritten first); recorded as produced units along its input axis."""
    width_axis = head_width_axis(tie.head)
    assert width_axis is not None
    axis = 1 - width_axis

    def edit(weight: np.ndarray) -> np.ndarray:
        table = lookup_table(tie.lookup)
        assert table is not None
        grown = table.array()
        grown = grown if width_axis == 0 else grown.T
        idx = ctx.index(tie.head.inputs[0])
        log = EDIT_LOG.get()
        if log is not None:
            log.append(AxisRecord("produce", axis, idx.src, np.ones(len(idx)), idx.fresh))
        return grown.astype(weight.dtype, copy=False)

    return edit


def _scales(ctx: GroupContext, lookup: ir.Node, head: ir.Node) -> tuple[tuple[ir.Node, int, int], ...]:
    """The per-channel constants before ``head`` that can take the shares: walking back from
    its input through ops that commute with a per-channel scale (:data:`_COMMUTING`, a scalar
    factor or divisor, a bias Add or Sub whose constant takes the shares too), up to a Mul by
    a per-channel constant or a fused norm's scale (and bias)."""
    no_scale = "no per-channel scale (a norm's weight) before it can take the copies' shares"

    def refuse(node: ir.Node, why: str) -> NoReturn:
        ctx.refuse(node, f"{node_label(head)} reads the table of {node_label(lookup)} (tied embeddings) and "
                         f"{why}, so the tie cannot be kept")

    found: list[tuple[ir.Node, int, int]] = []
    reader, value = head, head.inputs[0]
    while True:
        others = [n for n in value.consumers() if n is not reader] if value is not None else []
        if others:
            refuse(others[0], f"{node_label(others[0])} reads the values it reads")
        if value is None or value.is_graph_output() or value not in ctx.tracked:
            refuse(reader, f"model output {value.name!r} holds the values it reads" if value is not None
                   and value.is_graph_output() else no_scale)
        node = value.producer()
        if node is None or node.domain not in ("", "ai.onnx", "com.microsoft"):
            refuse(reader, no_scale)
        per_channel = _per_channel(ctx, node)
        computed = [v for v in node.inputs if v is not None and const_shape(v) is None]
        single = computed[0] if len(computed) == 1 else None
        if node.op_type in _NORMS:
            taken = [c for c in per_channel if c[1] in _NORMS[node.op_type]]
            if not any(index == 1 for _, index, _ in taken):
                refuse(node, "its scale does not span the channels")
            return (*found, *taken)
        if node.op_type == "Mul" and single is not None:
            if per_channel:
                return (*found, *per_channel)
            value = single  # a scalar factor commutes with the shares
        elif node.op_type == "Div" and single is node.inputs[0] and not per_channel:
            value = single
        elif node.op_type in ("Add", "Sub") and per_channel and single is not None \
                and (node.op_type == "Add" or single is node.inputs[0]):
            found.extend(per_channel)  # a bias: (x + b)·c = x·c + b·c
            value = single
        elif node.op_type in _COMMUTING:
            value = node.inputs[0]
        else:
            refuse(node, no_scale)
        reader = node


def _per_channel(ctx: GroupContext, node: ir.Node) -> list[tuple[ir.Node, int, int]]:
    """``node``'s constant inputs that span the channels of its output (input index, axis)."""
    out = node.outputs[0]
    if out not in ctx.tracked:
        return []
    embedding = ctx.tracked[out]
    old = embedding.layout.old_size(ctx.width)
    found = []
    for i, value in enumerate(node.inputs):
        shape = const_shape(value) if value is not None else None
        axis = broadcast_axis(shape, embedding.axis) if shape is not None else None
        if shape is not None and axis is not None and shape[axis] == old and old > 1:
            found.append((node, i, axis))
    return found


def _check_readers(ctx: GroupContext, root: ir.Value, lookup: ir.Node, head: ir.Node) -> None:
    """Every node reading ``root`` (through Identity/Transpose) is one the group rewrites, so
    the table may grow in place for all of them."""
    stack = [root]
    while stack:
        value = stack.pop()
        for node in value.consumers():
            if node.op_type in PASS_THROUGH_OPS:
                stack.append(node.outputs[0])
            elif node is not lookup and node is not head and not ctx.known(node):
                ctx.refuse(node, f"it reads the table {root.name!r} that {node_label(lookup)} and "
                                 f"{node_label(head)} share (tied embeddings), which the widening grows")
