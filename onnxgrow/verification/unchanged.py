"""Whether a candidate's segment computes exactly what the reference's does.

It does when its nodes are the reference segment's, one for one (op type, domain, inputs
and outputs by name, attributes; node names and doc strings aside), and every
initializer they read holds the same bytes. Then, fed bit-identical inputs, it gives
bit-identical outputs (onnxruntime's CPU kernels are deterministic), and the check hands
the candidate the reference's outputs instead of running the segment again
(docs/design.md §6). Weights are compared byte for byte, in bounded blocks read from
their files (two tensors at the same offset of the same file are the same without
reading), so a saved model whose untouched weights were misplaced is still caught.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import onnx_ir as ir

from onnxgrow.verification.segments import Layout, Segment

#: Weights are compared in blocks of this many bytes.
COMPARE_BLOCK_BYTES = 16 * 2**20


def same_computation(reference: Layout, ref_segment: Segment, candidate: Layout, cand_segment: Segment) -> bool:
    """Whether the two segments are the same nodes reading the same weights (module docstring)."""
    ref_nodes = reference.nodes[ref_segment.start:ref_segment.stop]
    cand_nodes = candidate.nodes[cand_segment.start:cand_segment.stop]
    if len(ref_nodes) != len(cand_nodes) or ref_segment.inputs != cand_segment.inputs:
        return False
    if not all(same_node(a, b) for a, b in zip(ref_nodes, cand_nodes)):
        return False
    with _Files() as files:
        for index in range(ref_segment.start, ref_segment.stop):
            cand_reads = {v.name: v for v in candidate.reads[index - ref_segment.start + cand_segment.start]}
            for value in reference.reads[index]:
                other = cand_reads.get(value.name)
                if other is None or value.is_initializer() != other.is_initializer():
                    return False
                if value.is_initializer() and not same_tensor(value.const_value, other.const_value, files):
                    return False
    return True


class _Files:
    """Data files opened for reading, each once, closed together."""

    def __init__(self) -> None:
        self.handles: dict[str, BinaryIO] = {}

    def __enter__(self) -> _Files:
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self.handles.values():
            handle.close()

    def open(self, path: str) -> BinaryIO:
        if path not in self.handles:
            self.handles[path] = open(path, "rb")  # noqa: SIM115  (closed by __exit__)
        return self.handles[path]


def same_arrays(a: object, b: object) -> bool:
    """Whether two runtime values are the same bits (dtype, shape and bytes)."""
    if not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray):
        return False
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a is b:
        return True
    if a.dtype.kind in "OSU":
        return bool(np.array_equal(a, b))
    if a.dtype.hasobject or b.dtype.hasobject or a.dtype.itemsize == 0:
        return a.tobytes() == b.tobytes()
    flat_a, flat_b = _bytes_of(a), _bytes_of(b)
    step = COMPARE_BLOCK_BYTES
    return all(np.array_equal(flat_a[i:i + step], flat_b[i:i + step]) for i in range(0, flat_a.size, step))


def _bytes_of(array: np.ndarray) -> np.ndarray:
    """The array's bytes as a flat uint8 view (a copy only where it is not C-contiguous):
    compared block by block, two activations of a weight's size are not copied whole."""
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def same_node(a: ir.Node, b: ir.Node) -> bool:
    """Whether two nodes are the same op with the same inputs and outputs by name and the same
    attributes (subgraphs compared as serialised); names and doc strings aside."""
    if (a.op_type, a.domain, a.overload) != (b.op_type, b.domain, b.overload):
        return False
    if [v.name if v is not None else None for v in a.inputs] != [v.name if v is not None else None for v in b.inputs]:
        return False
    if [v.name for v in a.outputs] != [v.name for v in b.outputs]:
        return False
    if set(a.attributes) != set(b.attributes):
        return False
    return all(_same_attribute(attr, b.attributes[name]) for name, attr in a.attributes.items())


def _same_attribute(a: ir.Attr, b: ir.Attr) -> bool:
    if a.type != b.type or a.is_ref() != b.is_ref():
        return False
    if a.is_ref():
        return a.ref_attr_name == b.ref_attr_name
    if a.type == ir.AttributeType.TENSOR:
        return same_tensor(a.as_tensor(), b.as_tensor())
    if a.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS, ir.AttributeType.TENSORS,
                  ir.AttributeType.SPARSE_TENSOR, ir.AttributeType.SPARSE_TENSORS,
                  ir.AttributeType.TYPE_PROTO, ir.AttributeType.TYPE_PROTOS):
        return bool(ir.serde.serialize_attribute(a).SerializeToString(deterministic=True)
                    == ir.serde.serialize_attribute(b).SerializeToString(deterministic=True))
    return bool(a.value == b.value)


def same_tensor(a: ir.TensorProtocol | None, b: ir.TensorProtocol | None, files: _Files | None = None) -> bool:
    """Whether two tensors hold the same dtype, shape and bytes."""
    if a is None or b is None:
        return a is b
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if isinstance(a, ir.ExternalTensor) and isinstance(b, ir.ExternalTensor):
        if os.path.realpath(a.path) == os.path.realpath(b.path) and (a.offset or 0) == (b.offset or 0):
            return True
    elif not isinstance(a, ir.ExternalTensor) and not isinstance(b, ir.ExternalTensor):
        return a.tobytes() == b.tobytes()  # both in memory already
    with contextlib.ExitStack() as stack:
        files = files or stack.enter_context(_Files())
        return all(x == y for x, y in itertools.zip_longest(_blocks(a, files), _blocks(b, files)))


def _blocks(tensor: ir.TensorProtocol, files: _Files) -> Iterator[bytes]:
    """The tensor's bytes in blocks of :data:`COMPARE_BLOCK_BYTES`, read from its file when it
    lies in one (not mapped, so that they leave no trace in the process's memory)."""
    if isinstance(tensor, ir.ExternalTensor):
        handle = files.open(tensor.path)
        offset, left = tensor.offset or 0, tensor.nbytes
        while left > 0:
            block = os.pread(handle.fileno(), min(COMPARE_BLOCK_BYTES, left), offset)
            if not block:
                return
            offset += len(block)
            left -= len(block)
            yield block
        return
    data = tensor.tobytes()
    for start in range(0, len(data), COMPARE_BLOCK_BYTES):
        yield data[start:start + COMPARE_BLOCK_BYTES]
