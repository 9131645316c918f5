"""The growth map: where every position of a grown weight comes from, so training can go on.

A growth (widen, new output classes, vocabulary rows) rewrites weights by copying,
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

:func:`apply_growth_map` grows training state with the same map: first moments (Adam's
``exp_avg``, SGD's ``momentum_buffer``, any other tensor of the weight's shape) take
``scale``, second moments (:data:`SECOND_MOMENTS`) take ``scale**2``, fresh positions
start at zero.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx_ir as ir

from onnxgrow.atomic import atomic_output
from onnxgrow.errors import GrowError

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


@dataclass
class GrowthMap:
    """Every weight a growth rewrote."""

    weights: list[WeightMap] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "version": VERSION, "weights": [
            {"name": w.name, "onnx_name": w.onnx_name, "aliases": w.aliases, "old_shape": list(w.old_shape),
             "new_shape": list(w.new_shape),
             "axes": [{"axis": a.axis, "onnx_axis": a.onnx_axis, "src": a.src.tolist(), "scale": a.scale.tolist()}
                      for a in w.axes]}
            for w in self.weights]}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> GrowthMap:
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise GrowError(f"not an onnxgrow growth map (no \"format\": {FORMAT!r})")
        return GrowthMap([
            WeightMap(w["name"], w["onnx_name"], tuple(w["old_shape"]), tuple(w["new_shape"]),
                      [AxisMap(a["axis"], a["onnx_axis"], np.asarray(a["src"], dtype=np.int64),
                               np.asarray(a["scale"], dtype=np.float64)) for a in w["axes"]],
                      list(w.get("aliases", [])))
            for w in data["weights"]])

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


def _step(kind: str, src: np.ndarray, scale: np.ndarray, fresh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(src, scale) of one edit: new units of produce/contract/fill are fresh; a gathered
    per-channel value copies its source even for a new unit."""
    if kind == "gather":
        return src.astype(np.int64), scale.astype(np.float64)
    return np.where(fresh, -1, src).astype(np.int64), np.where(fresh, 0.0, scale).astype(np.float64)


def build_growth_map(model: ir.Model, edits: Sequence[WeightEdit]) -> GrowthMap:
    """The map of ``edits`` (in the order they were made) on the grown ``model``.

    Edits of one axis compose: ``src = src1[src2]``, ``scale = scale1[src2] * scale2``.
    """
    from onnxgrow.export.naming import parameter_table

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
            src2, scale2 = _step(step.kind, step.src, step.scale, step.fresh)
            if root_axis in per_axis:
                src1, scale1 = per_axis[root_axis]
                safe = np.maximum(src2, 0)
                src2, scale2 = np.where(src2 < 0, -1, src1[safe]), np.where(src2 < 0, 0.0, scale1[safe] * scale2)
            per_axis[root_axis] = (src2, scale2)
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
    """
    if not isinstance(growth_map, GrowthMap):
        data = json.loads(Path(growth_map).read_text()) if isinstance(growth_map, (str, os.PathLike)) else growth_map
        growth_map = GrowthMap.from_json(data)
    weights = growth_map.by_name()
    if "state" in state and "param_groups" in state:
        if param_names is None:
            raise GrowError("growing an optimizer state dict needs param_names: the parameter names in "
                            "the optimizer's order")
        names = list(param_names)
        grown: dict[Any, Any] = {}
        for index, entry in state["state"].items():
            weight = weights.get(names[index]) if 0 <= index < len(names) else None
            grown[index] = dict(entry) if weight is None else {
                key: _grow_entry(key, value, weight) for key, value in entry.items()}
        return {**state, "state": grown}
    power = 2 if second_moment else 1
    return {name: (_grow(_checked(tensor, weights[name], name), weights[name], power) if name in weights else tensor)
            for name, tensor in state.items()}


def _grow_entry(key: str, value: Any, weight: WeightMap) -> Any:
    if not hasattr(value, "shape") or _shape(value) != weight.old_shape:
        return value  # a step counter, or state not shaped like the weight
    return _grow(value, weight, 2 if key in SECOND_MOMENTS else 1)


def _checked(tensor: Any, weight: WeightMap, name: str) -> Any:
    if _shape(tensor) != weight.old_shape:
        raise GrowError(f"{name} has shape {list(_shape(tensor))}, the growth map grows {list(weight.old_shape)}")
    return tensor
