"""``export_model``: write a model as one of the registered export targets, checked.

The targets (``state-dict``, ``torch``, ``keras``, ``keras-weights``...) are registered in
:mod:`onnxgrow.export.targets`; this driver does for every one of them alike:

1. the output: the default name beside the input, the target's suffixes (or a folder),
   the output folder exists, and it is not the input model or one of its data files
   (a folder output: does not hold one) — all before the model is read;
2. load the model; check that the output's file system has room for its weights and
   memory for what the target holds (:func:`check_resources`); let the target build the
   framework object (it may refuse);
3. write it into a hidden temporary folder beside the output
   (:func:`onnxgrow.atomic.atomic_output`, or :func:`~onnxgrow.atomic.atomic_folder`),
   with the writer library's own temporary files kept in there too;
4. for a checked target, load the written output back and compare what it computes with
   onnxruntime on the verification inputs (:func:`onnxgrow.verification.verify`); a
   difference beyond tolerance raises NotEquivalentError and nothing is written;
5. rename into place.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import onnx_ir as ir

from onnxgrow.atomic import named_as, temporary_files_in
from onnxgrow.errors import NotEquivalentError
from onnxgrow.export.targets.registry import Exported, ExportSettings, ExportTarget, target_named
from onnxgrow.model_io import files_of, load_model
from onnxgrow.options import VerifyOptions
from onnxgrow.resources import check_disk, check_memory
from onnxgrow.verification import VerifyReport, sample_feeds, verify
from onnxgrow.verification.memory import CEILING_IS, memory_ceiling, model_weight_bytes

#: The check an export runs unless told otherwise.
DEFAULT_CHECK = VerifyOptions()


@dataclass
class ExportReport:
    """What :func:`export_model` wrote and noticed; ``format`` is the target's name."""

    output: Path
    format: str
    weights: int  # what the target's ``counts`` says: state-dict entries, trainable parameters...
    notes: list[str] = field(default_factory=list)
    verification: VerifyReport | None = None


def export_model(source: str | os.PathLike[str], output: str | os.PathLike[str] | None, to: str,
                 *, verify: VerifyOptions | None = DEFAULT_CHECK, bias_before_norm: bool = True,
                 config: str | os.PathLike[str] | None = None, max_shard_size: int | None = None) -> ExportReport:
    """Export the ONNX model file ``source`` as the target ``to`` (a name registered in
    :data:`onnxgrow.export.targets.TARGETS`) to ``output`` (default: beside ``source``).

    A checked target's output is compared with onnxruntime under ``verify`` (``None``:
    not compared). ``bias_before_norm`` (keras-weights): whether the Keras layers right
    before a BatchNormalization have a bias (see :mod:`onnxgrow.export.keras_layout`).
    ``config`` (hf): the original model's config.json, or its folder (default: the
    config.json beside ``source``); ``max_shard_size`` (hf): the most bytes of weights
    per file. A setting the target does not read is refused.
    """
    target = target_named(to)
    src = Path(source)
    settings = ExportSettings(bias_before_norm=bias_before_norm, config=Path(config) if config is not None else None,
                              max_shard_size=max_shard_size, source=src)
    target.refuse_unread(settings)
    out = Path(output) if output is not None else target.output.default_for(src)
    target.output.refuse_inputs(out, [src])
    target.output.check(out, target.name)
    model = load_model(src)
    target.output.refuse_inputs(out, files_of(src, model))
    check_resources(target, model, out, verify)
    exported = target.build(model, settings)
    if (exported.load is None) != (target.checked_as is None):
        raise TypeError(f"export target {target.name!r}: a load for the check is given exactly when checked_as is")
    report = _write(target, model, out, exported, verify)
    return ExportReport(out, target.name, exported.weights, exported.notes, report)


def check_resources(target: ExportTarget, model: ir.Model, out: Path, options: VerifyOptions | None) -> None:
    """Before the work: the output's file system has room for every weight, and memory holds
    every weight twice (every target builds the framework's copy of all of them; its writer
    serialises them: safetensors' numpy API makes bytes of every tensor before writing)."""
    weights = model_weight_bytes(model)
    check_disk(out, weights, f"the --to {target.name} output")
    check_memory(2 * weights, f"exporting --to {target.name}", memory_ceiling(options or VerifyOptions()), CEILING_IS)


def _write(target: ExportTarget, model: ir.Model, out: Path, exported: Exported,
           options: VerifyOptions | None) -> VerifyReport | None:
    """Write atomically; for a checked target compare what loads back from the written
    output with onnxruntime before it is renamed into place."""
    report = None
    with target.output.atomic(out) as path, named_as(out, path):
        with temporary_files_in(path.parent):
            exported.write(path)
            runner = exported.load(path) if options is not None and exported.load is not None else None
        if runner is not None:
            what = target.checked_as or target.name
            report = verify(model, None, _check_inputs(model, options, exported), candidate_runner=runner,
                            candidate_label=what)
            if not report.passed:
                raise NotEquivalentError(f"the {what} does not compute what the ONNX model computes; "
                                         "nothing written. " + report.summary(), report)
    return report


def _check_inputs(model: ir.Model, options: VerifyOptions | None, exported: Exported) -> VerifyOptions | None:
    """The check's options with the target's framework's input conventions applied to its
    random samples (``Exported.inputs``); the user's own inputs stay as given."""
    if options is None or options.inputs is not None or exported.inputs is None:
        return options
    feeds = [exported.inputs(sample) for sample in sample_feeds(model, options).feeds]
    return dataclasses.replace(options, inputs=feeds, samples=1, input_shapes=None)
