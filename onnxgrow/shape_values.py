"""Small integer vectors that exporters compute at run time: Reshape targets, axes, sizes.

Exporters rarely hand a Reshape a plain constant. ``x.view(x.size(0), -1)`` becomes
``Concat(Unsqueeze(Gather(Shape(x), 0)), [-1])``; with constant folding off the
pieces are ``Unsqueeze(Constant)``; the dynamo exporter without its optimizer builds
axes as ``Reshape(Constant, [-1])``. :func:`entries` follows such a vector back through
the index ops (Shape, Gather, Slice, Unsqueeze, Squeeze, Concat, Reshape, Cast,
Identity), and through the integer arithmetic the TorchScript exporter writes for
``x.expand(n, -1, -1)`` (``Where(Equal(c, ConstantOfShape(1) · -1), ConstantOfShape(1), c)``:
ConstantOfShape, Equal, Where, Add, Sub, Mul, evaluated where their operands are known), and
says what each entry is:

- :class:`Const`: a known integer, with the node input that holds it (to rewrite it);
- :class:`DimOf`: the run-time size of an axis of a tensor (read by ``Shape``), possibly
  divided by a constant (``Div``) or multiplied by one (``Mul``: TorchScript's ``repeat_kv``
  views to ``num_key_value_heads * n_rep`` heads, the key/value head count read at run time);
- ``None``: anything else.

:func:`readers_of_dim` answers the opposite question: where does a size read by
``Shape`` end up once the index ops have moved it around.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from onnxgrow.constants import find_constant
from onnxgrow.graph import rank_of

#: ops that move vector entries around; the data input of each, by op type.
_DATA_INPUT = {
    "Gather": (0,), "Slice": (0,), "Unsqueeze": (0,), "Squeeze": (0,), "Reshape": (0,),
    "Cast": (0,), "CastLike": (0,), "Identity": (0,), "Concat": None,  # None: every input
}
_MAX_DEPTH = 32
#: ops whose integer results are computed entry by entry from known operands.
_ARITHMETIC = {"Equal": lambda a, b: int(a == b), "Add": lambda a, b: a + b, "Sub": lambda a, b: a - b,
               "Mul": lambda a, b: a * b}


@dataclass(frozen=True)
class Const:
    """A known entry; ``holder`` is the node input whose constant stores it, at ``position``."""

    value: int
    holder: tuple[ir.Node, int] | None
    position: int
    path: tuple[ir.Node, ...] = ()  # index ops between the holder and the vector asked about


@dataclass(frozen=True)
class DimOf:
    """The run-time size of ``value``'s axis ``axis`` (counted from the end), divided by
    ``divisor`` (``c // groups`` of a channel shuffle's ``view``), or times ``factor``, the
    constant ``multiplier`` stores (``n_kv_heads * n_rep``; rewritable like a :class:`Const`)."""

    value: ir.Value
    axis: int
    divisor: int = 1
    factor: int = 1
    multiplier: Const | None = None

    def reads(self, other: DimOf) -> bool:
        """Whether this entry is computed from the size ``other`` reads."""
        return self.value is other.value and self.axis == other.axis


Entry = Const | DimOf | None


def entries(value: ir.Value | None, holder: tuple[ir.Node, int] | None = None) -> list[Entry] | None:
    """The entries of a 0-D or 1-D integer ``value`` (``holder``: the node input it feeds).

    None when not even the number of entries can be known.
    """
    return _entries(value, holder, 0)


def constant_ints(node: ir.Node, index: int) -> list[int] | None:
    """``node.inputs[index]`` as a list of integers when every entry is a known constant."""
    if len(node.inputs) <= index:
        return None
    found = entries(node.inputs[index], (node, index))
    consts = [e for e in found or [] if isinstance(e, Const)]
    if found is None or len(consts) != len(found):
        return None
    return [e.value for e in consts]


def shared_path(entry: Const) -> bool:
    """True when a node between the stored constant and the vector also feeds other nodes."""
    return any(len(node.outputs[0].uses()) > 1 for node in entry.path)


def shape_readers(entry: Const, node: ir.Node) -> list[ir.Node] | None:
    """The other nodes reading the store of ``entry`` (reached through its path), when each
    reads it as the target shape of a Reshape or an Expand, like ``node``; None otherwise.

    The key and value heads of an attention share one target shape; they change together,
    so the shared store may be rewritten once for all when every reader is in the group.
    """
    readers: list[ir.Node] = []
    on_path = {id(n) for n in entry.path}
    for value in (n.outputs[0] for n in entry.path):  # the stored constant itself is edited per reader
        for use in value.uses():
            if id(use.node) in on_path or use.node is node:
                continue
            if use.node.op_type not in ("Reshape", "Expand") or use.idx != 1:
                return None
            readers.append(use.node)
    return readers


def _entries(value: ir.Value | None, holder: tuple[ir.Node, int] | None, depth: int) -> list[Entry] | None:
    if value is None or depth > _MAX_DEPTH:
        return None
    ref = find_constant(value)
    if ref is not None:
        array = ref.array()
        if array.ndim > 1 or array.dtype.kind not in "iu":
            return None
        return [Const(int(v), holder, k) for k, v in enumerate(array.reshape(-1))]
    node = value.producer()
    if node is not None and node.domain in ("", "ai.onnx") and node.op_type == "Shape":
        return _shape_entries(node) or _unknown(value)
    if node is not None and node.domain in ("", "ai.onnx") and node.op_type in (*_ARITHMETIC, "Div", "Where",
                                                                                 "ConstantOfShape"):
        computed = _computed(node, depth)
        return computed if computed is not None else _unknown(value)
    if node is None or node.domain not in ("", "ai.onnx") or node.op_type not in _DATA_INPUT:
        return _unknown(value)
    parts = [_entries(node.inputs[i], (node, i), depth + 1) for i in _data_indices(node)]
    known_parts = [p for p in parts if p is not None]
    if len(known_parts) != len(parts):
        return _unknown(value)
    found = [_via(e, node) for p in known_parts for e in p]
    result: list[Entry] | None = found
    if node.op_type == "Gather":
        result = _gathered(node, found)
    elif node.op_type == "Slice":
        result = _sliced(node, found)
    return result if result is not None else _unknown(value)


def _computed(node: ir.Node, depth: int) -> list[Entry] | None:
    """The entries of ConstantOfShape, Where or an arithmetic op over small integer vectors
    (broadcasting length-1 operands); an entry is unknown where an operand it needs is. A
    run-time size divided by a constant stays a :class:`DimOf` (with that divisor)."""
    if node.op_type == "ConstantOfShape":
        shape = _entries(node.inputs[0], None, depth + 1)
        attr = node.attributes.get("value")
        fill = attr.as_tensor().numpy().reshape(-1) if attr is not None else np.zeros(1, np.int64)
        length = _vector_length(shape[0]) if shape is not None and len(shape) == 1 else None
        if length is None or fill.dtype.kind not in "iub":
            return None
        return [Const(int(fill[0]), None, k) for k in range(length)]
    operands = [_entries(v, (node, i), depth + 1) for i, v in enumerate(node.inputs)]
    if any(o is None for o in operands) or len(operands) != (3 if node.op_type == "Where" else 2):
        return None
    length = max(len(o) for o in operands)  # type: ignore[arg-type]
    if any(len(o) not in (1, length) for o in operands):  # type: ignore[arg-type]
        return None
    found: list[Entry] = []
    for k in range(length):
        picked = [o[k if len(o) > 1 else 0] for o in operands]  # type: ignore[index, arg-type]
        known = [e.value if isinstance(e, Const) else None for e in picked]
        first = picked[0]
        if node.op_type == "Where":
            found.append(None if known[0] is None else _via(picked[1] if known[0] else picked[2], node))
        elif node.op_type == "Div" and isinstance(first, DimOf) and known[1] is not None and known[1] > 0:
            found.append(DimOf(first.value, first.axis, first.divisor * known[1], first.factor, first.multiplier))
        elif node.op_type == "Mul" and (product := _times_constant(picked, node)) is not None:
            found.append(product)
        elif node.op_type == "Equal" and any(isinstance(e, DimOf) for e in picked) and \
                any(v is not None and v < 0 for v in known):
            found.append(Const(0, None, k))  # a size read at run time is never negative (``expand``'s -1)
        elif known[0] is None or known[1] is None or (node.op_type == "Div" and not known[1]):
            found.append(None)
        elif node.op_type == "Div":
            found.append(Const(known[0] // known[1], None, k))
        else:
            found.append(Const(_ARITHMETIC[node.op_type](known[0], known[1]), None, k))
    return found


def _times_constant(picked: list[Entry], node: ir.Node) -> DimOf | None:
    """A size read at run time (not yet scaled) times a positive constant: a :class:`DimOf`
    with that ``factor``, and the constant's store as its ``multiplier``."""
    dims = [e for e in picked if isinstance(e, DimOf)]
    consts = [e for e in picked if isinstance(e, Const)]
    if len(dims) != 1 or len(consts) != 1 or consts[0].value <= 0:
        return None
    dim, const = dims[0], consts[0]
    if dim.factor != 1 or dim.divisor != 1:
        return None
    stored = _via(const, node)
    return DimOf(dim.value, dim.axis, 1, const.value,
                 stored if isinstance(stored, Const) and stored.holder is not None else None)


def _vector_length(entry: Entry) -> int | None:
    """The value of ``entry`` when known: a constant, or the static length of an integer vector
    read by ``Shape`` (a shape vector, which no widening lengthens)."""
    if isinstance(entry, Const):
        return entry.value
    if not isinstance(entry, DimOf) or entry.value.dtype not in (ir.DataType.INT64, ir.DataType.INT32):
        return None
    dims = entry.value.shape.dims if entry.value.shape is not None else None
    return dims[0] if dims is not None and len(dims) == 1 and isinstance(dims[0], int) else None


def _unknown(value: ir.Value) -> list[Entry] | None:
    """Unknown entries, as many as the value's static length (None if that is unknown too)."""
    dims = value.shape.dims if value.shape is not None else None
    if dims is None or len(dims) > 1:
        return None
    if not dims:
        return [None]
    length = dims[0]
    return [None] * length if isinstance(length, int) else None


def _data_indices(node: ir.Node) -> range | tuple[int, ...]:
    fixed = _DATA_INPUT[node.op_type]
    return range(len(node.inputs)) if fixed is None else fixed


def _via(entry: Entry, node: ir.Node) -> Entry:
    if isinstance(entry, Const):
        return Const(entry.value, entry.holder, entry.position, (*entry.path, node))
    return entry


def _shape_entries(node: ir.Node) -> list[Entry] | None:
    """``DimOf`` entries for the axes ``Shape`` reads (None when the input rank is unknown)."""
    x = node.inputs[0]
    rank = rank_of(x)
    if x is None or rank is None:
        return None
    start = node.attributes.get_int("start", 0)
    end = node.attributes.get_int("end", rank)
    return [DimOf(x, k - rank) for k in range(rank)[slice(start, end)]]


def _gathered(node: ir.Node, found: list[Entry]) -> list[Entry] | None:
    picks = constant_ints(node, 1)
    if picks is None or node.attributes.get_int("axis", 0) != 0 or (rank_of(node.inputs[0]) or 1) > 1:
        return None
    return [found[i] if -len(found) <= i < len(found) else None for i in picks]


def _sliced(node: ir.Node, found: list[Entry]) -> list[Entry] | None:
    starts, ends = constant_ints(node, 1), constant_ints(node, 2)
    axes = constant_ints(node, 3) if len(node.inputs) > 3 and node.inputs[3] is not None else [0]
    steps = constant_ints(node, 4) if len(node.inputs) > 4 and node.inputs[4] is not None else [1]
    if not (starts and ends and steps and axes in ([0], [-1]) and len(starts) == len(ends) == len(steps) == 1):
        return None
    if steps[0] == 0:
        return None
    return found[slice(starts[0], ends[0], steps[0])]


#: ops that move a run-time size along (index ops; a division or product by a constant keeps it a
#: DimOf; TorchScript's ``Where(Equal(t, -1), 1, t)`` keeps it too): the inputs they follow.
_MOVES_DIM = {**_DATA_INPUT, "Div": (0,), "Mul": None, "Where": (1, 2), "Equal": None}


def readers_of_dim(value: ir.Value, dim: DimOf) -> Iterator[tuple[ir.Node, int]]:
    """The node inputs that use ``dim`` (an entry of ``value``) other than to move it.

    Index ops (and divisions or products by a constant, and ``Where`` picking it) that keep
    the entry are followed; index ops that drop it, ``Shape`` of the vector (its length) and
    comparisons whose result no size changes (``Equal(t, -1)``: a size is never negative)
    end the search; other arithmetic uses it.
    """
    queue, seen = [value], {id(value)}
    while queue:
        current = queue.pop()
        for use in current.uses():
            node, index = use.node, use.idx
            if node.domain in ("", "ai.onnx") and node.op_type == "Shape":
                continue
            indices = _MOVES_DIM.get(node.op_type, ())
            moves = node.domain in ("", "ai.onnx") and (indices is None or index in indices)
            if not moves:
                yield node, index
                continue
            out = node.outputs[0]
            kept = entries(out)
            reads = kept is not None and any(isinstance(e, DimOf) and e.reads(dim) for e in kept)
            independent = kept is not None and all(isinstance(e, Const) for e in kept)
            if reads:
                if id(out) not in seen:
                    seen.add(id(out))
                    queue.append(out)
            elif kept is None or not (independent or node.op_type in _DATA_INPUT):
                yield node, index
