"""What every subcommand shares: error handling, verification options, parsing helpers."""

from __future__ import annotations

import contextlib
import functools
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from onnxgrow.errors import GrowError, NotEquivalentError
from onnxgrow.verification import load_inputs

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2


def one_line(exc: BaseException) -> str:
    """The message with line breaks escaped: names from a damaged model may contain them."""
    return str(exc).replace("\r", "\\r").replace("\n", "\\n")


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI job cancelled or timed out), raised so that cleanup code runs."""


def _raise_terminated(_signum: int, _frame: object) -> None:
    raise Terminated


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """While a command runs, SIGTERM unwinds the stack like Ctrl-C instead of killing the
    process on the spot, so temporary files are removed and no partial output remains."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
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
        except MemoryError:
            click.echo("error: out of memory; nothing written (try a smaller width, or a machine "
                       "with more memory)", err=True)
            sys.exit(EXIT_USAGE)
        except Terminated:
            click.echo("terminated; nothing written", err=True)
            sys.exit(143)
        except KeyboardInterrupt:
            click.echo("interrupted; nothing written", err=True)
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


def parse_input_shapes(items: tuple[str, ...]) -> dict[str, list[int]]:
    """Parse ``name:[1,3,224,224]`` (or ``name:1x3x224x224``) into a mapping."""
    shapes: dict[str, list[int]] = {}
    for item in items:
        name, sep, dims = item.rpartition(":")
        if not sep or not name:
            raise GrowError(f"--input-shapes {item!r}: expected NAME:[d0,d1,...]")
        text = dims.strip().strip("[]()")
        parts = [p for p in text.replace("x", ",").split(",") if p.strip()]
        try:
            values = [int(p) for p in parts]
        except ValueError:
            raise GrowError(f"--input-shapes {item!r}: dimensions must be integers") from None
        if any(v < 0 for v in values):
            raise GrowError(f"--input-shapes {item!r}: dimensions must not be negative")
        shapes[name] = values
    return shapes


def verification_options(func: F) -> F:
    """--atol, --rtol, --samples, --input-shapes, --inputs, --providers (each command adds --seed)."""
    options = [
        click.option("--atol", type=float, default=None, help="Absolute tolerance (default by dtype)."),
        click.option("--rtol", type=float, default=None, help="Relative tolerance (default by dtype, 1e-5 for fp32)."),
        click.option("--samples", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Random input samples to compare."),
        click.option("--input-shapes", "input_shapes", multiple=True, metavar="NAME:[d,...]",
                     help="Concrete shape for an input with dynamic dimensions (repeatable)."),
        click.option("--inputs", "inputs_file", type=click.Path(dir_okay=False), default=None,
                     help="A .npz file with one array per model input (one sample), "
                          "used instead of random inputs."),
        click.option("--providers", default="cpu", show_default=True,
                     help="Comma-separated execution providers: cpu, cuda."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str, option: str) -> int:
    """``2GB`` → 2·10⁹ bytes, ``512MiB`` → 512·2²⁰, ``1000`` → 1000; positive."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS or float(match.group(1)) <= 0:
        raise GrowError(f"{option} {text!r}: expected a positive size such as 2GB, 500MB or 1GiB")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def parse_providers(text: str) -> list[str]:
    """``cuda,cpu`` → ``["cuda", "cpu"]``; at least one name."""
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise GrowError("--providers: give at least one of cpu, cuda")
    return names


def verification_kwargs(
    *,
    atol: float | None,
    rtol: float | None,
    samples: int,
    input_shapes: tuple[str, ...],
    inputs_file: str | None,
    providers: str,
    seed: int,
) -> dict[str, Any]:
    """The keyword arguments of :func:`onnxgrow.verification.verify` for the verification options.

    ``--inputs`` gives one sample and fixes every shape, so it excludes ``--input-shapes``
    and ``--samples`` other than 1.
    """
    if inputs_file is not None and (input_shapes or samples != 1):
        raise GrowError("--inputs gives one sample with its own shapes: leave out --input-shapes and --samples")
    return {
        "inputs": [load_inputs(inputs_file)] if inputs_file is not None else None,
        "input_shapes": parse_input_shapes(input_shapes) or None,
        "samples": samples,
        "seed": seed,
        "atol": atol,
        "rtol": rtol,
        "providers": parse_providers(providers),
    }


def write_report(destination: str, text: str) -> None:
    """Write ``text`` to a file, or to stdout when ``destination`` is ``-``."""
    if destination == "-":
        click.echo(text, nl=not text.endswith("\n"))
        return
    try:
        with open(destination, "w", encoding="utf-8") as f:
            f.write(text if text.endswith("\n") else text + "\n")
    except OSError as exc:
        raise GrowError(f"{destination}: cannot write ({exc.strerror})") from None


def report_destinations(*destinations: str | None) -> bool:
    """Check that at most one report goes to stdout; True when one does.

    Human-readable text then goes to stderr, so stdout holds only the report.
    """
    to_stdout = [d for d in destinations if d == "-"]
    if len(to_stdout) > 1:
        raise GrowError("only one report can be written to stdout ('-')")
    return bool(to_stdout)


def echo_verification(report: object | None, output: Path) -> None:
    """The verdict line of a growth command's check (or that --no-verify skipped it), then the output path."""
    if report is not None:
        click.echo(report.summary())  # type: ignore[attr-defined]
    else:
        click.echo("verification skipped (--no-verify)")
    click.echo(f"wrote {output}")
