"""Checking bfloat16 models on a CPU: their float32 twins.

onnxruntime's CPU provider has no bfloat16 kernels for Gemm, MatMul, Conv or most
elementwise ops, and its Python binding refuses bfloat16 arrays. A bfloat16 model is
therefore checked through its *float32 twin*: the same graph with every bfloat16
weight, value type and cast target turned into float32. bfloat16 → float32 is exact,
so the twin holds exactly the model's weights; only the arithmetic runs at float32
precision. Both models of a comparison are twinned alike, and the verdict says so.
"""

from __future__ import annotations

from collections.abc import Mapping

import ml_dtypes
import numpy as np
import onnx_ir as ir

_BF16 = ir.DataType.BFLOAT16
_F32 = ir.DataType.FLOAT
#: Attributes that name an element type.
_DTYPE_ATTRIBUTES = ("to", "dtype", "output_dtype")


def _values(graph: ir.Graph) -> list[ir.Value]:
    values = [*graph.inputs, *graph.outputs, *graph.initializers.values()]
    for node in graph:
        values += [v for v in (*node.inputs, *node.outputs) if v is not None]
    return values


def _tensor_attributes(node: ir.Node) -> list[ir.Attr]:
    return [a for a in node.attributes.values() if a.type == ir.AttributeType.TENSOR]


def has_bfloat16(model: ir.Model) -> bool:
    """Whether any value, weight, cast target or constant of the main graph is bfloat16."""
    graph = model.graph
    if any(v.dtype == _BF16 for v in _values(graph)):
        return True
    for node in graph:
        for name in _DTYPE_ATTRIBUTES:
            attr = node.attributes.get(name)
            if attr is not None and attr.type == ir.AttributeType.INT and attr.as_int() == _BF16.value:
                return True
        if any(a.as_tensor().dtype == _BF16 for a in _tensor_attributes(node)):
            return True
    return False


def _as_float32(tensor: ir.TensorProtocol, name: str | None) -> ir.Tensor:
    return ir.Tensor(tensor.numpy().astype(np.float32), name=name)


def make_float32_twin(model: ir.Model) -> None:
    """Turn ``model`` (a private copy) into its float32 twin, in place."""
    graph = model.graph
    for value in graph.initializers.values():
        if value.const_value is not None and value.const_value.dtype == _BF16:
            value.const_value = _as_float32(value.const_value, value.name)
    for value in _values(graph):
        if value.dtype == _BF16:
            value.dtype = _F32
    for node in graph:
        for name in _DTYPE_ATTRIBUTES:
            attr = node.attributes.get(name)
            if attr is not None and attr.type == ir.AttributeType.INT and attr.as_int() == _BF16.value:
                node.attributes[name] = ir.AttrInt64(name, _F32.value)
        for attr in _tensor_attributes(node):
            if attr.as_tensor().dtype == _BF16:
                node.attributes[attr.name] = ir.AttrTensor(attr.name, _as_float32(attr.as_tensor(), None))


def float32_feeds(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The same inputs with bfloat16 arrays as (exactly equal) float32 arrays."""
    return {name: a.astype(np.float32) if a.dtype == ml_dtypes.bfloat16 else a for name, a in feeds.items()}
