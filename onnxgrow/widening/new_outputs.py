"""New output classes: growing the last layer's outputs (``widen --new-outputs``).

The last layer is a layer whose channel group reaches model outputs and feeds no other
layer. Growing its output axis from C to C' appends classes C..C'-1 at the end of the
output's last axis. Each class has its own weight row, so the old logits do not change;
the check compares the grown outputs restricted to the old classes with the original.

New classes start from ``zero-pad`` (every per-class constant of the new classes 0:
weight rows, bias, any scale on the way, so a new logit is 0) or ``random-pad`` (weight
rows drawn with the weight's standard deviation, per-class constants copied from an old
class).

A Softmax or LogSoftmax over the classes gives every new logit probability mass. Two
choices (:class:`OldProbabilities`):

- ``exact``: the new classes' bias is :data:`NEW_CLASS_BIAS` (-1e4). ``exp(-1e4 - max)``
  underflows to exactly 0 in float16, bfloat16, float32 and float64 (their smallest
  positive numbers are above ``exp(-104)``), so the old probabilities are exactly the
  original ones and the new classes start at probability 0. This needs a bias that only
  reshapes stand between and the Softmax (a Gemm's or Conv's bias, or the Add after a
  MatMul); otherwise it is refused.
- ``renormalised``: the new logits stay as initialised; the old probabilities shrink by
  one common factor per sample, so the check renormalises the grown probabilities over
  the old classes before comparing them (LogSoftmax: subtracts their logsumexp).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import onnx_ir as ir

from onnxgrow.constants import find_constant
from onnxgrow.errors import RefusedError
from onnxgrow.graph import node_label
from onnxgrow.options import parse_choice
from onnxgrow.widening.channel_map import Init
from onnxgrow.widening.context import GroupContext
from onnxgrow.widening.layout import Embedding
from onnxgrow.widening.rules.common import fill

#: The bias that keeps the old probabilities exact: exp(-1e4) is 0 in every float type.
NEW_CLASS_BIAS = -1.0e4
#: Ops that only reshape, looked through between a bias and the Softmax.
_RESHAPES = frozenset({"Identity", "Flatten", "Reshape", "Squeeze", "Unsqueeze"})
_NORMALISED = {"Softmax": "softmax", "LogSoftmax": "log_softmax"}


@dataclass
class OutputClasses:
    """What a group that grows output classes found while it was closed: the model outputs
    it reaches (with the way each carries the classes) and the Softmax/LogSoftmax nodes
    that normalise over them (:attr:`GroupContext.classes <onnxgrow.widening.context.GroupContext.classes>`)."""

    outputs: dict[ir.Value, Embedding] = field(default_factory=dict)
    normalisers: list[ir.Node] = field(default_factory=list)


class OldProbabilities(str, Enum):
    """What a Softmax over grown classes keeps of the old probabilities."""

    EXACT = "exact"
    RENORMALISED = "renormalised"


def parse_old_probabilities(value: str | OldProbabilities) -> OldProbabilities:
    return parse_choice(OldProbabilities, value, "--old-probabilities")


def check_init(init: Init) -> None:
    """New classes start from zero or random rows; net2wider would copy old classes."""
    if init is Init.NET2WIDER:
        raise RefusedError("--new-outputs takes --init zero-pad (new classes start at logit 0) or "
                           "random-pad (random weight rows), not net2wider", None)


def classes_of(ctx: GroupContext) -> OutputClasses:
    """The output classes of a group planned with them."""
    assert ctx.classes is not None, "the group was planned without output classes"
    return ctx.classes


def check_last_layer(ctx: GroupContext, name: str) -> None:
    """Refuse a layer that feeds another layer, or whose classes are not the outputs' last axis."""
    if ctx.contractors:
        ctx.refuse(ctx.contractors[0], f"--new-outputs grows the last layer only, and {name} is not the "
                                       "last layer: its outputs feed this layer")
    if not classes_of(ctx).outputs:
        ctx.refuse(None, "--new-outputs needs a layer whose outputs are model outputs")
    for value, embedding in classes_of(ctx).outputs.items():
        if embedding.axis != -1 or not embedding.layout.is_plain:
            ctx.refuse(value.producer(), f"the classes reach model output {value.name!r} on another axis "
                                         "than its last one; --new-outputs grows the last axis")


@dataclass
class GrownOutputs:
    """What the check compares: output name → (axis, old size), renormalised outputs, words."""

    outputs: dict[str, tuple[int, int]]
    renormalise: dict[str, str]
    words: str


