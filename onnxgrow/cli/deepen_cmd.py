"""``onnxgrow deepen MODEL --after NAME [--width W] [--mode auto|identity|residual] [...]``
and ``onnxgrow deepen MODEL --block NAME [--count N] [--init zero|copy] [...]``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from onnxgrow.cli._common import GROWTH_EXITS, echo_growth, epilog, user_errors
from onnxgrow.cli._main import main
from onnxgrow.cli._options import CheckArgs, WriteArgs, growth_options, verification_options
from onnxgrow.cli._progress import ProgressBars
from onnxgrow.errors import GrowError

if TYPE_CHECKING:
    from onnxgrow.pipeline import GrowthOp

#: ``--mode`` choices (the values of :class:`onnxgrow.deepening.Mode`, checked there).
MODE_CHOICES = ("auto", "identity", "residual")
#: ``--init`` choices (the values of :class:`onnxgrow.deepening.block_plan.BlockInit`, checked there).
INIT_CHOICES = ("zero", "copy")
_LAYER_ONLY = ("width", "mode")
_BLOCK_ONLY = ("count", "init")


@main.command("deepen", short_help="Insert an identity layer, or copies of a block.", epilog=epilog(
    "onnxgrow deepen model.onnx --after fc1 --width 96 -o deep.onnx\n"
    "onnxgrow deepen llama.onnx --block model.layers.5 --count 2 -o deeper.onnx", GROWTH_EXITS))
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--after", metavar="NAME", default=None,
              help="Layer after which (after its bias, BatchNorm and activation) to insert a layer.")
@click.option("--width", type=int, default=None, metavar="W",
              help="With --after: widen the new layer to W (larger than the layer's width).")
@click.option("--mode", type=click.Choice(MODE_CHOICES), default="auto", show_default=True,
              help="With --after: identity: a(I·v); residual: v + W2·a(W1·v + b1) with W2 = 0; "
                   "auto: identity where exact.")
@click.option("--block", "block", metavar="NAME", default=None,
              help="Block (model.layers.3, layer2.1; a glob: 'model.layers.*') after which to insert copies of "
                   "it, numbered as the framework numbers blocks (inspect lists them).")
@click.option("--count", type=int, default=1, show_default=True, metavar="N",
              help="With --block: the number of copies after each block.")
@click.option("--init", type=click.Choice(INIT_CHOICES), default="zero", show_default=True,
              help="With --block: zero: the copy's output projections start at zero (exact); "
                   "copy: every weight copied (stacking, not function-preserving).")
@growth_options
@verification_options
@user_errors
def deepen_command(model: str, after: str | None, width: int | None, mode: str, block: str | None, count: int,
                   init: str, write: WriteArgs, check: CheckArgs) -> None:
    """Insert a layer after NAME that keeps what the model computes (identity or zero-residual),
    or copies of a whole block after it (--block)."""
    from onnxgrow.pipeline import grow_file

    op = _operation(after, width, mode, block, count, init, check.seed)
    source = Path(model)
    with ProgressBars(quiet=write.quiet) as progress:
        report = grow_file(source, write.output_path(source), op, write.options(check, progress))
    echo_growth(report, write.map_out)


def _operation(after: str | None, width: int | None, mode: str, block: str | None, count: int, init: str,
               seed: int) -> GrowthOp[Any, Any]:
    """The growth the options ask for: a layer (--after) or copies of blocks (--block)."""
    given = _given()
    if (after is None) == (block is None):
        raise GrowError("give --after NAME (insert a layer after a layer) or --block NAME (insert copies of a "
                        "block), one of them")
    if after is not None:
        stray = [name for name in _BLOCK_ONLY if name in given]
        if stray:
            raise GrowError(f"--{stray[0]} goes with --block, not --after")
        from onnxgrow.deepening import DeepenOp

        return DeepenOp(after, width=width, mode=mode, seed=seed)
    stray = [name for name in _LAYER_ONLY if name in given]
    if stray:
        raise GrowError(f"--{stray[0]} goes with --after, not --block")
    from onnxgrow.deepening.block_op import DeepenBlockOp

    assert block is not None
    return DeepenBlockOp(block, count=count, init=init)


def _given() -> set[str]:
    """The options given on the command line (not left at their defaults)."""
    ctx = click.get_current_context()
    return {name for name in (*_LAYER_ONLY, *_BLOCK_ONLY)
            if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT}
