"""Is a parsed ONNX model well formed? Checked on the protobuf when a model is loaded, before
onnx-ir turns it into a graph, which would silently settle some of these (a dict keeps one
of two initializers of one name) (docs/design.md §10, "Malformed models").

Refused, in one line naming the first offence, because onnxruntime either refuses the model
or silently picks one reading of it while onnxgrow's own commands would read another:

- two initializers of one name (dense or sparse), or one without a name: onnx.checker
  refuses them; onnxruntime runs the last copy, onnx-ir keeps one, so an export would
  write other weights than the ones onnxruntime runs;
- a value defined twice in one graph (single static assignment): two graph inputs of one
  name, a node output named like a graph input, an initializer or another node's output,
  or a subgraph's node output named like a value of an enclosing graph (but for the
  outputs of the subgraph's own node: an If's branch may name its output like the If's);
- a node input or graph output that nothing defines, in its graph or an enclosing one;
- two nodes of one graph with one (non-empty) name: onnxruntime refuses them (the checker
  does not), and node names are what ``--node`` resolves;
- an attribute given twice on one node, a key given twice in the metadata of the model, a
  graph, a node or a function, a domain imported twice (model or function), two local
  functions of one (domain, name, overload): onnx-ir keeps one of each;
- a NUL character in any name (graph, node, value, initializer, function, op type,
  domain, metadata key): neither onnx.checker nor onnxruntime refuses one, but a NUL
  ends the name in every C library that writes it (zip members, HDF5, file systems).
  (Attribute names are not checked for it: they never become a file's or a weight's name.)

Kept, although onnx.checker refuses them, because onnxruntime runs them and real exporters
write them: nodes out of topological order (reported to the caller, which sorts them as
onnxruntime does, see :func:`onnxgrow.model_io.load_model`); graph inputs and outputs
without a shape (the dynamic outputs of older exporters); a graph without a name.

The check is one pass over the protobuf, linear in the number of nodes and values: about a
tenth of what parsing the file costs.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import onnx

from onnxgrow.errors import GrowError


@dataclass
class _Scope:
    """The names an enclosing graph shows the subgraphs of one of its nodes: its inputs,
    initializers and node outputs, except that node's own outputs, which are not defined
    until it has run (optimum's merged decoders name each branch output like the If output
    it becomes)."""

    names: set[str]
    produced_at: dict[str, int]
    node: int
    outer: _Scope | None = None

    def __contains__(self, name: str) -> bool:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.names or scope.produced_at.get(name, scope.node) != scope.node:
                return True
            scope = scope.outer
        return False


@dataclass
class WellFormed:
    """What the check found that the caller settles: whether some graph's nodes are out of
    topological order."""

    unsorted: bool = False


def check_well_formed(proto: onnx.ModelProto, path: Path) -> WellFormed:
    """Raise GrowError (one line, naming ``path`` and the offending name) when ``proto`` is
    malformed in one of the ways of the module docstring; else report what to settle."""
    try:
        return _check_model(proto, f"{path}: not a well-formed ONNX model")
    except TypeError:  # a string field that is not UTF-8 comes as bytes: check_node_fields refuses it
        return WellFormed()


def _check_model(proto: onnx.ModelProto, where: str) -> WellFormed:
    found = WellFormed()
    _unique_keys(((p.key for p in proto.metadata_props)), f"{where}: the model's metadata")
    _unique_keys((o.domain for o in proto.opset_import), f"{where}: the opset imports", "domain")
    _check_graph(proto.graph, None, where, found)
    functions: set[tuple[str, str, str]] = set()
    for function in proto.functions:
        key = (function.domain, function.name, function.overload)
        label = f"local function {function.domain}::{function.name}"
        _no_nul([function.domain, function.name, function.overload, *function.input, *function.output,
                 *function.attribute], f"{where}: {label}")
        if key in functions:
            raise GrowError(f"{where}: {label} is defined twice")
        functions.add(key)
        _unique_keys((o.domain for o in function.opset_import), f"{where}: the opset imports of {label}", "domain")
        _unique_keys((p.key for p in function.metadata_props), f"{where}: the metadata of {label}")
        _check_body(function.node, list(function.input), set(), list(function.output), None, f"{where}: in {label}",
                    found, function_body=True)
    return found


def _check_graph(graph: onnx.GraphProto, outer: _Scope | None, where: str, found: WellFormed) -> None:
    label = f"graph {graph.name!r}" if graph.name else "the main graph" if outer is None else "a subgraph"
    context = f"{where}: in {label}"
    _no_nul([graph.name], context)
    _unique_keys((p.key for p in graph.metadata_props), f"{context}, the metadata")
    inputs = [v.name for v in graph.input]
    initializers: set[str] = set()
    for tensor in graph.initializer:
        _add_initializer(tensor.name, initializers, context)
    for sparse in graph.sparse_initializer:
        _add_initializer(sparse.values.name, initializers, context, "sparse ")
    _no_nul(initializers, context)
    _no_nul((v.name for v in graph.value_info), context)
    _check_body(graph.node, inputs, initializers, [v.name for v in graph.output], outer, context, found)


def _add_initializer(name: str, seen: set[str], context: str, kind: str = "") -> None:
    if not name:
        raise GrowError(f"{context}: {'a sparse' if kind else 'an'} initializer has no name")
    if name in seen:
        raise GrowError(f"{context}: two initializers are named {name!r} (onnxruntime would use the last one, "
                        "other tools the first)")
    seen.add(name)


def _check_body(nodes: Iterable[onnx.NodeProto], inputs: list[str], initializers: set[str], outputs: list[str],
                outer: _Scope | None, context: str, found: WellFormed, function_body: bool = False) -> None:
    """Single static assignment, defined inputs and outputs, unique node and attribute names
    and metadata keys, no NUL, for one graph's (or function's) nodes; then their subgraphs.
    (Every defined name is checked for NUL as it is defined; an input is either defined or
    refused.)"""
    _no_nul(inputs, context)
    defined = set(initializers)
    listed: set[str] = set()
    for name in inputs:  # an input may share its initializer's name (a default, or IR < 4)
        if name in listed:
            raise GrowError(f"{context}: two graph inputs are named {name!r}")
        listed.add(name)
    defined |= listed
    node_list = list(nodes)
    produced: dict[str, int] = {}
    names: set[str] = set()
    later: list[tuple[str, int]] = []  # inputs not defined before their node: out of order, or nowhere
    for index, node in enumerate(node_list):
        name = node.name
        if "\0" in name or "\0" in node.op_type or "\0" in node.domain:
            _no_nul([name, node.op_type, node.domain], f"{context}: {_label(node, index)}")
        if name:
            if name in names:
                raise GrowError(f"{context}: two nodes are named {name!r} (onnxruntime refuses such models)")
            names.add(name)
        for value in node.input:
            if value and value not in produced and value not in defined and (outer is None or value not in outer):
                later.append((value, index))
        for value in node.output:
            if value:
                if value in produced or value in defined or (outer is not None and value in outer) or "\0" in value:
                    _redefined(value, produced, initializers, outer, f"{context}: {_label(node, index)}")
                produced[value] = index
        if len(node.attribute) > 1:
            _unique_keys((a.name for a in node.attribute), f"{context}: {_label(node, index)}", "attribute")
        if node.metadata_props:
            _unique_keys((p.key for p in node.metadata_props), f"{context}: {_label(node, index)}, the metadata")
    for value, index in later:
        if value not in produced:
            where = "in the function" if function_body else "(not a graph input, an initializer, or a node's output)"
            raise GrowError(f"{context}: input {value!r} of {_label(node_list[index], index)} is defined nowhere "
                            f"{where}")
        found.unsorted = True
    for name in outputs:
        if name not in defined and name not in produced and (outer is None or name not in outer):
            raise GrowError(f"{context}: output {name!r} is defined nowhere (no node produces it)")
    for index, node in enumerate(node_list):
        for attr in node.attribute:
            if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                scope = _Scope(defined, produced, index, outer)
                for graph in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else attr.graphs:
                    _check_graph(graph, scope, context, found)


def _label(node: onnx.NodeProto, index: int) -> str:
    return f"{node.op_type} node {node.name!r}" if node.name else f"node {index} ({node.op_type})"


def _redefined(name: str, produced: Collection[str], initializers: set[str], outer: _Scope | None,
               context: str) -> None:
    """Raise the error for a node output ``name`` that holds a NUL or is defined already."""
    _no_nul([name], context)
    if outer is not None and name in outer and name not in produced:
        raise GrowError(f"{context}: output {name!r} is also a value of an enclosing graph; a subgraph may not "
                        "define it again")
    what = "another node's output" if name in produced else "an initializer" if name in initializers \
        else "a graph input"
    raise GrowError(f"{context}: output {name!r} is also {what}; a value may be defined once")


def _unique_keys(keys: Iterable[str], context: str, what: str = "key") -> None:
    seen: set[str] = set()
    for key in keys:
        if "\0" in key:
            raise GrowError(f"{context}: the {what} {key!r} holds a NUL character")
        if key in seen:
            raise GrowError(f"{context}: the {what} {key!r} is given twice")
        seen.add(key)


def _no_nul(names: Iterable[str], context: str) -> None:
    for name in names:
        if "\0" in name:
            raise GrowError(f"{context}: the name {name!r} holds a NUL character, which no file format "
                            "onnxgrow writes can keep")
