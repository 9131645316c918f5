"""The inputs of a check: seeded random feeds, or one user-given ``.npz`` sample.

Random inputs: floats standard normal, integers in ``[0, table size)`` when they index a
Gather (or ``[0, high)`` for the inputs a :class:`~onnxgrow.options.VerifyScope` bounds),
else the range the model's lineage records for the input (a grown vocabulary), else
``[0, 10)``, booleans 0/1; dynamic dimensions from ``input_shapes`` or 2. A given
sample must match the reference's inputs by name, dtype, rank and every static dimension.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx_ir as ir

from onnxgrow.errors import GrowError
from onnxgrow.lineage import read_history
from onnxgrow.options import VerifyOptions
from onnxgrow.verification.compare import dims_compatible, format_dims, name_of, shape_dims, true_inputs
from onnxgrow.verification.runtime import first_line

#: Size given to a dynamic dimension when the user gives none.
DEFAULT_DYNAMIC_DIM = 2
#: Integer inputs that index no embedding table are drawn from [0, this).
DEFAULT_INT_HIGH = 10


def recorded_input_ranges(model: ir.Model) -> dict[str, int]:
    """The integer input ranges the model's lineage records (a grown vocabulary's), by input name."""
    ranges: dict[str, int] = {}
    for entry in read_history(model):
        for name, high in dict(entry.get("input_range") or {}).items():
            ranges[name] = int(high)
    return ranges


def _integer_high(model: ir.Model, value: ir.Value) -> int:
    """Upper bound for an integer input: the table size when it indexes a Gather, else the
    range the lineage records for it (ids that reach their table through a Cast), else
    :data:`DEFAULT_INT_HIGH`."""
    for use in value.uses():
        node = use.node
        if node.op_type == "Gather" and node.domain == "" and use.idx == 1:
            data = node.inputs[0]
            if data is not None and data.shape is not None:
                axis = node.attributes.get_int("axis", 0)
                dim = data.shape[axis]
                if isinstance(dim, int):
                    return dim
    return recorded_input_ranges(model).get(value.name or "", DEFAULT_INT_HIGH)


def input_specs(
    model: ir.Model, shapes: Mapping[str, Sequence[int]] | None = None,
    highs: Mapping[str, int] | None = None,
) -> dict[str, tuple[tuple[int, ...], ir.DataType, int]]:
    """Concrete (shape, dtype, integer high) for every true graph input.

    Dynamic dimensions take the user's ``shapes`` or :data:`DEFAULT_DYNAMIC_DIM`; integer
    inputs are drawn below ``highs[name]`` where given, else as the module docstring says.
    """
    shapes = dict(shapes or {})
    initializer_names = set(model.graph.initializers)
    specs = {}
    for value in model.graph.inputs:
        name = name_of(value)
        if name in initializer_names:
            continue
        if name in shapes:
            concrete = tuple(int(d) for d in shapes.pop(name))
        else:
            dims = value.shape.dims if value.shape is not None else ()
            concrete = tuple(d if isinstance(d, int) and d >= 0 else DEFAULT_DYNAMIC_DIM for d in dims)
        if value.dtype is None:
            raise GrowError(f"model input {name!r} has no element type")
        high = highs[name] if highs and name in highs else _integer_high(model, value)
        specs[name] = (concrete, value.dtype, high)
    if shapes:
        raise GrowError(
            f"--input-shapes names {', '.join(sorted(shapes))}, which the model does not have "
            f"as inputs (inputs: {', '.join(specs)})"
        )
    return specs


def random_inputs(
    specs: Mapping[str, tuple[tuple[int, ...], ir.DataType, int]], seed: int
) -> dict[str, np.ndarray]:
    """Seeded random feeds: normal floats, integers in [0, high), random booleans."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, (shape, dtype, high) in specs.items():
        np_dtype = dtype.numpy()
        if dtype.is_floating_point():
            feeds[name] = rng.standard_normal(shape).astype(np_dtype)
        elif dtype == ir.DataType.BOOL:
            feeds[name] = rng.integers(0, 2, size=shape).astype(bool)
        elif dtype.is_integer():
            feeds[name] = rng.integers(0, high, size=shape).astype(np_dtype)
        else:
            raise GrowError(f"cannot make random values for input {name!r} of type {dtype.name}")
    return feeds


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


def sample_feeds(model: ir.Model, options: VerifyOptions,
                 highs: Mapping[str, int] | None = None) -> list[dict[str, np.ndarray]]:
    """The feeds of every sample: the user's (checked against ``model``), or seeded random ones."""
    if options.inputs is not None:
        feeds_list = [dict(f) for f in options.inputs]
        check_feeds(feeds_list, model)
        return feeds_list
    specs = input_specs(model, options.input_shapes, highs)
    return [random_inputs(specs, options.seed + i) for i in range(options.samples)]
