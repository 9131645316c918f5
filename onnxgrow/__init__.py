"""onnxgrow: grow trained ONNX models without changing what they compute.

The public API is imported on first use (``onnxgrow.widen`` loads numpy, onnx and
onnx-ir then, not before), so ``import onnxgrow`` and ``onnxgrow --help`` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from onnxgrow.lazy_names import lazy_attributes

__version__ = "0.1.0"

#: Public name → the module defining it.
_API = {
    "DeepenOp": "onnxgrow.deepening.api",
    "DeepenReport": "onnxgrow.deepening.api",
    "deepen": "onnxgrow.deepening.api",
    "deepen_file": "onnxgrow.deepening.api",
    "BlockInit": "onnxgrow.deepening.block_plan",
    "DeepenBlockOp": "onnxgrow.deepening.block_op",
    "DeepenBlockReport": "onnxgrow.deepening.block_op",
    "deepen_block": "onnxgrow.deepening.block_op",
    "deepen_block_file": "onnxgrow.deepening.block_op",
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
    "GrowthReport": "onnxgrow.pipeline",
    "growth": "onnxgrow.growths",
    "grow": "onnxgrow.pipeline",
    "grow_file": "onnxgrow.pipeline",
    "VerifyReport": "onnxgrow.verification",
    "verify": "onnxgrow.verification",
    "Init": "onnxgrow.widening.channel_map",
    "WidenOp": "onnxgrow.widening.api",
    "WidenReport": "onnxgrow.widening.api",
    "NewOutputsOp": "onnxgrow.widening.new_outputs_op",
    "NewOutputsReport": "onnxgrow.widening.new_outputs_op",
    "HeadsOp": "onnxgrow.widening.heads_op",
    "HeadsReport": "onnxgrow.widening.heads_op",
    "VocabularyReport": "onnxgrow.widening.vocabulary",
    "widen": "onnxgrow.widening.functions",
    "widen_file": "onnxgrow.widening.functions",
    "VocabularyOp": "onnxgrow.widening.vocabulary",
    "grow_vocabulary": "onnxgrow.widening.vocabulary",
    "grow_vocabulary_file": "onnxgrow.widening.vocabulary",
    "GrowthMap": "onnxgrow.growth_map",
    "apply_growth_map": "onnxgrow.growth_map",
}

__all__ = [
    "BlockInit",
    "DeepenBlockOp",
    "DeepenBlockReport",
    "DeepenOp",
    "DeepenReport",
    "GrowError",
    "GrowOptions",
    "GrowthMap",
    "GrowthOp",
    "GrowthReport",
    "HeadsOp",
    "HeadsReport",
    "Init",
    "NewOutputsOp",
    "NewOutputsReport",
    "NotEquivalentError",
    "RefusedError",
    "VerifyOptions",
    "VerifyReport",
    "VerifyScope",
    "VocabularyOp",
    "VocabularyReport",
    "WidenOp",
    "WidenReport",
    "deepen",
    "deepen_block",
    "deepen_block_file",
    "deepen_file",
    "apply_growth_map",
    "diff_models",
    "export_model",
    "export_state_dict",
    "grow",
    "grow_file",
    "grow_vocabulary",
    "grow_vocabulary_file",
    "growth",
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


__getattr__, __dir__ = lazy_attributes(__name__, _API, __all__)


if TYPE_CHECKING:
    from onnxgrow.deepening.api import DeepenOp, DeepenReport, deepen, deepen_file  # noqa: I001
    from onnxgrow.deepening.block_op import DeepenBlockOp, DeepenBlockReport, deepen_block, deepen_block_file
    from onnxgrow.deepening.block_plan import BlockInit
    from onnxgrow.diff import diff_models
    from onnxgrow.errors import GrowError, NotEquivalentError, RefusedError
    from onnxgrow.export import export_model, export_state_dict, state_dict, to_keras, to_torch
    from onnxgrow.growth_map import GrowthMap, apply_growth_map
    from onnxgrow.inspect import inspect_model
    from onnxgrow.model_io import load_model, save_model
    from onnxgrow.options import GrowOptions, VerifyOptions, VerifyScope
    from onnxgrow.growths import growth
    from onnxgrow.pipeline import GrowthOp, GrowthReport, grow, grow_file
    from onnxgrow.verification import VerifyReport, verify
    from onnxgrow.widening.api import WidenOp, WidenReport
    from onnxgrow.widening.heads_op import HeadsOp, HeadsReport
    from onnxgrow.widening.new_outputs_op import NewOutputsOp, NewOutputsReport
    from onnxgrow.widening.functions import widen, widen_file
    from onnxgrow.widening.channel_map import Init
    from onnxgrow.widening.vocabulary import VocabularyOp, VocabularyReport, grow_vocabulary, grow_vocabulary_file
