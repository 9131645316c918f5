"""The dimensions of a value where shape inference left them unknown, derived from its producer.

ONNX shape inference gives up on sizes computed at run time: the TorchScript exporter (and
optimum with it) builds nearly every Reshape and Expand target from ``Shape`` reads, and the
dynamo exporter's decomposed attention reshapes keys to ``[-1, seq, head_dim]`` with sizes read
from the keys themselves. Their outputs get fresh symbols (``unk__42``), and every op after them
too, so a rule could not tell a mask's size-1 head axis from the heads, nor match the axes of a
Reshape. :func:`known_dims` derives what the annotation does not say, in terms of the symbols
the model does name (``batch``, ``4*batch``, ``sequence_length``): a Reshape's output from the
entries of its target (:mod:`onnxgrow.shape_values`: constants, ``0``, ``-1``, sizes read at run
time), an Expand's by broadcasting its input against its target, and the usual arithmetic of
elementwise, Transpose, (Un)Squeeze, MatMul, Slice, Concat, Gather, Range and ConstantOfShape.
An axis the annotation names is kept as named; only unknown ones (``unk__N``, unnamed, or a
name the TorchScript exporter made up for an output, ``Mulinput.32_dim_0``) are replaced.
Derivation walks back iteratively (no recursion limit) and remembers each value in the
``memo`` a group planning shares (``GroupContext.dims_memo``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, MutableMapping, Sequence

import onnx_ir as ir

from onnxgrow.constants import find_constant
from onnxgrow.graph import BINARY_OPS, UNARY_OPS, const_shape
from onnxgrow.shape_values import Const, DimOf, constant_ints, entries
from onnxgrow.widening.rules.dims import Dim, product

#: Dims as derived: a size (int), a symbol or product of symbols (str), or unknown (None).
Derived = list[Dim | None]
Memo = MutableMapping[ir.Value, "Derived | None"]

#: Ops whose output 0 has the shape of their input 0.
_SAME_SHAPE = frozenset(UNARY_OPS) | {
    "Softmax", "LogSoftmax", "Hardmax", "LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization",
    "BatchNormalization", "InstanceNormalization", "Trilu", "CumSum", "Celu", "CastLike", "Sigmoid",
    "ScatterND", "ScatterElements", "Scatter",
}
_MAX_INT = 2**62
#: The inputs of each op that are shape vectors (or bounds) whose entries it reads.
_VECTORS = {"Reshape": (1,), "Expand": (1,), "ConstantOfShape": (0,)}


#: Names the TorchScript exporter makes up for output axes nobody named (``Mulinput.32_dim_0``):
#: one per output, so the same size gets different names on different outputs.
_MADE_UP = re.compile(r"_dim_\d+$")


def _unknown(dim: object) -> bool:
    return dim is None or (isinstance(dim, str) and (dim.startswith("unk__") or dim in ("", "None")
                                                     or _MADE_UP.search(dim) is not None))


def _annotated(value: ir.Value) -> Derived | None:
    if value.shape is None:
        return None
    found: Derived = []
    for dim in value.shape.dims:
        if isinstance(dim, int):
            found.append(dim)
        else:
            text = None if getattr(dim, "value", dim) is None else str(dim)
            found.append(None if _unknown(text) else text)
    return found


def known_dims(value: ir.Value | None, memo: Memo) -> list[Dim] | None:
    """``value``'s dims: the annotation where it names them, derived from the producer where it
    does not; an axis nobody knows keeps the annotation's symbol (or ``<name>[k]``). None when
    even the rank is unknown."""
    if value is None:
        return None
    derived = _derive_all(value, memo)
    if derived is None:
        return None
    names = value.shape.dims if value.shape is not None and len(value.shape) == len(derived) else None
    out: list[Dim] = []
    for k, dim in enumerate(derived):
        if dim is not None:
            out.append(dim)
        elif names is not None and not isinstance(names[k], int) and getattr(names[k], "value", None) is not None:
            out.append(str(names[k]))
        else:
            out.append(f"{value.name}[{k}]")
    return out


def known_dim(value: ir.Value | None, axis: int, memo: Memo) -> Dim | None:
    """``value``'s size along negative ``axis`` (None when absent or the rank is unknown)."""
    dims = known_dims(value, memo)
    if dims is None or -axis > len(dims):
        return None
    return dims[axis]


