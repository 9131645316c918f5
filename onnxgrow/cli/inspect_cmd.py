"""``onnxgrow inspect MODEL [--json]``."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from onnxgrow.cli._common import epilog, report_destinations, user_errors, write_report
from onnxgrow.cli._main import main
from onnxgrow.cli._options import json_option
from onnxgrow.terminal import printable

if TYPE_CHECKING:
    from onnxgrow.inspect import LayerInfo, ModelSummary, TensorInfo


def _tensor_line(t: TensorInfo) -> str:
    return f"  {t.name}  {t.dtype.lower()}  [{', '.join(str(d) for d in t.shape)}]"


def _table(rows: list[list[str]]) -> list[str]:
    rows = [[printable(cell) for cell in row] for row in rows]  # widths as printed
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def _widen_cell(info: LayerInfo) -> str:
    if not info.widenable:
        return "classes (--new-outputs)" if info.new_outputs else "no"
    text = "yes"
    others = [g for g in info.group if g != info.name]
    if others:
        text += f", with {', '.join(others)}"
    if info.touches:
        text += f"; divides {', '.join(info.touches)}"
    return text


def render(summary: ModelSummary) -> str:
    """The human-readable report."""
    mb = summary.weight_bytes / 1e6
    opsets = ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in summary.opsets.items())
    storage = "external data" if summary.external_data else "embedded"
    lines = [
        f"model: {summary.path or '(in memory)'}",
        f"  ir {summary.ir_version}, opset {opsets}, producer {summary.producer or '?'}, "
        f"{mb:.2f} MB of weights ({storage})",
        "inputs:",
        *(_tensor_line(t) for t in summary.inputs),
        "outputs:",
        *(_tensor_line(t) for t in summary.outputs),
    ]
    if summary.history:
        lines += ["history:", *(f"  {h}" for h in summary.history)]
    if summary.layers:
        lines.append("layers (names to type after --node / --after):")
        header = ["NAME", "OP", "WIDTH", "ACTIVATION", "WIDEN", "DEEPEN"]
        rows = [header] + [
            [i.name, i.op, str(i.width), i.activation or "-", _widen_cell(i), i.deepen or "-"]
            for i in summary.layers
        ]
        lines += _table(rows)
    else:
        lines.append("layers: none growable")
    if summary.attentions:
        lines.append("attention (names to type after --node with --heads):")
        rows = [["NAME", "HEADS", "KV HEADS", "HEAD SIZE", "GROW HEADS"]] + [
            [a.name, str(a.heads), str(a.kv_heads), str(a.head_dim), f"yes, {a.exact}" if a.growable else "no"]
            for a in summary.attentions
        ]
        lines += _table(rows)
        lines += [f"  {a.name}: {a.reason}" for a in summary.attentions if a.reason]
    notes = [i for i in summary.layers if i.reason]
    if notes:
        lines.append("notes:")
        lines += [f"  {i.name}: {i.reason}" for i in notes]
    if summary.not_growable:
        lines.append("not growable:")
        lines += [f"  {i.name} ({i.op} {i.node!r}): {i.reason}" for i in summary.not_growable]
    aliased = [i for i in summary.layers if i.aliases]
    if aliased:
        lines.append("also known as:")
        lines += [f"  {i.name}: {', '.join(i.aliases)}" for i in aliased]
    return "\n".join(printable(line) for line in lines)  # names may hold control characters


@main.command("inspect", short_help="List the layers that can be grown.", epilog=epilog(
    "onnxgrow inspect model.onnx --json layers.json", "0 listed; 2 usage or input error."))
@click.argument("model", type=click.Path(dir_okay=True))
@json_option
@user_errors
def inspect_command(model: str, json_out: str | None) -> None:
    """List inputs, outputs and the growable layers: the names to type, widths, activations,
    channel groups, and why a layer cannot be grown."""
    text_to_stderr = report_destinations(json_out)
    from onnxgrow.cli._progress import ProgressBars
    from onnxgrow.inspect import inspect_model

    with ProgressBars(quiet=False) as progress:
        summary = inspect_model(model, progress)
    click.echo(render(summary), err=text_to_stderr)
    if json_out is not None:
        write_report(json_out, json.dumps(summary.to_dict(), indent=2))
