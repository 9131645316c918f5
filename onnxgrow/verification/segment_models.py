"""One segment of a model as an ONNX model of its own, holding only its own weights.

- The segment's nodes, serialised as they are (subgraphs inside them); its inputs, typed
  from the arrays fed to it; its outputs by name (onnxruntime infers their types); the
  model's opsets, IR version (at least 4, so that initializers need not be inputs) and
  functions.
- Its initializers are the main-graph initializers its nodes read. One stored as external
  data stays where it is: the segment's tensor names the same file, offset and length,
  relative to the one folder that holds all of the model's data files, which onnxruntime
  is given (``session.model_external_initializers_file_folder_path``) when it opens the
  segment from bytes. A segment is never written to disk and never copies a weight;
  onnxruntime reads only the segment's own weights. Initializers stored inside the model
  are serialised into the segment.
- A bfloat16 model's segment runs as its float32 twin (:mod:`onnxgrow.bfloat16`), saved
  to a temporary folder: only that segment's weights are converted.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from onnxgrow.bfloat16 import make_float32_twin
from onnxgrow.errors import GrowError
from onnxgrow.verification.runtime import Session, model_on_disk, open_session
from onnxgrow.verification.segments import Layout, Segment


class SegmentError(GrowError):
    """A segment onnxruntime cannot open or run, or cannot be fed (a non-tensor value at a cut):
    the whole model may still run."""


class SegmentSource:
    """Builds and opens the segments of one model (its :class:`Layout`)."""

    def __init__(self, lay: Layout, label: str) -> None:
        self.layout, self.label = lay, label
        self.folder = _data_folder(lay.model)

    def proto(self, segment: Segment, input_types: Mapping[str, onnx.TypeProto]) -> onnx.ModelProto:
        """The segment as a model (see the module docstring)."""
        model = self.layout.model
        nodes = self.layout.nodes[segment.start:segment.stop]
        initializers: dict[str, ir.TensorProtocol] = {}
        for index in range(segment.start, segment.stop):
            for value in self.layout.reads[index]:
                if value.is_initializer() and value.const_value is not None:
                    initializers[value.name or ""] = value.const_value
        graph = onnx.GraphProto(name=f"{model.graph.name or 'graph'}_segment")
        for node in nodes:
            proto = ir.serde.serialize_node(node)
            self._relocate_subgraphs(node, proto)
            graph.node.append(proto)
        for name, tensor in initializers.items():
            graph.initializer.append(self._tensor(name, tensor))
        for name in segment.inputs:
            graph.input.append(onnx.ValueInfoProto(name=name, type=input_types[name]))
        for name in segment.outputs:
            graph.output.append(onnx.ValueInfoProto(name=name))
        proto_model = onnx.ModelProto(ir_version=max(model.ir_version, 4), graph=graph,
                                      producer_name="onnxgrow segment")
        for domain, version in model.opset_imports.items():
            proto_model.opset_import.append(onnx.OperatorSetIdProto(domain=domain, version=version))
        for function in model.functions.values():
            proto_model.functions.append(ir.serde.serialize_function(function))
        return proto_model

    @contextlib.contextmanager
    def session(self, proto: onnx.ModelProto, providers: list[str], twin: bool, what: str) -> Iterator[Session]:
        """An onnxruntime session of the segment ``proto`` (``what`` names it in errors)."""
        if not twin:
            yield _opened(proto.SerializeToString(), providers, self.folder, what)
            return
        model = ir.serde.deserialize_model(proto)
        if self.folder is not None:
            ir.external_data.set_base_dir(model.graph, self.folder)
        make_float32_twin(model)
        try:
            with model_on_disk(model) as path:
                yield _opened(path, providers, None, what)
        finally:
            del model
            gc.collect(1)  # the twin's graph is cyclic: free its float32 weights now, scanning young objects only

    def _tensor(self, name: str, tensor: ir.TensorProtocol) -> onnx.TensorProto:
        if isinstance(tensor, ir.ExternalTensor) and self.folder is not None:
            proto = onnx.TensorProto(name=name, data_type=tensor.dtype.value, dims=list(tensor.shape.numpy()),
                                     data_location=onnx.TensorProto.EXTERNAL)
            for key, text in (("location", _relative(tensor, self.folder)), ("offset", str(tensor.offset or 0)),
                              ("length", str(tensor.nbytes))):
                proto.external_data.append(onnx.StringStringEntryProto(key=key, value=text))
            return proto
        proto = ir.serde.serialize_tensor(tensor)
        proto.name = name
        return proto

    def _relocate_subgraphs(self, node: ir.Node, proto: onnx.NodeProto) -> None:
        """Point the external tensors of ``node``'s subgraphs (serialised into ``proto``) at
        their files relative to the segment's data folder."""
        if self.folder is None:
            return
        for attr_proto in proto.attribute:
            attr = node.attributes.get(attr_proto.name)
            if attr is None:
                continue
            if attr.type == ir.AttributeType.GRAPH:
                self._relocate_graph(attr.as_graph(), attr_proto.g)
            elif attr.type == ir.AttributeType.GRAPHS:
                for graph, graph_proto in zip(attr.as_graphs(), attr_proto.graphs):
                    self._relocate_graph(graph, graph_proto)

    def _relocate_graph(self, graph: ir.Graph, proto: onnx.GraphProto) -> None:
        assert self.folder is not None
        for tensor_proto in proto.initializer:
            value = graph.initializers.get(tensor_proto.name)
            tensor = value.const_value if value is not None else None
            if isinstance(tensor, ir.ExternalTensor):
                for entry in tensor_proto.external_data:
                    if entry.key == "location":
                        entry.value = _relative(tensor, self.folder)
        for node, node_proto in zip(graph, proto.node):
            self._relocate_subgraphs(node, node_proto)


def _opened(model: Path | bytes, providers: list[str], folder: str | None, what: str) -> Session:
    try:
        return open_session(model, providers, external_folder=folder, label=what)
    except GrowError as exc:
        raise SegmentError(str(exc)) from None


def _data_folder(model: ir.Model) -> str | None:
    """The deepest folder holding every external data file of ``model`` (None: it has none)."""
    files = {os.path.realpath(v.const_value.path) for g in model.graphs() for v in g.initializers.values()
             if isinstance(v.const_value, ir.ExternalTensor)}
    if not files:
        return None
    return os.path.commonpath([os.path.dirname(f) for f in files])


def _relative(tensor: ir.ExternalTensor, folder: str) -> str:
    return Path(os.path.relpath(os.path.realpath(tensor.path), folder)).as_posix()


def type_of(array: object) -> onnx.TypeProto:
    """The ONNX type of an array fed to a segment (element type only: shapes stay open)."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"a segment can be fed tensors only, not {type(array).__name__}")
    dtype = ir.DataType.STRING if array.dtype.kind in "OSU" else ir.DataType.from_numpy(array.dtype)
    type_proto = onnx.TypeProto()
    type_proto.tensor_type.elem_type = dtype.value
    return type_proto
