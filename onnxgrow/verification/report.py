"""What a check found: one :class:`OutputComparison` per output, one :class:`VerifyReport` per check.

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
class VerifyReport:
    """The verdict over all outputs and samples."""

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
        text = ""
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
        if self.reason and self.expected_exact:
            text += f" ({self.reason})"
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
        if not self.expected_exact:
            out.append("note:     this change is not meant to be exact")
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
        for out, comp in zip(data["outputs"], self.outputs):
            out["min_rtol"] = comp.min_rtol
            out["min_atol"] = comp.min_atol
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


def _round_up(value: float) -> str:
    """``value`` to 2 significant digits, rounded up so the printed tolerance passes."""
    if value <= 0:
        return "0"
    exponent = math.floor(math.log10(value)) - 1
    return f"{math.ceil(value / 10**exponent) * 10**exponent:.2g}"


