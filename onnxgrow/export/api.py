"""``export_model``: write a model's weights or a trainable framework model, checked.

- ``state-dict``: the named weights (:mod:`onnxgrow.export.state_dict`). A state dict has
  no code to run, so nothing is compared; its names are the ones the PyTorch module
  below registers its parameters under.
- ``torch``: ``torch.save`` of an :class:`~onnxgrow.export.torch_module.OnnxModule`.
- ``keras``: a ``.keras`` file of the Keras functional model.
- ``keras-weights``: each Keras layer's variables under its Keras name, in Keras layout
  (:mod:`onnxgrow.export.keras_weights`): ``.weights.h5`` for ``model.load_weights`` or
  ``.npz``. Like a state dict it has no code to run, so nothing is compared.

The PyTorch and Keras models are checked like a grown model: written to a temporary
file, loaded back from it (``torch.load(..., weights_only=False)``,
``keras.saving.load_model``), run on the verification inputs and compared with what
onnxruntime computes for the ONNX model. A difference beyond tolerance raises
NotEquivalentError and nothing is written.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnx_ir as ir

from onnxgrow.atomic import atomic_output, check_output_folder
from onnxgrow.errors import GrowError, NotEquivalentError
from onnxgrow.export.keras_weights import export_keras_weights
from onnxgrow.export.state_dict import export_state_dict
from onnxgrow.model_io import ensure_output_is_not_input, files_of, load_model
from onnxgrow.options import VerifyOptions
from onnxgrow.verification import Runner, VerifyReport, input_specs, name_of, verify

#: format → default output suffix.
FORMATS = {"state-dict": ".pt", "torch": ".torch.pt", "keras": ".keras", "keras-weights": ".weights.h5"}


@dataclass
class ExportReport:
    """What :func:`export_model` wrote and noticed."""

    output: Path
    format: str
    weights: int  # state-dict entries, or the model's trainable parameters
    notes: list[str] = field(default_factory=list)
    verification: VerifyReport | None = None


def default_export_output(source: Path, fmt: str) -> Path:
    """``model.onnx`` → ``model.pt`` / ``model.torch.pt`` / ``model.keras`` beside it."""
    return source.with_name(source.stem + FORMATS[fmt])


def _checked_write(model: ir.Model, output: Path, write: Callable[[Path], None],
                   load_runner: Callable[[Path], Runner], options: VerifyOptions | None,
                   what: str) -> VerifyReport | None:
    """Write with ``write`` to a temporary file, check what loads back from it against
    onnxruntime with :func:`onnxgrow.verification.verify`, then rename into place."""
    report = None
    with atomic_output(output) as tmp:
        write(tmp)
        if options is not None:
            report = verify(model, None, options, candidate_runner=load_runner(tmp), candidate_label=what)
            if not report.passed:
                raise NotEquivalentError(f"the {what} does not compute what the ONNX model computes; "
                                         "nothing written. " + report.summary(), report)
    return report


def _export_torch(model: ir.Model, output: Path, options: VerifyOptions | None) -> ExportReport:
    import torch

    from onnxgrow.export.torch_module import run_torch, to_torch

    module = to_torch(model)
    names = module.input_names

    def load_runner(path: Path) -> Runner:
        loaded = torch.load(path, weights_only=False)
        return lambda feeds: run_torch(loaded, feeds, names)

    report = _checked_write(model, output, lambda path: torch.save(module, path), load_runner, options,
                            "PyTorch module")
    weights = sum(1 for p in module.parameters() if p.requires_grad)
    return ExportReport(output, "torch", weights, list(module.notes), report)


def _export_keras(model: ir.Model, output: Path, options: VerifyOptions | None) -> ExportReport:
    from onnxgrow.export.keras_model import import_keras, run_keras, to_keras

    keras = import_keras()
    exported = to_keras(model)
    output_names = [name_of(v) for v in model.graph.outputs]
    input_names = list(input_specs(model))

    def load_runner(path: Path) -> Runner:
        loaded = keras.saving.load_model(path)
        return lambda feeds: run_keras(loaded, feeds, input_names, output_names)

    report = _checked_write(model, output, lambda path: exported.model.save(path), load_runner, options,
                            "Keras model")
    return ExportReport(output, "keras", len(exported.model.trainable_variables), exported.notes(), report)


#: The check an export runs unless told otherwise.
DEFAULT_CHECK = VerifyOptions()
#: format → the file suffixes its output may have.
SUFFIXES = {"state-dict": (".pt", ".pth", ".safetensors"), "torch": (".pt", ".pth"), "keras": (".keras",),
            "keras-weights": (".weights.h5", ".npz")}


def _check_suffix(output: Path, fmt: str) -> None:
    """An output named for another format (``-o m.keras`` with ``--to state-dict``) is refused."""
    name = output.name.lower()
    if not name.endswith(SUFFIXES[fmt]):
        raise GrowError(f"{output}: --to {fmt} writes {' or '.join(SUFFIXES[fmt])} files; "
                        f"give an output name ending in one of them")


def export_model(source: str | os.PathLike[str], output: str | os.PathLike[str] | None, to: str,
                 *, verify: VerifyOptions | None = DEFAULT_CHECK, bias_before_norm: bool = True) -> ExportReport:
    """Export the ONNX model file ``source`` as ``to`` (state-dict, torch, keras, keras-weights)
    to ``output``.

    The PyTorch and Keras models are compared with onnxruntime under ``verify``
    (``None``: not compared); a state dict or Keras weights have nothing to run.
    ``bias_before_norm`` (keras-weights): whether the Keras layers right before a
    BatchNormalization have a bias (see :mod:`onnxgrow.export.keras_layout`).
    """
    if to not in FORMATS:
        raise GrowError(f"unknown export format {to!r}; choose one of {', '.join(FORMATS)}")
    src = Path(source)
    out = Path(output) if output is not None else default_export_output(src, to)
    check_output_folder(out, FORMATS[to])
    ensure_output_is_not_input(out, [src.resolve()])
    _check_suffix(out, to)
    model = load_model(src)
    ensure_output_is_not_input(out, files_of(src, model))
    if to == "state-dict":
        result = export_state_dict(model, out)
        return ExportReport(out, to, len(result.tensors), result.notes())
    if to == "keras-weights":
        weights = export_keras_weights(model, out, bias_before_norm=bias_before_norm)
        return ExportReport(out, to, sum(len(layer.variables) for layer in weights.layers), weights.notes)
    if to == "torch":
        return _export_torch(model, out, verify)
    return _export_keras(model, out, verify)
