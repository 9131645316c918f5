"""``onnxgrow export MODEL --to state-dict|torch|keras|keras-weights [-o OUT]``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from onnxgrow.cli._common import echo_line, epilog, user_errors
from onnxgrow.cli._main import main
from onnxgrow.cli._options import CheckArgs, verification_options

if TYPE_CHECKING:
    from onnxgrow.export.api import ExportReport

#: ``--to`` choices (the keys of :data:`onnxgrow.export.api.FORMATS`, checked there).
FORMAT_CHOICES = ("state-dict", "torch", "keras", "keras-weights")

_WHAT = {
    "state-dict": "tensors (PyTorch state dict)",
    "torch": "trainable parameters (PyTorch module; torch.load(path, weights_only=False))",
    "keras": "trainable variables (Keras model; keras.saving.load_model(path))",
    "keras-weights": "variables (Keras weights; model.load_weights(path), or .npz by variable path)",
}
_NO_CODE = {
    "state-dict": "a state dict has no code to run (--to torch runs the same names and layouts)",
    "keras-weights": "weights have no code to run (--to keras builds a model to compare)",
}


def _print_report(report: ExportReport) -> None:
    echo_line(f"wrote {report.output}: {report.weights} {_WHAT[report.format]}")
    for note in report.notes:
        echo_line(f"  note: {note}")
    if report.format in _NO_CODE:
        echo_line(f"not compared with onnxruntime: {_NO_CODE[report.format]}")
        return
    if report.verification is not None:
        echo_line(report.verification.summary())
    else:
        echo_line("verification skipped (--no-verify)")


@main.command("export", short_help="Back to PyTorch or Keras, under their names.", epilog=epilog(
    "onnxgrow export wide.onnx --to state-dict -o wide.pt",
    "0 written; 1 the exported model computes something else (nothing written); 2 usage or input error."))
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--to", "fmt", type=click.Choice(FORMAT_CHOICES), required=True,
              help="state-dict: named weights (.pt or .safetensors); torch: a trainable nn.Module (.pt); "
                   "keras: a trainable Keras 3 model (.keras); keras-weights: each Keras layer's weights "
                   "under its Keras name (.weights.h5 for model.load_weights, or .npz).")
@click.option("-o", "--output", type=click.Path(), default=None,
              help="Output file (default beside the input: <stem>.pt, <stem>.torch.pt, <stem>.keras, "
                   "<stem>.weights.h5).")
@click.option("--no-bias-before-norm", is_flag=True,
              help="keras-weights: the Keras Conv/Dense layers right before a BatchNormalization have "
                   "use_bias=False (as in keras.applications); their bias moves into the BatchNormalization.")
@click.option("--no-verify", is_flag=True, help="Skip comparing the PyTorch/Keras model with onnxruntime.")
@verification_options
@user_errors
def export_command(model: str, fmt: str, output: str | None, no_bias_before_norm: bool, no_verify: bool,
                   check: CheckArgs) -> None:
    """Bring a model back to PyTorch or Keras for training, weights under their framework names.

    Lists BatchNorms the exporter folded away, entries added so strict loading works, and
    weights it could not name. The PyTorch and Keras models are loaded back from the
    written file and compared with onnxruntime; on a difference nothing is written (exit 1).
    """
    options = None if no_verify else check.options()
    from onnxgrow.export.api import export_model

    report = export_model(Path(model), Path(output) if output else None, fmt, verify=options,
                          bias_before_norm=not no_bias_before_norm)
    _print_report(report)
