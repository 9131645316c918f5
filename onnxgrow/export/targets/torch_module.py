"""``--to torch``: ``torch.save`` of the trainable
:class:`~onnxgrow.export.torch_module.OnnxModule` computing the model. Checked: the file is
loaded back (``torch.load(path, weights_only=False)``) and run on the verification inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from onnxgrow.export.targets.registry import Exported, ExportSettings, FileOutput, export_target

if TYPE_CHECKING:
    import onnx_ir as ir

    from onnxgrow.verification import Runner


@export_target("torch", FileOutput((".pt", ".pth"), default=".torch.pt"),
               help="a trainable nn.Module (.pt)",
               counts="trainable parameters (PyTorch module; torch.load(path, weights_only=False))",
               checked_as="PyTorch module")
def build_torch_module(model: ir.Model, settings: ExportSettings) -> Exported:
    import torch

    from onnxgrow.export.torch_module import run_torch, to_torch

    module = to_torch(model)
    names = module.input_names

    def load(path: Path) -> Runner:
        loaded = torch.load(path, weights_only=False)
        return lambda feeds: run_torch(loaded, feeds, names)

    trainable = sum(1 for p in module.parameters() if p.requires_grad)
    return Exported(trainable, list(module.notes), lambda path: torch.save(module, path), load)
