"""What every subcommand shares: error handling, exit codes, report writing."""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from onnxgrow.atomic import atomic_outputs, check_output_folder
from onnxgrow.errors import GrowError, NotEquivalentError, OnnxgrowWarning
from onnxgrow.signals import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, raise_terminated, terminated
from onnxgrow.terminal import printable

if TYPE_CHECKING:
    from onnxgrow.pipeline import GrowthReport
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


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """While a command runs, each distinct onnxgrow warning is one ``warning:`` line on stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("once", OnnxgrowWarning)
        shown = warnings.showwarning

        def show(message: Warning | str, category: type[Warning], *rest: Any, **kwargs: Any) -> None:
            if issubclass(category, OnnxgrowWarning):
                click.echo(f"warning: {printable(str(message))}", err=True)
            else:
                shown(message, category, *rest, **kwargs)

        warnings.showwarning = show
        yield


def user_errors(func: F) -> F:
    """Turn user errors into one line on stderr and the documented exit status, no traceback.

    Out of memory: exit 2. Interrupted by Ctrl-C: exit 130; by SIGTERM: exit 143; both
    after cleanup.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with _sigterm_unwinds(), _warnings_as_lines():
                return func(*args, **kwargs)
        except NotEquivalentError as exc:
            _exit(EXIT_CHECK_FAILED, f"error: {one_line(exc)}")
        except GrowError as exc:
            _exit(EXIT_USAGE, f"error: {one_line(exc)}")
        except ModuleNotFoundError as exc:
            top = (exc.name or "").split(".")[0]
            if top not in INSTALL_HINTS and not terminated():
                raise
            _exit(EXIT_USAGE, f"error: this needs the optional package {top}, which is not installed: "
                              f"{INSTALL_HINTS.get(top, '')}; nothing written")
        except MemoryError:
            _exit(EXIT_USAGE, "error: out of memory; nothing written (try a smaller width, or a machine "
                              "with more memory)")
        except Terminated:
            _exit(EXIT_TERMINATED, "terminated; nothing written")
        except KeyboardInterrupt:
            _exit(EXIT_INTERRUPTED, "interrupted; nothing written")

    return wrapper  # type: ignore[return-value]


def _exit(code: int, line: str) -> NoReturn:
    """Print ``line`` on stderr and exit with ``code``; after a SIGTERM, whatever error it
    caused (an import it cut short reads as a missing package) exits as terminated."""
    if terminated():
        code, line = EXIT_TERMINATED, "terminated; nothing written"
    click.echo(line, err=True)
    sys.exit(code)


def write_reports(reports: Mapping[str | None, str]) -> None:
    """Write each report (destination → text): the files together (all or none, see
    :func:`onnxgrow.atomic.atomic_outputs`), then the one for stdout (``-``); a None
    destination is skipped."""
    files = {Path(d): text for d, text in reports.items() if d is not None and d != "-"}
    with atomic_outputs(list(files)) as paths:
        for path, text in zip(paths, files.values()):
            path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    for destination, text in reports.items():
        if destination == "-":
            click.echo(text, nl=not text.endswith("\n"))


def report_destinations(*destinations: str | None, inputs: Sequence[str] = ()) -> bool:
    """Check, before the work, where the reports go; True when one goes to stdout.

    At most one report goes to stdout (``-``): human-readable text then goes to stderr, so
    stdout holds only the report. A report file must be in an existing folder, not be a
    folder, not be one of the ``inputs`` models or their data files, and not be another
    report's file.
    """
    to_stdout = [d for d in destinations if d == "-"]
    if len(to_stdout) > 1:
        raise GrowError("only one report can be written to stdout ('-')")
    files = [Path(d) for d in destinations if d is not None and d != "-"]
    if len({f.resolve() for f in files}) < len(files):
        raise GrowError(f"{files[0]}: two reports name the same file; give each its own")
    from onnxgrow.model_io import is_own_data_file

    for path in files:
        check_output_folder(path, path.suffix or ".json")
        for model in map(Path, inputs):
            if path.resolve() == model.resolve() or is_own_data_file(model, path):
                raise GrowError(f"{path}: refusing to overwrite the input {model}; give the report another name")
    return bool(to_stdout)


def echo_growth(report: GrowthReport, map_out: str | None = None) -> None:
    """A growth command's report: what the growth did in its own words, its notes, the
    verdict, the files written, and the growth map when one was asked for."""
    for line in report.lines():
        echo_line(line)
    for note in report.notes:
        echo_line(f"note: {note}")
    echo_verification(report.verification, report.written)
    if map_out is not None:
        echo_line(f"wrote growth map {map_out}")


def echo_verification(report: VerifyReport | None, written: list[Path]) -> None:
    """The verdict line of a growth command's check (or that --no-verify skipped it), then
    every file written: the model and its data files."""
    echo_line(report.summary() if report is not None else "verification skipped (--no-verify)")
    model, *data = written
    echo_line(f"wrote {model}" + (f" (weights in {', '.join(p.name for p in data)})" if data else ""))
