"""The options objects every command and API function takes, each validating itself.

This module is light (no numpy, onnx or onnxruntime at import), so the CLI can build
options and refuse bad ones before any heavy import or model load.

- :class:`VerifyOptions`: how onnxruntime checks two models (``onnxgrow verify``, the
  check of every growth and export, ``diff --numeric``).
- :class:`VerifyScope`: what a growth promises to preserve, when that is not every
  output element (a classifier with new classes keeps its old logits).
- :class:`GrowOptions`: how the growth driver writes its result (verification, shards,
  progress).
- :func:`parse_choice`: an option value naming a member of an enum (``--init``, ``--mode``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, TypeVar

from onnxgrow.errors import GrowError

if TYPE_CHECKING:
    import numpy as np

E = TypeVar("E", bound=Enum)

#: Short provider names and onnxruntime's names for them.
PROVIDER_NAMES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
}

#: ``progress(stage, done, total)``: stage ``"loading"`` (total 0: no count), ``"planning"``
#: (layers), ``"saving"`` (bytes) or ``"verifying"`` (loads and runs).
Progress = Callable[[str, int, int], None]


def parse_choice(kind: type[E], value: str | E, option: str) -> E:
    """``value`` as a member of ``kind``; a GrowError listing the choices otherwise."""
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(str(member.value) for member in kind)
        raise GrowError(f"unknown {option} {value!r}; choose one of {choices}") from None


def check_seed(seed: object) -> int:
    """A seed is a non-negative integer (numpy's generators take no other); GrowError otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise GrowError(f"--seed must be a non-negative integer, got {seed!r}")
    return seed


@dataclass(frozen=True)
class VerifyOptions:
    """How onnxruntime compares a candidate with its reference.

    - ``atol``/``rtol``: tolerances; ``None`` takes the output dtype's default.
    - ``samples`` seeded random input samples (seed ``seed + i``; more where an If's switch
      input needs one sample per branch), drawn by role with dynamic dimensions sized by
      ``input_shapes``, else as the roles imply (docs/design.md §6), or ``inputs``: the
      user's own samples, which fix the shapes and the count, so they exclude
      ``input_shapes`` and ``samples``.
    - ``providers``: short names (``cpu``, ``cuda``) or onnxruntime's; the report names
      the provider that really ran.
    - ``max_memory``: the bytes the check may hold (``--max-memory``). A model whose
      onnxruntime session would not fit is checked segment by segment
      (docs/design.md §6); ``None``: half of the memory available when the check starts
      (:func:`onnxgrow.verification.memory.memory_limit`).

    Every field is checked on construction; a bad value is a GrowError naming the option.
    """

    atol: float | None = None
    rtol: float | None = None
    samples: int = 1
    seed: int = 0
    providers: Sequence[str] = ("cpu",)
    input_shapes: Mapping[str, Sequence[int]] | None = None
    inputs: Sequence[Mapping[str, np.ndarray]] | None = None
    max_memory: int | None = None

    def __post_init__(self) -> None:
        check_seed(self.seed)
        if self.max_memory is not None and (isinstance(self.max_memory, bool) or not isinstance(self.max_memory, int)
                                            or self.max_memory <= 0):
            raise GrowError(f"--max-memory must be a positive number of bytes, got {self.max_memory!r}")
        for label, tolerance in (("--atol", self.atol), ("--rtol", self.rtol)):
            if tolerance is not None and (isinstance(tolerance, bool) or not isinstance(tolerance, (int, float))
                                          or not math.isfinite(tolerance) or tolerance < 0):
                raise GrowError(f"{label} must be a finite number >= 0, got {tolerance}")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise GrowError(f"--samples must be an integer >= 1, got {self.samples!r}")
        if isinstance(self.providers, str) or not self.providers:
            raise GrowError("--providers: give at least one of " + ", ".join(PROVIDER_NAMES))
        if self.inputs is not None:
            if self.input_shapes or self.samples != 1:
                raise GrowError("--inputs gives one sample with its own shapes: leave out --input-shapes and --samples")
            if not self.inputs:
                raise GrowError("--inputs: no input samples given")
        for name, dims in (self.input_shapes or {}).items():
            if any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
                raise GrowError(f"--input-shapes {name}:{list(dims)}: every dimension must be an integer >= 1")


@dataclass(frozen=True)
class VerifyScope:
    """What a growth preserves, when that is less than every element of every output.

    - ``outputs``: ``{name: (axis, old_size)}``: the candidate's output ``name`` has grown
      along ``axis``; only its first ``old_size`` entries there are compared.
    - ``input_high``: ``{name: high}``: integer input ``name`` is drawn from ``[0, high)``
      (token ids the original model knew).
    - ``renormalise``: ``{name: "softmax" | "log_softmax"}``: the old part of a grown
      probability output is renormalised over the old classes before it is compared (new
      classes that took probability mass; log-probabilities get their logsumexp subtracted).
    - ``preserved``: the verdict's words for what was checked, e.g. ``old logits``.

    A growth stores its scope in the lineage entry (``verify_scope``, :meth:`to_json`), so
    a later check of the original against the grown file compares the same part
    (:meth:`from_history`).
    """

    outputs: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    input_high: Mapping[str, int] = field(default_factory=dict)
    preserved: str = ""
    renormalise: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """The scope as a lineage entry stores it."""
        return {"outputs": {k: list(v) for k, v in self.outputs.items()}, "input_high": dict(self.input_high),
                "renormalise": dict(self.renormalise), "preserved": self.preserved}

    @staticmethod
    def from_history(entries: Sequence[Mapping[str, object]]) -> VerifyScope:
        """The scope of several growths in a row: each grown output and bounded input at its
        smallest old size; empty when no entry has one."""
        outputs: dict[str, tuple[int, int]] = {}
        highs: dict[str, int] = {}
        renormalise: dict[str, str] = {}
        words: list[str] = []
        for entry in entries:
            scope = entry.get("verify_scope")
            if not isinstance(scope, Mapping):
                continue
            for name, (axis, old) in dict(scope.get("outputs") or {}).items():
                size = min(int(old), outputs[name][1]) if name in outputs else int(old)
                outputs[name] = (int(axis), size)
            for name, high in dict(scope.get("input_high") or {}).items():
                highs[name] = min(int(high), highs.get(name, int(high)))
            renormalise.update(dict(scope.get("renormalise") or {}))
            if scope.get("preserved"):
                words.append(str(scope["preserved"]))
        return VerifyScope(outputs, highs, "; ".join(words), renormalise)

    @staticmethod
    def merged(parts: Sequence[VerifyScope]) -> VerifyScope:
        """One scope for several growths applied together."""
        return VerifyScope({k: v for p in parts for k, v in p.outputs.items()},
                           {k: v for p in parts for k, v in p.input_high.items()},
                           "; ".join(p.preserved for p in parts if p.preserved),
                           {k: v for p in parts for k, v in p.renormalise.items()})


@dataclass(frozen=True)
class GrowOptions:
    """How the growth driver writes a grown model.

    ``verify=None`` skips the onnxruntime check (``--no-verify``); ``max_shard_bytes``
    splits the weights over data files of at most that size; ``progress`` follows the
    save and the check; ``map_out`` is where the growth map goes (``--map-out``), written
    together with the model.
    save and the check; ``weights_as_constants`` loads initializers that an IR >= 4 model
    lists as inputs as constants (``--weights-as-constants``, docs/design.md §10).
    """

    verify: VerifyOptions | None = field(default_factory=VerifyOptions)
    max_shard_bytes: int | None = None
    progress: Progress | None = None
    map_out: str | os.PathLike[str] | None = None
    weights_as_constants: bool = False

    def __post_init__(self) -> None:
        if self.max_shard_bytes is not None and (isinstance(self.max_shard_bytes, bool)
                                                 or self.max_shard_bytes <= 0):
            raise GrowError(f"the maximum shard size must be positive, got {self.max_shard_bytes} bytes")
