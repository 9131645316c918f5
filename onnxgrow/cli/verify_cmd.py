"""``onnxgrow verify REFERENCE CANDIDATE``: do two models compute the same outputs?"""

from __future__ import annotations

import json
import sys

import click

from onnxgrow.cli._common import EXIT_CHECK_FAILED, EXIT_OK, epilog, report_destinations, user_errors, write_reports
from onnxgrow.cli._main import main
from onnxgrow.cli._options import CheckArgs, json_option, verification_options
from onnxgrow.cli._progress import ProgressBars
from onnxgrow.terminal import printable


@main.command("verify", short_help="Check that two models compute the same.", epilog=epilog(
    "onnxgrow verify model.onnx wide.onnx --samples 4 --json report.json",
    "0 every output within tolerance; 1 an output differs, or the inputs or outputs do not match; "
    "2 usage or input error."))
@click.argument("reference", type=click.Path(dir_okay=False))
@click.argument("candidate", type=click.Path(dir_okay=False))
@verification_options
@json_option
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@user_errors
def verify_command(reference: str, candidate: str, check: CheckArgs, json_out: str | None, quiet: bool) -> None:
    """Run REFERENCE and CANDIDATE on the same inputs and compare every output.

    Inputs are seeded random values by dtype (integer inputs that index an embedding
    stay within its table), or one sample from --inputs FILE.npz. Prints PASSED/FAILED
    per output with its errors and the smallest tolerance that would pass.
    """
    text_to_stderr = report_destinations(json_out, inputs=[reference, candidate])
    options = check.options()
    from onnxgrow.diff import SCHEMA_VERSION
    from onnxgrow.verification import verify

    with ProgressBars(quiet=quiet) as bars:
        report = verify(reference, candidate, options, progress=lambda done, total: bars("verifying", done, total))
    lines = [f"reference: {reference}", f"candidate: {candidate}", *report.lines()]
    if json_out is not None:
        data = {"schema_version": SCHEMA_VERSION, "reference": reference, "candidate": candidate,
                **report.to_dict()}
        write_reports({json_out: json.dumps(data, indent=2)})
    click.echo("\n".join(printable(line) for line in lines), err=text_to_stderr)
    sys.exit(EXIT_OK if report.passed else EXIT_CHECK_FAILED)
