"""A fingerprint of everything a model holds, to check that a step left it as it was.

The growth driver takes one before and one after a growth's ``plan`` (which must only
read, docs/design.md §9) and fails loudly when they differ. It covers the model's
version fields, opsets, metadata and functions, and every graph (subgraphs too): its
inputs, outputs and initializers, every node's op, name, inputs, outputs and attributes,
and every value's name, type and shape. A tensor counts by identity (the object holding
it, its dtype and shape), not by its bytes: reading every weight would cost what the
growth itself does not, and a plan that edits a weight replaces its tensor.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import onnx_ir as ir


def model_fingerprint(model: ir.Model) -> str:
    """A digest of ``model``'s structure, values and tensor identities."""
    digest = hashlib.sha256()
    for part in _model_parts(model):
        digest.update(part.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()


def _model_parts(model: ir.Model) -> Iterable[str]:
    yield f"ir {model.ir_version} producer {model.producer_name} {model.producer_version} domain {model.domain}"
    yield "opsets " + repr(sorted(model.opset_imports.items()))
    yield "metadata " + repr(sorted(model.metadata_props.items()))
    yield from _graph_parts(model.graph)
    for key, function in sorted(model.functions.items()):
        yield f"function {key!r} inputs {[_value(v) for v in function.inputs]} "
        yield f"outputs {[_value(v) for v in function.outputs]} attributes {sorted(function.attributes)}"
        for node in function:
            yield from _node_parts(node)


def _graph_parts(graph: ir.Graph) -> Iterable[str]:
    yield f"graph {graph.name!r} inputs {[_value(v) for v in graph.inputs]}"
    yield f"outputs {[_value(v) for v in graph.outputs]}"
    yield "metadata " + repr(sorted(graph.metadata_props.items()))
    for name, value in graph.initializers.items():
        yield f"initializer {name!r} {_value(value)} {_tensor(value.const_value)}"
    for node in graph:
        yield from _node_parts(node)


def _node_parts(node: ir.Node) -> Iterable[str]:
    inputs = [_value(v) if v is not None else "-" for v in node.inputs]
    yield (f"node {node.domain}::{node.op_type}:{node.overload} {node.name!r} in {inputs} "
           f"out {[_value(v) for v in node.outputs]} meta {sorted(node.metadata_props.items())}")
    for name, attr in node.attributes.items():
        if attr.type is ir.AttributeType.GRAPH:
            yield f"attribute {name} graph"
            yield from _graph_parts(attr.as_graph())
        elif attr.type is ir.AttributeType.GRAPHS:
            for index, graph in enumerate(attr.as_graphs()):
                yield f"attribute {name} graph {index}"
                yield from _graph_parts(graph)
        elif attr.type is ir.AttributeType.TENSOR:
            yield f"attribute {name} {_tensor(attr.as_tensor())}"
        elif attr.type is ir.AttributeType.TENSORS:
            yield f"attribute {name} {[_tensor(t) for t in attr.as_tensors()]}"
        else:
            yield f"attribute {name} {attr.type} {attr.value!r}"


def _value(value: ir.Value) -> str:
    return f"{value.name!r}:{value.type}:{value.shape}:{id(value)}"


def _tensor(tensor: object) -> str:
    if tensor is None:
        return "-"
    dtype = getattr(tensor, "dtype", None)
    shape = getattr(tensor, "shape", None)
    return f"{type(tensor).__name__}@{id(tensor)}:{dtype}:{shape}"
