"""Shape inference on an onnx-ir model that keeps the model loadable and its weights in place."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import onnx
import onnx_ir as ir

from onnxgrow.map_types import without_map_values
from onnxgrow.model_io import INFER_KEEPS_VALUES_BYTES, SHAPES_INFERRED_KEY, infer_proto_shapes

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def shapes_inferred(model: ir.Model) -> Iterator[None]:
    """Within the block the model's values carry inferred shapes (:func:`infer_shapes`); if
    the block raises (a refused growth), every value gets back the type and shape it had and
    the initializers their order (the inference pass lists the large ones last), so a refusal
    leaves the model as it was, annotations included."""
    before = {value: (value.type, value.shape) for value in _all_values(model.graph)}
    order = list(model.graph.initializers.values())
    infer_shapes(model)
    try:
        yield
    except BaseException:
        for value in _all_values(model.graph):
            if value in before:
                value.type, value.shape = before[value]
        if list(model.graph.initializers.values()) != order:
            model.graph.initializers.clear()
            for value in order:
                model.graph.initializers.add(value)
        raise


def _all_values(graph: ir.Graph) -> Iterator[ir.Value]:
    yield from graph.inputs
    yield from graph.initializers.values()
    for node in graph.all_nodes():
        yield from node.outputs


def infer_shapes(model: ir.Model) -> None:
    """Annotate value shapes (weights are left out of the call, so this is cheap).

    Only tensor annotations are kept: the inference pass types untyped sequence outputs
    (SplitToSequence) as tensors, which would make the saved model unloadable, so
    outputs whose op schema says they are sequences keep the type they had. Skipped
    once right after ``load_model(..., infer_shapes=True)``, which inferred the shapes on
    the file's protobuf (there every value gets its full inferred type, sequences too).

    When the model cannot be serialized or onnx's inference fails, the model is left as it
    was (a broken model is then refused when it is saved, in one line).
    """
    if model.meta.pop(SHAPES_INFERRED_KEY, False):
        return
    before = {value: (value.type, value.shape) for node in model.graph.all_nodes()
              for value in node.outputs if _is_sequence_output(model, node, value)}
    with without_map_values(model):
        try:
            inferred = infer_proto_shapes(_without_large_values(model))
        except Exception as exc:  # noqa: BLE001 - onnx raises several types; the model stays as it was
            logger.debug("shape inference failed: %s; the model's shapes are left as they were", exc)
            return
    _merge(model, ir.serde.deserialize_model(inferred))
    for value, (type_, shape) in before.items():
        value.type, value.shape = type_, shape


def _without_large_values(model: ir.Model) -> onnx.ModelProto:
    """The model as a protobuf for onnx's shape inference: every initializer a typed graph
    input, only the small ones with their values. In time linear in the model (onnx-ir 1.1's
    pass tests each initializer's membership in the input list: quadratic, 95 s at 100k
    initializers). The model is left as onnx-ir's pass leaves it: the large initializers
    are listed last."""
    graph = model.graph
    inputs = list(graph.inputs)
    listed = set(inputs)
    large = []
    try:
        for name, value in list(graph.initializers.items()):
            tensor = value.const_value
            if tensor is not None:
                value.shape = value.shape if value.shape is not None else tensor.shape  # type: ignore[assignment]
                value.dtype = value.dtype if value.dtype is not None else tensor.dtype
            if value not in listed:
                graph.inputs.append(value)
                listed.add(value)
            if tensor is None or _large(tensor):
                graph.initializers.pop(name)
                large.append((value, tensor))
        return ir.serde.serialize_model(model)
    finally:
        graph.inputs.clear()
        graph.inputs.extend(inputs)
        for value, tensor in large:
            value.const_value = tensor
            graph.initializers.add(value)


def _large(tensor: ir.TensorProtocol) -> bool:
    """Whether onnx's inference gets ``tensor`` without its values: above the limit, or of a
    size that cannot be told (an undefined element type)."""
    try:
        return tensor.nbytes > INFER_KEEPS_VALUES_BYTES
    except (TypeError, ValueError):
        return True


def _merge(model: ir.Model, inferred: ir.Model) -> None:
    """Copy each value's inferred shape and type onto the value of the same name, graph by graph."""
    for graph, found_graph in zip(model.graphs(), inferred.graphs(), strict=False):
        found = ir.convenience.create_value_mapping(found_graph)
        for name, value in ir.convenience.create_value_mapping(graph).items():
            new = found.get(name)
            if new is None:
                continue
            if new.shape is not None and value.shape != new.shape:
                value.shape = new.shape
            if new.dtype is not None and value.dtype != new.dtype:
                value.dtype = new.dtype


def _is_sequence_output(model: ir.Model, node: ir.Node, value: ir.Value) -> bool:
    """True when ``node``'s schema declares the output holding ``value`` a sequence."""
    try:
        schema = onnx.defs.get_schema(node.op_type, model.opset_imports.get(node.domain, 1), node.domain)
    except onnx.defs.SchemaError:
        return False
    index = list(node.outputs).index(value)
    formals = schema.outputs
    if not formals:
        return False
    formal = formals[min(index, len(formals) - 1)]
    constraint = next((c for c in schema.type_constraints if c.type_param_str == formal.type_str), None)
    allowed = list(constraint.allowed_type_strs) if constraint else [formal.type_str]
    return bool(allowed) and all(t.startswith("seq(") for t in allowed)