def known_rank(value: ir.Value | None, memo: Memo) -> int | None:
    dims = known_dims(value, memo)
    return None if dims is None else len(dims)


def _derive_all(value: ir.Value, memo: Memo) -> Derived | None:
    """Derive ``value`` and whatever it needs first, deepest first, without recursion: a value
    comes back to the top of the stack once the values it needs (pushed above it) are done."""
    if value in memo:
        return memo[value]
    stack, expanded = [value], set[ir.Value]()
    while stack:
        current = stack[-1]
        if current in memo:
            stack.pop()
            continue
        annotated = _annotated(current)
        node = current.producer()
        if (annotated is not None and None not in annotated) or node is None or find_constant(current) is not None:
            memo[current] = _constant_dims(current) if annotated is None else annotated
            stack.pop()
            continue
        if current not in expanded:
            expanded.add(current)
            pending = [v for v in _needs(node) if v not in memo]
            if pending:
                stack.extend(pending)
                continue
        memo[current] = _merge(annotated, _derive(node, current, memo))
        stack.pop()
    return memo[value]


def _constant_dims(value: ir.Value) -> Derived | None:
    shape = const_shape(value)
    return None if shape is None else list(shape)


def _merge(annotated: Derived | None, derived: Derived | None) -> Derived | None:
    if annotated is None:
        return derived
    if derived is None or len(derived) != len(annotated):
        return annotated
    return [a if a is not None else d for a, d in zip(annotated, derived)]


def _needs(node: ir.Node) -> list[ir.Value]:
    """The values whose dims the derivation of ``node``'s outputs reads."""
    values = [v for v in node.inputs if v is not None]
    if node.op_type in ("Range", "Slice"):
        values += [read for v in node.inputs[:3] for read in _scalar_reads(v)]
    for index in _VECTORS.get(node.op_type, ()):
        for entry in _entries_of(node, index):
            if isinstance(entry, DimOf):
                values.append(entry.value)
    return values


def _entries_of(node: ir.Node, index: int) -> list[Const | DimOf | None]:
    """The entries of the shape vector ``node`` reads at ``index``; empty when not even their
    number is known."""
    value = node.inputs[index] if len(node.inputs) > index else None
    return (entries(value, (node, index)) or []) if value is not None else []


def _size_of(entry: Const | DimOf | None, memo: Memo) -> Dim | None:
    """The size an entry stands for: a constant, or the (derived) size it reads at run time."""
    if isinstance(entry, Const):
        return entry.value
    if not isinstance(entry, DimOf):
        return None
    dims = memo.get(entry.value)
    if dims is None or -entry.axis > len(dims):
        return None
    size = dims[entry.axis]
    if size is None:
        return None
    return scaled_size(size, entry.factor, entry.divisor)


def scaled_size(size: Dim, factor: int, divisor: int) -> Dim | None:
    """``size · factor / divisor`` (a product of symbols where ``size`` is one); None when it
    does not divide."""
    if isinstance(size, int):
        return size * factor // divisor if (size * factor) % divisor == 0 else None
    whole = product([size]) * product([factor])
    divided = product([divisor])
    return (whole / divided).as_dim() if divided.divides(whole) else None


def _derive(node: ir.Node, value: ir.Value, memo: Memo) -> Derived | None:
    if node.domain not in ("", "ai.onnx"):
        return None
    if value is not node.outputs[0]:
        return None  # Split, TopK, a Dropout's mask...: left to the annotation
    inputs = [memo.get(v) if v is not None else None for v in node.inputs]
    rule = DERIVATIONS.get(node.op_type)
    if rule is not None:
        return rule(node, inputs, memo)
    if node.op_type in _SAME_SHAPE:
        return inputs[0]
    if node.op_type in BINARY_OPS:
        return _broadcast(inputs)
    return None


