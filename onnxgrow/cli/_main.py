"""The ``onnxgrow`` click group that every subcommand module adds itself to."""

from __future__ import annotations

import logging

import click

from onnxgrow import __version__
from onnxgrow.cli._common import epilog


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, epilog=epilog(
    "onnxgrow inspect model.onnx\n  onnxgrow widen model.onnx --node fc1 --to 128 -o wide.onnx",
    "0 ok; 1 a check failed, or diff found differences; 2 usage or input error."))
@click.version_option(__version__, prog_name="onnxgrow")
def main() -> None:
    """Grow trained ONNX models without changing what they compute, checked on onnxruntime."""
    logging.getLogger("onnx_ir").setLevel(logging.ERROR)
