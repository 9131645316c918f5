"""If: the branch the condition picks, run in the node's scope.

An ``If`` whose condition is a constant never gets here: the program holds the steps of the
branch it takes instead (:mod:`onnxgrow.export.program`). Any other runs one of its two
branches per call, whichever the one-element condition picks, so the module's graph can
differ between calls, as the ONNX model's does.
"""

from __future__ import annotations

from onnxgrow.export.torch_ops.registry import Inputs, OpCall, Tensor, torch_op


@torch_op("If", outputs=64)
def if_(call: OpCall, inputs: Inputs) -> tuple[Tensor, ...]:
    """``then_branch`` when the condition is true, ``else_branch`` otherwise."""
    condition = inputs[0]
    if condition.numel() != 1:
        raise call.refuse(f"its condition has {condition.numel()} elements, not one")
    return call.branches["then_branch" if bool(condition.reshape(())) else "else_branch"]()
