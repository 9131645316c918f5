"""The growth map: where every position of a grown weight comes from, so training can go on.

A growth (widen, new output classes, vocabulary rows, attention heads) rewrites weights by copying,
scaling and appending positions along some axes. The map records, for every rewritten
weight and every grown axis, ``src[j]``: the old index position ``j`` copies (``-1`` for
a fresh position: a random unit, a zero or mean row, a new class), and ``scale[j]``: the
factor the copy took. Producer rows and copied per-channel values (biases, norms) take
scale 1; a contracting layer's input rows take their share (``1/cnt``, or the unequal
noise split). The map is JSON::

    {"format": "onnxgrow.growth-map", "version": 1, "weights": [
      {"name": "fc2.weight", "onnx_name": "fc2.weight", "aliases": [],
       "old_shape": [10, 64], "new_shape": [10, 100],
       "axes": [{"axis": 1, "onnx_axis": 1, "src": [0, ..., 63, 17, ...], "scale": [1.0, ..., 0.5, ...]}]}]}

``name`` is the framework (PyTorch state-dict) name where the model tells it, else the
ONNX initializer name; ``axis`` counts in the framework layout (``[out, in]`` for a
Linear), ``onnx_axis`` in the stored initializer.

Inserting blocks (``deepen --block``) renames weights instead: the blocks after an inserted
one are renumbered (``model.layers.2.*`` becomes ``model.layers.3.*``) and the copy's weights
are new. Such a weight's entry says where its state comes from: ``"source"``, the name the
weight it continues or copies had in the old model, ``"copied": true`` for a copy (the source
stays in the grown model), and ``"fresh": true`` when it starts at zero (a zero-initialised
output projection), with no grown axes::

    {"name": "model.layers.3.mlp.down_proj.weight", "source": "model.layers.2.mlp.down_proj.weight", ...}
    {"name": "model.layers.2.mlp.up_proj.weight", "source": "model.layers.1.mlp.up_proj.weight",
     "copied": true, ...}
    {"name": "model.layers.2.mlp.down_proj.weight", "source": "model.layers.1.mlp.down_proj.weight",
     "copied": true, "fresh": true, ...}

:func:`apply_growth_map` grows training state with the same map: first moments (Adam's
``exp_avg``, SGD's ``momentum_buffer``, any other tensor of the weight's shape) take
``scale``, second moments (:data:`SECOND_MOMENTS`) take ``scale**2``, fresh positions
start at zero. A weight with a ``source`` takes the state of that weight (a copy of it when
another weight takes it too); a fresh one starts at zero: no optimizer entry (the optimizer
starts it as any new parameter, zero moments at step 0), zeros in a mapping of tensors.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from onnxgrow.atomic import atomic_output
from onnxgrow.errors import GrowError
from onnxgrow.parameter_names import parameter_table

if TYPE_CHECKING:  # the widening package imports this module
    from onnxgrow.widening.context import WeightEdit

FORMAT = "onnxgrow.growth-map"
VERSION = 1
#: Optimizer state entries that are second moments (they take the square of the scale).
SECOND_MOMENTS = frozenset({"exp_avg_sq", "max_exp_avg_sq", "square_avg", "sum", "acc_delta", "exp_inf"})


@dataclass
class AxisMap:
    """One grown axis: position ``j`` copies old index ``src[j]`` (-1: fresh) times ``scale[j]``."""

    axis: int
    onnx_axis: int
    src: np.ndarray
    scale: np.ndarray


@dataclass
class WeightMap:
    """How one weight grew."""

    name: str
    onnx_name: str
    old_shape: tuple[int, ...]
    new_shape: tuple[int, ...]
    axes: list[AxisMap]
    aliases: list[str] = field(default_factory=list)
    #: The old model's name of the weight this one continues or copies (None: its own name).
    source: str | None = None
    #: Whether it starts at zero (its training state too).
    fresh: bool = False
    #: Whether it is a new copy of ``source``, which the grown model still holds (else it
    #: continues ``source`` under a new name).
    copied: bool = False

    @property
    def origin(self) -> str:
        """The old model's name of the weight whose state this one takes."""
        return self.source if self.source is not None else self.name


