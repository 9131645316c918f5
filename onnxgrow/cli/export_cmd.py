"""``onnxgrow export MODEL --to state-dict|torch|keras [-o OUT]``."""

from __future__ import annotations

from pathlib import Path

import click

from onnxgrow.cli import main
from onnxgrow.cli._common import user_errors, verification_kwargs, verification_options
from onnxgrow.export.api import FORMATS, ExportReport, export_model
from onnxgrow.grow import VerifyOptions

_WHAT = {
    "state-dict": "tensors (PyTorch state dict)",
    "torch": "trainable parameters (PyTorch module; torch.load(path, weights_only=False))",
    "keras": "trainable variables (Keras model; keras.saving.load_model(path))",
}


def _print_report(report: ExportReport) -> None:
    click.echo(f"wrote {report.output}: {report.weights} {_WHAT[report.format]}")
    for note in report.notes:
        click.echo(f"  note: {note}")
    if report.format == "state-dict":
        click.echo("not compared with onnxruntime: a state dict has no code to run "
                   "(--to torch runs the same names and layouts)")
        return
    if report.verification is not None:
        click.echo(report.verification.summary())
    else:
        click.echo("verification skipped (--no-verify)")


@main.command("export")
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--to", "fmt", type=click.Choice(list(FORMATS)), required=True,
              help="state-dict: named weights (.pt or .safetensors); torch: a trainable nn.Module; "
                   "keras: a trainable Keras 3 model (.keras).")
@click.option("-o", "--output", type=click.Path(), default=None,
              help="Output file (default beside the input: <stem>.pt, <stem>.torch.pt, <stem>.keras).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the check's random inputs.")
@click.option("--no-verify", is_flag=True, help="Skip comparing the PyTorch/Keras model with onnxruntime.")
@verification_options
@user_errors
def export_command(model: str, fmt: str, output: str | None, seed: int, no_verify: bool,
                   atol: float | None, rtol: float | None, samples: int, input_shapes: tuple[str, ...],
                   inputs_file: str | None, providers: str) -> None:
    """Bring a model back to PyTorch or Keras for training, weights under their framework names.

    Lists BatchNorms the exporter folded away, entries added so strict loading works, and
    weights it could not name. The PyTorch and Keras models are loaded back from the
    written file and compared with onnxruntime; on a difference nothing is written (exit 1).
    """
    options = VerifyOptions(enabled=not no_verify, **verification_kwargs(
        atol=atol, rtol=rtol, samples=samples, input_shapes=input_shapes, inputs_file=inputs_file,
        providers=providers, seed=seed))
    report = export_model(Path(model), Path(output) if output else None, fmt, verify=options)
    _print_report(report)
