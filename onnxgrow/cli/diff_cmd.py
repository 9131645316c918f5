"""``onnxgrow diff OLD NEW``: what changed between two models, for people and for CI.

Exit 0 when identical, 1 when different (like ``diff``), 2 on usage or input errors.
The text report goes to stdout, or to stderr when ``--json -`` or ``--markdown -``
puts a machine-readable report there.
"""

from __future__ import annotations

import json
import sys

import click

from onnxgrow.cli import main
from onnxgrow.cli._common import (
    EXIT_CHECK_FAILED,
    EXIT_OK,
    report_destinations,
    user_errors,
    verification_kwargs,
    verification_options,
    write_report,
)
from onnxgrow.diff import diff_models
from onnxgrow.errors import GrowError


@main.command("diff")
@click.argument("old", type=click.Path(dir_okay=False))
@click.argument("new", type=click.Path(dir_okay=False))
@click.option("--json", "json_out", metavar="PATH|-", default=None,
              help="Write the report as JSON (schema: onnxgrow/schemas/diff.schema.json).")
@click.option("--markdown", "markdown_out", metavar="PATH|-", default=None,
              help="Write the report as markdown, e.g. for a CI job summary.")
@click.option("--numeric", is_flag=True,
              help="Also run both models on the same inputs, as `onnxgrow verify` does.")
@verification_options
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the random inputs (with --numeric).")
@user_errors
def diff_command(
    old: str,
    new: str,
    json_out: str | None,
    markdown_out: str | None,
    numeric: bool,
    atol: float | None,
    rtol: float | None,
    samples: int,
    input_shapes: tuple[str, ...],
    inputs_file: str | None,
    providers: str,
    seed: int,
) -> None:
    """Name-keyed structural diff of OLD and NEW, with NEW's onnxgrow lineage.

    Compares opsets, inputs/outputs, nodes (by name; unnamed or renamed nodes by op
    and outputs), initializers (shape, dtype, and max abs difference of values,
    streamed), metadata and local functions.

    Exit status: 0 identical, 1 different, 2 usage or input error.
    """
    text_to_stderr = report_destinations(json_out, markdown_out)
    options = dict(atol=atol, rtol=rtol, samples=samples, input_shapes=input_shapes,
                   inputs_file=inputs_file, providers=providers, seed=seed)
    if not numeric and options != _DEFAULTS:
        raise GrowError("verification options (--atol, --inputs, ...) need --numeric")
    report = diff_models(old, new, numeric=numeric,
                         **(verification_kwargs(**options) if numeric else {}))
    click.echo(report.to_text(), err=text_to_stderr)
    if json_out is not None:
        write_report(json_out, json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    if markdown_out is not None:
        write_report(markdown_out, report.to_markdown())
    sys.exit(EXIT_OK if report.identical else EXIT_CHECK_FAILED)


_DEFAULTS = dict(atol=None, rtol=None, samples=1, input_shapes=(), inputs_file=None,
                 providers="cpu", seed=0)
