"""``onnxgrow widen MODEL --node NAME --to WIDTH [...]``, ``--node ATTENTION --heads COUNT``,
``--node LAST --to CLASSES --new-outputs`` and ``--node TABLE --rows ROWS``, several kinds in
one command (one :class:`~onnxgrow.widening.composite.CompositeOp`).

Each ``--to``, ``--heads`` or ``--rows`` pairs with the first ``--node`` not paired yet, in
the order given (``--node a --to 2x --node b --heads 2x``; ``--node a --node b --to 8 --to 9``
as before); each ``--kv-heads`` with the first ``--node`` paired with ``--heads`` and no
``--kv-heads`` yet. click gathers each option's values apart, so the command keeps the order
the options came in (:class:`_InOrder`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from onnxgrow.cli._common import GROWTH_EXITS, echo_growth, epilog, user_errors
from onnxgrow.cli._main import main
from onnxgrow.cli._options import CheckArgs, WriteArgs, growth_options, verification_options
from onnxgrow.cli._progress import ProgressBars
from onnxgrow.errors import GrowError
from onnxgrow.sizes import FORMS, Size

if TYPE_CHECKING:
    from onnxgrow.pipeline import GrowthOp

#: ``--init`` choices (the values of :class:`onnxgrow.widening.channel_map.Init`, checked there).
INIT_CHOICES = ("net2wider", "zero-pad", "random-pad")
#: ``--init`` choices with ``--rows`` (:class:`onnxgrow.widening.vocabulary.RowInit`).
ROW_INIT_CHOICES = ("mean", "zero-pad", "random-pad")
#: ``--old-probabilities`` choices (:class:`onnxgrow.widening.new_outputs.OldProbabilities`).
OLD_PROBABILITIES_CHOICES = ("exact", "renormalised")
#: The options that give a --node its size, by parameter name.
SIZE_FLAGS = {"widths": "--to", "heads": "--heads", "rows": "--rows"}
_ORDER_KEY = "onnxgrow.widen.order"


class SizeType(click.ParamType):
    """A size: a count, a multiple (``2x``, ``1.5x``) or an increase (``+8``) (:class:`~onnxgrow.sizes.Size`)."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Size:
        try:
            return Size.parse(value)
        except GrowError:
            self.fail(f"{value!r} is not {FORMS}", param, ctx)


