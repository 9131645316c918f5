"""A PyTorch state dict from an ONNX model: every weight under its framework name, in
PyTorch layout (the naming rules are in :mod:`onnxgrow.parameter_names`).

Saved as ``.safetensors`` (:mod:`onnxgrow.export.safetensors_file`) or, for any other
suffix (``.pt``, ``.pth``, ``.bin``), as ``torch.save`` saves a dict of tensors, which
``torch.load(path)`` reads with its default ``weights_only=True``
(:mod:`onnxgrow.export.torch_file`). Neither needs PyTorch or the safetensors package to
write. Both write one tensor at a time, read in PyTorch layout from the memory-mapped
weights, and hold no other: peak memory is about the largest tensor, not the model. Tied
weights share storage in ``.pt`` like ``nn.Module.state_dict()``; safetensors stores each
copy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir

from onnxgrow.atomic import atomic_output
from onnxgrow.export.safetensors_file import SUFFIX as SAFETENSORS_SUFFIX
from onnxgrow.export.safetensors_file import write_safetensors
from onnxgrow.export.torch_file import write_torch_file
from onnxgrow.model_io import load_model
from onnxgrow.parameter_names import ParameterTable, parameter_table


@dataclass
class StateDict:
    """The exported tensors (framework layout) and what naming them found. The arrays are
    views of the memory-mapped weights where the layout allows (:meth:`ParameterTable.arrays`),
    so a StateDict of a large model holds no weights until they are read."""

    tensors: dict[str, np.ndarray]
    table: ParameterTable

    def notes(self) -> list[str]:
        """Folded BatchNorms, entries added for strict loading, tied names, unnamed weights."""
        return self.table.notes()


def state_dict(model: ir.Model | str | os.PathLike[str]) -> StateDict:
    """Every weight of ``model`` (a path or an ``ir.Model``) under its framework name."""
    if not isinstance(model, ir.Model):
        model = load_model(model)
    table = parameter_table(model)
    return StateDict(table.arrays(), table)


def save_state_dict(result: StateDict, output: str | os.PathLike[str]) -> Path:
    """Write the tensors to ``output`` atomically (:func:`write_state_dict`)."""
    out = Path(output)
    with atomic_output(out) as tmp:
        write_state_dict(result, tmp)
    return out


def write_state_dict(result: StateDict, path: Path) -> None:
    """Write the tensors to ``path``, one at a time: safetensors by suffix, else
    ``torch.save``'s format (tied names sharing their tensor)."""
    if path.suffix == SAFETENSORS_SUFFIX:
        write_safetensors(path, result.tensors)
    else:
        write_torch_file(path, result.tensors, {a: n for a, n in result.table.aliases.items() if a in result.tensors})


def export_state_dict(model: ir.Model | str | os.PathLike[str], output: str | os.PathLike[str]) -> StateDict:
    """Name every weight of ``model`` and save them to ``output`` (``.pt`` or ``.safetensors``)."""
    result = state_dict(model)
    save_state_dict(result, output)
    return result
