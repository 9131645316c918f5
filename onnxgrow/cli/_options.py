"""Option groups, each declared once and parsed into one options object.

A group is a set of click options added by one decorator; the command receives one
parsed object instead of the raw values (in the way Polygraphy's argument groups parse
themselves):

- :data:`verification_options` → ``check: CheckArgs``, whose ``options()`` builds the
  :class:`~onnxgrow.options.VerifyOptions` of ``verify``, every growth's check,
  ``export`` and ``diff --numeric``;
- :data:`growth_options` → ``write: WriteArgs`` (``-o``, ``--no-verify``, ``-q``,
  ``--max-shard-size``, ``--weights-as-constants``), whose ``options()`` builds the
  :class:`~onnxgrow.options.GrowOptions` of every growth command;
- :data:`json_option` → ``json_out``: ``--json PATH|-``, the same on every command.

Everything here is checked from the arguments alone, before any model is loaded.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from onnxgrow.errors import GrowError
from onnxgrow.options import GrowOptions, Progress, VerifyOptions

F = TypeVar("F", bound=Callable[..., Any])


def _group(options: list[Callable[[F], F]], build: Callable[[dict[str, Any]], object], into: str,
           names: tuple[str, ...]) -> Callable[[F], F]:
    """A decorator adding ``options`` to a command and passing ``build(values)`` as ``into``."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names}
            ctx = click.get_current_context()
            values["_given"] = tuple(name for name in names
                                     if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT)
            kwargs[into] = build(values)
            return func(*args, **kwargs)

        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper  # type: ignore[return-value]

    return decorate


# --- verification --------------------------------------------------------------------


@dataclass(frozen=True)
class CheckArgs:
    """The verification options as given; :meth:`options` parses them into :class:`VerifyOptions`."""

    atol: float | None
    rtol: float | None
    samples: int
    input_shapes: tuple[str, ...]
    inputs_file: str | None
    providers: str
    seed: int
    max_memory: str | None
    given: tuple[str, ...]

    def options(self) -> VerifyOptions:
        """The options object; a bad value is a GrowError naming the option."""
        inputs = None
        if self.inputs_file is not None:
            if self.input_shapes or self.samples != 1:  # before reading the file
                raise GrowError("--inputs gives one sample with its own shapes: leave out --input-shapes and --samples")
            from onnxgrow.verification.inputs import load_inputs  # numpy, only when --inputs is given

            inputs = [load_inputs(self.inputs_file)]
        return VerifyOptions(atol=self.atol, rtol=self.rtol, samples=self.samples, seed=self.seed,
                             providers=parse_providers(self.providers),
                             input_shapes=parse_input_shapes(self.input_shapes) or None, inputs=inputs,
                             max_memory=parse_size(self.max_memory, "--max-memory") if self.max_memory else None)