@dataclass
class GrowthMap:
    """Every weight a growth rewrote."""

    weights: list[WeightMap] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "weights": [_weight_json(w) for w in self.weights]}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> GrowthMap:
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise GrowError(f"not an onnxgrow growth map (no \"format\": {FORMAT!r})")
        return GrowthMap([
            WeightMap(w["name"], w["onnx_name"], tuple(w["old_shape"]), tuple(w["new_shape"]),
                      [AxisMap(a["axis"], a["onnx_axis"], np.asarray(a["src"], dtype=np.int64),
                               np.asarray(a["scale"], dtype=np.float64)) for a in w["axes"]],
                      list(w.get("aliases", [])), w.get("source"), bool(w.get("fresh", False)),
                      bool(w.get("copied", False)))
            for w in data["weights"]])

    @property
    def moves(self) -> bool:
        """Whether some weight takes another's state (renamed or copied blocks)."""
        return any(w.source is not None for w in self.weights)

    def by_name(self) -> dict[str, WeightMap]:
        """Each weight under its name and its aliases."""
        found = {}
        for weight in self.weights:
            for name in (weight.name, *weight.aliases):
                found[name] = weight
        return found

    def save(self, path: str | os.PathLike[str]) -> Path:
        out = Path(path)
        with atomic_output(out) as tmp:
            tmp.write_text(json.dumps(self.to_json()))
        return out


def _weight_json(weight: WeightMap) -> dict[str, Any]:
    found: dict[str, Any] = {
        "name": weight.name, "onnx_name": weight.onnx_name, "aliases": weight.aliases,
        "old_shape": list(weight.old_shape), "new_shape": list(weight.new_shape),
        "axes": [{"axis": a.axis, "onnx_axis": a.onnx_axis, "src": a.src.tolist(), "scale": a.scale.tolist()}
                 for a in weight.axes]}
    if weight.source is not None:
        found["source"] = weight.source
    if weight.fresh:
        found["fresh"] = True
    if weight.copied:
        found["copied"] = True
    return found


