"""``onnxgrow verify REFERENCE CANDIDATE``: do two models compute the same outputs?

Exit 0 when every output is within tolerance, 1 when one is not or the two models'
inputs/outputs differ, 2 on usage or input errors (unreadable model, an ``.npz`` that
does not fit, an unavailable provider).
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
from onnxgrow.cli._progress import ProgressBars
from onnxgrow.diff import SCHEMA_VERSION
from onnxgrow.verification import verify


@main.command("verify")
@click.argument("reference", type=click.Path(dir_okay=False))
@click.argument("candidate", type=click.Path(dir_okay=False))
@verification_options
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--json", "json_out", metavar="PATH|-", default=None,
              help="Also write the report as JSON to PATH, or to stdout with '-'.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@user_errors
def verify_command(
    reference: str,
    candidate: str,
    atol: float | None,
    rtol: float | None,
    samples: int,
    input_shapes: tuple[str, ...],
    inputs_file: str | None,
    providers: str,
    seed: int,
    json_out: str | None,
    quiet: bool,
) -> None:
    """Run REFERENCE and CANDIDATE on the same inputs and compare every output.

    Inputs are seeded random values by dtype (integer inputs that index an embedding
    stay within its table), or one sample from --inputs FILE.npz. Prints PASSED/FAILED
    per output with its errors and the smallest tolerance that would pass.

    Exit status: 0 all outputs within tolerance, 1 an output differs or the
    inputs/outputs do not match, 2 usage or input error.
    """
    text_to_stderr = report_destinations(json_out)
    with ProgressBars(quiet=quiet) as bars:
        report = verify(
            reference,
            candidate,
            **verification_kwargs(
                atol=atol, rtol=rtol, samples=samples, input_shapes=input_shapes,
                inputs_file=inputs_file, providers=providers, seed=seed,
            ),
            progress=lambda done, total: bars("verifying", done, total),
        )
    lines = [f"reference: {reference}", f"candidate: {candidate}", *report.lines()]
    click.echo("\n".join(lines), err=text_to_stderr)
    if json_out is not None:
        data = {"schema_version": SCHEMA_VERSION, "reference": reference, "candidate": candidate,
                **report.to_dict()}
        write_report(json_out, json.dumps(data, indent=2))
    sys.exit(EXIT_OK if report.passed else EXIT_CHECK_FAILED)