def _broadcast(shapes: Sequence[Derived | None]) -> Derived | None:
    """Numpy broadcasting, where it is certain: a size 1 yields, equal sizes agree, a size
    above 1 wins; two different symbols (or an unknown against a symbol) stay unknown."""
    known = [s for s in shapes if s is not None]
    if len(known) != len(shapes):
        return None
    rank = max(len(s) for s in known)
    out: Derived = []
    for k in range(rank):
        sizes = [s[len(s) - rank + k] if len(s) - rank + k >= 0 else 1 for s in known]
        out.append(_broadcast_dim(sizes))
    return out


def _broadcast_dim(sizes: list[Dim | None]) -> Dim | None:
    others = [s for s in sizes if s != 1]
    if not others:
        return 1
    if any(isinstance(s, int) for s in others):
        return next(s for s in others if isinstance(s, int))
    first = others[0]
    return first if first is not None and all(s == first for s in others) else None


def _reshape(node: ir.Node, inputs: list[Derived | None], memo: Memo) -> Derived | None:
    src = inputs[0]
    target = _entries_of(node, 1)
    if not target:
        return None
    allowzero = node.attributes.get_int("allowzero", 0)
    out: Derived = []
    for k, entry in enumerate(target):
        if isinstance(entry, Const) and entry.value == 0 and not allowzero:
            out.append(src[k] if src is not None and k < len(src) else None)
        elif isinstance(entry, Const) and entry.value == -1:
            out.append(-1)
        else:
            out.append(_size_of(entry, memo))
    if -1 in out:
        k = out.index(-1)
        rest = [d for j, d in enumerate(out) if j != k]
        if src is None or None in src or None in rest:
            out[k] = None
        else:
            total, known = product(src), product(rest)  # type: ignore[arg-type]
            out[k] = (total / known).as_dim() if known.divides(total) else None
    return out


def _expand(node: ir.Node, inputs: list[Derived | None], memo: Memo) -> Derived | None:
    target = _entries_of(node, 1)
    if inputs[0] is None or not target:
        return None
    return _broadcast([inputs[0], [_size_of(e, memo) for e in target]])


def _transpose(node: ir.Node, inputs: list[Derived | None], memo: Memo) -> Derived | None:
    src = inputs[0]
    if src is None:
        return None
    perm = node.attributes.get_ints("perm", None)
    perm = list(range(len(src)))[::-1] if perm is None else list(perm)
    return [src[p] for p in perm] if len(perm) == len(src) else None


def _axes(node: ir.Node) -> list[int] | None:
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        return constant_ints(node, 1)
    found = node.attributes.get_ints("axes", None)
    return None if found is None else list(found)


def _unsqueeze(node: ir.Node, inputs: list[Derived | None], memo: Memo) -> Derived | None:
    src, axes = inputs[0], _axes(node)
    if src is None or axes is None:
        return None
    rank = len(src) + len(axes)
    inserted = sorted(a % rank for a in axes)
    rest = iter(src)
    return [1 if k in inserted else next(rest) for k in range(rank)]


def _squeeze(node: ir.Node, inputs: list[Derived | None], memo: Memo) -> Derived | None:
    src, axes = inputs[0], _axes(node)
    if src is None:
        return None
    if axes is None:
        return None if len(node.inputs) > 1 and node.inputs[1] is not None else [d for d in src if d != 1]
    removed = {a % len(src) for a in axes}
    return [d for k, d in enumerate(src) if k not in removed]


def _reduce(node: ir.Node, inputs: list[Derived | None], memo: Memo) -> Derived | None:
    """Reductions over constant axes (input 1 from opset 18, else the attribute)."""
    src = inputs[0]
    if src is None:
        return None
    axes = _axes(node)
    if axes is None and len(node.inputs) > 1 and node.inputs[1] is not None:
        return None
    if axes is None or not axes:
        if node.attributes.get_int("noop_with_empty_axes", 0) and axes is not None:
            return src
        axes = list(range(len(src)))
    reduced = {a % len(src) for a in axes}
    if node.attributes.get_int("keepdims", 1):
        return [1 if k in reduced else d for k, d in enumerate(src)]
    return [d for k, d in enumerate(src) if k not in reduced]


