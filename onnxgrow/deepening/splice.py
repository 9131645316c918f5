"""Building a new layer's nodes and splicing them in after one tensor.

Rules:
- New nodes are inserted one after the other right after the node that produces the
  tensor the new layer reads, in the order they are built (each from values that
  exist already), so the graph stays topologically sorted. That node's graph may be an
  If branch or a Loop/Scan body: the new nodes go there, their weights into the model's
  graph (a subgraph reads them from the outer scope).
- Names derive from the new layer's scope (``fc1_deep``): nodes ``fc1_deep/Gemm``,
  weights ``fc1_deep.weight`` / ``fc1_deep.bias``, so :mod:`onnxgrow.names` resolves
  ``fc1_deep`` (scope and weight prefix) to the new layer. No name already in the
  graph is reused.
- :meth:`Splice.connect` gives every former consumer of the tensor the new output.
  When the tensor was a model output (or a subgraph's output), the new output takes over
  its name and the old tensor is renamed, so the interface is unchanged.
- A copied activation keeps its constants: scalars and ``Constant`` outputs are
  shared with the original; parameter tensors (a PRelu slope) are duplicated, so
  the new layer's parameters are its own and not tied to the original's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from onnxgrow.constants import find_constant, make_initializer, unique_name


def fresh_scope(graph: ir.Graph, stem: str) -> str:
    """``stem`` (or ``stem_2``, ``stem_3``, ...) when no node, value or weight name uses it yet."""
    taken = {n.name for n in graph.all_nodes() if n.name}
    taken.update(graph.initializers)
    taken.update(v.name for node in graph.all_nodes() for v in node.outputs if v.name)
    taken.update(v.name for v in graph.inputs if v.name)

    def used(scope: str) -> bool:
        return any(name == scope or name.startswith((scope + "/", scope + ".", scope + "_")) for name in taken)

    scope, k = stem, 1
    while used(scope):
        k += 1
        scope = f"{stem}_{k}"
    return scope


class Splice:
    """New nodes and weights reading ``tensor``, to be spliced in before its consumers."""

    def __init__(self, graph: ir.Graph, tensor: ir.Value, dtype: ir.DataType) -> None:
        producer = tensor.producer()
        if producer is None:
            raise ValueError(f"tensor {tensor.name!r} has no producing node")
        self.graph = graph  # the model's graph: the new weights and value names go there
        self.home = producer.graph or graph  # the new nodes' graph: an If branch or a loop body, or the main graph
        self.tensor = tensor
        self.dtype = dtype
        self.nodes: list[ir.Node] = []
        self.weights: list[ir.Value] = []
        self._uses = list(tensor.uses())  # the consumers to hand over, before new nodes read it
        self._last = producer
        self._node_names = {n.name for n in graph.all_nodes() if n.name}

    def weight(self, name: str, array: np.ndarray, dtype: ir.DataType | None = None) -> ir.Value:
        """A new initializer ``name`` (made unique) holding ``array`` in the layer's dtype."""
        value = make_initializer(self.graph, name, array, dtype or self.dtype)
        self.weights.append(value)
        return value

    def node(
        self,
        op_type: str,
        inputs: Sequence[ir.Value | None],
        name: str,
        *,
        like: ir.Value,
        attributes: Sequence[ir.Attr] = (),
        domain: str = "",
        version: int | None = None,
    ) -> ir.Value:
        """Insert one node; its single output has the type and shape of ``like``."""
        name = self._fresh_node_name(name)
        output = ir.Value(
            name=unique_name(self.graph, f"{name}_output"),
            type=ir.TensorType(like.dtype) if like.dtype is not None else None,
            shape=like.shape.copy() if like.shape is not None else None,
        )
        node = ir.Node(domain, op_type, inputs, attributes, outputs=[output], name=name, version=version)
        self.home.insert_after(self._last, node)
        self._last = node
        self.nodes.append(node)
        return output

    def copy_region(self, nodes: Sequence[ir.Node], start: ir.Value, end: ir.Value,
                    new_start: ir.Value, scope: str) -> ir.Value:
        """Apply a copy of the region ``start → end`` (nodes in graph order) to ``new_start``."""
        mapping: dict[ir.Value, ir.Value] = {start: new_start}
        for node in nodes:
            inputs = [v if v is None else mapping[v] if v in mapping else self._constant_input(v, scope)
                      for v in node.inputs]
            attributes = [ir.Attr(a.name, a.type, a.value, a.ref_attr_name, doc_string=a.doc_string)
                          for a in node.attributes.values()]
            mapping[node.outputs[0]] = self.node(node.op_type, inputs, f"{scope}/{node.op_type}",
                                                 like=node.outputs[0], attributes=attributes,
                                                 domain=node.domain, version=node.version)
        return mapping[end]

    def _constant_input(self, value: ir.Value, scope: str) -> ir.Value:
        ref = find_constant(value)
        if ref is None:
            raise ValueError(f"{value.name!r} is neither in the copied region nor a constant")
        if not ref.root.is_initializer() or ref.array().ndim == 0:
            return value
        tail = (ref.root.name or "param").rsplit(".", 1)[-1]
        return self.weight(f"{scope}_act.{tail}", ref.array(), ref.dtype)

    def connect(self, output: ir.Value, scope: str) -> None:
        """Hand every former consumer of the tensor (and its model-output slot) ``output``."""
        hand_over(self.graph, self.home, self.tensor, self._uses, output, scope)

    def _fresh_node_name(self, name: str) -> str:
        candidate, k = name, 0
        while candidate in self._node_names:
            k += 1
            candidate = f"{name}_{k}"
        self._node_names.add(candidate)
        return candidate


def hand_over(graph: ir.Graph, home: ir.Graph, tensor: ir.Value, uses: Sequence[tuple[ir.Node, int]], output: ir.Value,
              scope: str) -> None:
    """Give the readers ``uses`` of ``tensor`` (in ``home``, the main graph or a subgraph of
    ``graph``) ``output`` instead; when ``tensor`` is an output of ``home``, ``output`` takes
    over its name and its slot (the tensor is renamed after ``scope``), so the interface is unchanged."""
    for node, index in uses:
        node.replace_input_with(index, output)
    if tensor.is_graph_output():
        name = tensor.name
        tensor.name = unique_name(graph, f"{scope}_input")
        output.name = name
        for i, value in enumerate(home.outputs):
            if value is tensor:
                home.outputs[i] = output