class _InOrder(click.Command):
    """The widen command, remembering the order its options were given in (in ``ctx.meta``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[_ORDER_KEY] = self._order(args)
        return super().parse_args(ctx, args)

    def _order(self, args: Sequence[str]) -> list[str]:
        """The parameter names of the options in ``args``, in order."""
        options = {name: param for param in self.params if isinstance(param, click.Option)
                   for name in (*param.opts, *param.secondary_opts)}
        order, skip = [], False
        for token in args:
            if skip:
                skip = False
                continue
            if token == "--":
                break
            name, joined = (token.split("=", 1)[0], "=" in token) if token.startswith("--") else \
                (token[:2], len(token) > 2)
            param = options.get(name) if token.startswith("-") else None
            if param is not None and param.name is not None:
                order.append(param.name)
                skip = not param.is_flag and not param.count and not joined
        return order


@main.command("widen", cls=_InOrder, short_help="Widen layers, keeping the function.", epilog=epilog(
    "onnxgrow widen model.onnx --node fc1 --to 128 -o wide.onnx\n"
    "onnxgrow widen llama.onnx --node 'model.layers.*.mlp.up_proj' --to 1.5x -o ffn.onnx\n"
    "onnxgrow widen llama.onnx --node model.embed_tokens --to 2x --node '*.self_attn' --heads 2x -o wide.onnx",
    GROWTH_EXITS))
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--node", "nodes", multiple=True, required=True, metavar="NAME",
              help="Layer to widen, attention module with --heads, embedding table with --rows; a pattern "
                   "('model.layers.*.mlp.up_proj', '*.self_attn') names every one it matches (repeatable; "
                   "pairs with the --to, --heads or --rows that comes next in order).")
@click.option("--to", "widths", multiple=True, type=SizeType(), metavar="WIDTH",
              help="New width for the matching --node: a count, a multiple (2x, 1.5x) or an increase (+8).")
@click.option("--heads", "heads", multiple=True, type=SizeType(), metavar="COUNT",
              help="New head count for the matching --node, an attention module (head size kept); "
                   "a count, a multiple or an increase.")
@click.option("--kv-heads", "kv_heads", multiple=True, type=SizeType(), metavar="COUNT",
              help="New key/value head count for the matching --node (grouped-query attention; "
                   "default: kept when --heads is a multiple of it).")
@click.option("--init", type=click.Choice([*INIT_CHOICES, *(c for c in ROW_INIT_CHOICES if c not in INIT_CHOICES)]),
              default=None,
              help="How new units are initialised [default: net2wider; zero-pad with --new-outputs; "
                   "mean with --rows].")
@click.option("--noise", type=float, default=0.0, show_default=True,
              help="Unequal (still exact) split of outgoing weights among copies, net2wider only.")
# ----- new output classes, vocabulary rows (onnxgrow.widening.new_outputs, .vocabulary) -----
@click.option("--new-outputs", is_flag=True,
              help="The layer is the last one: add output classes (its model outputs' last axis grows; "
                   "the check compares the old classes).")
@click.option("--old-probabilities", type=click.Choice(OLD_PROBABILITIES_CHOICES), default="exact",
              show_default=True,
              help="With --new-outputs under a Softmax: keep the old probabilities exact (the new classes' "
                   "bias is -1e4) or let the new classes take probability mass (renormalised).")
@click.option("--rows", "rows", multiple=True, type=SizeType(), metavar="ROWS",
              help="Grow the embedding table (Gather) --node to ROWS rows (a count, a multiple or an "
                   "increase: +8), and its LM head.")
@click.option("--head", default=None, metavar="NAME",
              help="With --rows: the untied LM head whose classes grow with the vocabulary (a tied one is found).")
@growth_options
@verification_options
@user_errors
def widen_command(model: str, nodes: tuple[str, ...], widths: tuple[Size, ...], heads: tuple[Size, ...],
                  kv_heads: tuple[Size, ...], init: str | None, noise: float,
                  new_outputs: bool, old_probabilities: str, rows: tuple[Size, ...], head: str | None,
                  write: WriteArgs, check: CheckArgs) -> None:
    """Widen layers (and their channel groups) without changing what the model computes.

    New units copy existing ones; the layers that read them divide the copies' weights
    by the copy count (net2wider), or new units start with zero outgoing weights
    (zero-pad). Several kinds (--to, --heads, --rows) in one command are one growth: planned
    together on the untouched model, applied in the order given, checked once. The result is
    checked on onnxruntime before it is written.
    """
    order = click.get_current_context().meta.get(_ORDER_KEY, [])
    requests = pair_requests(order, {"nodes": nodes, "widths": widths, "heads": heads, "kv_heads": kv_heads,
                                     "rows": rows})
    if rows and new_outputs:
        raise GrowError("--new-outputs goes with --to; --rows grows a vocabulary and its LM head by itself")
    if new_outputs and heads:
        raise GrowError("--new-outputs goes with --to (a last layer's classes), not with --heads")
    if head is not None and not rows:
        raise GrowError("--head goes with --rows (the LM head of a grown vocabulary)")
    from onnxgrow.pipeline import grow_file

    source = Path(model)
    op = _operation(requests, init, noise, new_outputs, old_probabilities, head, check.seed)
    with ProgressBars(quiet=write.quiet) as progress:
        report = grow_file(source, write.output_path(source), op, write.options(check, progress))
    echo_growth(report, write.map_out)


@dataclass
class Request:
    """One --node and what it asks for: its size option (``--to``, ``--heads``, ``--rows``),
    the size, and with --heads the key/value head count."""

    node: str
    flag: str | None = None
    size: Size | None = None
    kv_heads: Size | None = None


def pair_requests(order: Sequence[str], values: dict[str, tuple[Any, ...]]) -> list[Request]:
    """Pair each --node with its size (see the module docstring); GrowError when a --node has
    none or two, a --kv-heads no --heads, or a node is named twice for one kind."""
    nodes = [Request(node) for node in values["nodes"]]
    taken = {name: 0 for name in values}
    for name in order:
        if name not in SIZE_FLAGS and name != "kv_heads":
            continue
        value = values[name][taken[name]]
        taken[name] += 1
        if name == "kv_heads":
            target = next((r for r in nodes if r.flag == "--heads" and r.kv_heads is None), None)
            if target is None:
                raise GrowError(f"give one --kv-heads per --heads ({len(values['heads'])} --heads, "
                                f"{len(values['kv_heads'])} --kv-heads)")
            target.kv_heads = value
            continue
        free = next((r for r in nodes if r.flag is None), None)
        if free is None:
            break
        free.flag, free.size = SIZE_FLAGS[name], value
    given = [flag for name, flag in SIZE_FLAGS.items() if values[name]]
    sizes = sum(len(values[name]) for name in SIZE_FLAGS)
    if not given:
        raise GrowError("give one of --to (widths), --heads (head counts) or --rows (a vocabulary)")
    if sizes != len(nodes):
        if len(given) == 1:
            raise GrowError(f"give one {given[0]} per --node ({len(nodes)} --node, {sizes} {given[0]})")
        raise GrowError(f"give one of --to (widths), --heads (head counts) or --rows (a vocabulary) per --node "
                        f"({len(nodes)} --node, {sizes} of them)")
    if len(values["kv_heads"]) > len(values["heads"]):
        raise GrowError(f"give one --kv-heads per --heads ({len(values['heads'])} --heads, "
                        f"{len(values['kv_heads'])} --kv-heads)")
    seen = set()
    for request in nodes:
        if (request.node, request.flag) in seen:
            raise GrowError(f"{request.node!r} is named twice with {request.flag}")
        seen.add((request.node, request.flag))
    return nodes


def _operation(requests: list[Request], init: str | None, noise: float, new_outputs: bool, old_probabilities: str,
               head: str | None, seed: int) -> GrowthOp[Any, Any]:
    """The growth the requests name: widths (or output classes), head counts, vocabulary rows,
    or several of them as one composite, in the order their kinds first come."""
    from onnxgrow.widening import HeadsOp, NewOutputsOp, VocabularyOp, WidenOp
    from onnxgrow.widening.composite import CompositeOp

    def sizes(flag: str) -> dict[str, Size]:
        return {r.node: r.size for r in requests if r.flag == flag and r.size is not None}

    parts: list[GrowthOp[Any, Any]] = []
    for flag in dict.fromkeys(r.flag for r in requests):
        if flag == "--heads":
            kv = {r.node: r.kv_heads for r in requests if r.flag == flag and r.kv_heads is not None}
            parts.append(HeadsOp(sizes(flag), kv_heads=kv, init=init or "net2wider", noise=noise, seed=seed))
        elif flag == "--rows":
            parts.append(VocabularyOp(sizes(flag), head=head, init=init, seed=seed,
                                      old_probabilities=old_probabilities))
        elif new_outputs:
            if noise:
                raise GrowError("--noise splits copied units of a widening; --new-outputs starts new classes "
                                "from zero-pad or random-pad rows")
            parts.append(NewOutputsOp(sizes(flag or "--to"), init=init, seed=seed,
                                      old_probabilities=old_probabilities))
        else:
            parts.append(WidenOp(sizes(flag or "--to"), init=init, noise=noise, seed=seed))
    return parts[0] if len(parts) == 1 else CompositeOp(parts)
