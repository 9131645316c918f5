"""Graph values of ``map`` type (ai.onnx.ml), which onnx-ir cannot represent.

skl2onnx's default classifier output is ZipMap's ``seq(map(int64, float))``. onnx-ir
raises on any map type, so :func:`set_aside` takes the declared type off every graph
input, output and value_info whose type contains a map (the values keep their names; no
rule reads those types: a map only ever leaves a non-tensor op such as ZipMap) and
:func:`put_back` writes the same types into the saved file. Between the two, the types
travel in ``model.meta`` under :data:`MAP_TYPES_KEY`. Shape inference would type those
values again, so :func:`without_map_values` takes the leaf nodes that produce them (and
their graph outputs) out of the graph while it runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import onnx
import onnx_ir as ir

#: ``model.meta`` key: {value name: serialized TypeProto} of the values set aside.
MAP_TYPES_KEY = "onnxgrow.map_types"


def _has_map(type_proto: onnx.TypeProto) -> bool:
    kind = type_proto.WhichOneof("value")
    if kind == "map_type":
        return True
    if kind == "sequence_type":
        return _has_map(type_proto.sequence_type.elem_type)
    if kind == "optional_type":
        return _has_map(type_proto.optional_type.elem_type)
    return False


def _typed_values(proto: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    graph = proto.graph
    return [*graph.input, *graph.output, *graph.value_info]


def set_aside(proto: onnx.ModelProto) -> dict[str, bytes]:
    """Clear the map-containing types of ``proto``'s main graph values; return them by name."""
    found: dict[str, bytes] = {}
    for value in _typed_values(proto):
        if value.HasField("type") and _has_map(value.type):
            found.setdefault(value.name, value.type.SerializeToString())
            value.ClearField("type")
    return found


def remember(model: ir.Model, types: dict[str, bytes]) -> None:
    """Keep the set-aside ``types`` with ``model`` for :func:`put_back`."""
    if types:
        model.meta[MAP_TYPES_KEY] = types


def put_back(model: ir.Model, path: Path) -> None:
    """Write the map types set aside when ``model`` was loaded into the model file at ``path``
    (external data files are left as they are)."""
    types: dict[str, bytes] | None = model.meta.get(MAP_TYPES_KEY)
    if not types:
        return
    proto = onnx.load(path, load_external_data=False)
    for value in _typed_values(proto):
        if value.name in types and not value.HasField("type"):
            value.type.ParseFromString(types[value.name])
    onnx.save(proto, path)


@contextmanager
def without_map_values(model: ir.Model) -> Iterator[None]:
    """Within the block, the nodes producing set-aside map values that no node reads are out
    of the main graph, and so are those graph outputs; afterwards all is as before."""
    names = model.meta.get(MAP_TYPES_KEY)
    graph = model.graph
    leaves = [node for node in graph if names and any(v.name in names for v in node.outputs)
              and not any(v.uses() for v in node.outputs)]
    if not leaves:
        yield
        return
    outputs = list(graph.outputs)
    graph.outputs.clear()
    graph.outputs.extend(v for v in outputs if v.producer() not in leaves)
    graph.remove(leaves)
    try:
        yield
    finally:
        graph.extend(leaves)
        graph.outputs.clear()
        graph.outputs.extend(outputs)
