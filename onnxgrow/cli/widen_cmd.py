"""``onnxgrow widen MODEL --node NAME --to WIDTH [...]`` and ``--node ATTENTION --heads COUNT``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from onnxgrow.cli._common import GROWTH_EXITS, echo_line, echo_verification, epilog, user_errors
from onnxgrow.cli._main import main
from onnxgrow.cli._options import CheckArgs, WriteArgs, growth_options, verification_options
from onnxgrow.cli._progress import ProgressBars
from onnxgrow.errors import GrowError

if TYPE_CHECKING:
    from onnxgrow.widening.api import GroupReport, WidenReport

#: ``--init`` choices (the values of :class:`onnxgrow.widening.channel_map.Init`, checked there).
INIT_CHOICES = ("net2wider", "zero-pad", "random-pad")


def _print_report(report: WidenReport) -> None:
    for group in report.groups:
        if group.heads is not None:
            _print_heads(group, report)
            continue
        together = [n for n in group.layers if n != group.layer]
        line = f"widened {group.requested}: {group.old_width} → {group.new_width} ({report.init}"
        line += f", noise {report.noise})" if report.noise else ")"
        if together:
            line += f"; channel group also widened: {', '.join(together)}"
        echo_line(line)
        if group.contractors:
            echo_line(f"  contracting layers adjusted: {', '.join(group.contractors)}")
        for change in group.changes:
            if change.old_shape != change.new_shape:
                echo_line(f"  {change.name}: {list(change.old_shape)} → {list(change.new_shape)}")
        targets = sorted({c.node for c in group.changes if c.old_shape == c.new_shape})
        if targets:
            echo_line(f"  target shapes rewritten for: {', '.join(targets)}")
    echo_verification(report.verification, report.written)


def _print_heads(group: GroupReport, report: WidenReport) -> None:
    counts = group.heads
    assert counts is not None
    line = f"grew attention {counts.attention}: {counts.old_heads} → {counts.new_heads} heads"
    if (counts.old_kv_heads, counts.new_kv_heads) != (counts.old_heads, counts.new_heads):
        line += f" ({counts.old_kv_heads} → {counts.new_kv_heads} key/value heads)"
    line += f", head size {counts.head_dim} ({report.init}" + (f", noise {report.noise})" if report.noise else ")")
    click.echo(line)
    if counts.together:
        click.echo(f"  attention grown with it (shared position bias): {', '.join(counts.together)}")
    click.echo(f"  projections grown: {', '.join(group.layers)}")
    if group.contractors:
        click.echo(f"  contracting layers adjusted: {', '.join(group.contractors)}")
    for change in group.changes:
        if change.old_shape != change.new_shape:
            click.echo(f"  {change.name}: {list(change.old_shape)} → {list(change.new_shape)}")
    targets = sorted({c.node for c in group.changes if c.old_shape == c.new_shape})
    if targets:
        click.echo(f"  target shapes rewritten for: {', '.join(targets)}")


@main.command("widen", short_help="Widen layers, keeping the function.", epilog=epilog(
    "onnxgrow widen model.onnx --node fc1 --to 128 -o wide.onnx\n"
    "onnxgrow widen llama.onnx --node layers.0.self_attn --heads 8 -o heads.onnx", GROWTH_EXITS))
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--node", "nodes", multiple=True, required=True, metavar="NAME",
              help="Layer to widen, or attention module with --heads (repeatable; pairs with --to or "
                   "--heads in order).")
@click.option("--to", "widths", multiple=True, type=int, metavar="WIDTH",
              help="New width for the matching --node.")
@click.option("--heads", "heads", multiple=True, type=int, metavar="COUNT",
              help="New head count for the matching --node, an attention module (head size kept).")
@click.option("--kv-heads", "kv_heads", multiple=True, type=int, metavar="COUNT",
              help="New key/value head count for the matching --node (grouped-query attention; "
                   "default: kept when --heads is a multiple of it).")
@click.option("--init", type=click.Choice(INIT_CHOICES), default="net2wider", show_default=True,
              help="How new units are initialised.")
@click.option("--noise", type=float, default=0.0, show_default=True,
              help="Unequal (still exact) split of outgoing weights among copies, net2wider only.")
@growth_options
@verification_options
@user_errors
def widen_command(model: str, nodes: tuple[str, ...], widths: tuple[int, ...], heads: tuple[int, ...],
                  kv_heads: tuple[int, ...], init: str, noise: float, write: WriteArgs, check: CheckArgs) -> None:
    """Widen layers (and their channel groups) without changing what the model computes.

    New units copy existing ones; the layers that read them divide the copies' weights
    by the copy count (net2wider), or new units start with zero outgoing weights
    (zero-pad). The result is checked on onnxruntime before it is written.

    With --heads, each --node names an attention module whose heads grow: new heads copy
    existing ones, the output projection's rows of each copied head are divided by its
    copy count (or new heads start with zero output weights, zero-pad); head size kept.
    """
    if widths and heads:
        raise GrowError("give --to (widths) or --heads (head counts), not both")
    counts, flag = (heads, "--heads") if heads else (widths, "--to")
    if len(nodes) != len(counts):
        raise GrowError(f"give one {flag} per --node ({len(nodes)} --node, {len(counts)} {flag})")
    if kv_heads and len(kv_heads) != len(heads):
        raise GrowError(f"give one --kv-heads per --heads ({len(heads)} --heads, {len(kv_heads)} --kv-heads)")
    if len(set(nodes)) != len(nodes):
        raise GrowError("a layer is named twice")
    from onnxgrow.pipeline import grow_file
    from onnxgrow.widening.api import WidenOp
    from onnxgrow.widening.heads_op import HeadsOp

    source = Path(model)
    op: WidenOp | HeadsOp
    if heads:
        op = HeadsOp(dict(zip(nodes, heads)), kv_heads=dict(zip(nodes, kv_heads)), init=init, noise=noise,
                     seed=check.seed)
    else:
        op = WidenOp(dict(zip(nodes, widths)), init=init, noise=noise, seed=check.seed)
    with ProgressBars(quiet=write.quiet) as progress:
        report = grow_file(source, write.output_path(source), op, write.options(check, progress))
    _print_report(report)
