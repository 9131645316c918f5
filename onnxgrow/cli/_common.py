"""What every subcommand shares: error handling, verification options, parsing helpers."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import numpy as np

from onnxgrow.errors import GrowError, NotEquivalentError
from onnxgrow.grow import VerifyOptions

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2


def user_errors(func: F) -> F:
    """Turn user errors into one line on stderr and the documented exit status, no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except NotEquivalentError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_CHECK_FAILED)
        except GrowError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_USAGE)
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
                     help="A .npz file of input arrays, used instead of random inputs."),
        click.option("--providers", default="cpu", show_default=True,
                     help="Comma-separated execution providers: cpu, cuda."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def parse_providers(text: str) -> list[str]:
    """``"cuda,cpu"`` → ``["cuda", "cpu"]``."""
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise GrowError("--providers needs at least one provider (cpu, cuda)")
    return names


def load_npz_inputs(path: str) -> list[dict[str, np.ndarray]]:
    """One sample of named input arrays from a ``.npz`` file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return [{name: data[name] for name in data.files}]
    except FileNotFoundError:
        raise GrowError(f"{path}: no such file") from None
    except Exception as exc:  # zipfile/numpy raise many kinds on garbage
        raise GrowError(f"{path}: not a readable .npz file ({type(exc).__name__})") from None


def growth_verify_options(
    *, no_verify: bool, seed: int, atol: float | None, rtol: float | None, samples: int,
    input_shapes: tuple[str, ...], inputs_file: str | None, providers: str,
) -> VerifyOptions:
    """The check a growth command (widen, deepen) runs, from --no-verify, --seed and :func:`verification_options`."""
    return VerifyOptions(
        enabled=not no_verify, atol=atol, rtol=rtol, samples=samples, seed=seed,
        providers=parse_providers(providers), input_shapes=parse_input_shapes(input_shapes),
        inputs=load_npz_inputs(inputs_file) if inputs_file else None,
    )


def echo_verification(report: object | None, output: Path) -> None:
    """The verdict line (or that --no-verify skipped it), then where the model was written."""
    if report is not None:
        click.echo(report.summary())  # type: ignore[attr-defined]
    else:
        click.echo("verification skipped (--no-verify)")
    click.echo(f"wrote {output}")
