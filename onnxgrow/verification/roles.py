"""What each input of a model is for, so that a check can draw values that fit together.

A role is found from the input's name as the exporters write it (transformers, optimum,
torch.onnx) or from what the graph does with the input, so renamed inputs get one too:

- **token ids**: integers that index a constant table (a Gather, through Cast, Reshape and
  the like), or named ``input_ids`` / ``*_ids``; ``high`` is the table's row count.
- **key/value cache**: a floating-point input of rank 3 or more that the graph concatenates
  with another value along a dynamic axis (the new keys or values); that axis is the past
  length. A cross-attention cache is read, not concatenated, and is no cache here.
- **attention mask**: named ``attention_mask`` or ``*_mask``; in a model with a cache, also
  an integer or boolean input whose last axis is a dimension of its own, neither the new
  length nor the past length (the one input that spans both).
- **position ids**: named ``position_ids``, ``cache_position`` or ``positions``.
- **token type ids**: named ``token_type_ids`` or ``segment_ids``.
- **pixels**: a floating-point input of rank 4 that a Conv reads (through Identity, Cast,
  Transpose): its dynamic axes take the channel count the Conv's weight takes
  (``in_channels × group``) and, for a patch embedding (a ViT), the image size whose patch
  grid fills the position table; other images are at least the kernel's extent
  (:func:`_image_size`).
- **switch**: an integer or boolean input that an If's condition is, or compares with a
  constant (``sr == 16000``); ``values`` are values on both sides of the comparison
  (``16000`` and ``16001``; for ``<``, ``>``: one below and one above the constant; a
  boolean: 0 and 1), so that the samples of a check take every branch.

Roles only read the graph; :mod:`~onnxgrow.verification.inputs` turns them into sizes and
values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import onnx_ir as ir

from onnxgrow.constants import constant_array
from onnxgrow.graph import const_shape

Kind = Literal["ids", "mask", "positions", "token_types", "cache", "pixels", "switch"]

#: Roles by input name (lower case, searched), tried in this order before the graph rules.
NAME_RULES: tuple[tuple[Kind, re.Pattern[str]], ...] = (
    ("token_types", re.compile(r"token_type|segment_ids")),
    ("positions", re.compile(r"position_ids$|cache_position$|(^|[._])positions?$")),
    ("mask", re.compile(r"attention_mask$|(^|[._])mask$|_mask$")),
    ("ids", re.compile(r"input_ids$|(^|[._])ids$|_ids$")),
)
#: Ops that hand an input's values on unchanged: cast, reshaped or copied.
CARRIER_OPS = frozenset({"Identity", "Cast", "CastLike", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Expand"})
#: Ops that hand on values and move axes (the axis map follows Transpose's ``perm``).
AXIS_CARRIER_OPS = frozenset({"Identity", "Cast", "CastLike", "Transpose"})
#: Comparisons an If's condition may make of an input and a constant.
COMPARISON_OPS = frozenset({"Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual"})
#: Ops between a comparison (or a boolean input) and the If that reads it.
CONDITION_CARRIER_OPS = frozenset({"Identity", "Cast", "Not", "Squeeze", "Unsqueeze", "Reshape", "Flatten"})
#: Ops from a ViT's patch Conv to the position table added to its tokens.
PATCH_TOKEN_OPS = frozenset({"Reshape", "Flatten", "Transpose", "Identity"})


@dataclass(frozen=True)
class Role:
    """One input's role (module docstring): ``high`` bounds ids (the table's rows), ``axis``
    is a cache's past axis, ``fixed`` and ``least`` map dynamic axes of a pixel input to the
    sizes the graph implies and the least sizes it takes, ``values`` are a switch's values."""

    kind: Kind
    high: int | None = None
    axis: int | None = None
    fixed: dict[int, int] = field(default_factory=dict)
    least: dict[int, int] = field(default_factory=dict)
    values: tuple[int, ...] = ()


def find_roles(model: ir.Model) -> dict[str, Role]:
    """The role of every true input that has one, by input name."""
    initializers = set(model.graph.initializers)
    inputs = [v for v in model.graph.inputs if v.name not in initializers and v.dtype is not None]
    switches = _switch_values(model, inputs)
    roles: dict[str, Role] = {}
    for value in inputs:
        role = _role_of(value, switches.get(value, ()))
        if role is not None:
            roles[value.name or ""] = role
    _add_unnamed_masks(inputs, roles)
    return roles


