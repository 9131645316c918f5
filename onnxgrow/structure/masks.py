"""Whether an attention is causal: what its mask is made of.

The *scores* of an attention branch are the MatMul of two computed tensors nearest before
its Softmax; the *mask* is every other operand of the ops between them (the bias of an
``Add``, the condition of a ``Where``). The attention is causal when the mask is built

- from a ``Trilu``;
- by comparing two positions (``Less``, ``LessOrEqual``, ``Greater``, ``GreaterOrEqual``
  of two tensors that both come from a ``Range``: ``kv_idx <= q_idx``), as the dynamo
  exporter and optimum write ``transformers``' causal masks;
- from a constant lower-triangular matrix over its last two axes (a causal mask folded to
  a constant, GPT-2's ``bias`` buffer).

It is not causal when there is no mask or the mask is none of those (a padding mask, a
relative position bias). An ancestry too large to search says nothing (None).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from onnxgrow.constants import constant_array
from onnxgrow.structure.flow import DataFlow

_COMPARISONS = frozenset({"Less", "LessOrEqual", "Greater", "GreaterOrEqual"})
#: Ops between the scores and the Softmax.
_SCORE_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Where", "Cast", "Identity", "Neg", "Min", "Max"})
#: How many nodes of the mask's ancestry are read before giving up.
_SEARCH_LIMIT = 2000


def is_causal(branch: tuple[ir.Node, ...], flow: DataFlow) -> bool | None:
    """Whether the attention of ``branch`` (the nodes of a residual branch) is causal (see
    the module rules); None when its Softmax or mask cannot be read."""
    softmax = next((n for n in branch if n.op_type == "Softmax"), None)
    if softmax is None or softmax.inputs[0] is None:
        return None
    scores = _scores(softmax.inputs[0], flow)
    if scores is None:
        return None
    between = flow.between(scores.outputs[0], softmax.inputs[0])
    produced = {scores.outputs[0], *(out for node in between for out in node.outputs)}
    masks = [v for node in between for v in node.inputs if v is not None and v not in produced]
    found = [_causal_mask(v, flow) for v in masks]
    if any(f is True for f in found):
        return True
    return None if any(f is None for f in found) else False


def _scores(value: ir.Value, flow: DataFlow) -> ir.Node | None:
    """The MatMul of two computed tensors that ``value`` comes from through score ops."""
    stack, seen = [value], set[ir.Value]()
    while stack:
        current = stack.pop()
        node = current.producer()
        if current in seen or node is None:
            continue
        seen.add(current)
        if node.op_type == "MatMul" and len(flow.computed_inputs(node)) == 2:
            return node
        if node.op_type in _SCORE_OPS:
            stack.extend(flow.computed_inputs(node))
    return None


def _causal_mask(mask: ir.Value, flow: DataFlow) -> bool | None:
    if _triangular(mask):
        return True
    stack, seen, visited = [mask], set[ir.Value](), 0
    while stack:
        value = stack.pop()
        node = value.producer()
        if value in seen or node is None:
            continue
        seen.add(value)
        visited += 1
        if visited > _SEARCH_LIMIT:
            return None
        if node.op_type == "Trilu":
            return True
        if node.op_type in _COMPARISONS and _positions_compared(node):
            return True
        for source in node.inputs:
            if source is None:
                continue
            if not flow.is_computed(source):
                if _triangular(source):
                    return True
                continue
            stack.append(source)
    return False


def _positions_compared(node: ir.Node) -> bool:
    """Both operands of a comparison come from a ``Range``."""
    return len(node.inputs) == 2 and all(v is not None and _from_range(v) for v in node.inputs)


def _from_range(value: ir.Value) -> bool:
    stack, seen = [value], set[ir.Value]()
    while stack and len(seen) < _SEARCH_LIMIT:
        current = stack.pop()
        node = current.producer()
        if current in seen or node is None:
            continue
        seen.add(current)
        if node.op_type == "Range":
            return True
        stack.extend(v for v in node.inputs if v is not None)
    return False


def _triangular(value: ir.Value) -> bool:
    """A constant whose last two axes are square and lower-triangular: one value on and
    below the diagonal, another above it."""
    if value.shape is not None and (len(value.shape) < 2 or value.shape.dims[-1] != value.shape.dims[-2]):
        return False
    array = constant_array(value)
    if array is None or array.ndim < 2 or array.shape[-1] != array.shape[-2] or array.shape[-1] < 2:
        return False
    size = array.shape[-1]
    above = np.triu(np.ones((size, size), dtype=bool), 1)
    upper, lower = array[..., above], array[..., ~above]
    return bool(np.all(upper == upper.flat[0]) and np.all(lower == lower.flat[0]) and upper.flat[0] != lower.flat[0])
