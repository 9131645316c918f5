"""Copying a block's nodes and weights after the value it writes (docs/design.md §5).

A copy of block ``B`` reads ``B``'s exit where ``B`` reads its entry; everything else a node
of ``B`` reads from outside (masks, rotary tables, a position bias, shape constants: its side
inputs and shared constants) the copy reads as it is. Its nodes go right after the node that
writes the value it reads, in ``B``'s order, so the graph stays sorted.

- **Names**: every name of the copy is ``B``'s with ``B``'s number replaced by the copy's
  (:class:`~onnxgrow.deepening.block_names.Renumbering`: ``model.layers.2.mlp.down_proj.weight``,
  ``/model/layers.2/mlp/down_proj/MatMul``, the dynamo exporter's name scopes), made unique
  by its trailing number where the name holds no block number (``node_linear_7``,
  ``val_250``: :class:`TakenNames`).
  The exports name the copy's weights from these (:mod:`onnxgrow.parameter_names`).
- **Weights**: a floating-point initializer that only ``B`` reads (through the
  Transposes, Casts and reshapes between: :data:`~onnxgrow.constants.CHAIN_OPS`), or that
  ``B`` reads in a parameter slot (a Linear's weight, a norm's scale), gets a copy of its own,
  with a copy of that chain: a new tensor that refers to the same data (the same range of the
  same external file; no bytes are copied until the model is written). Other constants stay
  shared. An input the plan marked zero (an output projection's weight and bias) gets a new
  tensor of zeros in the root's shape; a ``Constant`` node's value is replaced by a zero
  initializer in the shape the node sees.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from onnxgrow.constants import CHAIN_OPS, find_constant
from onnxgrow.deepening.block_names import PATH_METADATA, Renumbering
from onnxgrow.parameter_names import PARAMETER_SLOTS
from onnxgrow.structure import Block

_NUMBERED = re.compile(r"^(.*?)(\d+)$")


class TakenNames:
    """The node and value names of a graph, kept up to date as copies are added. A name that is
    taken is made unique by its trailing number (``val_250`` → ``val_771``, the next one free
    after every ``val_<n>``), else by ``_1``, ``_2`` ...: an exporter's generated name stays one
    (:func:`onnxgrow.parameter_names.is_framework_name` tells them from framework names)."""

    def __init__(self, graph: ir.Graph) -> None:
        self.nodes = {n.name for n in graph.all_nodes() if n.name}
        self.values = set(graph.initializers)
        self.values.update(v.name for v in graph.inputs if v.name)
        self.values.update(v.name for n in graph.all_nodes() for v in n.outputs if v.name)
        self._next: dict[tuple[int, str], int] = {}

    def _fresh(self, name: str, taken: set[str]) -> str:
        if name not in taken:
            taken.add(name)
            return name
        numbered = _NUMBERED.match(name)
        stem = numbered.group(1) if numbered else name + "_"
        key = (id(taken), stem)
        if key not in self._next:
            self._next[key] = 1 + max((int(m.group(2)) for other in taken
                                       if other.startswith(stem) and (m := _NUMBERED.match(other))
                                       and m.group(1) == stem), default=0)
        while f"{stem}{self._next[key]}" in taken:
            self._next[key] += 1
        fresh = f"{stem}{self._next[key]}"
        taken.add(fresh)
        return fresh

    def node(self, name: str) -> str:
        return self._fresh(name, self.nodes)

    def value(self, name: str) -> str:
        return self._fresh(name, self.values)


@dataclass
class BlockCopy:
    """One inserted copy: its exit, its last node, its nodes, and its new weights (by name:
    the name of the weight it copies, or None for one that starts at zero)."""

    exit: ir.Value
    last: ir.Node
    nodes: list[ir.Node] = field(default_factory=list)
    weights: dict[str, str | None] = field(default_factory=dict)


def owned_roots(block: Block) -> set[ir.Value]:
    """The initializers only ``block``'s nodes read (through constant chains)."""
    inside = set(block.nodes)
    found: set[ir.Value] = set()
    for node in block.nodes:
        for value in node.inputs:
            ref = find_constant(value) if value is not None else None
            if ref is None or ref.root in found or not ref.root.is_initializer():
                continue
            if _read_only_by(ref.root, inside):
                found.add(ref.root)
    return found


def _read_only_by(value: ir.Value, inside: set[ir.Node]) -> bool:
    if value.is_graph_output():
        return False
    for node in value.consumers():
        if node in inside:
            continue
        if node.op_type not in CHAIN_OPS or node.inputs[0] is not value:
            return False
        if not _read_only_by(node.outputs[0], inside):
            return False
    return True


def _parameter_slot(node: ir.Node, index: int) -> bool:
    return any(spec.index == index for spec in PARAMETER_SLOTS.get(node.op_type, ()))


