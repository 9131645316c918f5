"""A PyTorch state dict from an ONNX model: every weight under its framework name, in
PyTorch layout (the naming rules are in :mod:`onnxgrow.export.naming`).

Saved as ``.safetensors`` (safetensors' numpy API: no PyTorch needed) or, for any other
suffix (``.pt``, ``.pth``, ``.bin``), with ``torch.save`` of a dict of tensors that
``torch.load(path)`` reads with its default ``weights_only=True``. Tied weights share
storage in ``.pt`` like ``nn.Module.state_dict()``; safetensors stores each copy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir

from onnxgrow.atomic import atomic_output
from onnxgrow.errors import GrowError
from onnxgrow.export.naming import ParameterTable, parameter_table
from onnxgrow.model_io import load_model

SAFETENSORS_SUFFIX = ".safetensors"


@dataclass
class StateDict:
    """The exported tensors (framework layout) and what naming them found."""

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
    tensors = {name: param.array for name, param in table.parameters.items()}
    for alias, name in table.aliases.items():
        tensors[alias] = tensors[name]
    return StateDict(tensors, table)


def save_state_dict(result: StateDict, output: str | os.PathLike[str]) -> Path:
    """Write the tensors to ``output`` atomically: safetensors by suffix, else ``torch.save``."""
    out = Path(output)
    with atomic_output(out) as tmp:
        if out.suffix == SAFETENSORS_SUFFIX:
            _save_safetensors(result.tensors, tmp)
        else:
            _save_torch(result.tensors, result.table.aliases, tmp)
    return out


def _save_safetensors(tensors: dict[str, np.ndarray], path: Path) -> None:
    try:
        from safetensors.numpy import save_file
    except ImportError:
        raise GrowError("writing .safetensors needs the safetensors package "
                        "(pip install 'onnxgrow[torch]')") from None
    save_file({name: np.ascontiguousarray(array) for name, array in tensors.items()}, str(path))


def _save_torch(tensors: dict[str, np.ndarray], aliases: dict[str, str], path: Path) -> None:
    """Every entry its own tensor, except tied names, which share one (as in ``nn.Module.state_dict()``)."""
    try:
        import torch
    except ImportError:
        raise GrowError("writing a .pt state dict needs PyTorch (pip install 'onnxgrow[torch]'); "
                        "or write .safetensors") from None
    state = {name: torch.from_numpy(np.array(array, copy=True))
             for name, array in tensors.items() if name not in aliases}
    state.update({alias: state[name] for alias, name in aliases.items()})
    torch.save(state, path)


def export_state_dict(model: ir.Model | str | os.PathLike[str], output: str | os.PathLike[str]) -> StateDict:
    """Name every weight of ``model`` and save them to ``output`` (``.pt`` or ``.safetensors``)."""
    result = state_dict(model)
    save_state_dict(result, output)
    return result