def finish(ctx: GroupContext, init: Init, old: OldProbabilities, name: str) -> GrownOutputs:
    """After the group's rewrite: start the new classes (zero rows, the Softmax bias) and say
    what is preserved. Call :func:`plan_probabilities` before rewriting to refuse early.
    Units the growth gave itself (``append`` edits: a vocabulary head's new rows) stay."""
    found = classes_of(ctx)
    if init is Init.ZERO_PAD:
        for edit in list(ctx.edits):
            for axis_edit in edit.axes:
                if axis_edit.kind in ("produce", "gather") and axis_edit.fresh.any():
                    ctx.edit(edit.node, edit.input_index, _filler(axis_edit.axis, axis_edit.fresh, 0.0))
    if old is OldProbabilities.EXACT:
        for node, index in plan_probabilities(ctx, old).values():
            ctx.edit(node, index, _filler(-1, _fresh_along(ctx, node, index), NEW_CLASS_BIAS))
    n, q = ctx.width, ctx.cmap.q if ctx.cmap is not None else ctx.width
    outputs = {value.name or "": (-1, n) for value in found.outputs}
    renormalise: dict[str, str] = {}
    if found.normalisers and old is OldProbabilities.RENORMALISED:
        for value in found.outputs:
            normaliser = _normaliser_of(value)
            if normaliser is not None:
                renormalise[value.name or ""] = _NORMALISED[normaliser.op_type]
    names = ", ".join(outputs)
    if not found.normalisers:
        kept = "old logits exact"
    elif old is OldProbabilities.EXACT:
        kept = "old probabilities exact (new classes start at probability 0)"
    else:
        kept = "old probabilities renormalised over the old classes (the new classes take probability mass)"
    return GrownOutputs(outputs, renormalise, f"{names} restricted to the old {n} of {q} classes: {kept} ({name})")


def _filler(axis: int, where: np.ndarray, value: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda array: fill(array, axis, where, value)


def plan_probabilities(ctx: GroupContext, old: OldProbabilities) -> dict[ir.Node, tuple[ir.Node, int]]:
    """For each Softmax over the classes, the node and input holding the bias that keeps the old
    probabilities exact; refuses when there is none (or, renormalised, when the Softmax is not
    what the model outputs)."""
    found: dict[ir.Node, tuple[ir.Node, int]] = {}
    for softmax in classes_of(ctx).normalisers:
        if old is OldProbabilities.RENORMALISED:
            if not any(_normaliser_of(v) is softmax for v in classes_of(ctx).outputs):
                ctx.refuse(softmax, "its probabilities are not a model output, so they cannot be renormalised "
                                    "for the check; use --old-probabilities exact")
            continue
        found[softmax] = _bias_before(ctx, softmax)
    return found


def _bias_before(ctx: GroupContext, softmax: ir.Node) -> tuple[ir.Node, int]:
    value = softmax.inputs[0]
    node = value.producer() if value is not None else None
    while node is not None and node.op_type in _RESHAPES and node.inputs and node.inputs[0] is not None:
        node = node.inputs[0].producer()
    hint = "; use --old-probabilities renormalised"
    if node is None:
        raise ctx.refuse(softmax, "no bias before it can hold the new classes' logit" + hint)
    if node.op_type in ("Gemm", "Conv") and node in ctx.producers:
        if not _spans_classes(ctx, node.inputs[2] if len(node.inputs) > 2 else None):
            raise ctx.refuse(node, "it has no bias over the classes to hold the new classes' logit" + hint)
        return node, 2
    if node.op_type == "Add":
        for index, operand in enumerate(node.inputs):
            if _spans_classes(ctx, operand):
                return node, index
    raise ctx.refuse(softmax, f"{node_label(node)} stands between the classes' bias and it, so no bias can "
                              "keep the old probabilities exact" + hint)


def _spans_classes(ctx: GroupContext, value: ir.Value | None) -> bool:
    """Whether ``value`` is a constant whose last axis runs over the classes (before or after growing)."""
    ref = find_constant(value)
    if ref is None or len(ref.tensor.shape) == 0:
        return False
    last = ref.tensor.shape.numpy()[-1]
    return last == ctx.width or (ctx.cmap is not None and last == ctx.cmap.q)


def _fresh_along(ctx: GroupContext, node: ir.Node, index: int) -> np.ndarray:
    """The new classes' positions of the constant at ``node.inputs[index]`` (last axis)."""
    for edit in reversed(ctx.edits):
        if edit.node is node and edit.input_index == index:
            for axis_edit in edit.axes:
                if axis_edit.kind == "gather":
                    return axis_edit.fresh
    assert ctx.cmap is not None
    return ctx.cmap.fresh


def _normaliser_of(value: ir.Value) -> ir.Node | None:
    """The Softmax/LogSoftmax that computes ``value`` (through reshapes), if any."""
    node = value.producer()
    while node is not None and node.op_type in _RESHAPES and node.inputs and node.inputs[0] is not None:
        node = node.inputs[0].producer()
    return node if node is not None and node.op_type in _NORMALISED else None
