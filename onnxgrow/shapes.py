"""Shape inference on an onnx-ir model that keeps the model loadable and its weights in place."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import onnx
import onnx_ir as ir
from onnx_ir.passes.common import ShapeInferencePass

from onnxgrow.map_types import without_map_values
from onnxgrow.model_io import SHAPES_INFERRED_KEY


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

    When the model cannot be serialized, onnx-ir's pass (1.1) fails after turning the
    initializers into graph inputs and dropping the large ones; they are put back here,
    so the model is left as it was (a broken model is then refused when it is saved).
    """
    if model.meta.pop(SHAPES_INFERRED_KEY, False):
        return
    before = {value: (value.type, value.shape) for node in model.graph.all_nodes()
              for value in node.outputs if _is_sequence_output(model, node, value)}
    inputs = list(model.graph.inputs)
    initializers = {name: (value, value.const_value) for name, value in model.graph.initializers.items()}
    with without_map_values(model):
        ShapeInferencePass(strict_mode=False)(model)
    for value, (type_, shape) in before.items():
        value.type, value.shape = type_, shape
    if len(model.graph.inputs) != len(inputs):
        model.graph.inputs.clear()
        model.graph.inputs.extend(inputs)
        for name, (value, tensor) in initializers.items():
            value.const_value = tensor
            if name not in model.graph.initializers:
                model.graph.initializers.add(value)


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
