"""onnxgrow: grow trained ONNX models without changing what they compute."""

from onnxgrow.diff import diff_models
from onnxgrow.errors import GrowError, NotEquivalentError, RefusedError
from onnxgrow.export import export_model, export_state_dict, state_dict, to_keras, to_torch
from onnxgrow.model_io import load_model, save_model
from onnxgrow.verification import VerifyReport, verify
from onnxgrow.widening import Init, WidenReport, widen
from onnxgrow.widening.api import widen_file
from onnxgrow.inspect import inspect_model
from onnxgrow.deepening import DeepenReport, deepen, deepen_file

__version__ = "0.1.0"

__all__ = [
    "DeepenReport",
    "GrowError",
    "export_model",
    "export_state_dict",
    "state_dict",
    "to_keras",
    "to_torch",
    "Init",
    "WidenReport",
    "inspect_model",
    "widen",
    "widen_file",
    "deepen",
    "deepen_file",
    "NotEquivalentError",
    "RefusedError",
    "VerifyReport",
    "__version__",
    "diff_models",
    "load_model",
    "save_model",
    "verify",
]
