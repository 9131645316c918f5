"""``onnxgrow.widen`` and ``onnxgrow.widen_file``: the widening operations behind one call.

A call with ``widths`` runs a :class:`~onnxgrow.widening.api.WidenOp` (``new_outputs``:
a last layer's classes grow); a call with ``heads`` runs a
:class:`~onnxgrow.widening.heads_op.HeadsOp`. Both are growth operations of the one
pipeline (:mod:`onnxgrow.pipeline`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import onnx_ir as ir

from onnxgrow.errors import GrowError
from onnxgrow.options import GrowOptions
from onnxgrow.pipeline import grow, grow_file
from onnxgrow.widening import new_outputs as classes
from onnxgrow.widening.api import WidenOp, WidenReport
from onnxgrow.widening.channel_map import Init
from onnxgrow.widening.heads_op import HeadsOp


def widening_op(widths: Mapping[str, int] | None = None, *, heads: Mapping[str, int] | None = None,
                kv_heads: Mapping[str, int] | None = None, init: str | Init | None = None, noise: float = 0.0,
                seed: int = 0, new_outputs: bool = False,
                old_probabilities: str | classes.OldProbabilities = classes.OldProbabilities.EXACT,
                ) -> WidenOp | HeadsOp:
    """The operation a widening request names: layer widths, or attention head counts."""
    if heads:
        if widths:
            raise GrowError("give widths or head counts, not both: grow them one after the other")
        if new_outputs:
            raise GrowError("--new-outputs grows a last layer's classes, not attention heads")
        return HeadsOp(heads, kv_heads=kv_heads, init=init if init is not None else Init.NET2WIDER, noise=noise,
                       seed=seed)
    if kv_heads:
        raise GrowError("key/value head counts need head counts (--heads) as well")
    return WidenOp(widths or {}, init=init, noise=noise, seed=seed, new_outputs=new_outputs,
                   old_probabilities=old_probabilities)


def widen(
    model: ir.Model | str | os.PathLike[str],
    widths: Mapping[str, int] | None = None,
    *,
    heads: Mapping[str, int] | None = None,
    kv_heads: Mapping[str, int] | None = None,
    init: str | Init | None = None,
    noise: float = 0.0,
    seed: int = 0,
    new_outputs: bool = False,
    old_probabilities: str | classes.OldProbabilities = classes.OldProbabilities.EXACT,
) -> tuple[ir.Model, WidenReport]:
    """Widen each named layer (and its channel group) to the given width, or, with
    ``heads``, grow each named attention module to the given head count (``kv_heads``:
    key/value head counts); ``new_outputs`` grows a last layer's classes.

    ``model`` is a path or an ``ir.Model`` (modified in place and returned); on a refusal
    the model is unchanged.
    """
    return grow(model, widening_op(widths, heads=heads, kv_heads=kv_heads, init=init, noise=noise, seed=seed,
                                   new_outputs=new_outputs, old_probabilities=old_probabilities))


def widen_file(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str] | None,
    widths: Mapping[str, int] | None = None,
    *,
    heads: Mapping[str, int] | None = None,
    kv_heads: Mapping[str, int] | None = None,
    init: str | Init | None = None,
    noise: float = 0.0,
    seed: int = 0,
    options: GrowOptions | None = None,
    new_outputs: bool = False,
    old_probabilities: str | classes.OldProbabilities = classes.OldProbabilities.EXACT,
) -> WidenReport:
    """:func:`widen` on the model file ``source``, written to ``output`` once onnxruntime has
    checked it (:func:`onnxgrow.pipeline.grow_file`)."""
    op = widening_op(widths, heads=heads, kv_heads=kv_heads, init=init, noise=noise, seed=seed,
                     new_outputs=new_outputs, old_probabilities=old_probabilities)
    return grow_file(source, output, op, options)
