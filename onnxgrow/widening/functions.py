"""``onnxgrow.widen`` and ``onnxgrow.widen_file``: the widening operations behind one call.

A call with ``widths`` runs a :class:`~onnxgrow.widening.api.WidenOp`, or with
``new_outputs`` a :class:`~onnxgrow.widening.new_outputs_op.NewOutputsOp` (a last layer's
classes grow); a call with ``heads`` runs a :class:`~onnxgrow.widening.heads_op.HeadsOp`; a
call with ``rows`` a :class:`~onnxgrow.widening.vocabulary.VocabularyOp`. A call with several
of them runs them as one :class:`~onnxgrow.widening.composite.CompositeOp`, in that order (one
plan, one check, one save). Each is a growth operation of the one pipeline
(:mod:`onnxgrow.pipeline`) with its own report. Names may be patterns, sizes multiples or
increases (:class:`~onnxgrow.sizes.Size`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import onnx_ir as ir

from onnxgrow.errors import GrowError
from onnxgrow.options import GrowOptions
from onnxgrow.pipeline import GrowthOp, grow, grow_file
from onnxgrow.sizes import Size
from onnxgrow.widening import new_outputs as classes
from onnxgrow.widening.api import WidenOp, WidenReport
from onnxgrow.widening.channel_map import Init
from onnxgrow.widening.composite import CompositeOp, CompositeReport
from onnxgrow.widening.heads_op import HeadsOp, HeadsReport
from onnxgrow.widening.new_outputs_op import NewOutputsOp, NewOutputsReport
from onnxgrow.widening.vocabulary import VocabularyOp, VocabularyReport

#: What a widening call reports, by the operation it ran.
AnyWidenReport = WidenReport | NewOutputsReport | HeadsReport | VocabularyReport | CompositeReport
#: Sizes by layer name or pattern.
Sizes = Mapping[str, int | str | Size]


def widening_op(widths: Sizes | None = None, *, heads: Sizes | None = None, kv_heads: Sizes | None = None,
                rows: Sizes | None = None, head: str | None = None, init: str | Init | None = None,
                noise: float = 0.0, seed: int = 0, new_outputs: bool = False,
                old_probabilities: str | classes.OldProbabilities = classes.OldProbabilities.EXACT,
                ) -> GrowthOp[Any, Any]:
    """The operation a widening request names: layer widths (or output classes), attention head
    counts, vocabulary rows, or several of them as one composite (in that order)."""
    if kv_heads and not heads:
        raise GrowError("key/value head counts need head counts (--heads) as well")
    if new_outputs and not widths:
        raise GrowError("--new-outputs grows a last layer's classes: give them with --to")
    if new_outputs and noise:
        raise GrowError("--noise splits copied units of a widening; --new-outputs starts new classes "
                        "from zero-pad or random-pad rows")
    if head is not None and not rows:
        raise GrowError("--head goes with --rows (the LM head of a grown vocabulary)")
    parts: list[GrowthOp[Any, Any]] = []
    if widths or not (heads or rows):
        parts.append(NewOutputsOp(widths or {}, init=init, seed=seed, old_probabilities=old_probabilities)
                     if new_outputs else WidenOp(widths or {}, init=init, noise=noise, seed=seed))
    if heads:
        parts.append(HeadsOp(heads, kv_heads=kv_heads, init=init if init is not None else Init.NET2WIDER,
                             noise=noise, seed=seed))
    if rows:
        parts.append(VocabularyOp(rows, head=head, init=init, seed=seed, old_probabilities=old_probabilities))
    return parts[0] if len(parts) == 1 else CompositeOp(parts)


def widen(
    model: ir.Model | str | os.PathLike[str],
    widths: Sizes | None = None,
    *,
    heads: Sizes | None = None,
    kv_heads: Sizes | None = None,
    rows: Sizes | None = None,
    head: str | None = None,
    init: str | Init | None = None,
    noise: float = 0.0,
    seed: int = 0,
    new_outputs: bool = False,
    old_probabilities: str | classes.OldProbabilities = classes.OldProbabilities.EXACT,
) -> tuple[ir.Model, AnyWidenReport]:
    """Widen each named layer (and its channel group) to the given width, and/or grow each
    named attention module to the given head count (``heads``; ``kv_heads``: key/value head
    counts) and each named embedding table to the given rows (``rows``; ``head``: an untied
    LM head growing with it); ``new_outputs``: the widths are a last layer's classes. Names may
    be patterns, sizes multiples (``"2x"``) or increases (``"+8"``).

    ``model`` is a path or an ``ir.Model`` (modified in place and returned); on a refusal
    the model is unchanged.
    """
    return grow(model, widening_op(widths, heads=heads, kv_heads=kv_heads, rows=rows, head=head, init=init, noise=noise,
                                   seed=seed, new_outputs=new_outputs, old_probabilities=old_probabilities))


def widen_file(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str] | None,
    widths: Sizes | None = None,
    *,
    heads: Sizes | None = None,
    kv_heads: Sizes | None = None,
    rows: Sizes | None = None,
    head: str | None = None,
    init: str | Init | None = None,
    noise: float = 0.0,
    seed: int = 0,
    options: GrowOptions | None = None,
    new_outputs: bool = False,
    old_probabilities: str | classes.OldProbabilities = classes.OldProbabilities.EXACT,
) -> AnyWidenReport:
    """:func:`widen` on the model file ``source``, written to ``output`` once onnxruntime has
    checked it (:func:`onnxgrow.pipeline.grow_file`)."""
    op = widening_op(widths, heads=heads, kv_heads=kv_heads, rows=rows, head=head, init=init, noise=noise, seed=seed,
                     new_outputs=new_outputs, old_probabilities=old_probabilities)
    return grow_file(source, output, op, options)
