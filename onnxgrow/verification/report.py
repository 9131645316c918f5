"""What a check found: one :class:`OutputComparison` per output, one :class:`VerifyReport` per check.

A check run segment by segment (docs/design.md §6) also gives one :class:`CutComparison`
per cut: the values both models hand from one segment to the next, compared in the same
way, so that the report can say where a difference first appears. The verdict is the
outputs' all the same.

An output passes when ``max|a-b| <= atol + rtol * max|a|`` (``a`` the reference), with
NaN at the same place on both sides counted as equal. Each comparison also gives the
smallest ``atol`` (at the given ``rtol``) and ``rtol`` (at the given ``atol``) that would
pass. A report of a change that is not meant to be exact (random-pad) does not say
FAILED: it says the model changed, by design, and by how much.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field


@dataclass
class OutputComparison:
    """How one output of the candidate compares with the reference's."""

    name: str
    shape: list[int]
    dtype: str
    max_abs_error: float
    max_rel_error: float
    reference_max_abs: float
    nan_mismatch: int
    atol: float
    rtol: float
    passed: bool
    reason: str = ""

    @property
    def min_rtol(self) -> float:
        """Smallest rtol (with this atol) under which this output would pass."""
        if self.nan_mismatch:
            return float("inf")
        excess = max(self.max_abs_error - self.atol, 0.0)
        return excess / self.reference_max_abs if self.reference_max_abs > 0 else (
            0.0 if excess == 0 else float("inf")
        )

    @property
    def min_atol(self) -> float:
        """Smallest atol (with this rtol) under which this output would pass."""
        if self.nan_mismatch:
            return float("inf")
        return max(self.max_abs_error - self.rtol * self.reference_max_abs, 0.0)

    def line(self) -> str:
        """``PASSED name: errors (tolerances); what would pass``, for people."""
        verdict = "PASSED" if self.passed else "FAILED"
        text = f"{verdict}  {self.name} {self.shape} {self.dtype}: "
        if self.reason and math.isinf(self.max_abs_error):
            return text + self.reason
        text += (
            f"max abs error {self.max_abs_error:.3g}, max rel error {self.max_rel_error:.3g} "
            f"(atol {self.atol:g}, rtol {self.rtol:g})"
        )
        if self.nan_mismatch:
            return text + f"; {self.reason}: no tolerance passes"
        text += f"; min atol to pass {_round_up(self.min_atol)} (at rtol {self.rtol:g})"
        if not math.isinf(self.min_rtol):
            text += f", min rtol to pass {_round_up(self.min_rtol)} (at atol {self.atol:g})"
        return text + (f"; {self.reason}" if self.passed and self.reason else "")


@dataclass
class CutComparison:
    """The values crossing one cut, compared: ``values`` the floating-point ones of the same
    shape and dtype in both models; ``not_compared`` the others: those whose shape or dtype
    the growth changed (a widened axis has no element-by-element counterpart), and integer
    and boolean values (shapes, indices, masks: a growth changes sizes on purpose).
    ``after`` names the last reference node before the cut."""

    index: int
    after: str
    values: list[OutputComparison]
    not_compared: list[str]
    passed: bool

    def line(self) -> str:
        """``cut 3 after 'node' [x, y]: max rel error 2e-08``, for people."""
        names = [v.name for v in self.values]
        text = f"cut {self.index} after {self.after!r} [{', '.join(names) or 'nothing comparable'}]"
        if self.values:
            worst = max(self.values, key=lambda v: (not v.passed, v.max_rel_error))
            text += (f": {'within tolerance' if self.passed else 'BEYOND TOLERANCE'}, max rel error "
                     f"{worst.max_rel_error:.3g}" + ("" if self.passed else f" at {worst.name!r}"))
        if self.not_compared:
            shown = ", ".join(self.not_compared[:3]) + (", ..." if len(self.not_compared) > 3 else "")
            text += f"; not compared (shape changed, or not floating point): {shown}"
        return text


#: The branches of an If, in the order its attributes name them.
BRANCHES = ("then_branch", "else_branch")


