"""Back to the frameworks: a grown (or any) ONNX model as a PyTorch state dict, a
trainable PyTorch module, a trainable Keras 3 model, or Keras weights.

:func:`export_model` writes any target registered in :mod:`onnxgrow.export.targets`
(``onnxgrow export --to``). The public names are imported on first use, so importing
the registry (the CLI does, for ``--help``) loads no numpy, onnx, PyTorch or Keras;
PyTorch and Keras are imported when :func:`to_torch` or :func:`to_keras` is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxgrow.lazy_names import lazy_attributes

#: Public name → the module defining it.
_API = {
    "ExportReport": "onnxgrow.export.api",
    "export_model": "onnxgrow.export.api",
    "StateDict": "onnxgrow.export.state_dict_file",
    "export_state_dict": "onnxgrow.export.state_dict_file",
    "state_dict": "onnxgrow.export.state_dict_file",
    "TARGETS": "onnxgrow.export.targets.registry",
    "to_keras": "onnxgrow.export.frameworks",
    "to_torch": "onnxgrow.export.frameworks",
}

__all__ = ["TARGETS", "ExportReport", "StateDict", "export_model", "export_state_dict", "state_dict", "to_keras",
           "to_torch"]


__getattr__, __dir__ = lazy_attributes(__name__, _API, __all__)


if TYPE_CHECKING:
    from onnxgrow.export.api import ExportReport, export_model
    from onnxgrow.export.frameworks import to_keras, to_torch
    from onnxgrow.export.state_dict_file import StateDict, export_state_dict, state_dict
    from onnxgrow.export.targets.registry import TARGETS
