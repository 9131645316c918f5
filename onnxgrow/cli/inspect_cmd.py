"""``onnxgrow inspect MODEL [--json]``."""

from __future__ import annotations

import json

import click

from onnxgrow.cli import main
from onnxgrow.cli._common import user_errors
from onnxgrow.inspect import LayerInfo, ModelSummary, TensorInfo, inspect_model


def _tensor_line(t: TensorInfo) -> str:
    return f"  {t.name}  {t.dtype.lower()}  [{', '.join(str(d) for d in t.shape)}]"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def _widen_cell(info: LayerInfo) -> str:
    if not info.widenable:
        return "no"
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
    return "\n".join(lines)


@main.command("inspect")
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@user_errors
def inspect_command(model: str, as_json: bool) -> None:
    """List growable layers, their widths, and the names to type for them."""
    summary = inspect_model(model)
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=2))
    else:
        click.echo(render(summary))
