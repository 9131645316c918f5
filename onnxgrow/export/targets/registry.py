"""The export target registry: what ``onnxgrow export --to NAME`` can write.

A target is one function registered with :func:`export_target`, which declares

- its ``name`` (the ``--to`` value) and its output: a file (:class:`FileOutput`: the
  suffixes the name may end in, and the suffix of the default name beside the input) or
  a folder (:class:`FolderOutput`);
- ``help``, one phrase for ``--help``, and ``counts``, what the report's number counts
  (``trainable parameters (PyTorch module; torch.load(path, weights_only=False))``);
- whether its output is checked by running it: ``checked_as`` names what is compared
  with onnxruntime (``PyTorch module``), else ``not_checked`` says why nothing is.

The function builds the framework object from the loaded ONNX model (it may refuse with
a GrowError before anything is written) and returns an :class:`Exported`: the count and
notes for the report, a ``write`` that writes the output at a path, and for a checked
target a ``load`` that reads the written output back as a
:data:`onnxgrow.verification.Runner`. :func:`onnxgrow.export.export_model` does the
rest for every target alike: the output checks before any work, the atomic write (a file
or a whole folder), the check with :func:`onnxgrow.verification.verify`, the report.

Registration runs when the target's module is imported, so that module imports only
light modules at its top (the CLI reads the registry for ``--help``); the framework is
imported inside the function.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from onnxgrow.atomic import atomic_folder, atomic_output, check_folder_output, check_output_folder
from onnxgrow.errors import GrowError

if TYPE_CHECKING:
    import numpy as np
    import onnx_ir as ir

    from onnxgrow.verification import Runner


@dataclass(frozen=True)
class FileOutput:
    """A target writing one file whose name ends in one of ``suffixes``; the default output
    beside ``model.onnx`` is ``model`` + ``default`` (the first suffix unless given)."""

    suffixes: tuple[str, ...]
    default: str = ""

    @property
    def default_suffix(self) -> str:
        return self.default or self.suffixes[0]

    def default_for(self, source: Path) -> Path:
        return source.with_name(source.stem + self.default_suffix)

    def shown_default(self) -> str:
        """The default output name as ``--help`` shows it (``<stem>.pt``)."""
        return f"<stem>{self.default_suffix}"

    def check(self, out: Path, target: str) -> None:
        """Refuse a folder, a missing parent folder, or a name with another suffix."""
        check_output_folder(out, self.default_suffix)
        if not out.name.lower().endswith(self.suffixes):
            raise GrowError(f"{out}: --to {target} writes {' or '.join(self.suffixes)} files; "
                            f"give an output name ending in one of them")

    def refuse_inputs(self, out: Path, inputs: Sequence[Path]) -> None:
        """Refuse an output that would overwrite the input model or one of its data files."""
        from onnxgrow.model_io import ensure_output_is_not_input

        ensure_output_is_not_input(out, list(inputs))

    def atomic(self, out: Path) -> contextlib.AbstractContextManager[Path]:
        return atomic_output(out)


@dataclass(frozen=True)
class FolderOutput:
    """A target writing a folder, ``model`` + ``default`` beside ``model.onnx`` by default.

    Every output of the target holds the file ``holds``: an existing folder is replaced
    (whole) only when it is empty or holds that file, so that a mistyped ``-o`` never
    removes a folder of other files."""

    default: str
    holds: str

    def default_for(self, source: Path) -> Path:
        return source.with_name(source.stem + self.default)

    def shown_default(self) -> str:
        """The default output name as ``--help`` shows it (``<stem>-hf/``)."""
        return f"<stem>{self.default}/"

    def check(self, out: Path, target: str) -> None:
        """Refuse a file, a missing parent folder, or a folder that is not an earlier output."""
        check_folder_output(out)
        if out.is_dir() and not (out / self.holds).is_file() and any(out.iterdir()):
            raise GrowError(f"{out}: is a folder but not an earlier --to {target} output (it has no "
                            f"{self.holds}); give a new folder name, or remove it first")

    def refuse_inputs(self, out: Path, inputs: Sequence[Path]) -> None:
        """Refuse a folder that holds the input model or one of its data files."""
        folder = out.resolve()
        for path in inputs:
            if folder in path.resolve().parents:
                raise GrowError(f"{out}: refusing to replace a folder holding the input {path}; "
                                "choose another output with -o")

    def atomic(self, out: Path) -> contextlib.AbstractContextManager[Path]:
        return atomic_folder(out)


@dataclass(frozen=True)
class ExportSettings:
    """Target options besides the output, each read by the targets that declare it
    (``options``): ``bias_before_norm`` (keras-weights): whether the Keras layers right
    before a BatchNormalization have a bias (:mod:`onnxgrow.export.keras_layout`);
    ``config`` (hf): the original model's config.json or its folder; ``max_shard_size``
    (hf): the most bytes of weights per file. ``source`` is the ONNX file exported, for a
    target that reads files beside it (optimum's config.json)."""

    bias_before_norm: bool = True
    config: Path | None = None
    max_shard_size: int | None = None
    source: Path | None = None


#: The command-line option of each setting, for the refusal of one the target does not read.
SETTING_OPTIONS = {"bias_before_norm": "--no-bias-before-norm", "config": "--config",
                   "max_shard_size": "--max-shard-size"}


@dataclass
class Exported:
    """What a target built, ready to write: ``weights`` (the count the report gives, in the
    target's ``counts``), ``notes``, ``write(path)`` (writes the output file, or fills the
    empty folder, at ``path``) and, for a checked target, ``load(path)``: a runner of the
    written output (feeds by input name → outputs by ONNX output name). ``inputs`` turns the
    check's random feeds into inputs the framework model is defined for (an attention mask of
    ones and trailing zeros: a row that attends to nothing is computed differently by a
    framework and by its exported graph); the user's own inputs are used as given."""

    weights: int
    notes: list[str]
    write: Callable[[Path], None]
    load: Callable[[Path], Runner] | None = None
    inputs: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]] | None = None


