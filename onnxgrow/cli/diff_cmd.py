"""``onnxgrow diff OLD NEW``: what changed between two models, for people and for CI.

The text report goes to stdout, or to stderr when ``--json -`` or ``--markdown -`` puts
a machine-readable report there.
"""

from __future__ import annotations

import json
import sys

import click

from onnxgrow.cli._common import EXIT_CHECK_FAILED, EXIT_OK, epilog, report_destinations, user_errors, write_reports
from onnxgrow.cli._main import main
from onnxgrow.cli._options import CheckArgs, json_option, verification_options
from onnxgrow.errors import GrowError


@main.command("diff", short_help="What changed between two models.", epilog=epilog(
    'onnxgrow diff base.onnx model.onnx --numeric --markdown - >> "$GITHUB_STEP_SUMMARY"',
    "0 identical; 1 different (or, with --numeric, outputs differ); 2 usage or input error."))
@click.argument("old", type=click.Path(dir_okay=False))
@click.argument("new", type=click.Path(dir_okay=False))
@json_option
@click.option("--markdown", "markdown_out", metavar="PATH|-", default=None,
              help="Also write the report as markdown to PATH, or to stdout with '-' (e.g. a CI job summary).")
@click.option("--numeric", is_flag=True,
              help="Also run both models on the same inputs, as `onnxgrow verify` does.")
@verification_options
@user_errors
def diff_command(old: str, new: str, json_out: str | None, markdown_out: str | None, numeric: bool,
                 check: CheckArgs) -> None:
    """Name-keyed structural diff of OLD and NEW, with NEW's onnxgrow lineage.

    Compares opsets, inputs/outputs, nodes (by name; unnamed or renamed nodes by op
    and outputs), initializers (shape, dtype, and max abs difference of values,
    streamed), metadata and local functions. The JSON schema is
    onnxgrow/schemas/diff.schema.json.
    """
    text_to_stderr = report_destinations(json_out, markdown_out, inputs=[old, new])
    if not numeric and check.given:
        raise GrowError("verification options (--atol, --inputs, --seed, ...) need --numeric")
    options = check.options() if numeric else None
    from onnxgrow.diff import diff_models

    report = diff_models(old, new, options)
    write_reports({json_out: json.dumps(report.to_dict(), indent=2, ensure_ascii=False) if json_out else "",
                   markdown_out: report.to_markdown() if markdown_out else ""})
    click.echo(report.to_text(), err=text_to_stderr)
    sys.exit(EXIT_OK if report.identical else EXIT_CHECK_FAILED)
