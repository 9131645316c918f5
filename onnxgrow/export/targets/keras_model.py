"""``--to keras``: a ``.keras`` file of the trainable Keras 3 functional model computing the
model (:mod:`onnxgrow.export.keras_model`). Checked: the file is loaded back
(``keras.saving.load_model``) and run on the verification inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from onnxgrow.export.targets.registry import Exported, ExportSettings, FileOutput, export_target

if TYPE_CHECKING:
    import onnx_ir as ir

    from onnxgrow.verification import Runner


@export_target("keras", FileOutput((".keras",)),
               help="a trainable Keras 3 model (.keras)",
               counts="trainable variables (Keras model; keras.saving.load_model(path))",
               checked_as="Keras model")
def build_keras_model(model: ir.Model, settings: ExportSettings) -> Exported:
    from onnxgrow.export.keras_model import import_keras, run_keras, to_keras
    from onnxgrow.verification import input_specs, name_of

    keras = import_keras()
    exported = to_keras(model)
    output_names = [name_of(v) for v in model.graph.outputs]
    input_names = list(input_specs(model))

    def load(path: Path) -> Runner:
        loaded = keras.saving.load_model(path)
        return lambda feeds: run_keras(loaded, feeds, input_names, output_names)

    return Exported(len(exported.model.trainable_variables), exported.notes(),
                    lambda path: exported.model.save(path), load)
