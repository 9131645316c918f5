"""``onnxgrow widen MODEL --node NAME --to WIDTH [...]``, ``--node ATTENTION --heads COUNT``,
``--node LAST --to CLASSES --new-outputs`` and ``--node TABLE --rows ROWS``."""

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
#: ``--init`` choices with ``--rows`` (:class:`onnxgrow.widening.vocabulary.RowInit`).
ROW_INIT_CHOICES = ("mean", "zero-pad", "random-pad")
#: ``--old-probabilities`` choices (:class:`onnxgrow.widening.new_outputs.OldProbabilities`).
OLD_PROBABILITIES_CHOICES = ("exact", "renormalised")


def _print_report(report: WidenReport) -> None:
    for group in report.groups:
        if group.heads is not None:
            _print_heads(group, report)
            continue
        if group.kind != "channels":  # new classes, vocabulary rows
            unit = "classes" if group.kind == "classes" else "rows"
            echo_line(f"grown {group.requested}: {group.old_width} → {group.new_width} {unit} ({report.init})")
            for change in group.changes:
                echo_line(f"  {change.name}: {list(change.old_shape)} → {list(change.new_shape)}")
            if group.compared:
                echo_line(f"  checked: {group.compared}")
            continue
        together = [n for n in group.layers if n != group.layer]
        line = f"widened {group.requested}: {group.old_width} → {group.new_width} ({report.init}"
        line += f", noise {report.noise})" if report.noise else ")"
        if together:
            line += f"; channel group also widened: {', '.join(together)}"
        echo_line(line)
        _print_edits(group)
    for note in report.notes:
        echo_line(f"note: {note}")
    echo_verification(report.verification, report.written)


def _print_edits(group: GroupReport) -> None:
    """The layers that contract the grown units, the weights whose shapes changed, and the
    nodes whose target shapes were rewritten (no ``[2] → [2]`` lines)."""
    if group.contractors:
        echo_line(f"  contracting layers adjusted: {', '.join(group.contractors)}")
    for change in group.changes:
        if change.old_shape != change.new_shape:
            echo_line(f"  {change.name}: {list(change.old_shape)} → {list(change.new_shape)}")
    targets = sorted({c.node for c in group.changes if c.old_shape == c.new_shape})
    if targets:
        echo_line(f"  target shapes rewritten for: {', '.join(targets)}")


def _print_heads(group: GroupReport, report: WidenReport) -> None:
    counts = group.heads
    assert counts is not None
    line = f"grew attention {counts.attention}: {counts.old_heads} → {counts.new_heads} heads"
    if (counts.old_kv_heads, counts.new_kv_heads) != (counts.old_heads, counts.new_heads):
        line += f" ({counts.old_kv_heads} → {counts.new_kv_heads} key/value heads)"
    line += f", head size {counts.head_dim} ({report.init}" + (f", noise {report.noise})" if report.noise else ")")
    echo_line(line)
    if counts.together:
        echo_line(f"  attention grown with it (shared position bias): {', '.join(counts.together)}")
    echo_line(f"  projections grown: {', '.join(group.layers)}")
    _print_edits(group)


@main.command("widen", short_help="Widen layers, keeping the function.", epilog=epilog(
    "onnxgrow widen model.onnx --node fc1 --to 128 -o wide.onnx\n"
    "onnxgrow widen llama.onnx --node layers.0.self_attn --heads 8 -o heads.onnx", GROWTH_EXITS))
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--node", "nodes", multiple=True, required=True, metavar="NAME",
              help="Layer to widen, attention module with --heads, embedding table with --rows "
                   "(repeatable; pairs with --to, --heads or --rows in order).")
@click.option("--to", "widths", multiple=True, type=int, metavar="WIDTH",
              help="New width for the matching --node.")
@click.option("--heads", "heads", multiple=True, type=int, metavar="COUNT",
              help="New head count for the matching --node, an attention module (head size kept).")
@click.option("--kv-heads", "kv_heads", multiple=True, type=int, metavar="COUNT",
              help="New key/value head count for the matching --node (grouped-query attention; "
                   "default: kept when --heads is a multiple of it).")
@click.option("--init", type=click.Choice([*INIT_CHOICES, *(c for c in ROW_INIT_CHOICES if c not in INIT_CHOICES)]),
              default=None,
              help="How new units are initialised [default: net2wider; zero-pad with --new-outputs; "
                   "mean with --rows].")