@dataclass
class BranchRuns:
    """One If of the reference: ``runs`` says on how many samples each branch ran (None: not
    determined), ``rewritten`` the branches the candidate rewrote."""

    node: str
    runs: dict[str, int] | None
    rewritten: list[str] = field(default_factory=list)

    @property
    def unchecked(self) -> list[str]:
        """Rewritten branches no sample ran, or that may not have run."""
        return [b for b in self.rewritten if self.runs is None or not self.runs.get(b)]

    def line(self) -> str:
        """``If node 'x': samples per branch: then_branch 1, else_branch 1; rewritten: then_branch``;
        ``(only else_branch ran)`` when every sample took one branch; and the rewritten branches no
        sample ran (``NOT CHECKED``) or none is known to have run."""
        if self.runs is None:
            text = f"{self.node}: which branch ran was not determined"
        else:
            counts = [f"{b} {self.runs[b]}" for b in BRANCHES]
            text = f"{self.node}: samples per branch: {', '.join(counts)}"
            ran = [b for b in BRANCHES if self.runs[b]]
            if len(ran) == 1:
                text += f" (only {ran[0]} ran)"
        if self.rewritten:
            text += f"; rewritten: {', '.join(self.rewritten)}"
        if self.unchecked and self.runs is None:
            text += f"; not known to have run: {', '.join(self.unchecked)}"
        elif self.unchecked:
            text += f"; NOT CHECKED (never ran): {', '.join(self.unchecked)}"
        return text

    def warning(self) -> str:
        """Why a rewritten branch was not checked ('' when every rewritten branch ran)."""
        if not self.unchecked:
            return ""
        what = " and ".join(self.unchecked)
        if self.runs is None:
            return (f"warning: {self.node}: {what} rewritten, and which branch the inputs take was not "
                    "determined: it may not have been checked")
        return (f"warning: {self.node}: {what} rewritten but never ran on these inputs: not checked "
                "(give --inputs that take it)")


