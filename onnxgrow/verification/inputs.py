"""The inputs of a check: seeded random feeds drawn by role, or one user-given ``.npz`` sample.

Random inputs take each input's role (:mod:`~onnxgrow.verification.roles`) so that they fit
together, as a real caller's would (docs/design.md §6):

- **Sizes.** Every symbolic dimension has one size across the inputs: the one the user's
  ``input_shapes`` give it, else the role's, else :data:`DEFAULT_DYNAMIC_DIM`; a dimension
  written as an expression (optimum's ``past_sequence_length + sequence_length``) is
  computed from its symbols. A key/value cache's past length is :data:`DEFAULT_PAST_LENGTH`;
  an attention mask's own length dimension is the past plus the new length (the new
  length alone without a cache); a pixel input takes the channel count and image size its
  first Conv implies.
- **Values.** Token ids in ``[0, high)``: ``high`` is the scope's bound for the input
  (:class:`~onnxgrow.options.VerifyScope`: old ids only), else the rows of the table they
  index, else the range the model's lineage records (a grown vocabulary), else
  :data:`DEFAULT_INT_HIGH`; other integers alike. Attention masks are ones; position ids
  count on from the past length (the last positions of past plus new); token type ids are
  zeros; a switch (an input an If compares with a constant) takes one of its values per
  sample first, so that the samples run every branch, then random values; floats are
  standard normal, booleans 0/1.

A given sample must match the reference's inputs by name, dtype, rank and every static dimension.
"""

from __future__ import annotations

import ast
import math
import operator
import os
import re
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnx_ir as ir

from onnxgrow.errors import GrowError
from onnxgrow.lineage import read_history
from onnxgrow.options import VerifyOptions
from onnxgrow.verification.compare import dims_compatible, format_dims, name_of, shape_dims, true_inputs
from onnxgrow.verification.roles import Role, find_roles
from onnxgrow.verification.runtime import first_line

#: Size given to a dynamic dimension when neither the user nor a role gives one.
DEFAULT_DYNAMIC_DIM = 2
#: Past length given to a key/value cache whose past length is dynamic.
DEFAULT_PAST_LENGTH = 3
#: Integer inputs that index no embedding table are drawn from [0, this).
DEFAULT_INT_HIGH = 10


class InputSpec(NamedTuple):
    """How one input is drawn: concrete shape, element type, integers' bound (``[0, high)``),
    role (:data:`~onnxgrow.verification.roles.Kind`, "" for none), the first position of
    position ids, a switch's values (one a sample, first), and a cache's past axis."""

    shape: tuple[int, ...]
    dtype: ir.DataType
    high: int
    role: str = ""
    start: int = 0
    values: tuple[int, ...] = ()
    axis: int | None = None


def recorded_input_ranges(model: ir.Model) -> dict[str, int]:
    """The integer input ranges the model's lineage records (a grown vocabulary's), by input name."""
    ranges: dict[str, int] = {}
    for entry in read_history(model):
        for name, high in dict(entry.get("input_range") or {}).items():
            ranges[name] = int(high)
    return ranges


_OPERATORS: dict[type, Callable[[int, int], int]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv,
    ast.Div: operator.floordiv, ast.Mod: operator.mod,
}
_FUNCTIONS: dict[str, Callable[..., int]] = {"Max": max, "max": max, "Min": min, "min": min}