@click.option("--noise", type=float, default=0.0, show_default=True,
              help="Unequal (still exact) split of outgoing weights among copies, net2wider only.")
# ----- new output classes, vocabulary rows, growth map (onnxgrow.widening.new_outputs, .vocabulary) -----
@click.option("--new-outputs", is_flag=True,
              help="The layer is the last one: add output classes (its model outputs' last axis grows; "
                   "the check compares the old classes).")
@click.option("--old-probabilities", type=click.Choice(OLD_PROBABILITIES_CHOICES), default="exact",
              show_default=True,
              help="With --new-outputs under a Softmax: keep the old probabilities exact (the new classes' "
                   "bias is -1e4) or let the new classes take probability mass (renormalised).")
@click.option("--rows", "rows", multiple=True, type=int, metavar="ROWS",
              help="Instead of --to: grow the embedding table (Gather) --node to ROWS rows, and its LM head.")
@click.option("--head", default=None, metavar="NAME",
              help="With --rows: the untied LM head whose classes grow with the vocabulary (a tied one is found).")
@click.option("--map-out", "map_out", type=click.Path(dir_okay=False), default=None, metavar="MAP.json",
              help="Also write the growth map: where every grown weight's positions come from.")
@growth_options
@verification_options
@user_errors
def widen_command(model: str, nodes: tuple[str, ...], widths: tuple[int, ...], heads: tuple[int, ...],
                  kv_heads: tuple[int, ...], init: str | None, noise: float,
                  new_outputs: bool, old_probabilities: str, rows: tuple[int, ...], head: str | None,
                  map_out: str | None, write: WriteArgs, check: CheckArgs) -> None:
    """Widen layers (and their channel groups) without changing what the model computes.

    New units copy existing ones; the layers that read them divide the copies' weights
    by the copy count (net2wider), or new units start with zero outgoing weights
    (zero-pad). The result is checked on onnxruntime before it is written.
    """
    given = [(flag, values) for flag, values in (("--to", widths), ("--heads", heads), ("--rows", rows)) if values]
    if len(given) != 1:
        raise GrowError("give one of --to (widths), --heads (head counts) or --rows (a vocabulary)")
    flag, counts = given[0]
    if len(nodes) != len(counts):
        raise GrowError(f"give one {flag} per --node ({len(nodes)} --node, {len(counts)} {flag})")
    if kv_heads and len(kv_heads) != len(heads):
        raise GrowError(f"give one --kv-heads per --heads ({len(heads)} --heads, {len(kv_heads)} --kv-heads)")
    if len(set(nodes)) != len(nodes):
        raise GrowError("a layer is named twice")
    if rows and new_outputs:
        raise GrowError("--new-outputs goes with --to; --rows grows a vocabulary and its LM head by itself")
    if head is not None and not rows:
        raise GrowError("--head goes with --rows (the LM head of a grown vocabulary)")
    from onnxgrow.pipeline import grow_file
    from onnxgrow.widening.api import WidenOp
    from onnxgrow.widening.heads_op import HeadsOp
    from onnxgrow.widening.vocabulary import VocabularyOp

    source = Path(model)
    output = write.output_path(source)
    if map_out is not None:
        _check_map_path(Path(map_out), source, output)
    op: WidenOp | HeadsOp | VocabularyOp
    if heads:
        op = HeadsOp(dict(zip(nodes, heads)), kv_heads=dict(zip(nodes, kv_heads)), init=init or "net2wider",
                     noise=noise, seed=check.seed)
    elif rows:
        op = VocabularyOp(dict(zip(nodes, rows)), head=head, init=init, seed=check.seed,
                          old_probabilities=old_probabilities)
    else:
        op = WidenOp(dict(zip(nodes, widths)), init=init, noise=noise, seed=check.seed, new_outputs=new_outputs,
                     old_probabilities=old_probabilities)
    with ProgressBars(quiet=write.quiet) as progress:
        report = grow_file(source, output, op, write.options(check, progress))
    _print_report(report)
    if map_out is not None:
        report.growth_map.save(map_out)
        echo_line(f"wrote growth map {map_out}")


def _check_map_path(path: Path, source: Path, output: Path) -> None:
    """The growth map goes beside the model: an existing folder, not the model's own files."""
    from onnxgrow.model_io import check_output_folder

    check_output_folder(path, ".json")
    if path.resolve() in (source.resolve(), output.resolve()):
        raise GrowError(f"--map-out {path}: that is the model itself; give a .json file name")