verification_options = _group(
    [
        click.option("--atol", type=float, default=None, help="Absolute tolerance (default by dtype)."),
        click.option("--rtol", type=float, default=None, help="Relative tolerance (default by dtype, 1e-5 for fp32)."),
        click.option("--samples", type=int, default=1, show_default=True,
                     help="Random input samples to compare (at least one per branch an If's input switches)."),
        click.option("--input-shapes", "input_shapes", multiple=True, metavar="NAME:[d,...]",
                     help="Concrete shape for an input with dynamic dimensions (repeatable)."),
        click.option("--inputs", "inputs_file", type=click.Path(dir_okay=False), default=None,
                     help="A .npz file with one array per model input (one sample), used instead of random inputs."),
        click.option("--providers", default="cpu", show_default=True,
                     help="Comma-separated execution providers: cpu, cuda."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of every random choice: new units, and the check's random inputs."),
        click.option("--max-memory", "max_memory", default=None, metavar="SIZE",
                     help="Memory the check may use (e.g. 2G, 500MB); a model that would not fit is checked "
                          "segment by segment (default: half of the available memory)."),
    ],
    lambda v: CheckArgs(v["atol"], v["rtol"], v["samples"], v["input_shapes"], v["inputs_file"], v["providers"],
                        v["seed"], v["max_memory"], v["_given"]),
    "check",
    ("atol", "rtol", "samples", "input_shapes", "inputs_file", "providers", "seed", "max_memory"),
)


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
        if any(v < 1 for v in values):
            raise GrowError(f"--input-shapes {item!r}: every dimension must be at least 1")
        shapes[name] = values
    return shapes


def parse_providers(text: str) -> list[str]:
    """``cuda,cpu`` → ``["cuda", "cpu"]``; at least one name."""
    names = [p.strip() for p in text.split(",") if p.strip()]
    if not names:
        raise GrowError("--providers: give at least one of cpu, cuda")
    return names


# --- writing a grown model ----------------------------------------------------------


weights_as_constants_option = click.option(
    "--weights-as-constants", "weights_as_constants", is_flag=True,
    help="Treat weights the model also lists as inputs (IR >= 4, e.g. torch's keep_initializers_as_inputs) "
         "as constants; the grown model keeps them listed, with their new shapes. Before IR 4 they are "
         "constants anyway.")


@dataclass(frozen=True)
class WriteArgs:
    """How a growth command writes its result, as given."""

    output: str | None
    no_verify: bool
    quiet: bool
    max_shard_size: str | None
    map_out: str | None
    weights_as_constants: bool = False

    def options(self, check: CheckArgs, progress: Progress | None) -> GrowOptions:
        """The driver's options: the check (unless ``--no-verify``), shards, progress, the growth
        map, and whether weights listed as inputs are constants."""
        shard_bytes = parse_size(self.max_shard_size, "--max-shard-size") if self.max_shard_size else None
        return GrowOptions(verify=None if self.no_verify else check.options(), max_shard_bytes=shard_bytes,
                           progress=progress, map_out=self.map_out, weights_as_constants=self.weights_as_constants)

    def output_path(self, source: Path) -> Path:
        """``-o``, or ``<input stem>.grown.onnx`` beside the input."""
        return Path(self.output) if self.output else source.with_name(f"{source.stem}.grown.onnx")


growth_options = _group(
    [
        click.option("-o", "--output", type=click.Path(), default=None,
                     help="Output model (default: <input stem>.grown.onnx beside the input)."),
        click.option("--no-verify", is_flag=True, help="Skip the onnxruntime equivalence check."),
        click.option("--max-shard-size", "max_shard_size", default=None, metavar="SIZE",
                     help="Split the weights over data files of at most SIZE each (e.g. 2GB, 500MB)."),
        click.option("-q", "--quiet", is_flag=True, help="No progress bars."),
        click.option("--map-out", "map_out", type=click.Path(dir_okay=False), default=None, metavar="MAP.json",
                     help="Also write the growth map (where every grown weight's positions come from), "
                          "together with the model."),
        weights_as_constants_option,
    ],
    lambda v: WriteArgs(v["output"], v["no_verify"], v["quiet"], v["max_shard_size"], v["map_out"],
                        v["weights_as_constants"]),
    "write",
    ("output", "no_verify", "quiet", "max_shard_size", "map_out", "weights_as_constants"),
)

_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
               "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_size(text: str, option: str) -> int:
    """``2GB`` → 2·10⁹ bytes, ``512MiB`` and ``512M`` → 512·2²⁰ (a bare letter is binary, as
    in GNU coreutils and Docker), ``1000`` → 1000; positive."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZE_UNITS or float(match.group(1)) <= 0:
        raise GrowError(f"{option} {text!r}: expected a positive size such as 2GB, 500MB or 1GiB")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


# --- reports -------------------------------------------------------------------------

json_option = click.option("--json", "json_out", metavar="PATH|-", default=None,
                           help="Also write the report as JSON to PATH, or to stdout with '-'.")