def _matmul(node: ir.Node, inputs: list[Derived | None], memo: Memo) -> Derived | None:
    a, b = inputs[0], inputs[1]
    if a is None or b is None or len(a) < 2 or len(b) < 2:
        return None
    batch = _broadcast([a[:-2], b[:-2]])
    return None if batch is None else [*batch, a[-2], b[-1]]


def _optional_ints(node: ir.Node, index: int) -> list[int] | None:
    return constant_ints(node, index) if len(node.inputs) > index and node.inputs[index] is not None else None


def _slice(node: ir.Node, inputs: list[Derived | None], memo: Memo) -> Derived | None:
    """Slices along the axes given (all, when not given and the bounds are unknown), each bound
    a sum of sizes read at run time (:func:`_linear`) or constants per axis."""
    src = inputs[0]
    if src is None:
        return None
    given = _optional_ints(node, 3)
    steps = _optional_ints(node, 4)
    out: Derived = list(src)
    bounds = _bounds(node, memo)
    axes = given if given is not None else list(range(len(bounds))) if bounds is not None else None
    if bounds is None or axes is None or len(axes) != len(bounds) or (steps is not None and len(steps) != len(axes)):
        for axis in (given if given is not None else range(len(src))):
            out[axis % len(src)] = None
        return out
    for (start, end), axis, step in zip(bounds, axes, steps or [1] * len(axes)):
        out[axis % len(src)] = _sliced_size(src[axis % len(src)], start, end, step)
    return out


def _bounds(node: ir.Node, memo: Memo) -> list[tuple[dict[Dim, int] | None, dict[Dim, int] | None]] | None:
    """Each sliced axis' start and end as sums of sizes; None when their number is unknown."""
    if len(node.inputs) < 3:
        return None
    starts, ends = _entries_of(node, 1), _entries_of(node, 2)
    if len(starts) == len(ends) == 1:  # one axis: follow the scalar arithmetic too (``-seq``)
        return [(_linear(node.inputs[1], memo), _linear(node.inputs[2], memo))]
    if len(starts) != len(ends) or not starts:
        return None
    return [(_as_linear(start, memo), _as_linear(end, memo)) for start, end in zip(starts, ends)]


def _as_linear(entry: Const | DimOf | None, memo: Memo) -> dict[Dim, int] | None:
    size = _size_of(entry, memo)
    return None if size is None else {1: size} if isinstance(size, int) else {size: 1}


def _sliced_size(size: Dim | None, start: dict[Dim, int] | None, end: dict[Dim, int] | None, step: int) -> Dim | None:
    """The size of ``[start:end:step]`` of an axis of ``size``: computed for constants; a
    symbolic size sliced whole keeps its name; ``[0:n]`` and ``[-n:]`` have size ``n`` (a model
    that runs has it no larger than the axis)."""
    if start is None or end is None:
        return None
    start_int = start.get(1) if set(start) <= {1} else None
    end_int = end.get(1) if set(end) <= {1} else None
    if start_int is not None and end_int is not None:
        if isinstance(size, int):
            return len(range(size)[slice(start_int, end_int, step)])
        return size if start_int == 0 and end_int >= _MAX_INT and step == 1 else None
    if step != 1:
        return None
    if start_int == 0 and len(end) == 1 and next(iter(end.values())) == 1:
        return next(iter(end))
    if end_int is not None and end_int >= _MAX_INT and len(start) == 1 and next(iter(start.values())) == -1:
        return next(iter(start))
    return None


def _concat(node: ir.Node, inputs: list[Derived | None], memo: Memo) -> Derived | None:
    known = [i for i in inputs if i is not None]
    if len(known) != len(inputs) or not known:
        return None
    rank = len(known[0])
    axis = node.attributes.get_int("axis", 0) % max(rank, 1)
    out = _broadcast([[d if k != axis else 1 for k, d in enumerate(i)] for i in known])
    if out is None:
        return None
    sizes = [i[axis] for i in known]
    ints = [size for size in sizes if isinstance(size, int)]
    out[axis] = sum(ints) if len(ints) == len(sizes) else None
    return out


