"""What every subcommand shares: error handling, exit codes, report writing."""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from onnxgrow.atomic import write_text
from onnxgrow.errors import GrowError, NotEquivalentError
from onnxgrow.signals import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, raise_terminated
from onnxgrow.terminal import printable

if TYPE_CHECKING:
    from onnxgrow.verification import VerifyReport

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2


#: The exit codes of a command that writes a checked model.
GROWTH_EXITS = "0 written; 1 the check failed (nothing written); 2 usage or input error."


def epilog(example: str, exits: str) -> str:
    """A command's help epilog: one example, then its exit codes (kept as written by click)."""
    return f"\b\nExample:\n  {example}\n\b\nExit status: {exits}"


def one_line(exc: BaseException) -> str:
    """The message with line breaks and every other control character escaped: names from
    a damaged or hostile model may contain them (:mod:`onnxgrow.terminal`)."""
    return printable(str(exc))


def echo_line(text: str, err: bool = False) -> None:
    """Print one line of a report, its names' control characters escaped."""
    click.echo(printable(text), err=err)


#: Optional module → the install line that brings it (and a Keras backend for keras).
INSTALL_HINTS = {
    "torch": "pip install 'onnxgrow[torch]'",
    "onnxscript": "pip install 'onnxgrow[torch]'",
    "safetensors": "pip install 'onnxgrow[torch]'",
    "keras": "pip install 'onnxgrow[keras,torch]'",
    "onnxruntime": "pip install 'onnxgrow[cpu]'",
}


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """While a command runs, SIGTERM unwinds the stack like Ctrl-C instead of killing the
    process on the spot, so temporary files are removed and no partial output remains."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def user_errors(func: F) -> F:
    """Turn user errors into one line on stderr and the documented exit status, no traceback.

    Out of memory: exit 2. Interrupted by Ctrl-C: exit 130; by SIGTERM: exit 143; both
    after cleanup.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with _sigterm_unwinds():
                return func(*args, **kwargs)
        except NotEquivalentError as exc:
            click.echo(f"error: {one_line(exc)}", err=True)
            sys.exit(EXIT_CHECK_FAILED)
        except GrowError as exc:
            click.echo(f"error: {one_line(exc)}", err=True)
            sys.exit(EXIT_USAGE)
        except ModuleNotFoundError as exc:
            top = (exc.name or "").split(".")[0]
            if top not in INSTALL_HINTS:
                raise
            click.echo(f"error: this needs the optional package {top}, which is not installed: "
                       f"{INSTALL_HINTS[top]}; nothing written", err=True)
            sys.exit(EXIT_USAGE)
        except MemoryError:
            click.echo("error: out of memory; nothing written (try a smaller width, or a machine "
                       "with more memory)", err=True)
            sys.exit(EXIT_USAGE)
        except Terminated:
            click.echo("terminated; nothing written", err=True)
            sys.exit(EXIT_TERMINATED)
        except KeyboardInterrupt:
            click.echo("interrupted; nothing written", err=True)
            sys.exit(EXIT_INTERRUPTED)

    return wrapper  # type: ignore[return-value]


def write_report(destination: str, text: str) -> None:
    """Write ``text`` to a file, or to stdout when ``destination`` is ``-``."""
    if destination == "-":
        click.echo(text, nl=not text.endswith("\n"))
        return
    write_text(destination, text if text.endswith("\n") else text + "\n")


def report_destinations(*destinations: str | None) -> bool:
    """Check that at most one report goes to stdout; True when one does.

    Human-readable text then goes to stderr, so stdout holds only the report.
    """
    to_stdout = [d for d in destinations if d == "-"]
    if len(to_stdout) > 1:
        raise GrowError("only one report can be written to stdout ('-')")
    return bool(to_stdout)


def echo_verification(report: VerifyReport | None, written: list[Path]) -> None:
    """The verdict line of a growth command's check (or that --no-verify skipped it), then
    every file written: the model and its data files."""
    echo_line(report.summary() if report is not None else "verification skipped (--no-verify)")
    model, *data = written
    echo_line(f"wrote {model}" + (f" (weights in {', '.join(p.name for p in data)})" if data else ""))
