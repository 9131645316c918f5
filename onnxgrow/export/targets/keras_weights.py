"""``--to keras-weights``: each Keras layer's variables under its Keras name, in Keras
layout (:mod:`onnxgrow.export.keras_weights`): ``.weights.h5`` for ``model.load_weights``,
or ``.npz``. Like a state dict it has no code to run, so nothing is compared.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxgrow.export.targets.registry import Exported, ExportSettings, FileOutput, export_target

if TYPE_CHECKING:
    import onnx_ir as ir


@export_target("keras-weights", FileOutput((".weights.h5", ".npz")),
               help="each Keras layer's weights under its Keras name (.weights.h5 for model.load_weights, or .npz)",
               counts="variables (Keras weights; model.load_weights(path), or .npz by variable path)",
               not_checked="weights have no code to run (--to keras builds a model to compare)",
               options=("bias_before_norm",))
def build_keras_weights(model: ir.Model, settings: ExportSettings) -> Exported:
    from onnxgrow.export.keras_layout import keras_weights
    from onnxgrow.export.keras_weights import storage_notes, write_keras_weights

    weights = keras_weights(model, bias_before_norm=settings.bias_before_norm)
    weights.notes += storage_notes(weights)  # refuses, before anything is written, names stored alike
    variables = sum(len(layer.variables) for layer in weights.layers)
    return Exported(variables, weights.notes, lambda path: write_keras_weights(weights, path, model.graph.name))