def _role_of(value: ir.Value, switch: tuple[int, ...]) -> Role | None:
    assert value.dtype is not None
    name = (value.name or "").lower()
    by_name = next((kind for kind, pattern in NAME_RULES if pattern.search(name)), None)
    if value.dtype.is_integer() or value.dtype == ir.DataType.BOOL:
        if switch:
            return Role("switch", values=switch)
        high = table_rows(value)
        if by_name in ("mask", "positions", "token_types"):
            return Role(by_name, high=high)
        if high is not None or by_name == "ids":
            return Role("ids", high=high)
        return None
    if value.dtype.is_floating_point():
        if by_name == "mask":
            return Role("mask")
        axis = _past_axis(value)
        if axis is not None:
            return Role("cache", axis=axis)
        sizes = _pixel_sizes(value)
        if sizes is not None:
            return Role("pixels", fixed=sizes[0], least=sizes[1])
    return None


def _add_unnamed_masks(inputs: list[ir.Value], roles: dict[str, Role]) -> None:
    """In a model with a cache, an integer or boolean input without a role whose last axis is
    a dimension of its own (no other input has it) is the attention mask over past and new
    tokens (module docstring)."""
    if not any(role.kind == "cache" for role in roles.values()):
        return
    for value in inputs:
        assert value.dtype is not None
        if value.name in roles or not (value.dtype.is_integer() or value.dtype == ir.DataType.BOOL):
            continue
        dims = value.shape.dims if value.shape is not None else ()
        if len(dims) < 2 or not isinstance(dims[-1], ir.SymbolicDim) or not dims[-1].value:
            continue
        symbol = dims[-1].value
        shared = any(other is not value and other.shape is not None
                     and any(isinstance(d, ir.SymbolicDim) and d.value == symbol for d in other.shape.dims)
                     for other in inputs)
        if not shared:
            roles[value.name or ""] = Role("mask")


def _carried(value: ir.Value, carriers: frozenset[str] = CARRIER_OPS) -> Iterator[tuple[ir.Node, int]]:
    """The uses of ``value``, looking through the ``carriers`` that hand it on (their first input)."""
    seen = {value}
    todo = [value]
    while todo:
        current = todo.pop()
        for node, index in current.uses():
            if node.op_type in carriers and node.domain in ("", "ai.onnx") and index == 0 and node.outputs:
                if node.outputs[0] not in seen:
                    seen.add(node.outputs[0])
                    todo.append(node.outputs[0])
            else:
                yield node, index


def table_rows(value: ir.Value) -> int | None:
    """The row count of the smallest constant table ``value`` indexes (a Gather's indices,
    through :data:`CARRIER_OPS`), or None when it indexes none."""
    rows = []
    for node, index in _carried(value):
        if node.op_type == "Gather" and node.domain in ("", "ai.onnx") and index == 1:
            shape = const_shape(node.inputs[0])
            if shape:
                rows.append(shape[node.attributes.get_int("axis", 0) % len(shape)])
    return min(rows) if rows else None


def _axis_uses(value: ir.Value) -> Iterator[tuple[ir.Node, int, list[int]]]:
    """The uses of ``value`` through :data:`AXIS_CARRIER_OPS`, each with the map from the
    used value's axes to ``value``'s."""
    rank = len(value.shape) if value.shape is not None else 0
    todo = [(value, list(range(rank)))]
    seen = {value}
    while todo:
        current, axes = todo.pop()
        for node, index in current.uses():
            if node.op_type in AXIS_CARRIER_OPS and node.domain in ("", "ai.onnx") and index == 0 and node.outputs:
                out = node.outputs[0]
                if out in seen:
                    continue
                seen.add(out)
                if node.op_type == "Transpose":
                    perm = node.attributes.get_ints("perm", None)
                    order = list(perm) if perm is not None else list(range(len(axes)))[::-1]
                    if sorted(order) != list(range(len(axes))):
                        continue
                    todo.append((out, [axes[p] for p in order]))
                else:
                    todo.append((out, axes))
            else:
                yield node, index, axes


def _past_axis(value: ir.Value) -> int | None:
    """The dynamic axis along which the graph concatenates ``value`` with another value."""
    if value.shape is None or len(value.shape) < 3:
        return None
    for node, _, axes in _axis_uses(value):
        if node.op_type != "Concat" or node.domain not in ("", "ai.onnx") or len(node.inputs) < 2 or not axes:
            continue
        axis = axes[node.attributes.get_int("axis", 0) % len(axes)]
        if not isinstance(value.shape[axis], int):
            return axis
    return None


def _pixel_sizes(value: ir.Value) -> tuple[dict[int, int], dict[int, int]] | None:
    """The sizes the first Conv reading ``value`` implies for its dynamic axes: exact ones (the
    channels; the image size of a patch grid) and least ones (the kernel's extent), or None
    when no Conv reads a rank-4 ``value``."""
    shape = value.shape
    if shape is None or len(shape) != 4:
        return None
    for node, index, axes in _axis_uses(value):
        if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or index != 0 or len(axes) != 4:
            continue
        weight = const_shape(node.inputs[1]) if len(node.inputs) > 1 else None
        if weight is None or len(weight) != 4:
            return None
        exact = {axes[1]: weight[1] * node.attributes.get_int("group", 1)}
        least: dict[int, int] = {}
        patches = _patch_tokens(node, weight[0])
        side = math.isqrt(patches) if patches is not None and patches > 0 else 0
        if side and side * side == patches:
            exact.update(zip(axes[2:], _image_size(node, weight, side)))
        else:
            least.update(zip(axes[2:], _image_size(node, weight, 1)))

        def dynamic(sizes: dict[int, int]) -> dict[int, int]:
            return {axis: size for axis, size in sizes.items() if not isinstance(shape[axis], int)}

        return dynamic(exact), dynamic(least)
    return None


