"""``export_model``: write a model's weights or a trainable framework model, checked.

- ``state-dict``: the named weights (:mod:`onnxgrow.export.state_dict`). A state dict has
  no code to run, so nothing is compared; its names are the ones the PyTorch module
  below registers its parameters under.
- ``torch``: ``torch.save`` of an :class:`~onnxgrow.export.torch_module.OnnxModule`.
- ``keras``: a ``.keras`` file of the Keras functional model.

The PyTorch and Keras models are checked like a grown model: written to a temporary
file, loaded back from it (``torch.load(..., weights_only=False)``,
``keras.saving.load_model``), run on the verification inputs and compared with what
onnxruntime computes for the ONNX model. A difference beyond tolerance raises
NotEquivalentError and nothing is written.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx_ir as ir

from onnxgrow.errors import GrowError, NotEquivalentError
from onnxgrow.export.state_dict import export_state_dict
from onnxgrow.grow import VerifyOptions
from onnxgrow.model_io import atomic_output, ensure_output_is_not_input, files_of, load_model
from onnxgrow.verification import (
    VerifyReport,
    compare_outputs,
    input_specs,
    model_on_disk,
    open_session,
    random_inputs,
    resolve_providers,
)

#: format → default output suffix.
FORMATS = {"state-dict": ".pt", "torch": ".torch.pt", "keras": ".keras"}

Runner = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


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


def compare_with_onnxruntime(model: ir.Model, run: Runner, options: VerifyOptions) -> VerifyReport:
    """Run ``model`` in onnxruntime and ``run`` on the same inputs; compare every output.

    The inputs are ``options.inputs`` or seeded random ones, as for ``onnxgrow verify``;
    samples are stacked so one comparison covers them all.
    """
    providers = resolve_providers(options.providers)
    if options.inputs is not None:
        feeds_list = [dict(f) for f in options.inputs]
    else:
        specs = input_specs(model, options.input_shapes)
        feeds_list = [random_inputs(specs, options.seed + i) for i in range(options.samples)]
    with model_on_disk(model) as path:
        session = open_session(path, providers)
        try:
            references = [session.run(feeds) for feeds in feeds_list]
        except Exception as exc:  # onnxruntime raises its own kinds on unfit inputs
            raise GrowError(f"the ONNX model fails on these inputs: {str(exc).splitlines()[0]}") from None
    candidates = [run(feeds) for feeds in feeds_list]
    reference = {name: np.stack([r[name] for r in references]) for name in references[0]}
    candidate = {name: np.stack([c[name] for c in candidates]) for name in candidates[0]}
    dtypes = {v.name: v.dtype or ir.DataType.FLOAT for v in model.graph.outputs}
    outputs = compare_outputs(reference, candidate, options.atol, options.rtol, dtypes)
    passed = all(o.passed for o in outputs)
    info: dict[str, dict[str, object]] = {
        name: {"shape": list(arr.shape), "dtype": str(arr.dtype)} for name, arr in feeds_list[0].items()}
    return VerifyReport(passed, outputs, session.providers, info, len(feeds_list), options.seed,
                        "" if passed else "outputs differ beyond tolerance",
                        input_source="random" if options.inputs is None else "given")


def _checked_write(model: ir.Model, output: Path, write: Callable[[Path], None],
                   load_runner: Callable[[Path], Runner], options: VerifyOptions, what: str) -> VerifyReport | None:
    """Write with ``write`` to a temporary file, check what loads back from it, then rename."""
    report = None
    with atomic_output(output) as tmp:
        write(tmp)
        if options.enabled:
            report = compare_with_onnxruntime(model, load_runner(tmp), options)
            if not report.passed:
                raise NotEquivalentError(f"the {what} does not compute what the ONNX model computes; "
                                         "nothing written. " + report.summary(), report)
    return report


def _export_torch(model: ir.Model, output: Path, options: VerifyOptions) -> ExportReport:
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


def _export_keras(model: ir.Model, output: Path, options: VerifyOptions) -> ExportReport:
    from onnxgrow.export.keras_model import KERAS_SUFFIX, import_keras, run_keras, to_keras

    if output.suffix != KERAS_SUFFIX:
        raise GrowError(f"{output}: a Keras model file must end in {KERAS_SUFFIX}")
    keras = import_keras()
    exported = to_keras(model)
    output_names = [v.name for v in model.graph.outputs]
    input_names = list(input_specs(model, options.input_shapes))

    def load_runner(path: Path) -> Runner:
        loaded = keras.saving.load_model(path)
        return lambda feeds: run_keras(loaded, feeds, input_names, output_names)

    report = _checked_write(model, output, lambda path: exported.model.save(path), load_runner, options,
                            "Keras model")
    return ExportReport(output, "keras", len(exported.model.trainable_variables), exported.notes(), report)


def export_model(source: str | os.PathLike[str], output: str | os.PathLike[str] | None, to: str,
                 *, verify: VerifyOptions | None = None) -> ExportReport:
    """Export the ONNX model file ``source`` as ``to`` (state-dict, torch, keras) to ``output``."""
    if to not in FORMATS:
        raise GrowError(f"unknown export format {to!r}; choose one of {', '.join(FORMATS)}")
    src = Path(source)
    model = load_model(src)
    out = Path(output) if output is not None else default_export_output(src, to)
    ensure_output_is_not_input(out, files_of(src, model))
    options = verify or VerifyOptions()
    if to == "state-dict":
        result = export_state_dict(model, out)
        return ExportReport(out, to, len(result.tensors), result.notes())
    if to == "torch":
        return _export_torch(model, out, options)
    return _export_keras(model, out, options)
