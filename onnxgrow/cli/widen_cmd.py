"""``onnxgrow widen MODEL --node NAME --to WIDTH [...]``."""

from __future__ import annotations

from pathlib import Path

import click

from onnxgrow.cli import main
from onnxgrow.cli._common import (
    echo_verification,
    parse_size,
    user_errors,
    verification_kwargs,
    verification_options,
)
from onnxgrow.cli._progress import ProgressBars
from onnxgrow.errors import GrowError
from onnxgrow.grow import VerifyOptions, default_output
from onnxgrow.widening import Init
from onnxgrow.widening.api import WidenReport, widen_file


def _print_report(report: WidenReport, output: Path) -> None:
    for group in report.groups:
        together = [n for n in group.layers if n != group.requested.strip("'")]
        line = f"widened {group.requested}: {group.old_width} → {group.new_width} ({report.init}"
        line += f", noise {report.noise})" if report.noise else ")"
        if together:
            line += f"; channel group also widened: {', '.join(together)}"
        click.echo(line)
        if group.contractors:
            click.echo(f"  contracting layers adjusted: {', '.join(group.contractors)}")
        for change in group.changes:
            click.echo(f"  {change.name}: {list(change.old_shape)} → {list(change.new_shape)}")
    if report.verification is not None and not report.exact:
        click.echo("note: random-pad is not function-preserving by design; the differences below are expected")
    echo_verification(report.verification, output)


@main.command("widen")
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--node", "nodes", multiple=True, required=True, metavar="NAME",
              help="Layer to widen (repeatable; pairs with --to in order).")
@click.option("--to", "widths", multiple=True, required=True, type=int, metavar="WIDTH",
              help="New width for the matching --node.")
@click.option("-o", "--output", type=click.Path(), default=None,
              help="Output model (default: <input stem>.grown.onnx beside the input).")
@click.option("--init", type=click.Choice([i.value for i in Init]), default=Init.NET2WIDER.value,
              show_default=True, help="How new units are initialised.")
@click.option("--noise", type=float, default=0.0, show_default=True,
              help="Unequal (still exact) split of outgoing weights among copies, net2wider only.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the channel map and checks.")
@click.option("--no-verify", is_flag=True, help="Skip the onnxruntime equivalence check.")
@click.option("--max-shard-size", "max_shard_size", default=None, metavar="SIZE",
              help="Split the weights over data files of at most SIZE each (e.g. 2GB, 500MB).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
@verification_options
@user_errors
def widen_command(model: str, nodes: tuple[str, ...], widths: tuple[int, ...], output: str | None,
                  init: str, noise: float, seed: int, no_verify: bool, max_shard_size: str | None,
                  quiet: bool, atol: float | None, rtol: float | None, samples: int,
                  input_shapes: tuple[str, ...], inputs_file: str | None, providers: str) -> None:
    """Widen layers (and their channel groups) without changing what the model computes."""
    if len(nodes) != len(widths):
        raise GrowError(f"give one --to per --node ({len(nodes)} --node, {len(widths)} --to)")
    if len(set(nodes)) != len(nodes):
        raise GrowError("a layer is named twice")
    source = Path(model)
    out = Path(output) if output else default_output(source)
    options = VerifyOptions(enabled=not no_verify, **verification_kwargs(
        atol=atol, rtol=rtol, samples=samples, input_shapes=input_shapes, inputs_file=inputs_file,
        providers=providers, seed=seed))
    shard_bytes = parse_size(max_shard_size, "--max-shard-size") if max_shard_size else None
    with ProgressBars(quiet=quiet) as progress:
        report = widen_file(source, out, dict(zip(nodes, widths)), init=init, noise=noise, seed=seed,
                            verify=options, max_shard_bytes=shard_bytes, progress=progress)
    _print_report(report, out)
