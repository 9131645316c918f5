"""onnxgrow: grow trained ONNX models without changing what they compute.

The public API is imported on first use (``onnxgrow.widen`` loads numpy, onnx and
onnx-ir then, not before), so ``import onnxgrow`` and ``onnxgrow --help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: Public name → the module defining it.
_API = {
    "DeepenOp": "onnxgrow.deepening.api",
    "DeepenReport": "onnxgrow.deepening.api",
    "deepen": "onnxgrow.deepening.api",
    "deepen_file": "onnxgrow.deepening.api",
    "diff_models": "onnxgrow.diff",
    "GrowError": "onnxgrow.errors",
    "NotEquivalentError": "onnxgrow.errors",
    "RefusedError": "onnxgrow.errors",
    "export_model": "onnxgrow.export",
    "export_state_dict": "onnxgrow.export",
    "state_dict": "onnxgrow.export",
    "to_keras": "onnxgrow.export",
    "to_torch": "onnxgrow.export",
    "inspect_model": "onnxgrow.inspect",
    "load_model": "onnxgrow.model_io",
    "save_model": "onnxgrow.model_io",
    "GrowOptions": "onnxgrow.options",
    "VerifyOptions": "onnxgrow.options",
    "VerifyScope": "onnxgrow.options",
    "GrowthOp": "onnxgrow.pipeline",
    "grow": "onnxgrow.pipeline",
    "grow_file": "onnxgrow.pipeline",
    "VerifyReport": "onnxgrow.verification",
    "verify": "onnxgrow.verification",
    "Init": "onnxgrow.widening.channel_map",
    "WidenOp": "onnxgrow.widening.api",
    "WidenReport": "onnxgrow.widening.api",
    "widen": "onnxgrow.widening.functions",
    "widen_file": "onnxgrow.widening.functions",
    "VocabularyOp": "onnxgrow.widening.vocabulary",
    "grow_vocabulary": "onnxgrow.widening.vocabulary",
    "grow_vocabulary_file": "onnxgrow.widening.vocabulary",
    "GrowthMap": "onnxgrow.growth_map",
    "apply_growth_map": "onnxgrow.growth_map",
}

__all__ = [
    "DeepenOp",
    "DeepenReport",
    "GrowError",
    "GrowOptions",
    "GrowthMap",
    "GrowthOp",
    "Init",
    "NotEquivalentError",
    "RefusedError",
    "VerifyOptions",
    "VerifyReport",
    "VerifyScope",
    "VocabularyOp",
    "WidenOp",
    "WidenReport",
    "deepen",
    "deepen_file",
    "apply_growth_map",
    "diff_models",
    "export_model",
    "export_state_dict",
    "grow",
    "grow_file",
    "grow_vocabulary",
    "grow_vocabulary_file",
    "inspect_model",
    "load_model",
    "save_model",
    "state_dict",
    "to_keras",
    "to_torch",
    "verify",
    "widen",
    "widen_file",
    "__version__",
]


def __getattr__(name: str) -> Any:
    """Import the public name ``name`` from its module on first use."""
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'onnxgrow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from onnxgrow.deepening.api import DeepenOp, DeepenReport, deepen, deepen_file  # noqa: I001 (state_dict needs its own line for the ignore below)
    from onnxgrow.diff import diff_models
    from onnxgrow.errors import GrowError, NotEquivalentError, RefusedError
    from onnxgrow.export import export_model, export_state_dict, to_keras, to_torch
    # the function shares its name with the module onnxgrow.export.state_dict, which mypy counts as a first binding
    from onnxgrow.export import state_dict  # type: ignore[no-redef]
    from onnxgrow.growth_map import GrowthMap, apply_growth_map
    from onnxgrow.inspect import inspect_model
    from onnxgrow.model_io import load_model, save_model
    from onnxgrow.options import GrowOptions, VerifyOptions, VerifyScope
    from onnxgrow.pipeline import GrowthOp, grow, grow_file
    from onnxgrow.verification import VerifyReport, verify
    from onnxgrow.widening.api import WidenOp, WidenReport
    from onnxgrow.widening.functions import widen, widen_file
    from onnxgrow.widening.channel_map import Init
    from onnxgrow.widening.vocabulary import VocabularyOp, grow_vocabulary, grow_vocabulary_file
