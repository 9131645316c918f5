"""Constant inputs: finding them behind exporter plumbing, and editing them safely.

Exporters feed weights to nodes directly from initializers, through ``Constant``
nodes, or through chains of ``Identity``/``Transpose`` (constant folding off;
deduplicated initializers). :func:`find_constant` follows such a chain back to its
root. :func:`edit_constant` rewrites the array one node input sees:

- when the root and every value of the chain feed only this input, the root
  initializer is rewritten in place (keeping its name, e.g. ``fc1.weight``) and the
  edit is pulled back through the chain's transposes;
- otherwise (a weight shared with another node, a ``Constant`` node, an initializer
  that is also a graph input) a new initializer is made for this input alone, so
  no other node sees a change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from onnxgrow.grown_tensors import AxisEdit, edited_lazily

#: Ops a constant may pass through on its way to a node input.
PASS_THROUGH_OPS = frozenset({"Identity", "Transpose"})


@dataclass
class ConstantRef:
    """A node input whose value is constant: the root tensor and the chain to it."""

    value: ir.Value
    root: ir.Value
    tensor: ir.TensorProtocol
    chain: list[ir.Node] = field(default_factory=list)  # root side first

    def array(self) -> np.ndarray:
        """The value the node input sees (chain applied)."""
        array = self.tensor.numpy()
        for node in self.chain:
            array = _apply(node, array)
        return array

    @property
    def dtype(self) -> ir.DataType:
        return self.tensor.dtype


def _apply(node: ir.Node, array: np.ndarray) -> np.ndarray:
    if node.op_type == "Transpose":
        perm = node.attributes.get_ints("perm", None)
        return np.transpose(array, perm)
    return array


def _constant_node_value(node: ir.Node) -> ir.TensorProtocol | None:
    attr = node.attributes.get("value")
    if attr is not None and attr.type == ir.AttributeType.TENSOR:
        return attr.as_tensor()
    for name, make in (
        ("value_float", lambda a: np.array(a.as_float(), dtype=np.float32)),
        ("value_floats", lambda a: np.array(a.as_floats(), dtype=np.float32)),
        ("value_int", lambda a: np.array(a.as_int(), dtype=np.int64)),
        ("value_ints", lambda a: np.array(a.as_ints(), dtype=np.int64)),
    ):
        attr = node.attributes.get(name)
        if attr is not None:
            return ir.Tensor(make(attr))
    return None


def find_constant(value: ir.Value | None) -> ConstantRef | None:
    """The constant behind ``value``, or None when it is computed at run time."""
    if value is None:
        return None
    chain: list[ir.Node] = []
    current = value
    while True:
        if current.const_value is not None and not current.is_graph_input():
            chain.reverse()
            return ConstantRef(value, current, current.const_value, chain)
        producer = current.producer()
        if producer is None:
            return None
        if producer.op_type == "Constant" and producer.domain == "":
            tensor = _constant_node_value(producer)
            if tensor is None:
                return None
            chain.reverse()
            return ConstantRef(value, current, tensor, chain)
        if producer.op_type in PASS_THROUGH_OPS and producer.domain == "" and producer.inputs:
            chain.append(producer)
            nxt = producer.inputs[0]
            if nxt is None:
                return None
            current = nxt
            continue
        return None


def constant_array(value: ir.Value | None) -> np.ndarray | None:
    """The numpy value of a constant input, or None."""
    ref = find_constant(value)
    return None if ref is None else ref.array()


def _reads_same_dims(use_node: ir.Node, old: tuple[int, ...], new: tuple[int, ...]) -> bool:
    """True for a ``Shape`` node that reads only dimensions the edit leaves as they are."""
    if use_node.op_type != "Shape" or use_node.domain not in ("", "ai.onnx") or len(old) != len(new):
        return False
    window = slice(use_node.attributes.get_int("start", 0), use_node.attributes.get_int("end", len(old)))
    return old[window] == new[window]


def _is_exclusive(ref: ConstantRef, node: ir.Node, index: int, new_shape: tuple[int, ...]) -> bool:
    """True when the root and chain feed nothing but ``node``'s input ``index``.

    A ``Shape`` reading only dimensions the edit keeps (the dynamo exporter reads a
    filter's output count to build a zero bias) does not count: it sees no change.
    """
    root = ref.root
    producer = root.producer()
    if producer is not None or not root.is_initializer():
        return False  # Constant nodes are replaced by initializers instead
    if root.is_graph_input() or root.is_graph_output():
        return False
    values = [root] + [n.outputs[0] for n in ref.chain]
    targets = [(n, 0) for n in ref.chain] + [(node, index)]
    old_shape = tuple(ref.tensor.shape.numpy())
    for v, (consumer, idx) in zip(values, targets):
        uses = list(v.uses())
        if v is root and not ref.chain:
            uses = [u for u in uses if not _reads_same_dims(u.node, old_shape, new_shape)]
        if len(uses) != 1 or uses[0].node is not consumer or uses[0].idx != idx:
            return False
        if v is not root and v.is_graph_output():
            return False
    return True


def _pull_back(ref: ConstantRef, array: np.ndarray) -> np.ndarray:
    """Undo the chain's transposes so ``array`` is expressed in the root's layout."""
    for chain_node in reversed(ref.chain):
        if chain_node.op_type == "Transpose":
            perm = chain_node.attributes.get_ints("perm", None)
            perm = list(range(array.ndim))[::-1] if perm is None else list(perm)
            array = np.transpose(array, np.argsort(perm))
    return array


def unique_name(graph: ir.Graph, base: str) -> str:
    """A value name not used yet in ``graph`` or any of its subgraphs (initializers, inputs,
    node outputs): ONNX values share one namespace, a subgraph reusing an outer name breaks SSA."""
    taken: set[str] = set()
    for g in (graph, *graph.subgraphs()):
        taken.update(g.initializers)
        taken.update(v.name for v in g.inputs if v.name)
    for node in graph.all_nodes():
        taken.update(v.name for v in node.outputs if v.name)
    if base not in taken:
        return base
    k = 1
    while f"{base}_{k}" in taken:
        k += 1
    return f"{base}_{k}"


def make_initializer(graph: ir.Graph, name: str, array: np.ndarray, dtype: ir.DataType) -> ir.Value:
    """Register a new initializer holding ``array`` (cast to ``dtype``)."""
    name = unique_name(graph, name)
    array = np.require(array.astype(dtype.numpy(), copy=False), requirements="C")  # keeps 0-d arrays 0-d
    tensor = ir.Tensor(array, name=name, dtype=dtype)
    value = ir.Value(name=name, type=ir.TensorType(dtype), shape=ir.Shape(array.shape), const_value=tensor)
    graph.register_initializer(value)
    return value


def edit_constant(
    graph: ir.Graph,
    node: ir.Node,
    index: int,
    edit: Callable[[np.ndarray], np.ndarray],
    *,
    name_hint: str | None = None,
) -> ir.Value:
    """Replace the constant seen at ``node.inputs[index]`` by ``edit(old)``.

    Keeps the dtype. Rewrites the root initializer when this input is its only user,
    else gives this input a new initializer of its own. Returns the value now feeding
    the input. An :class:`~onnxgrow.grown_tensors.AxisEdit` of an external weight that
    this input alone reads is not computed here: the weight becomes a
    :class:`~onnxgrow.grown_tensors.GrownTensor`, computed block by block when it is written.
    """
    ref = find_constant(node.inputs[index])
    if ref is None:
        raise ValueError(f"input {index} of {node.name} is not constant")
    dtype = ref.dtype
    if not ref.chain and isinstance(edit, AxisEdit):
        new_shape = edit.new_shape(tuple(ref.tensor.shape.numpy()))
        if _is_exclusive(ref, node, index, new_shape):
            grown = edited_lazily(ref.tensor, edit, ref.root.name or "")
            if grown is not None:
                ref.root.const_value = grown
                ref.root.shape = ir.Shape(new_shape)
                return node.inputs[index]  # type: ignore[return-value]
    new = np.asarray(edit(ref.array()))
    if _is_exclusive(ref, node, index, tuple(new.shape)):
        root_array = np.require(_pull_back(ref, new).astype(dtype.numpy(), copy=False), requirements="C")
        ref.root.const_value = ir.Tensor(root_array, name=ref.root.name, dtype=dtype)
        ref.root.shape = ir.Shape(root_array.shape)
        array = root_array
        for chain_node in ref.chain:
            array = _apply(chain_node, array)
            if chain_node.outputs[0].type is not None:
                chain_node.outputs[0].shape = ir.Shape(array.shape)
        return node.inputs[index]  # type: ignore[return-value]
    old = node.inputs[index]
    assert old is not None
    base = name_hint or old.name or ref.root.name or f"{node.name}_input{index}"
    node.replace_input_with(index, None)
    remove_dead(graph, old)  # frees the name when this input was its last user
    value = make_initializer(graph, base, new, dtype)
    node.replace_input_with(index, value)
    return value


def remove_dead(graph: ir.Graph, value: ir.Value) -> None:
    """Remove the nodes that computed ``value`` once nothing uses it, then their unused inputs
    (an Identity/Transpose/Constant chain to a weight, the nodes computing a replaced value),
    and initializers nothing reads any more."""
    stack = [value]
    while stack:
        current = stack.pop()
        if current.uses() or current.is_graph_output():
            continue
        producer = current.producer()
        if producer is None:
            name = current.name
            if current.is_initializer() and not current.is_graph_input() and name is not None \
                    and name in graph.initializers:
                del graph.initializers[name]
            continue
        if producer.graph is not graph or any(o.uses() or o.is_graph_output() for o in producer.outputs):
            continue
        inputs = [v for v in producer.inputs if v is not None]
        graph.remove(producer, safe=True)
        stack.extend(inputs)
