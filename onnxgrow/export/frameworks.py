"""``to_torch`` and ``to_keras``: the framework models, with PyTorch or Keras imported only
when one is asked for (importing this module loads neither)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx_ir as ir

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
