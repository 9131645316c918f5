"""The shape vectors widening rules rewrite: the readers of :mod:`onnxgrow.shape_values`,
:func:`rewrite_entry`, which stores a new value in place of a known entry, and
:func:`follows`, whether a size read at run time grows as an axis of the group does.

Exporters compute one target shape for many nodes: the dynamo exporter builds
``[batch, seq, heads, head_dim]`` once for every attention's query, key and value views, and
GPT-2's ``[batch, seq, 4·hidden]`` once for both FFNs. A widening rewrites the entry only for
the node it widens: when the index ops between the stored constant and that node feed other
nodes too, the node first gets its own copy of them (:func:`rewrite_entry` with ``reader``),
so the others read what they did.
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxgrow.constants import unique_name
from onnxgrow.shape_values import (
    Const,
    DimOf,
    Entry,
    constant_ints,
    entries,
    readers_of_dim,
    shared_path,
)
from onnxgrow.widening.context import GroupContext
from onnxgrow.widening.layout import AxisLayout, Embedding
from onnxgrow.widening.rules.known_dims import known_dim

__all__ = ["Const", "DimOf", "Entry", "channel_count", "constant_ints", "entries", "follows", "layout_sizes",
           "readers_of_dim", "rewrite_entry", "rewrite_size_entry", "shared_path", "size_entry_problem"]


def rewrite_entry(ctx: GroupContext, entry: Const, value: int, reader: ir.Node | None = None,
                  index: int = 1) -> None:
    """Store ``value`` in place of ``entry``; only the node input holding it changes. With
    ``reader`` (the node reading the vector at its input ``index``), index ops on the entry's
    path that other nodes read as well are first copied for ``reader`` alone."""
    assert entry.holder is not None
    if reader is not None and shared_path(entry):
        entry = _private_path(ctx, entry, reader, index)

    holder = entry.holder
    assert holder is not None

    def put(array: np.ndarray, position: int = entry.position) -> np.ndarray:
        array = array.copy()
        array.reshape(-1)[position] = value
        return array

    ctx.edit(holder[0], holder[1], put)


def channel_count(ctx: GroupContext, entry: DimOf) -> Embedding | None:
    """The embedding of the tensor whose channel count ``entry`` reads (None: it reads another size)."""
    embedding = ctx.tracked.get(entry.value)
    return embedding if embedding is not None and embedding.axis == entry.axis else None


def layout_sizes(layout: AxisLayout) -> tuple[int, int]:
    """A layout's fixed positions and positions per unit."""
    return layout.old_size(0), layout.old_size(1) - layout.old_size(0)


def follows(ctx: GroupContext, entry: DimOf, layout: AxisLayout) -> bool:
    """Whether the channel count ``entry`` reads at run time, times its factor over its
    divisor, is the size of an axis laid out as ``layout`` for every widening: both layouts
    grow by the same positions per unit (and repeat the same dynamic size)."""
    read = channel_count(ctx, entry)
    if read is None or read.layout.outer != layout.outer:
        return False
    fixed, per_unit = layout_sizes(read.layout)
    return (entry.factor * fixed, entry.factor * per_unit) == tuple(entry.divisor * size
                                                                    for size in layout_sizes(layout))


def _private_path(ctx: GroupContext, entry: Const, reader: ir.Node, index: int) -> Const:
    """Copy the index ops of ``entry``'s path (stored constant → ``reader``'s input ``index``) for
    ``reader``: the copies read what the originals read, each the previous copy instead of
    the previous original; ``reader`` reads the last. Returns the entry in the copies."""
    graph = reader.graph or ctx.graph
    taken = {n.name for n in graph.all_nodes() if n.name}
    copies: list[ir.Node] = []
    for node in entry.path:
        inputs = [copies[-1].outputs[0] if copies and v is entry.path[len(copies) - 1].outputs[0] else v
                  for v in node.inputs]
        attributes = [ir.Attr(a.name, a.type, a.value, a.ref_attr_name, doc_string=a.doc_string)
                      for a in node.attributes.values()]
        original = node.outputs[0]
        output = ir.Value(name=unique_name(ctx.graph, f"{original.name}_{reader.name or 'reader'}"),
                          type=original.type, shape=original.shape.copy() if original.shape is not None else None)
        name = f"{node.name or node.op_type}_{reader.name or 'reader'}"
        k = 1
        while name in taken:
            name, k = f"{node.name or node.op_type}_{reader.name or 'reader'}_{k}", k + 1
        taken.add(name)
        copy = ir.Node(node.domain, node.op_type, inputs, attributes, outputs=[output], name=name,
                       version=node.version)
        graph.insert_before(reader, copy)
        copies.append(copy)
    assert entry.path[-1].outputs[0] is reader.inputs[index], "the entry's path ends at the reader's vector"
    reader.replace_input_with(index, copies[-1].outputs[0])
    assert entry.holder is not None
    return Const(entry.value, (copies[0], entry.holder[1]), entry.position, tuple(copies))


def size_entry_problem(ctx: GroupContext, entry: Entry, layout: AxisLayout, what: str) -> str:
    """Why the entry of a shape vector (``what``: "its target shape") that gives the size of
    an axis laid out as ``layout`` would not give its widened size; '' when it does by itself
    (a size read at run time that :func:`follows`) or is rewritten by :func:`rewrite_size_entry`:
    a constant of the old size, or a size read outside the group times a constant (the read size
    must then divide the positions of every unit)."""
    if isinstance(entry, Const):
        if layout.outer is not None:
            return f"a constant entry of {what} stands for a size that grows with the batch"
        if entry.holder is None:
            return f"the channel entry of {what} is computed from constants at run time"
        return ""
    if isinstance(entry, DimOf) and follows(ctx, entry, layout):
        return ""
    if isinstance(entry, DimOf) and channel_count(ctx, entry) is None and entry.multiplier is not None:
        read = known_dim(entry.value, entry.axis, ctx.dims_memo)
        fixed, per_unit = layout_sizes(layout)
        if isinstance(read, int) and layout.outer is None and not fixed % read and not per_unit % read:
            return ""
        return (f"the channel entry of {what} is the run-time size of {entry.value.name!r} (axis {entry.axis}) "
                f"times {entry.factor}, which cannot become the new size")
    if isinstance(entry, DimOf):
        return (f"the channel entry of {what} is the run-time size of {entry.value.name!r} (axis {entry.axis}), "
                "which would not follow the widening")
    return f"the channel entry of {what} is computed at run time"


def rewrite_size_entry(ctx: GroupContext, entry: Entry, layout: AxisLayout, reader: ir.Node, index: int = 1) -> None:
    """Give the entry that :func:`size_entry_problem` accepted the widened size: a constant is
    rewritten, or the constant a size read outside the group is multiplied by."""
    new = layout.new_size(ctx.channel_map.q)
    if isinstance(entry, Const) and entry.value != new:
        rewrite_entry(ctx, entry, new, reader, index)
    elif isinstance(entry, DimOf) and entry.multiplier is not None and channel_count(ctx, entry) is None:
        read = layout.old_size(ctx.width) // entry.factor  # the size read, outside the group
        if entry.multiplier.value != new // read:
            rewrite_entry(ctx, entry.multiplier, new // read, reader, index)
