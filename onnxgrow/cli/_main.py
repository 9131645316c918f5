"""The ``onnxgrow`` click group that every subcommand module adds itself to."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from onnxgrow import __version__
from onnxgrow.cli._common import EXIT_USAGE, epilog
from onnxgrow.signals import EXIT_INTERRUPTED
from onnxgrow.terminal import printable


class _OneLineErrors(click.Group):
    """The command group, its usage errors (an unknown option, a value of the wrong type)
    answered in one line, like every other error, with exit status 2."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> NoReturn:
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:  # a group named alone: its help, as click shows it
            click.echo(exc.format_message(), err=True)
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"error: {printable(exc.format_message())}{where}", err=True)
            sys.exit(EXIT_USAGE)
        except click.ClickException as exc:
            click.echo(f"error: {printable(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("interrupted; nothing written", err=True)
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]}, epilog=epilog(
    "onnxgrow inspect model.onnx\n  onnxgrow widen model.onnx --node fc1 --to 128 -o wide.onnx",
    "0 ok; 1 a check failed, or diff found differences; 2 usage or input error."))
@click.version_option(__version__, prog_name="onnxgrow")
def main() -> None:
    """Grow trained ONNX models without changing what they compute, checked on onnxruntime."""
    logging.getLogger("onnx_ir").setLevel(logging.ERROR)
