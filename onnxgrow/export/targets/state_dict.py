"""``--to state-dict``: every weight under its framework name in PyTorch layout, as a
``.pt``/``.pth`` (``torch.save``) or ``.safetensors`` file
(:mod:`onnxgrow.export.state_dict_file`). A state dict has no code to run, so nothing is
compared; its names are the ones the ``--to torch`` module registers its parameters under.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxgrow.export.targets.registry import Exported, ExportSettings, FileOutput, export_target

if TYPE_CHECKING:
    import onnx_ir as ir


@export_target("state-dict", FileOutput((".pt", ".pth", ".safetensors")),
               help="named weights (.pt or .safetensors)",
               counts="tensors (PyTorch state dict)",
               not_checked="a state dict has no code to run (--to torch runs the same names and layouts)")
def build_state_dict(model: ir.Model, settings: ExportSettings) -> Exported:
    from onnxgrow.export.state_dict_file import state_dict, write_state_dict

    result = state_dict(model)
    return Exported(len(result.tensors), result.notes(), lambda path: write_state_dict(result, path))
