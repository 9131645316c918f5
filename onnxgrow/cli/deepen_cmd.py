"""``onnxgrow deepen MODEL --after NAME [--width W] [--mode auto|identity|residual] [...]``."""

from __future__ import annotations

from pathlib import Path

import click

from onnxgrow.cli import main
from onnxgrow.cli._common import echo_verification, user_errors, verification_kwargs, verification_options
from onnxgrow.deepening import DeepenReport, Mode, deepen_file
from onnxgrow.grow import VerifyOptions, default_output


def _form(report: DeepenReport) -> str:
    """The inserted function in words: ``identity layer + Relu``, ``residual v + W2·Gelu(W1·v + b1), W2 = 0``."""
    if report.mode == Mode.IDENTITY.value:
        return "identity layer" + (f" + {report.activation}" if report.activation else "")
    inner = f"{report.activation}(W1·v + b1)" if report.activation else "(W1·v + b1)"
    return f"residual v + W2·{inner}, W2 = 0"


def _print_report(report: DeepenReport) -> None:
    click.echo(f"inserted {report.new_layer} after {report.after}: {_form(report)} "
               f"({report.layer_width} units, at tensor {report.tensor!r})")
    click.echo(f"  new nodes: {', '.join(report.new_nodes)}")
    click.echo("  new weights: " + ", ".join(f"{name} {list(shape)}" for name, shape in report.new_weights))
    if report.widened is not None:
        for group in report.widened.groups:
            line = f"  widened {group.requested}: {group.old_width} → {group.new_width}"
            if group.contractors:
                line += f"; contracting layers adjusted: {', '.join(group.contractors)}"
            click.echo(line)


@main.command("deepen")
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--after", required=True, metavar="NAME",
              help="Layer after which (after its bias, BatchNorm and activation) to insert.")
@click.option("--width", type=int, default=None, metavar="W",
              help="Widen the new layer to W (larger than the layer's width).")
@click.option("--mode", type=click.Choice([m.value for m in Mode]), default=Mode.AUTO.value, show_default=True,
              help="identity: a(I·v); residual: v + W2·a(W1·v + b1) with W2 = 0; auto: identity where exact.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for --width and the checks.")
@click.option("-o", "--output", type=click.Path(), default=None,
              help="Output model (default: <input stem>.grown.onnx beside the input).")
@click.option("--no-verify", is_flag=True, help="Skip the onnxruntime equivalence check.")
@verification_options
@user_errors
def deepen_command(model: str, after: str, width: int | None, mode: str, seed: int, output: str | None,
                   no_verify: bool, atol: float | None, rtol: float | None, samples: int,
                   input_shapes: tuple[str, ...], inputs_file: str | None, providers: str) -> None:
    """Insert a layer after NAME that keeps what the model computes (identity or zero-residual)."""
    source = Path(model)
    out = Path(output) if output else default_output(source)
    options = VerifyOptions(enabled=not no_verify, **verification_kwargs(
        atol=atol, rtol=rtol, samples=samples, input_shapes=input_shapes, inputs_file=inputs_file,
        providers=providers, seed=seed))
    report = deepen_file(source, out, after, width=width, mode=mode, seed=seed, verify=options)
    _print_report(report)
    echo_verification(report.verification, out)
