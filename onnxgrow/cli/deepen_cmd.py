"""``onnxgrow deepen MODEL --after NAME [--width W] [--mode auto|identity|residual] [...]``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from onnxgrow.cli._common import GROWTH_EXITS, echo_line, echo_verification, epilog, user_errors
from onnxgrow.cli._main import main
from onnxgrow.cli._options import CheckArgs, WriteArgs, growth_options, verification_options
from onnxgrow.cli._progress import ProgressBars

if TYPE_CHECKING:
    from onnxgrow.deepening import DeepenReport

#: ``--mode`` choices (the values of :class:`onnxgrow.deepening.Mode`, checked there).
MODE_CHOICES = ("auto", "identity", "residual")


def _form(report: DeepenReport) -> str:
    """The inserted function in words: ``identity layer + Relu``, ``residual v + W2·Gelu(W1·v + b1), W2 = 0``."""
    if report.mode == "identity":
        return "identity layer" + (f" + {report.activation}" if report.activation else "")
    inner = f"{report.activation}(W1·v + b1)" if report.activation else "(W1·v + b1)"
    return f"residual v + W2·{inner}, W2 = 0"


def _print_report(report: DeepenReport) -> None:
    echo_line(f"inserted {report.new_layer} after {report.after}: {_form(report)} "
               f"({report.layer_width} units, at tensor {report.tensor!r})")
    echo_line(f"  new nodes: {', '.join(report.new_nodes)}")
    echo_line("  new weights: " + ", ".join(f"{name} {list(shape)}" for name, shape in report.new_weights))
    if report.widened is not None:
        for group in report.widened.groups:
            line = f"  widened {group.requested}: {group.old_width} → {group.new_width}"
            if group.contractors:
                line += f"; contracting layers adjusted: {', '.join(group.contractors)}"
            echo_line(line)
    echo_verification(report.verification, report.written)


@main.command("deepen", short_help="Insert an identity or zero-residual layer.", epilog=epilog(
    "onnxgrow deepen model.onnx --after fc1 --width 96 -o deep.onnx", GROWTH_EXITS))
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--after", required=True, metavar="NAME",
              help="Layer after which (after its bias, BatchNorm and activation) to insert.")
@click.option("--width", type=int, default=None, metavar="W",
              help="Widen the new layer to W (larger than the layer's width).")
@click.option("--mode", type=click.Choice(MODE_CHOICES), default="auto", show_default=True,
              help="identity: a(I·v); residual: v + W2·a(W1·v + b1) with W2 = 0; auto: identity where exact.")
@growth_options
@verification_options
@user_errors
def deepen_command(model: str, after: str, width: int | None, mode: str, write: WriteArgs, check: CheckArgs) -> None:
    """Insert a layer after NAME that keeps what the model computes (identity or zero-residual)."""
    from onnxgrow.deepening import DeepenOp
    from onnxgrow.pipeline import grow_file

    source = Path(model)
    op = DeepenOp(after, width=width, mode=mode, seed=check.seed)
    with ProgressBars(quiet=write.quiet) as progress:
        report = grow_file(source, write.output_path(source), op, write.options(check, progress))
    _print_report(report)