class DimSizes:
    """One size per symbolic dimension: bound once (by the user's shapes, a role, or on first
    use to :data:`DEFAULT_DYNAMIC_DIM`); expressions of symbols are computed."""

    def __init__(self) -> None:
        self.bound: dict[str, int] = {}

    def bind(self, dim: object, size: int) -> None:
        """Give the symbol ``dim`` the size ``size`` unless it has one (ints and expressions: nothing)."""
        symbol = _symbol(dim)
        if symbol is not None and symbol not in self.bound:
            self.bound[symbol] = int(size)

    def is_bound(self, dim: object) -> bool:
        symbol = _symbol(dim)
        return symbol is not None and symbol in self.bound

    def size(self, dim: object) -> int:
        """The size of ``dim``: itself (a static one), its symbol's, its expression's value, or the default."""
        if isinstance(dim, int) and dim >= 0:
            return dim
        text = dim.value if isinstance(dim, ir.SymbolicDim) else None
        if not text:
            return DEFAULT_DYNAMIC_DIM
        symbol = _symbol(dim)
        if symbol is not None:
            return self.bound.setdefault(symbol, DEFAULT_DYNAMIC_DIM)
        value = self._evaluate(text)
        return value if value is not None and value > 0 else DEFAULT_DYNAMIC_DIM

    def _evaluate(self, text: str) -> int | None:
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError:
            return None

        def value(node: ast.AST) -> int:
            if isinstance(node, ast.Expression):
                return value(node.body)
            if isinstance(node, ast.Constant) and isinstance(node.value, int):
                return node.value
            if isinstance(node, ast.Name):
                return self.bound.setdefault(node.id, DEFAULT_DYNAMIC_DIM)
            if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
                return _OPERATORS[type(node.op)](value(node.left), value(node.right))
            if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
                return -value(node.operand)
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS
                    and node.args and not node.keywords):
                return _FUNCTIONS[node.func.id](*(value(a) for a in node.args))
            raise ValueError(ast.dump(node))

        try:
            return value(tree)
        except (ValueError, ZeroDivisionError):
            return None


def _symbol(dim: object) -> str | None:
    """The name of a plain symbolic dimension (not an expression of several), or None."""
    text = dim.value if isinstance(dim, ir.SymbolicDim) else None
    return text if text and not re.search(r"[-+*/%() ,]", text) else None


def input_specs(
    model: ir.Model, shapes: Mapping[str, Sequence[int]] | None = None,
    highs: Mapping[str, int] | None = None,
) -> dict[str, InputSpec]:
    """How every true graph input is drawn (module docstring): ``shapes`` are the user's
    (``--input-shapes``), ``highs`` a scope's bounds for integer inputs."""
    shapes = dict(shapes or {})
    initializer_names = set(model.graph.initializers)
    values = [v for v in model.graph.inputs if name_of(v) not in initializer_names]
    for value in values:
        if value.dtype is None:
            raise GrowError(f"model input {name_of(value)!r} has no element type")
    given = {name_of(v): tuple(int(d) for d in shapes.pop(name_of(v))) for v in values if name_of(v) in shapes}
    if shapes:
        raise GrowError(
            f"--input-shapes names {', '.join(sorted(shapes))}, which the model does not have "
            f"as inputs (inputs: {', '.join(name_of(v) for v in values)})"
        )
    roles = find_roles(model)
    concrete = _sizes(values, roles, given)
    recorded = recorded_input_ranges(model)
    past = next((concrete[n][r.axis] for n, r in roles.items() if r.kind == "cache" and r.axis is not None
                 and r.axis < len(concrete[n])), 0)
    new = next((concrete[n][-1] for n, r in roles.items() if r.kind == "ids" and concrete[n]), None)
    specs = {}
    for value in values:
        name = name_of(value)
        role = roles.get(name)
        assert value.dtype is not None
        high = (highs[name] if highs and name in highs else
                role.high if role is not None and role.high is not None else recorded.get(name, DEFAULT_INT_HIGH))
        shape = concrete[name]
        start = 0
        if role is not None and role.kind == "positions" and shape:
            start = max(past + (new if new is not None else shape[-1]) - shape[-1], 0)
        specs[name] = InputSpec(shape, value.dtype, high, role.kind if role is not None else "", start,
                                role.values if role is not None else (), role.axis if role is not None else None)
    return specs