Build = Callable[["ir.Model", ExportSettings], Exported]


@dataclass(frozen=True)
class ExportTarget:
    """A registered target (see the module docstring)."""

    name: str
    output: FileOutput | FolderOutput
    help: str
    counts: str
    build: Build
    checked_as: str | None = None
    not_checked: str | None = None
    options: tuple[str, ...] = ()

    def refuse_unread(self, settings: ExportSettings) -> None:
        """Refuse a setting given (not its default) that this target does not read."""
        default = ExportSettings()
        for name, option in SETTING_OPTIONS.items():
            if name not in self.options and getattr(settings, name) != getattr(default, name):
                readers = [t.name for t in TARGETS.values() if name in t.options]
                raise GrowError(f"{option} is an option of --to {' and '.join(readers)}, not of --to {self.name}")


#: ``--to`` name → target, in registration order (the order of ``--help``). The built-in
#: targets are registered by the package :mod:`onnxgrow.export.targets`, which Python
#: imports before this module.
TARGETS: dict[str, ExportTarget] = {}


def export_target(name: str, output: FileOutput | FolderOutput, *, help: str, counts: str,
                  checked_as: str | None = None, not_checked: str | None = None,
                  options: tuple[str, ...] = ()) -> Callable[[Build], Build]:
    """Register the decorated function as the build of the export target ``name``; give
    exactly one of ``checked_as`` (what is compared with onnxruntime) and ``not_checked``
    (why nothing is). ``options`` are the :class:`ExportSettings` it reads."""
    if (checked_as is None) == (not_checked is None):
        raise TypeError(f"export target {name!r}: give exactly one of checked_as and not_checked")
    if name in TARGETS:
        raise TypeError(f"export target {name!r} is registered twice")
    if unknown := set(options) - set(SETTING_OPTIONS):
        raise TypeError(f"export target {name!r}: unknown options {sorted(unknown)}")

    def register(build: Build) -> Build:
        TARGETS[name] = ExportTarget(name, output, help, counts, build, checked_as, not_checked, options)
        return build

    return register


def target_named(name: str) -> ExportTarget:
    """The target registered as ``name``; a GrowError listing the targets for another name."""
    if name not in TARGETS:
        raise GrowError(f"unknown export target {name!r}; choose one of {', '.join(TARGETS)}")
    return TARGETS[name]