def _image_size(conv: ir.Node, weight: tuple[int, ...], side: int) -> tuple[int, int]:
    """The image size from which ``conv`` makes a grid of ``side × side``: for a patch embedding
    (a ViT: the Conv's output becomes tokens that a constant position table of
    ``[1, tokens, width]`` is added to, after class tokens), the side whose grid gives the
    table's patch tokens; for any other Conv, 1 (the kernel's extent: the least image it takes)."""
    strides = conv.attributes.get_ints("strides", None) or (1, 1)
    dilations = conv.attributes.get_ints("dilations", None) or (1, 1)
    pads = conv.attributes.get_ints("pads", None) or (0, 0, 0, 0)
    sizes = [max((side - 1) * strides[k] + dilations[k] * (weight[2 + k] - 1) + 1 - pads[k] - pads[k + 2], 1)
             for k in range(2)]
    return sizes[0], sizes[1]


def _patch_tokens(conv: ir.Node, width: int) -> int | None:
    """How many patch tokens the position table added after ``conv`` wants (see :func:`_image_size`),
    or None."""
    value, extra = conv.outputs[0], 0
    for _ in range(8):
        uses = [(n, i) for n, i in value.uses() if n.op_type != "Shape"]
        if len(uses) != 1:
            return None
        node, index = uses[0]
        if node.op_type in PATCH_TOKEN_OPS and index == 0:
            value = node.outputs[0]
        elif node.op_type == "Concat":
            for k, other in enumerate(node.inputs):
                shape = _token_shape(other) if k != index else None
                if k != index and shape is None:
                    return None
                if shape is not None:
                    extra += shape[node.attributes.get_int("axis", 0) % 3]
            value = node.outputs[0]
        elif node.op_type == "Add" and len(node.inputs) == 2:
            table = const_shape(node.inputs[1 - index])
            return table[1] - extra if table is not None and len(table) == 3 and table[2] == width else None
        else:
            return None
    return None


def _token_shape(value: ir.Value | None) -> tuple[int, ...] | None:
    """The shape of a constant rank-3 token (a class token), looking through the Expand that
    repeats it over the batch."""
    producer = value.producer() if value is not None else None
    if producer is not None and producer.op_type == "Expand" and producer.inputs:
        value = producer.inputs[0]
    shape = const_shape(value)
    return shape if shape is not None and len(shape) == 3 else None


def _switch_values(model: ir.Model, inputs: list[ir.Value]) -> dict[ir.Value, tuple[int, ...]]:
    """For each integer or boolean input an If's condition compares with a constant or is,
    values on both sides (module docstring)."""
    found: dict[ir.Value, set[int]] = {}
    wanted = set(inputs)
    for node in model.graph.all_nodes():
        if node.op_type != "If" or node.domain not in ("", "ai.onnx") or not node.inputs:
            continue
        condition = _behind(node.inputs[0], CONDITION_CARRIER_OPS)
        if condition in wanted and condition.dtype == ir.DataType.BOOL:
            found.setdefault(condition, set()).update((0, 1))
            continue
        comparison = condition.producer() if condition is not None else None
        if comparison is None or comparison.op_type not in COMPARISON_OPS or len(comparison.inputs) != 2:
            continue
        for operand, other in (comparison.inputs, comparison.inputs[::-1]):
            source = _behind(operand, CONDITION_CARRIER_OPS)
            constant = constant_array(other)
            if source not in wanted or constant is None or constant.size != 1:
                continue
            assert source is not None and source.dtype is not None
            if not source.dtype.is_integer():
                continue
            c = int(round(float(constant.reshape(()))))
            sides = (c, c + 1) if comparison.op_type == "Equal" else (c - 1, c + 1)
            low = 0 if source.dtype.name.startswith("UINT") else -math.inf
            found.setdefault(source, set()).update(v for v in sides if v >= low)
    return {value: tuple(sorted(values)) for value, values in found.items()}


def _behind(value: ir.Value | None, through: frozenset[str]) -> ir.Value | None:
    """The value behind ``value`` through ops in ``through`` (their first input)."""
    while value is not None:
        producer = value.producer()
        if producer is None or producer.op_type not in through or not producer.inputs:
            return value
        value = producer.inputs[0]
    return value
