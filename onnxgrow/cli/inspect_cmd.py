"""``onnxgrow inspect MODEL [--json]``."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import TYPE_CHECKING

import click

from onnxgrow.cli._common import epilog, report_destinations, user_errors, write_reports
from onnxgrow.cli._main import main
from onnxgrow.cli._options import json_option, weights_as_constants_option
from onnxgrow.terminal import printable

if TYPE_CHECKING:
    from onnxgrow.inspect import BlockInfo, LayerInfo, ModelSummary, StreamInfo, TensorInfo


def _tensor_line(t: TensorInfo) -> str:
    return f"  {t.name}  {t.dtype.lower()}  [{', '.join(str(d) for d in t.shape)}]"


def _table(rows: list[list[str]]) -> list[str]:
    rows = [[printable(cell) for cell in row] for row in rows]  # widths as printed
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def _widen_cell(info: LayerInfo) -> str:
    if not info.widenable:
        return "classes (--new-outputs)" if info.new_outputs else "no"
    if info.stream is not None:
        return f"yes, with the residual stream {info.stream} (width {info.width})"
    text = "yes"
    others = [g for g in info.group if g != info.name]
    if others:
        text += f", with {', '.join(others)}"
    if info.touches:
        text += f"; divides {', '.join(info.touches)}"
    return text


def _by_block(rows: list[list[str]], blocks: list[BlockInfo], loose: bool = False) -> list[list[str]]:
    """Rows that repeat in every block written once: the first cell (a name) as a pattern with
    the count (``model.layers.{0..11}.mlp.up_proj ×12``) and, in the other cells, the row's
    own block as ``model.layers.{i}``. Rows alike in one block only stay as they are. ``loose``: rows
    that differ only in quoted node names (``Reshape node 'node_view_5'``) are alike too, and
    the merged row quotes those of its first block."""
    from onnxgrow.structure.patterns import fill, generalise, mention

    keyed: list[tuple[tuple[str, ...] | None, list[str], list[str]]] = []
    for row in rows:
        found = generalise(row[0], blocks)
        if found is None:
            keyed.append((None, row, []))
            continue
        pattern, block = found
        cells = [mention(cell, block, "{i}") for cell in row[1:]]
        row_key = (pattern, *(_unquoted(c) if loose else c for c in cells))
        keyed.append((row_key, cells, [block.name or "", str(block.index)]))
    counts = Counter(key for key, _, _ in keyed if key is not None)
    merged: dict[tuple[str, ...], list[tuple[list[str], list[str]]]] = {}
    order: list[list[str] | tuple[str, ...]] = []
    for key, cells, where in keyed:
        if key is None or counts[key] == 1:
            order.append(cells if key is None else _original(rows, keyed, key))
        elif key in merged:
            merged[key].append((cells, where))
        else:
            merged[key] = [(cells, where)]
            order.append(key)
    out = []
    for entry in order:
        if isinstance(entry, list):
            out.append(entry)
            continue
        members = merged[entry]
        first, (block_name, _) = members[0]
        cells = list(first)
        if any(other != first for other, _ in members[1:]):
            cells[-1] += f" (node names of {block_name})"
        out.append([f"{fill(entry[0], [int(index) for _, (_, index) in members])} ×{len(members)}", *cells])
    return out


def _unquoted(text: str) -> str:
    """``text`` with quoted names that are not block patterns masked."""
    return re.sub(r"'[^']*'", lambda m: m.group(0) if "{i}" in m.group(0) else "'…'", text)


def _original(rows: list[list[str]], keyed: list[tuple[tuple[str, ...] | None, list[str], list[str]]],
              key: tuple[str, ...]) -> list[str]:
    """The row as given, for a key that only one row has."""
    return next(row for row, (k, _, _) in zip(rows, keyed) if k == key)


def _aliases(summary: ModelSummary) -> list[str]:
    """``name: aliases`` per layer; a layer repeated in every block once, with the aliases
    that name it through its block (node names differ from block to block: see --json)."""
    from onnxgrow.structure.patterns import generalise

    rows = []
    for info in summary.layers:
        if not info.aliases:
            continue
        found = generalise(info.name, summary.blocks)
        own = [a for a in info.aliases if found is not None and generalise(a, [found[1]]) is not None]
        rows.append([info.name, ", ".join(own), ", ".join(info.aliases)])
    grouped = _by_block([row[:2] for row in rows], summary.blocks)
    full = {row[0]: row[2] for row in rows}
    lines = []
    for name, through_block in grouped:
        if name in full:
            lines.append(f"  {name}: {full[name]}")
        elif through_block:
            lines.append(f"  {name}: {through_block} (and node names, listed by --json)")
    return lines


def _stream_lines(stream: StreamInfo, blocks: list[BlockInfo]) -> list[str]:
    from onnxgrow.structure.patterns import block_pattern, merge_names

    mine = [b for b in blocks if b.stream == stream.name]
    lines = [f"  {stream.name}: {len(mine)} blocks ({block_pattern(mine)})"]
    for group in stream.groups:
        lines.append(f"    width {group.width}, written by {', '.join(merge_names(group.group, blocks))}")
        if group.widenable:
            lines.append(f"      read by {', '.join(merge_names(group.touches, blocks))}")
            lines.append(f"      widens: yes{'; ' + group.reason if group.reason else ''}")
        else:
            lines.append(f"      widens: no: {group.reason}")
    return lines


def _block_rows(blocks: list[BlockInfo]) -> list[list[str]]:
    rows = [[b.name, b.kind, b.norm, ", ".join(b.branches), ", ".join(b.shortcut) or "identity",
             "-" if b.width is None else str(b.width), _init_cell(b)] for b in blocks]
    return [["NAME", "KIND", "NORM", "BRANCHES", "SHORTCUT", "WIDTH", "EXACT --init"], *_by_block(rows, blocks)]


def _init_cell(block: BlockInfo) -> str:
    """The ``deepen --block`` inits that are exact for the block (``zero``), else ``none (post-norm)``."""
    if block.exact_init:
        return ", ".join(block.exact_init)
    return f"none ({block.init_note})" if block.init_note else "none"


def render(summary: ModelSummary) -> str:
    """The human-readable report: layers repeated in every block of a residual stream are
    one row (``model.layers.{0..11}.mlp.up_proj ×12``), and a stream's channel group is
    listed once, under the stream."""
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
    if summary.streams:
        lines.append("residual streams:")
        for stream in summary.streams:
            lines += _stream_lines(stream, summary.blocks)
        lines.append("blocks:")
        lines += _table(_block_rows(summary.blocks))
    blocks = summary.blocks
    if summary.layers:
        lines.append("layers (names to type after --node / --after):")
        header = ["NAME", "OP", "WIDTH", "ACTIVATION", "WIDEN", "DEEPEN"]
        rows = [header] + _by_block([
            [i.name, i.op, str(i.width), i.activation or "-", _widen_cell(i), i.deepen or "-"]
            for i in summary.layers
        ], blocks)
        lines += _table(rows)
    else:
        lines.append("layers: none growable")
    if summary.why:
        lines.append(f"  why: {summary.why}")
    if summary.attentions:
        lines.append("attention (names to type after --node with --heads):")
        rows = [["NAME", "HEADS", "KV HEADS", "HEAD SIZE", "GROW HEADS"]] + _by_block([
            [a.name, str(a.heads), str(a.kv_heads), str(a.head_dim), f"yes, {a.exact}" if a.growable else "no"]
            for a in summary.attentions
        ], blocks)
        lines += _table(rows)
        lines += _notes([[a.name, a.reason] for a in summary.attentions if a.reason], blocks, loose=True)
    notes = [[i.name, i.reason] for i in summary.layers if i.reason and i.stream is None]
    if notes:
        lines.append("notes:")
        lines += _notes(notes, blocks, loose=True)
    if summary.not_growable:
        lines.append("not growable:")
        lines += _not_growable(summary, blocks)
    aliases = _aliases(summary)
    if aliases:
        lines.append("also known as:")
        lines += aliases
    return "\n".join(printable(line) for line in lines)  # names may hold control characters


def _not_growable(summary: ModelSummary, blocks: list[BlockInfo]) -> list[str]:
    """``name (op 'node'): reason``; one line for a layer of every block (its node names differ)."""
    rows = _by_block([[i.name, i.op, i.reason] for i in summary.not_growable], blocks)
    nodes = {i.name: i.node for i in summary.not_growable}
    return [f"  {name} ({op} {nodes[name]!r}): {reason}" if name in nodes else f"  {name} ({op}): {reason}"
            for name, op, reason in rows]


def _notes(rows: list[list[str]], blocks: list[BlockInfo], loose: bool = False) -> list[str]:
    return [f"  {name}: {text}" for name, text in _by_block(rows, blocks, loose)]


@main.command("inspect", short_help="List the layers that can be grown.", epilog=epilog(
    "onnxgrow inspect model.onnx --json layers.json", "0 listed; 2 usage or input error."))
@click.argument("model", type=click.Path(dir_okay=True))
@json_option
@weights_as_constants_option
@user_errors
def inspect_command(model: str, json_out: str | None, weights_as_constants: bool) -> None:
    """List inputs, outputs and the growable layers: the names to type, widths, activations,
    channel groups, and why a layer cannot be grown."""
    text_to_stderr = report_destinations(json_out, inputs=[model])
    from onnxgrow.cli._progress import ProgressBars
    from onnxgrow.inspect import inspect_model

    with ProgressBars(quiet=False) as progress:
        summary = inspect_model(model, progress, weights_as_constants=weights_as_constants)
    if json_out is not None:
        write_reports({json_out: json.dumps(summary.to_dict(), indent=2)})
    click.echo(render(summary), err=text_to_stderr)