class BlockCopier:
    """Copies of one block (see the module rules)."""

    def __init__(self, graph: ir.Graph, block: Block, zero: set[tuple[ir.Node, int]], taken: TakenNames) -> None:
        self.graph = graph
        self.block = block
        self.zero = zero
        self.taken = taken
        self.owned = owned_roots(block)

    def insert(self, reading: ir.Value, after: ir.Node, rename: Renumbering) -> BlockCopy:
        """A copy reading ``reading`` instead of the block's entry, its nodes inserted after ``after``."""
        mapping: dict[ir.Value, ir.Value] = {self.block.entry: reading}
        roots: dict[tuple[ir.Value, bool], ir.Value] = {}
        nodes: list[ir.Node] = []
        weights: dict[str, str | None] = {}
        for node in self.block.nodes:
            inputs: list[ir.Value | None] = []
            for index, value in enumerate(node.inputs):
                if value is None or value in mapping:
                    inputs.append(None if value is None else mapping[value])
                else:
                    inputs.append(self._read(node, index, value, rename, roots, nodes, weights))
            clone = self._clone(node, inputs, rename)
            mapping.update(zip(node.outputs, clone.outputs))
            nodes.append(clone)
        self.graph.insert_after(after, nodes)
        return BlockCopy(mapping[self.block.exit], nodes[-1], nodes, weights)

    def _read(self, node: ir.Node, index: int, value: ir.Value, rename: Renumbering,
              roots: dict[tuple[ir.Value, bool], ir.Value], nodes: list[ir.Node],
              weights: dict[str, str | None]) -> ir.Value:
        """What the copy of ``node`` reads at ``index`` for the outside value ``value``."""
        ref = find_constant(value)
        if ref is None:
            return value  # a side input
        zero = (node, index) in self.zero
        own = ref.root.is_initializer() and ref.dtype.is_floating_point() and (
            ref.root in self.owned or _parameter_slot(node, index))
        if not zero and not own:
            return value
        if not ref.root.is_initializer():  # a Constant node's value to set to zero
            array = ref.array()
            made = self._initializer(rename.name(value.name or "zero"), ir.Tensor(
                np.zeros(array.shape, dtype=array.dtype), dtype=ref.dtype), None, weights)
            return made
        key = (ref.root, zero)
        if key not in roots:
            tensor = ref.tensor
            source = ref.root.name or ""
            data = _zeros(tensor) if zero else _alias(tensor)
            roots[key] = self._initializer(rename.name(source), data, None if zero else source, weights)
        current = roots[key]
        for link in ref.chain:
            inputs = [current, *link.inputs[1:]]
            current = self._clone(link, inputs, rename).outputs[0]
            nodes.append(current.producer())  # type: ignore[arg-type]
        return current

    def _initializer(self, name: str, tensor: ir.TensorProtocol, source: str | None,
                     weights: dict[str, str | None]) -> ir.Value:
        name = self.taken.value(name)
        tensor.name = name
        value = ir.Value(name=name, type=ir.TensorType(tensor.dtype), shape=ir.Shape(tensor.shape.numpy()),
                         const_value=tensor)
        self.graph.register_initializer(value)
        weights[name] = source
        return value

    def _clone(self, node: ir.Node, inputs: list[ir.Value | None], rename: Renumbering) -> ir.Node:
        outputs = [ir.Value(name=self.taken.value(rename.name(out.name or f"{node.op_type}_output")),
                            type=out.type, shape=out.shape.copy() if out.shape is not None else None)
                   for out in node.outputs]
        metadata = dict(node.metadata_props)
        for key in PATH_METADATA:
            if key in metadata:
                metadata[key] = rename.dotted(metadata[key])
        attributes = [ir.Attr(a.name, a.type, a.value, ref_attr_name=a.ref_attr_name, doc_string=a.doc_string)
                      for a in node.attributes.values()]
        return ir.Node(node.domain, node.op_type, inputs, attributes, outputs=outputs,
                       name=self.taken.node(rename.name(node.name)) if node.name else None, version=node.version,
                       overload=node.overload, doc_string=node.doc_string, metadata_props=metadata)


def _alias(tensor: ir.TensorProtocol) -> ir.TensorProtocol:
    """A new tensor with ``tensor``'s data, read from the same place (no copy in memory)."""
    if isinstance(tensor, ir.ExternalTensor):
        return ir.ExternalTensor(tensor.location, tensor.offset, tensor.length, tensor.dtype, shape=tensor.shape,
                                 name=tensor.name or "", base_dir=tensor.base_dir)
    return ir.LazyTensor(lambda: tensor, dtype=tensor.dtype, shape=ir.Shape(tensor.shape.numpy()),
                         name=tensor.name or "")


def _zeros(tensor: ir.TensorProtocol) -> ir.TensorProtocol:
    return ir.Tensor(np.zeros(tuple(tensor.shape.numpy()), dtype=tensor.dtype.numpy()), dtype=tensor.dtype)