def _sizes(values: Sequence[ir.Value], roles: Mapping[str, Role],
           given: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """The concrete shape of every input (module docstring, "Sizes")."""
    sizes = DimSizes()
    dims = {name_of(v): list(v.shape.dims) if v.shape is not None else [] for v in values}
    for name, given_shape in given.items():
        for dim, size in zip(dims[name], given_shape):
            sizes.bind(dim, size)
    of_kind = {kind: [n for n, r in roles.items() if r.kind == kind] for kind in ("cache", "ids", "mask", "pixels")}
    for name in of_kind["cache"]:
        axis = roles[name].axis
        if axis is not None and axis < len(dims[name]):
            sizes.bind(dims[name][axis], DEFAULT_PAST_LENGTH)

    def shape_of(name: str) -> list[int]:
        return list(given[name]) if name in given else [sizes.size(d) for d in dims[name]]

    past = 0
    for name in of_kind["cache"][:1]:
        axis = roles[name].axis
        past = shape_of(name)[axis] if axis is not None and axis < len(dims[name]) else 0
    new = next((shape_of(n)[-1] for n in of_kind["ids"] if dims[n]), DEFAULT_DYNAMIC_DIM)
    mask_lengths: dict[str, int] = {}
    for name in of_kind["mask"]:
        last = dims[name][-1] if dims[name] else None
        if name in given or last is None or isinstance(last, int) or sizes.is_bound(last):
            continue
        masks = set(of_kind["mask"])
        shared = any(last in other_dims for other, other_dims in dims.items() if other not in masks)
        if _symbol(last) is not None and not shared:
            sizes.bind(last, past + new)
        elif isinstance(last, ir.SymbolicDim) and not last.value:
            mask_lengths[name] = past + new
    concrete = {}
    for value in values:
        name = name_of(value)
        shape = shape_of(name)
        if name not in given:
            if name in mask_lengths:
                shape[-1] = mask_lengths[name]
            role = roles.get(name)
            if role is not None and role.kind == "pixels":
                for axis, size in role.least.items():
                    shape[axis] = max(shape[axis], size)
                for axis, size in role.fixed.items():
                    shape[axis] = size
        concrete[name] = tuple(shape)
    return concrete


def random_inputs(specs: Mapping[str, InputSpec], seed: int, sample: int = 0) -> dict[str, np.ndarray]:
    """Seeded random feeds for sample number ``sample``, each input as its role wants (module docstring)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, spec in specs.items():
        shape, dtype, high = spec.shape, spec.dtype, spec.high
        np_dtype = dtype.numpy()
        if spec.role == "mask":
            feeds[name] = np.ones(shape, np_dtype)
        elif spec.role == "token_types":
            feeds[name] = np.zeros(shape, np_dtype)
        elif spec.role == "positions" and shape:
            feeds[name] = np.broadcast_to(np.arange(spec.start, spec.start + shape[-1]), shape).astype(np_dtype)
        elif spec.role == "switch" and sample < len(spec.values):
            feeds[name] = np.full(shape, spec.values[sample], np_dtype)
        elif dtype.is_floating_point():
            feeds[name] = rng.standard_normal(shape).astype(np_dtype)
        elif dtype == ir.DataType.BOOL:
            feeds[name] = rng.integers(0, 2, size=shape).astype(bool)
        elif dtype.is_integer():
            feeds[name] = rng.integers(0, high, size=shape).astype(np_dtype)
        else:
            raise GrowError(f"cannot make random values for input {name!r} of type {dtype.name}")
    return feeds


def sample_count(specs: Mapping[str, InputSpec], samples: int) -> int:
    """How many samples a check draws: ``samples``, or more where a switch has more values
    (each takes one sample, so that every branch runs)."""
    return max([samples, *(len(spec.values) for spec in specs.values() if spec.role == "switch")])


def describe_draws(specs: Mapping[str, InputSpec]) -> list[str]:
    """What was drawn by role, for the verdict: ``input_ids ids in [0, 64)``, ``attention_mask
    ones over past 3 + new 2``, ``position_ids 3..4``, ``4 key/value caches of past length 3``;
    empty when no input has a role."""
    caches = [spec for spec in specs.values() if spec.role == "cache" and spec.axis is not None]
    past = caches[0].shape[caches[0].axis] if caches and caches[0].axis is not None else 0
    words: list[str] = []
    for name, spec in specs.items():
        if spec.role == "ids":
            words.append(f"{name} ids in [0, {spec.high})")
        elif spec.role == "mask":
            length = spec.shape[-1] if spec.shape else 1
            words.append(f"{name} ones" + (f" over past {past} + new {length - past}" if past and length > past
                                           else ""))
        elif spec.role == "positions" and spec.shape:
            words.append(f"{name} {spec.start}..{spec.start + spec.shape[-1] - 1}")
        elif spec.role == "token_types":
            words.append(f"{name} zeros")
        elif spec.role == "pixels":
            words.append(f"{name} {list(spec.shape)} (as its first Conv takes)")
        elif spec.role == "switch":
            words.append(f"{name} {' then '.join(map(str, spec.values))} by sample (for every If branch)")
    if caches:
        lengths = sorted({spec.shape[spec.axis] for spec in caches if spec.axis is not None})
        words.append(f"{len(caches)} key/value cache{'s' if len(caches) > 1 else ''} of past length "
                     f"{', '.join(map(str, lengths))}")
    return words


def load_inputs(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """One input sample from an ``.npz`` file (``numpy.savez``), keyed by input name."""
    p = Path(path)
    if not p.is_file():
        raise GrowError(f"{p}: no such file")
    if not zipfile.is_zipfile(p):  # a .npy holds one unnamed array; np.load would return it bare
        raise GrowError(f"{p}: not a readable .npz file of named input arrays (a .npy holds one "
                        "unnamed array; write one with numpy.savez(path, NAME=array, ...))")
    try:
        with np.load(p, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("a single array, not an archive of named arrays")
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, TypeError, EOFError, zipfile.BadZipFile, AttributeError) as exc:
        raise GrowError(
            f"{p}: not a readable .npz file of named input arrays ({first_line(exc)})"
        ) from None


def check_feeds(feeds_list: list[dict[str, np.ndarray]], model: ir.Model) -> None:
    """Given inputs must name every true input and match its dtype, rank and static dims."""
    wanted = {name_of(v): v for v in true_inputs(model)}
    for feeds in feeds_list:
        missing = sorted(set(wanted) - set(feeds))
        extra = sorted(set(feeds) - set(wanted))
        if missing or extra:
            raise GrowError(
                "inputs do not match the model: "
                + "; ".join(
                    part for part in (
                        f"missing {', '.join(missing)}" if missing else "",
                        f"unknown {', '.join(extra)}" if extra else "",
                    ) if part
                )
                + f" (the model's inputs: {', '.join(wanted) or 'none'})"
            )
        for name, value in wanted.items():
            array = feeds[name]
            if value.dtype is not None and array.dtype != value.dtype.numpy():
                raise GrowError(
                    f"input {name!r} has dtype {array.dtype}, the model wants "
                    f"{np.dtype(value.dtype.numpy())}"
                )
            dims = shape_dims(value.shape)
            if not dims_compatible(dims, list(array.shape)):
                raise GrowError(
                    f"input {name!r} has shape {list(array.shape)}, the model wants "
                    f"{format_dims(dims)}"
                )


def sample_bytes(model: ir.Model, options: VerifyOptions, highs: Mapping[str, int] | None = None) -> int:
    """Bytes one sample holds, from declared shapes (nothing is drawn): its inputs (the given
    ones, or the random ones :func:`sample_feeds` would draw), and each output whose shape is
    static."""
    if options.inputs is not None:
        held = sum(int(a.nbytes) for feeds in options.inputs for a in feeds.values())
    else:
        held = sum(math.prod(spec.shape) * _itemsize(spec.dtype)
                   for spec in input_specs(model, options.input_shapes, highs).values())
    for value in model.graph.outputs:
        dims = [d for d in value.shape.dims if isinstance(d, int)] if value.shape is not None else []
        if value.shape is not None and value.dtype is not None and len(dims) == len(value.shape):
            held += math.prod(dims) * _itemsize(value.dtype)
    return held


def _itemsize(dtype: ir.DataType) -> int:
    """Bytes a value of ``dtype`` takes in a numpy array: sub-byte types take one; a string
    (and an undefined type, which has no size) a pointer, its text not counted."""
    if dtype in (ir.DataType.STRING, ir.DataType.UNDEFINED):
        return 8
    return max(math.ceil(dtype.itemsize), 1)


class Samples(NamedTuple):
    """The feeds of every sample, and what was drawn by role (:func:`describe_draws`; empty for given inputs)."""

    feeds: list[dict[str, np.ndarray]]
    drawn: list[str]


def sample_feeds(model: ir.Model, options: VerifyOptions, highs: Mapping[str, int] | None = None) -> Samples:
    """The feeds of every sample: the user's (checked against ``model``), or seeded random ones
    (:func:`sample_count` of them)."""
    if options.inputs is not None:
        feeds_list = [dict(f) for f in options.inputs]
        check_feeds(feeds_list, model)
        return Samples(feeds_list, [])
    specs = input_specs(model, options.input_shapes, highs)
    feeds = [random_inputs(specs, options.seed + i, i) for i in range(sample_count(specs, options.samples))]
    return Samples(feeds, describe_draws(specs))