def _step(kind: str, src: np.ndarray, scale: np.ndarray, fresh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(src, scale) of one edit: new units of produce/contract/fill are fresh; a gathered
    per-channel value copies its source even for a new unit."""
    if kind == "gather":
        return src.astype(np.int64), scale.astype(np.float64)
    return np.where(fresh, -1, src).astype(np.int64), np.where(fresh, 0.0, scale).astype(np.float64)


def _then(first: tuple[np.ndarray, np.ndarray], second: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Two growths of one axis, one after the other: ``src = src1[src2]``,
    ``scale = scale1[src2] * scale2`` (fresh positions of the second stay fresh)."""
    (src1, scale1), (src2, scale2) = first, second
    safe = np.maximum(src2, 0)
    return np.where(src2 < 0, -1, src1[safe]), np.where(src2 < 0, 0.0, scale1[safe] * scale2)


def merge_growth_maps(maps: Sequence[GrowthMap]) -> GrowthMap:
    """The map of several growths applied one after the other (each map built on the final
    model): a weight several of them grew gets the first one's old shape, the last one's new
    shape, and its axes composed in order (an axis only one grew as that one grew it)."""
    merged: dict[str, WeightMap] = {}
    for growth_map in maps:
        for weight in growth_map.weights:
            before = merged.get(weight.onnx_name)
            if before is None:
                merged[weight.onnx_name] = weight
                continue
            axes = {a.onnx_axis: a for a in before.axes}
            for a in weight.axes:
                if a.onnx_axis in axes:
                    src, scale = _then((axes[a.onnx_axis].src, axes[a.onnx_axis].scale), (a.src, a.scale))
                    axes[a.onnx_axis] = AxisMap(a.axis, a.onnx_axis, src, scale)
                else:
                    axes[a.onnx_axis] = a
            merged[weight.onnx_name] = WeightMap(weight.name, weight.onnx_name, before.old_shape, weight.new_shape,
                                                 [axes[k] for k in sorted(axes)],
                                                 sorted({*before.aliases, *weight.aliases}))
    return GrowthMap(list(merged.values()))


def build_growth_map(model: ir.Model, edits: Sequence[WeightEdit]) -> GrowthMap:
    """The map of ``edits`` (in the order they were made) on the grown ``model``.

    Edits of one axis compose: ``src = src1[src2]``, ``scale = scale1[src2] * scale2``.
    """
    table = parameter_table(model)
    axes: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
    views: dict[str, WeightEdit] = {}
    old_shapes: dict[str, tuple[int, ...]] = {}
    for edit in edits:
        per_axis = axes.setdefault(edit.name, {})
        views[edit.name] = edit
        old_shapes.setdefault(edit.name, edit.old_shape)
        for step in edit.axes:
            root_axis = edit.root_axes[step.axis]
            grown = _step(step.kind, step.src, step.scale, step.fresh)
            per_axis[root_axis] = _then(per_axis[root_axis], grown) if root_axis in per_axis else grown
    aliases_of: dict[str, list[str]] = {}
    for alias, name in table.aliases.items():
        aliases_of.setdefault(name, []).append(alias)
    weights = []
    for name, per_axis in axes.items():
        stored = model.graph.initializers.get(name)
        dtype = stored.const_value.dtype if stored is not None and stored.const_value is not None else None
        if not per_axis or (dtype is not None and not dtype.is_floating_point()):
            continue  # a rewritten shape or index constant (a head split's Reshape target): no training state
        edit = views[name]
        binding = table.binding(edit.node, edit.input_index)
        fw_name, perm = (binding[0], binding[1].perm) if binding is not None else (name, None)
        rank = len(edit.root_axes)
        # framework axis of root axis r: the node sees root axis r as view axis a = root_axes.index(r),
        # and sees framework axis perm[a] there.
        to_fw = {r: (perm[edit.root_axes.index(r)] if perm else edit.root_axes.index(r)) for r in range(rank)}
        value = model.graph.initializers.get(name)
        new_root = tuple(value.const_value.shape.numpy()) if value is not None and value.const_value else ()
        old_root = tuple(old_shapes.get(name, new_root))
        fw_old, fw_new = [0] * rank, [0] * rank
        for r in range(rank):
            fw_old[to_fw[r]], fw_new[to_fw[r]] = old_root[r], new_root[r] if new_root else old_root[r]
        weights.append(WeightMap(
            fw_name, name, tuple(fw_old), tuple(fw_new),
            [AxisMap(to_fw[r], r, src, scale) for r, (src, scale) in sorted(per_axis.items())],
            aliases_of.get(fw_name, [])))
    return GrowthMap(weights)


def block_growth_map(model: ir.Model, blocks: Mapping[str, str], copies: Collection[str],
                     fresh: Collection[str]) -> GrowthMap:
    """The map of inserted and renumbered blocks on the grown ``model``: a weight whose framework
    name lies in a block of ``blocks`` (new block name → the old model's name of the block it
    continues or copies; ``copies`` are the inserted ones) takes the state of the weight at the
    same place of that block; one stored under a name in ``fresh`` (ONNX initializer names)
    starts at zero."""
    table = parameter_table(model)
    aliases_of: dict[str, list[str]] = {}
    for alias, name in table.aliases.items():
        aliases_of.setdefault(name, []).append(alias)
    weights = []
    for name, parameter in table.parameters.items():
        block = max((b for b in blocks if name.startswith(b + ".")), key=len, default=None)
        if block is None:
            continue
        source = blocks[block] + name[len(block):]
        zero = parameter.onnx_name in fresh
        if source == name and not zero:
            continue
        shape = tuple(parameter.array.shape)
        weights.append(WeightMap(name, parameter.onnx_name, shape, shape, [], aliases_of.get(name, []), source, zero,
                                 block in copies))
    return GrowthMap(weights)


def _grow(tensor: Any, weight: WeightMap, power: int) -> Any:
    """``tensor`` (old shape, framework layout) grown along every axis of ``weight``."""
    try:
        import torch
    except ImportError:  # numpy state
        torch = None  # type: ignore[assignment]
    if torch is not None and isinstance(tensor, torch.Tensor):
        out = tensor
        for a in weight.axes:
            src = torch.as_tensor(np.maximum(a.src, 0), device=out.device)
            shape = [1] * out.dim()
            shape[a.axis] = -1
            factor = torch.as_tensor(np.where(a.src < 0, 0.0, a.scale ** power), dtype=torch.float64,
                                     device=out.device).reshape(shape)
            out = (out.index_select(a.axis, src).to(torch.float64) * factor).to(tensor.dtype)
        return out
    array = np.asarray(tensor)
    for a in weight.axes:
        shape = [1] * array.ndim
        shape[a.axis] = -1
        scale = np.where(a.src < 0, 0.0, a.scale ** power).reshape(shape)
        array = (np.take(array, np.maximum(a.src, 0), axis=a.axis).astype(np.float64) * scale).astype(
            np.asarray(tensor).dtype)
    return array


def _shape(tensor: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in tensor.shape)


def apply_growth_map(
    state: Mapping[Any, Any],
    growth_map: GrowthMap | Mapping[str, Any] | str | os.PathLike[str],
    param_names: Sequence[str] | None = None,
    *,
    new_param_names: Sequence[str] | None = None,
    second_moment: bool = False,
) -> dict[Any, Any]:
    """Grow training state to match a grown model; returns a new dict (``state`` is untouched).

    ``state`` is either a PyTorch ``optimizer.state_dict()`` (``{"state": {index: {...}},
    "param_groups": [...]}``), whose parameter indices ``param_names`` names in the
    optimizer's order (``[n for n, _ in model.named_parameters()]`` for an optimizer over
    ``model.parameters()``), or a mapping from weight names to tensors (EMA weights,
    gradient accumulators), grown like first moments, or like second moments with
    ``second_moment``. Entries the map does not name are the same tensor objects in the
    result (no copy is made; an optimizer loading the result updates them in place); a
    named tensor whose shape is not the weight's old shape is refused.

    A map that moves weights (inserted blocks: :attr:`GrowthMap.moves`) changes the
    parameters themselves: an optimizer state dict then also needs ``new_param_names``, the
    grown model's parameter names in its optimizer's order, and comes back indexed by those,
    each parameter in the group of the one whose state it takes; a mapping of tensors comes
    back under the new names.
    """
    if not isinstance(growth_map, GrowthMap):
        data = json.loads(Path(growth_map).read_text()) if isinstance(growth_map, (str, os.PathLike)) else growth_map
        growth_map = GrowthMap.from_json(data)
    weights = growth_map.by_name()
    optimizer = "state" in state and "param_groups" in state
    if optimizer and param_names is None:
        raise GrowError("growing an optimizer state dict needs param_names: the parameter names in "
                        "the optimizer's order")
    if growth_map.moves:
        if not optimizer:
            return _moved_tensors(state, growth_map, 2 if second_moment else 1)
        if new_param_names is None:
            raise GrowError("this growth map renames weights (inserted blocks): growing an optimizer state dict "
                            "needs new_param_names, the grown model's parameter names in its optimizer's order")
        return _moved_optimizer_state(state, weights, list(param_names or []), list(new_param_names))
    if optimizer:
        names = list(param_names or [])
        grown: dict[Any, Any] = {}
        for index, entry in state["state"].items():
            weight = weights.get(names[index]) if 0 <= index < len(names) else None
            grown[index] = dict(entry) if weight is None else {
                key: _grow_entry(key, value, weight) for key, value in entry.items()}
        return {**state, "state": grown}
    power = 2 if second_moment else 1
    return {name: (_grow(_checked(tensor, weights[name], name), weights[name], power) if name in weights else tensor)
            for name, tensor in state.items()}


def _moved_optimizer_state(state: Mapping[Any, Any], weights: Mapping[str, WeightMap], old_names: list[str],
                           new_names: list[str]) -> dict[Any, Any]:
    """An optimizer state dict indexed by ``new_names``: each parameter takes the entry of the
    one it continues or copies (a copy of it when that entry is taken already); a fresh one
    gets none."""
    old_index = {name: k for k, name in enumerate(old_names)}
    groups = list(state["param_groups"])
    group_of = {index: g for g, group in enumerate(groups) for index in group["params"]}
    params: list[list[int]] = [[] for _ in groups]
    entries: dict[int, Any] = {}
    taken: set[int] = set()
    for new_index, name in enumerate(new_names):
        weight = weights.get(name)
        origin = weight.origin if weight is not None else name
        old = old_index.get(origin)
        if old is None:
            raise GrowError(f"{name}: the growth map takes its state from {origin!r}, which is not among param_names")
        params[group_of.get(old, 0)].append(new_index)
        entry = state["state"].get(old)
        if entry is None or (weight is not None and weight.fresh):
            continue
        duplicate = old in taken or (weight is not None and weight.copied)
        taken.add(old)
        entries[new_index] = {key: _copied(_grow_entry(key, value, weight) if weight is not None else value, duplicate)
                              for key, value in entry.items()}
    new_groups = [{**group, "params": mine} for group, mine in zip(groups, params)]
    return {**state, "state": entries, "param_groups": new_groups}


def _moved_tensors(state: Mapping[Any, Any], growth_map: GrowthMap, power: int) -> dict[Any, Any]:
    """A mapping of tensors under the grown model's names (see :func:`apply_growth_map`)."""
    moved_away = {w.origin for w in growth_map.weights if w.source is not None and not w.copied}
    result = {name: tensor for name, tensor in state.items() if name not in moved_away}
    for weight in growth_map.weights:
        for name in (weight.name, *weight.aliases):
            result.pop(name, None)
    for weight in growth_map.weights:
        tensor = state.get(weight.origin)
        if tensor is None:
            continue
        grown = _grow(_checked(tensor, weight, weight.origin), weight, power)
        result[weight.name] = grown * 0 if weight.fresh else _copied(grown, weight.copied)
    return result


def _copied(value: Any, copy: bool) -> Any:
    """``value``, or a copy of it (``copy``) when it is a tensor another entry holds already."""
    if not copy or not hasattr(value, "shape"):
        return value
    return value.clone() if hasattr(value, "clone") else np.array(value, copy=True)


def _grow_entry(key: str, value: Any, weight: WeightMap) -> Any:
    if not hasattr(value, "shape") or _shape(value) != weight.old_shape:
        return value  # a step counter, or state not shaped like the weight
    return _grow(value, weight, 2 if key in SECOND_MOMENTS else 1)


def _checked(tensor: Any, weight: WeightMap, name: str) -> Any:
    if _shape(tensor) != weight.old_shape:
        raise GrowError(f"{name} has shape {list(_shape(tensor))}, the growth map grows {list(weight.old_shape)}")
    return tensor
