"""``--to hf``: a Hugging Face model folder (:mod:`onnxgrow.export.hf_folder`): the
original's config.json with the sizes the growths changed, the weights in
``model.safetensors`` (sharded above ``--max-shard-size``), the tokenizer and generation
files. Checked: the folder is loaded with ``from_pretrained`` of the config's model class
(no missing or unexpected keys) and run on the verification inputs, made inputs the model is
defined for (:func:`onnxgrow.export.hf_transformers.model_inputs`: attention masks padded on
the right, images of the config's size).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from onnxgrow.export.targets.registry import Exported, ExportSettings, FolderOutput, export_target

if TYPE_CHECKING:
    import onnx_ir as ir

    from onnxgrow.verification import Runner


@export_target("hf", FolderOutput("-hf", "config.json"),
               help="a Hugging Face folder for from_pretrained (the original's config.json with the grown "
                    "sizes, model.safetensors, tokenizer files)",
               counts="tensors (Hugging Face folder; AutoModel...from_pretrained(folder))",
               checked_as="transformers model", options=("config", "max_shard_size"))
def build_hf_folder(model: ir.Model, settings: ExportSettings) -> Exported:
    from onnxgrow.export.hf_folder import config_path, hf_folder, write_folder
    from onnxgrow.export.hf_transformers import hf_runner, import_transformers, model_inputs, saved_weights
    from onnxgrow.verification import name_of

    config_file = config_path(settings.source, settings.config)
    import_transformers()
    folder = hf_folder(model, config_file, saved_weights)
    output_names = [name_of(v) for v in model.graph.outputs]

    def load(path: Path) -> Runner:
        return hf_runner(path, folder.config, output_names)

    return Exported(len(folder.weights), folder.notes,
                    lambda path: write_folder(path, folder, settings.max_shard_size), load, model_inputs(folder.config))