@dataclass
class VerifyReport:
    """The verdict over all outputs and samples.

    ``mode`` says how the models ran: ``whole`` (one onnxruntime session each) or
    ``segmented`` (``segments`` sessions each, ``cuts`` compared between them,
    ``reused_segments`` of the candidate not run again because they are the reference's
    with bit-identical inputs; ``segment_bytes`` each segment's weight bytes, the larger
    model's: the largest bounds what the check holds); ``max_memory`` is the limit given
    (``--max-memory``; None: the default share of the memory available, which varies from
    run to run and so stays out of the report). ``drawn`` says what random inputs were drawn by role
    (:func:`~onnxgrow.verification.inputs.describe_draws`); ``branches`` which branches of each
    If ran (:mod:`~onnxgrow.verification.branches`).
    """

    passed: bool
    outputs: list[OutputComparison]
    providers: list[str]
    inputs: dict[str, dict[str, object]]
    samples: int
    seed: int
    reason: str = ""
    expected_exact: bool = True
    extra: dict[str, object] = field(default_factory=dict)
    input_source: str = "random"
    mode: str = "whole"
    segments: int = 1
    cuts: list[CutComparison] = field(default_factory=list)
    reused_segments: int = 0
    segment_bytes: list[int] = field(default_factory=list)
    max_memory: int | None = None
    drawn: list[str] = field(default_factory=list)
    branches: list[BranchRuns] = field(default_factory=list)

    @property
    def first_failed_cut(self) -> CutComparison | None:
        """The first cut where a compared value differs beyond tolerance."""
        return next((cut for cut in self.cuts if not cut.passed), None)

    @property
    def cuts_compared(self) -> int:
        return sum(1 for cut in self.cuts if cut.values)

    def how_checked(self) -> str:
        """``checked whole``, or ``checked segment by segment (N segments of at most S of weights,
        M cuts compared)``
        and where a difference first appears."""
        if self.mode != "segmented":
            return "checked whole"
        largest = f" of at most {_size(max(self.segment_bytes))} of weights" if self.segment_bytes else ""
        text = f"checked segment by segment ({self.segments} segments{largest}, {self.cuts_compared} cuts compared)"
        first = self.first_failed_cut
        if first is not None:
            text += f"; first difference beyond tolerance at cut {first.index} (after {first.after!r})"
        elif not self.passed and self.cuts_compared:
            text += "; every cut within tolerance: the difference appears after the last cut"
        return text

    @property
    def max_abs_error(self) -> float:
        return max((o.max_abs_error for o in self.outputs), default=0.0)

    @property
    def max_rel_error(self) -> float:
        return max((o.max_rel_error for o in self.outputs), default=0.0)

    @property
    def verdict(self) -> str:
        """``PASSED``; ``FAILED``; or, for a change not meant to be exact (random-pad), ``CHANGED``."""
        if self.passed:
            return "PASSED"
        return "FAILED" if self.expected_exact else "CHANGED"

    def _what(self) -> str:
        """What ran and what was compared, for the end of a verdict line."""
        text = f"; {self.how_checked()}" if self.providers else ""
        if self.extra.get("candidate"):
            text += f"; candidate: {self.extra['candidate']}"
        if self.extra.get("preserved"):
            text += f"; compared: {self.extra['preserved']}"
        if self.extra.get("computed_as"):
            text += f"; computed as {self.extra['computed_as']}"
        if not self.expected_exact and not self.passed:
            text += "; not function-preserving by design"
        return text

    def summary(self) -> str:
        """One line: verdict, errors, provider, inputs."""
        verdict = self.verdict
        shapes = ", ".join(
            f"{name}{info['shape']}:{info['dtype']}" for name, info in self.inputs.items()
        )
        text = (
            f"{verdict}: max abs error {self.max_abs_error:.3g}, max rel error "
            f"{self.max_rel_error:.3g} on {self.samples} sample(s) [{shapes}] "
            f"with {', '.join(self.providers)}"
        )
        if self.drawn:
            text += f"; drawn by role: {', '.join(self.drawn)}"
        if self.reason and self.expected_exact:
            text += f" ({self.reason})"
        if self.branches:
            text += "; If branches: " + "; ".join(b.line() for b in self.branches)
        return text + self._what()

    def lines(self) -> list[str]:
        """The full report for people: provider, inputs, one line per output, verdict."""
        source = (
            f"random, seed {self.seed}, {self.samples} sample(s)"
            if self.input_source == "random" else self.input_source
        )
        shapes = ", ".join(
            f"{name} {info['shape']} {info['dtype']}" for name, info in self.inputs.items()
        )
        out = [
            f"provider: {', '.join(self.providers) or 'none (not run)'}",
            f"inputs:   {source}: {shapes or 'none'}",
        ]
        if self.drawn:
            out.append(f"drawn:    by role: {', '.join(self.drawn)}")
        out.extend(f"branches: {b.line()}" for b in self.branches)
        if not self.expected_exact:
            out.append("note:     this change is not meant to be exact")
        if self.mode == "segmented":
            limit = _size(self.max_memory) if self.max_memory is not None else "half the available memory"
            out.append(f"check:    segment by segment under a memory limit of {limit}: {self.segments} segments, "
                       f"{self.cuts_compared} of {len(self.cuts)} cuts compared, "
                       f"{self.reused_segments} candidate segment(s) unchanged and not run again")
            out.extend(cut.line() for cut in self.cuts)
        out.extend(o.line() for o in self.outputs)
        failed = sum(not o.passed for o in self.outputs)
        if self.passed:
            out.append(f"PASSED: {len(self.outputs)} output(s) within tolerance"
                       + (f" ({self.reason})" if self.reason else "") + self._what())
        elif failed:
            out.append(f"{self.verdict}: {failed} of {len(self.outputs)} output(s) differ beyond tolerance"
                       f"{self._what()}")
        else:
            out.append(f"{self.verdict}: {self.reason}{self._what()}")
        return out

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: non-finite numbers (an output that cannot pass) become ``None``."""
        data = asdict(self)
        pairs = [*zip(data["outputs"], self.outputs),
                 *((d, c) for cut_data, cut in zip(data["cuts"], self.cuts)
                   for d, c in zip(cut_data["values"], cut.values))]
        for out, comp in pairs:
            out["min_rtol"] = comp.min_rtol
            out["min_atol"] = comp.min_atol
        first = self.first_failed_cut
        data["first_failed_cut"] = first.index if first is not None else None
        data["max_abs_error"] = self.max_abs_error
        data["max_rel_error"] = self.max_rel_error
        cleaned = _finite_or_none(data)
        assert isinstance(cleaned, dict)
        return cleaned


def _finite_or_none(data: object) -> object:
    """Replace inf and NaN (not valid JSON) with None, recursively."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite_or_none(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_finite_or_none(v) for v in data]
    return data


def _size(nbytes: int) -> str:
    """``1.5 GiB``, ``300 MiB``, ``98 KiB``: bytes for people."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.3g} {unit}"
    return f"{nbytes} bytes"


def _round_up(value: float) -> str:
    """``value`` to 2 significant digits, rounded up so the printed tolerance passes."""
    if value <= 0:
        return "0"
    exponent = math.floor(math.log10(value)) - 1
    return f"{math.ceil(value / 10**exponent) * 10**exponent:.2g}"


