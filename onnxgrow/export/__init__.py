"""Back to the frameworks: a grown (or any) ONNX model as a PyTorch state dict, a
trainable PyTorch module, or a trainable Keras 3 model.

PyTorch and Keras are optional: they are imported when :func:`to_torch` or
:func:`to_keras` is called.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import onnx_ir as ir

from onnxgrow.export.api import FORMATS, ExportReport, export_model
from onnxgrow.export.naming import ParameterTable, parameter_table
from onnxgrow.export.state_dict import StateDict, export_state_dict, state_dict

if TYPE_CHECKING:
    from onnxgrow.export.keras_model import KerasExport
    from onnxgrow.export.torch_module import OnnxModule


def to_torch(model: ir.Model | str | os.PathLike[str]) -> OnnxModule:
    """A trainable ``nn.Module`` computing ``model``; see :mod:`onnxgrow.export.torch_module`."""
    from onnxgrow.export.torch_module import to_torch as build

    return build(model)


def to_keras(model: ir.Model | str | os.PathLike[str]) -> KerasExport:
    """A trainable Keras 3 model computing ``model`` (``.model``) and the export's notes;
    see :mod:`onnxgrow.export.keras_model`."""
    from onnxgrow.export.keras_model import to_keras as build

    return build(model)


__all__ = [
    "FORMATS",
    "ExportReport",
    "ParameterTable",
    "StateDict",
    "export_model",
    "export_state_dict",
    "parameter_table",
    "state_dict",
    "to_keras",
    "to_torch",
]