def _gather(node: ir.Node, inputs: list[Derived | None], memo: Memo) -> Derived | None:
    data, indices = inputs[0], inputs[1]
    if data is None or indices is None:
        return None
    axis = node.attributes.get_int("axis", 0) % len(data)
    return [*data[:axis], *indices, *data[axis + 1:]]


def _range(node: ir.Node, inputs: list[Derived | None], memo: Memo) -> Derived | None:
    """``(limit - start) / delta`` elements, with the scalars as sums of sizes read at run
    time (``Range(past, past + seq)`` of a key/value cache has ``seq``)."""
    if len(node.inputs) != 3:
        return [None]
    start, limit, delta = (_linear(v, memo) for v in node.inputs)
    if start is None or limit is None or delta != {1: 1}:
        return [None]
    difference = {term: limit.get(term, 0) - start.get(term, 0) for term in {*start, *limit}}
    terms = {term: coef for term, coef in difference.items() if coef}
    if not terms:
        return [0]
    if list(terms) == [1]:
        return [terms[1]]
    if 1 in terms or any(coef != 1 for coef in terms.values()):
        return [None]
    return [" + ".join(sorted(str(term) for term in terms))]


#: Ops that pass a one-element vector or scalar along unchanged.
_SCALAR_PASS = frozenset({"Cast", "Identity", "Squeeze", "Unsqueeze", "Reshape"})


def _linear(value: ir.Value | None, memo: Memo, depth: int = 0) -> dict[Dim, int] | None:
    """A scalar as a sum of sizes with integer coefficients (key 1: the constant part), or None."""
    if value is None or depth > 16:
        return None
    found = entries(value)
    if found is not None and len(found) == 1 and found[0] is not None:
        size = _size_of(found[0], memo)
        if size is None:
            return None
        return {1: size} if isinstance(size, int) else {size: 1}
    node = value.producer()
    if node is None or node.domain not in ("", "ai.onnx"):
        return None
    if node.op_type in _SCALAR_PASS:
        return _linear(node.inputs[0], memo, depth + 1)
    if node.op_type == "Neg":
        inner = _linear(node.inputs[0], memo, depth + 1)
        return None if inner is None else {term: -coef for term, coef in inner.items()}
    if node.op_type in ("Add", "Sub") and len(node.inputs) == 2:
        left, right = (_linear(v, memo, depth + 1) for v in node.inputs)
        if left is None or right is None:
            return None
        sign = 1 if node.op_type == "Add" else -1
        return {term: left.get(term, 0) + sign * right.get(term, 0) for term in {*left, *right}}
    return None


def _scalar_reads(value: ir.Value | None, depth: int = 0) -> list[ir.Value]:
    """The tensors whose sizes a scalar computation reads (the inputs of its ``Shape`` nodes)."""
    node = value.producer() if value is not None else None
    if node is None or depth > 16:
        return []
    if node.op_type == "Shape":
        return [v for v in node.inputs if v is not None]
    return [read for v in node.inputs for read in _scalar_reads(v, depth + 1)]


def _constant_of_shape(node: ir.Node, inputs: list[Derived | None], memo: Memo) -> Derived | None:
    target = _entries_of(node, 0)
    return [_size_of(e, memo) for e in target] if target else None


#: How each op's output dims follow from its inputs' (a test case for each: tests/widening/test_known_dims.py).
DERIVATIONS: dict[str, Callable[[ir.Node, list[Derived | None], Memo], Derived | None]] = {
    "Reshape": _reshape, "Expand": _expand, "Transpose": _transpose, "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze, "MatMul": _matmul, "Slice": _slice, "Concat": _concat, "Gather": _gather,
    "Range": _range, "ConstantOfShape": _constant_of_shape,
    **{op: _reduce for op in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
                              "ReduceL2", "ReduceLogSumExp", "ReduceSumSquare")},
}
