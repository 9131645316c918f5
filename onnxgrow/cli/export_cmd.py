"""``onnxgrow export MODEL --to TARGET [-o OUT]``: the targets, their help, default output
names and report lines come from the registry (:mod:`onnxgrow.export.targets`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from onnxgrow.cli._common import echo_line, epilog, user_errors
from onnxgrow.cli._main import main
from onnxgrow.cli._options import CheckArgs, parse_size, verification_options
from onnxgrow.export.targets.registry import TARGETS, target_named

if TYPE_CHECKING:
    from onnxgrow.export.api import ExportReport


def _print_report(report: ExportReport) -> None:
    target = target_named(report.format)
    echo_line(f"wrote {report.output}: {report.weights} {target.counts}")
    for note in report.notes:
        echo_line(f"  note: {note}")
    if target.not_checked is not None:
        echo_line(f"not compared with onnxruntime: {target.not_checked}")
    elif report.verification is not None:
        echo_line(report.verification.summary())
    else:
        echo_line("verification skipped (--no-verify)")


def _default_names() -> str:
    """``<stem>.pt, <stem>.torch.pt, ...``: each target's default output."""
    return ", ".join(t.output.shown_default() for t in TARGETS.values())


def _checked() -> str:
    return ", ".join(t.checked_as for t in TARGETS.values() if t.checked_as is not None)


@main.command("export", short_help="Back to PyTorch, Keras or a Hugging Face folder, under their names.",
              epilog=epilog(
    "onnxgrow export wide.onnx --to state-dict -o wide.pt\n"
    "onnxgrow export grown.onnx --to hf --config original/ -o grown-hf/",
    "0 written; 1 the exported model computes something else (nothing written); 2 usage or input error."))
@click.argument("model", type=click.Path(dir_okay=True))
@click.option("--to", "target", type=click.Choice(tuple(TARGETS)), required=True,
              help="; ".join(f"{t.name}: {t.help}" for t in TARGETS.values()) + ".")
@click.option("-o", "--output", type=click.Path(), default=None,
              help=f"Output file or folder (default beside the input: {_default_names()}).")
@click.option("--no-bias-before-norm", is_flag=True,
              help="keras-weights: the Keras Conv/Dense layers right before a BatchNormalization have "
                   "use_bias=False (as in keras.applications); their bias moves into the BatchNormalization.")
@click.option("--config", "config", type=click.Path(), default=None, metavar="DIR|config.json",
              help="hf: the original model's config.json (or its folder, whose tokenizer and generation files are "
                   "copied too); default: the config.json beside the model, where optimum writes it.")
@click.option("--max-shard-size", "max_shard_size", default=None, metavar="SIZE",
              help="hf: split the weights over safetensors files of at most SIZE each (e.g. 2GB, 500MB), "
                   "with an index; default: one model.safetensors.")
@click.option("--no-verify", is_flag=True, help=f"Skip comparing the exported model ({_checked()}) with onnxruntime.")
@verification_options
@user_errors
def export_command(model: str, target: str, output: str | None, no_bias_before_norm: bool, config: str | None,
                   max_shard_size: str | None, no_verify: bool, check: CheckArgs) -> None:
    """Bring a model back to PyTorch, Keras or Hugging Face transformers for training, weights under
    their framework names.

    Lists BatchNorms the exporter folded away, entries added so strict loading works, and
    weights it could not name. The PyTorch and Keras models are loaded back from the
    written output and compared with onnxruntime; on a difference nothing is written (exit 1).
    """
    options = None if no_verify else check.options()
    shard_bytes = parse_size(max_shard_size, "--max-shard-size") if max_shard_size is not None else None
    from onnxgrow.export.api import export_model

    report = export_model(Path(model), Path(output) if output else None, target, verify=options,
                          bias_before_norm=not no_bias_before_norm, config=config, max_shard_size=shard_bytes)
    _print_report(report)
