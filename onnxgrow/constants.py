"""Constant inputs: finding them behind exporter plumbing, and editing them safely.

Exporters feed weights to nodes directly from initializers, through ``Constant``
nodes, or through chains of ``Identity``/``Transpose`` (constant folding off;
deduplicated initializers). Per-channel constants are also reshaped or cast at run time
(:data:`RESHAPING_OPS`): Caffe2 wrote a BatchNorm's scale as ``Unsqueeze(s, axes=[1, 2])``,
paddle2onnx a conv bias as ``Reshape(Constant b, Constant [1, C, 1, 1])``. Such a value is a
constant too, as long as the other inputs of the chain (axes, target shape) are constants.
:func:`find_constant` follows such a chain back to its root. :func:`edit_constant`
rewrites the array one node input sees:

- when the root and every value of the chain feed only this input, the root is
  rewritten in place (keeping its name, e.g. ``fc1.weight``) and the edit is pulled
  back through the chain: transposes inverted, casts undone, size-1 axes an
  ``Unsqueeze``/``Squeeze``/``Reshape`` added or dropped restored, broadcast axes of an
  ``Expand`` collapsed; a ``Reshape`` or ``Expand`` target shape follows the grown axis
  (rewritten the same way). The pulled-back root must give the edited array exactly
  when the chain runs again, else the next rule applies. The root of a reshaping
  chain may be a ``Constant`` node: an initializer of its name takes its place, and the
  chain stays as the exporter wrote it;
- otherwise (a weight shared with another node, a ``Constant`` node read directly, an
  initializer that is also a graph input, a reshape that merges the grown axis with
  another) a new initializer holding the edited array is made for this input alone (the
  chain folded), so no other node sees a change.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from onnxgrow.grown_tensors import AxisEdit, edited_lazily

#: Ops a constant may pass through on its way to a node input, keeping its values.
PASS_THROUGH_OPS = frozenset({"Identity", "Transpose"})
#: Ops that reshape or cast a constant at run time; their other inputs (axes, target shape)
#: must be constants too.
RESHAPING_OPS = frozenset({"Unsqueeze", "Squeeze", "Reshape", "Cast", "Expand"})
#: Every op :func:`find_constant` looks through.
CHAIN_OPS = PASS_THROUGH_OPS | RESHAPING_OPS


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
        """The element type the node input sees (a Cast of the chain changes the root's)."""
        for node in reversed(self.chain):
            if node.op_type == "Cast":
                return ir.DataType(node.attributes.get_int("to", self.tensor.dtype.value))
        return self.tensor.dtype

    @property
    def reshaped(self) -> bool:
        """Whether the chain holds an op of :data:`RESHAPING_OPS`."""
        return any(node.op_type in RESHAPING_OPS for node in self.chain)

    def view_axes(self) -> tuple[int | None, ...]:
        """For each axis the node sees, the root tensor's axis behind it (None for an axis the
        chain inserted or broadcast, or that a Reshape merged with another)."""
        axes: list[int | None] = list(range(len(self.tensor.shape)))
        array = self.tensor.numpy() if self.reshaped else None
        for node in self.chain:
            if node.op_type == "Transpose":
                perm = node.attributes.get_ints("perm", None)
                perm = list(range(len(axes)))[::-1] if perm is None else list(perm)
                axes = [axes[p] for p in perm]
            elif node.op_type in RESHAPING_OPS and node.op_type != "Cast":
                assert array is not None
                out = _apply(node, array)
                axes = _axes_after(node, axes, array.shape, out.shape)
                array = out
                continue
            if array is not None:
                array = _apply(node, array)
        return tuple(axes)


def _operand(node: ir.Node) -> np.ndarray | None:
    """The constant second input of a chain node (axes, target shape), if it has one."""
    value = node.inputs[1] if len(node.inputs) > 1 else None
    return None if value is None else constant_array(value)


def _unsqueeze_axes(node: ir.Node, in_rank: int, operand: np.ndarray | None) -> list[int]:
    """The output axes an Unsqueeze of a rank ``in_rank`` input inserts, ascending."""
    axes = np.asarray(operand if operand is not None else node.attributes.get_ints("axes", ())).reshape(-1)
    out_rank = in_rank + len(axes)
    return sorted(int(a) % out_rank for a in axes)


def _squeeze_axes(node: ir.Node, shape: tuple[int, ...], operand: np.ndarray | None) -> list[int]:
    axes = operand if operand is not None else node.attributes.get_ints("axes", None)
    if axes is None:
        return [i for i, d in enumerate(shape) if d == 1]
    return sorted(int(a) % len(shape) for a in np.asarray(axes).reshape(-1))


def _reshape_dims(node: ir.Node, shape: tuple[int, ...], target: np.ndarray) -> list[int]:
    """The Reshape's output shape: ``0`` copies the input's dimension (unless ``allowzero``)."""
    copy_zero = not node.attributes.get_int("allowzero", 0)
    dims = [int(t) for t in np.asarray(target).reshape(-1)]
    return [shape[i] if d == 0 and copy_zero and i < len(shape) else d for i, d in enumerate(dims)]


def _apply(node: ir.Node, array: np.ndarray, operand: np.ndarray | None = None) -> np.ndarray:
    """``node`` of a constant chain applied to ``array`` (``operand``: its second input, when
    not the one the graph holds)."""
    op = node.op_type
    if op == "Transpose":
        perm = node.attributes.get_ints("perm", None)
        return np.transpose(array, perm)
    if op not in RESHAPING_OPS:
        return array
    if op == "Cast":
        return array.astype(ir.DataType(node.attributes.get_int("to", 1)).numpy())
    operand = operand if operand is not None else _operand(node)
    if op == "Unsqueeze":
        for axis in _unsqueeze_axes(node, array.ndim, operand):
            array = np.expand_dims(array, axis)
        return array
    if op == "Squeeze":
        return np.squeeze(array, axis=tuple(_squeeze_axes(node, array.shape, operand)))
    assert operand is not None
    if op == "Reshape":
        return np.reshape(array, _reshape_dims(node, array.shape, operand))
    shape = np.broadcast_shapes(array.shape, tuple(int(d) for d in np.asarray(operand).reshape(-1)))
    return np.array(np.broadcast_to(array, shape))  # Expand


def _non_unit(shape: tuple[int, ...]) -> list[int]:
    return [d for d in shape if d != 1]


def _axes_after(node: ir.Node, axes: list[int | None], before: tuple[int, ...],
                after: tuple[int, ...]) -> list[int | None]:
    """Which root axis each output axis of a reshaping chain node shows (see ``view_axes``)."""
    op = node.op_type
    if op == "Unsqueeze":
        inserted = set(_unsqueeze_axes(node, len(before), _operand(node)))
        rest = iter(axes)
        return [None if j in inserted else next(rest) for j in range(len(after))]
    if op == "Squeeze":
        dropped = set(_squeeze_axes(node, before, _operand(node)))
        return [a for i, a in enumerate(axes) if i not in dropped]
    if op == "Reshape":
        if _non_unit(before) != _non_unit(after):
            return [None] * len(after)
        kept = iter(a for a, d in zip(axes, before) if d != 1)
        return [next(kept) if d != 1 else None for d in after]
    offset = len(after) - len(before)  # Expand
    return [None if j < offset or (before[j - offset] == 1 and after[j] != 1) else axes[j - offset]
            for j in range(len(after))]


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
        if producer.op_type in CHAIN_OPS and producer.domain == "" and _constant_settings(producer):
            chain.append(producer)
            nxt = producer.inputs[0]
            if nxt is None:
                return None
            current = nxt
            continue
        return None


def _constant_settings(node: ir.Node) -> bool:
    """Whether a chain node's inputs after the first (axes, target shape) are constants, and
    a Reshape or Expand has its target."""
    if not node.inputs or (node.op_type in ("Reshape", "Expand") and (len(node.inputs) < 2 or node.inputs[1] is None)):
        return False
    return all(find_constant(v) is not None for v in node.inputs[1:] if v is not None)


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
    if producer is not None and not (ref.reshaped and producer.op_type == "Constant"):
        return False  # a Constant node read directly is replaced by an initializer instead
    if producer is None and not root.is_initializer():
        return False
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


def _pull_back(ref: ConstantRef, array: np.ndarray) -> tuple[np.ndarray, dict[ir.Node, np.ndarray]] | None:
    """``array`` (what the node is to see) expressed as the root and the chain's new target
    shapes (by chain node), or None when no root gives it through the same chain.

    Transposes are inverted, casts undone, the size-1 axes an Unsqueeze, Squeeze or Reshape
    adds or drops restored, an Expand's broadcast axes collapsed; a Reshape or Expand
    target follows the grown axis. The result is checked by running the chain again.
    """
    stages = [ref.tensor.numpy()]  # the old arrays before each chain node, and the last output
    if ref.reshaped:
        for chain_node in ref.chain:
            stages.append(_apply(chain_node, stages[-1]))
    targets: dict[ir.Node, np.ndarray] = {}
    root = array
    for k in range(len(ref.chain) - 1, -1, -1):
        chain_node = ref.chain[k]
        if chain_node.op_type == "Transpose":
            perm = chain_node.attributes.get_ints("perm", None)
            perm = list(range(root.ndim))[::-1] if perm is None else list(perm)
            root = np.transpose(root, np.argsort(perm))
        elif chain_node.op_type in RESHAPING_OPS:
            step = _step_back(chain_node, root, stages[k], stages[k + 1])
            if step is None:
                return None
            root, target = step
            if target is not None:
                targets[chain_node] = target
    if ref.reshaped:
        check = root.astype(ref.tensor.dtype.numpy(), copy=False)
        for chain_node in ref.chain:
            check = _apply(chain_node, check, targets.get(chain_node))
        if check.shape != array.shape or check.dtype != array.dtype or not np.array_equal(check, array):
            return None
    return root, targets


def _step_back(node: ir.Node, out: np.ndarray, before: np.ndarray,
               after: np.ndarray) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The input of reshaping chain node ``node`` that gives ``out``, and its new target shape
    (None: unchanged), given the old input ``before`` and output ``after``; None if none does."""
    op = node.op_type
    if op == "Cast":
        return out.astype(before.dtype), None
    if op == "Unsqueeze":
        axes = _unsqueeze_axes(node, before.ndim, _operand(node))
        if any(out.shape[a] != 1 for a in axes):
            return None
        return np.squeeze(out, axis=tuple(axes)), None
    if op == "Squeeze":
        axes = _squeeze_axes(node, before.shape, _operand(node))
        restored = out
        for axis in axes:
            restored = np.expand_dims(restored, axis)
        return restored, None
    if op == "Reshape":
        grown = _non_unit(out.shape)
        if _non_unit(before.shape) != _non_unit(after.shape) or len(grown) != len(_non_unit(after.shape)):
            return None  # the reshape merges or splits axes: the grown one cannot be placed
        sizes = iter(grown)
        dims = [next(sizes) if d != 1 else 1 for d in before.shape]
        old_target = _operand(node)
        assert old_target is not None
        copy_zero = not node.attributes.get_int("allowzero", 0)
        target = [t if t == -1 or (t == 0 and copy_zero and j < len(dims) and dims[j] == out.shape[j])
                  else out.shape[j] for j, t in enumerate(int(t) for t in old_target.reshape(-1))]
        return out.reshape(dims), np.asarray(target, dtype=old_target.dtype)
    offset = out.ndim - before.ndim  # Expand
    old_shape = _operand(node)
    assert old_shape is not None
    collapsed = out
    for j in range(out.ndim - 1, -1, -1):
        broadcast = j < offset or (before.shape[j - offset] == 1 and after.shape[j] != 1)
        if broadcast:
            collapsed = collapsed[(slice(None),) * j + (slice(0, 1),)]
    collapsed = collapsed.reshape(collapsed.shape[offset:])
    shape = [int(d) for d in old_shape.reshape(-1)]
    start = out.ndim - len(shape)
    target = [d if d == 1 else out.shape[start + k] for k, d in enumerate(shape)]
    return collapsed, np.asarray(target, dtype=old_shape.dtype)


def _write_root(graph: ir.Graph, ref: ConstantRef, array: np.ndarray) -> None:
    """Store ``array`` as the root of ``ref`` (a Constant node gives way to an initializer of its name)."""
    dtype = ref.tensor.dtype
    array = np.require(array.astype(dtype.numpy(), copy=False), requirements="C")
    root = ref.root
    constant = root.producer()
    if constant is None:
        root.const_value = ir.Tensor(array, name=root.name, dtype=dtype)
        root.shape = ir.Shape(array.shape)
        return
    first = ref.chain[0]
    first.replace_input_with(0, None)
    assert constant.graph is not None
    constant.graph.remove(constant, safe=True)
    first.replace_input_with(0, make_initializer(graph, root.name or f"{first.name}_input", array, dtype))


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
    shared: bool = False,
) -> ir.Value:
    """Replace the constant seen at ``node.inputs[index]`` by ``edit(old)``.

    Keeps the dtype. Rewrites the root when this input is its only user, or when ``shared``
    (the caller vouches that every reader accepts the change: each then sees it, through its
    own Transposes), and the edit pulls back through the chain (see the module docstring),
    else gives this input a new initializer of its own. Returns the value now feeding
    the input. An :class:`~onnxgrow.grown_tensors.AxisEdit` of an external weight that
    this input alone reads is not computed here: the weight becomes a
    :class:`~onnxgrow.grown_tensors.GrownTensor`, computed block by block when it is written.
    """
    ref = find_constant(node.inputs[index])
    if ref is None:
        raise ValueError(f"input {index} of {node.name} is not constant")
    dtype = ref.dtype
    in_place = shared and ref.root.producer() is None and ref.root.is_initializer()
    if not ref.chain and isinstance(edit, AxisEdit):
        new_shape = edit.new_shape(tuple(ref.tensor.shape.numpy()))
        if in_place or _is_exclusive(ref, node, index, new_shape):
            grown = edited_lazily(ref.tensor, edit, ref.root.name or "")
            if grown is not None:
                ref.root.const_value = grown
                ref.root.shape = ir.Shape(new_shape)
                _reshape_readers(ref.root)
                return node.inputs[index]  # type: ignore[return-value]
    new = np.asarray(edit(ref.array()))
    pulled = _pull_back(ref, new.astype(dtype.numpy(), copy=False)) \
        if in_place or _is_exclusive(ref, node, index, tuple(new.shape)) else None
    if pulled is not None:
        root_array, targets = pulled
        _write_root(graph, ref, root_array)
        for chain_node, target in targets.items():
            if not np.array_equal(target, np.asarray(_operand(chain_node))):
                edit_constant(graph, chain_node, 1, functools.partial(_replaced_by, target))
        array = np.require(root_array.astype(ref.tensor.dtype.numpy(), copy=False), requirements="C")
        for chain_node in ref.chain:
            array = _apply(chain_node, array)
            if chain_node.outputs[0].type is not None:
                chain_node.outputs[0].shape = ir.Shape(array.shape)
        if in_place:
            _reshape_readers(ref.root)
        return node.inputs[index]  # type: ignore[return-value]
    old = node.inputs[index]
    assert old is not None
    base = name_hint or old.name or ref.root.name or f"{node.name}_input{index}"
    node.replace_input_with(index, None)
    remove_dead(graph, old)  # frees the name when this input was its last user
    value = make_initializer(graph, base, new, dtype)
    node.replace_input_with(index, value)
    return value


def _reshape_readers(root: ir.Value) -> None:
    """Give every Identity/Transpose between ``root`` and its readers the shape its grown
    tensor now has there."""
    assert root.shape is not None
    stack: list[tuple[ir.Value, tuple[int, ...]]] = [(root, tuple(root.shape.numpy()))]
    while stack:
        value, shape = stack.pop()
        for use in value.uses():
            chain_node = use.node
            if chain_node.op_type not in PASS_THROUGH_OPS or chain_node.domain not in ("", "ai.onnx"):
                continue
            out = shape
            if chain_node.op_type == "Transpose":
                perm = chain_node.attributes.get_ints("perm", None)
                perm = list(range(len(shape)))[::-1] if perm is None else list(perm)
                out = tuple(shape[p] for p in perm)
            if chain_node.outputs[0].type is not None:
                chain_node.outputs[0].shape = ir.Shape(out)
            stack.append((chain_node.outputs[0], out))


def _replaced_by(new: np.ndarray, old: np.ndarray) -> np.ndarray:
    """An edit that stores ``new`` whatever was there (a chain's rewritten target shape)."""
    return new


def remove_dead(graph: ir.Graph, value: ir.Value) -> None:
    """Remove the nodes that computed ``value`` once nothing uses it, then their unused inputs
    (an Identity/Transpose/Constant chain to a weight, the nodes computing a replaced value),
    and initializers nothing reads any more, each from its own graph (a subgraph's too)."""
    stack = [value]
    while stack:
        current = stack.pop()
        if current.uses() or current.is_graph_output():
            continue
        producer = current.producer()
        if producer is None:
            name, owner = current.name, current.graph or graph  # an initializer of a subgraph goes from there
            if current.is_initializer() and not current.is_graph_input() and name is not None \
                    and name in owner.initializers:
                del owner.initializers[name]
            continue
        if producer.graph is None or any(o.uses() or o.is_graph_output() for o in producer.outputs):
            continue
        inputs = [v for v in producer.inputs if v is not None]
        producer.graph.remove(producer, safe=True)  # in a subgraph too
        stack.extend(inputs)
