"""Small ONNX graphs written with ``onnx.helper``, for widening rules real exports do not reach.

:func:`save_graph` builds a float graph from nodes, inputs/outputs and initializers
(typing the outputs by shape inference) and saves it with :func:`graph_builders.save`;
:func:`assert_widens_exactly` widens one layer and has onnxruntime compare the result with
the saved original.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from graph_builders import save
from onnx import TensorProto, helper, numpy_helper

from onnxgrow import load_model, verify, widen
from onnxgrow.widening import WidenReport
from onnxgrow.widening.layers import find_layer

MAX_REL_ERROR = 1e-5


def save_graph(
    path: Path,
    nodes: Sequence[onnx.NodeProto],
    inputs: Mapping[str, Sequence[int | str]],
    outputs: Sequence[str],
    initializers: Mapping[str, np.ndarray],
    opset: int = 18,
) -> Path:
    """Save a checked model (:func:`graph_builders.save`) with float ``inputs`` (name → shape)
    and ``outputs`` typed by onnx shape inference."""
    input_infos = [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))
                   for name, shape in inputs.items()]
    arrays = {name: np.asarray(array) for name, array in initializers.items()}
    draft = helper.make_model(
        helper.make_graph(list(nodes), "g", input_infos,
                          [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs],
                          [numpy_helper.from_array(array, name) for name, array in arrays.items()]),
        opset_imports=[helper.make_opsetid("", opset)])
    inferred = onnx.shape_inference.infer_shapes(draft, strict_mode=True)
    return save(list(nodes), input_infos, list(inferred.graph.output), arrays, path, opset)


def weights(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Normal float32 weights."""
    return rng.standard_normal(shape).astype(np.float32)


def assert_widens_exactly(path: Path, layer: str, q: int) -> WidenReport:
    """Widen ``layer`` to ``q``; onnxruntime must find the grown model equal to the original."""
    grown, report = widen(load_model(path), {layer: q})
    check = verify(path, grown)
    assert check.passed and check.max_rel_error <= MAX_REL_ERROR, check.summary()
    assert find_layer(grown, layer).width == q
    return report
