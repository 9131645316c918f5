"""Progress bars on stderr for the long steps of a command: saving and verifying.

Rules: a bar (``click.progressbar``) is drawn only when stderr is a terminal and the
command was not given ``--quiet``, and only once its step has run for
:data:`SHOW_AFTER_S` seconds, so quick commands print nothing extra. Each step
(``saving`` in bytes, ``verifying`` in model loads and runs) gets its own bar, which
is finished (the line ended) when the next step starts or the command ends, errors
included, so that messages never land on a bar's line.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

import click

#: A step's bar appears once the step has taken this long.
SHOW_AFTER_S = 1.5

_LABELS = {"saving": "saving   ", "verifying": "verifying"}


class ProgressBars:
    """A :data:`onnxgrow.options.Progress` callback drawing one bar per step; use as a context manager."""

    def __init__(self, *, quiet: bool, file: TextIO | None = None,
                 show_after: float = SHOW_AFTER_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.file = file if file is not None else sys.stderr
        self.enabled = not quiet and self.file.isatty()
        self.show_after = show_after
        self.clock = clock
        self._stage: str | None = None
        self._started = 0.0
        self._bar: click.progressbar | None = None  # type: ignore[valid-type]

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self._stage:
            self.finish()
            self._stage, self._started = stage, self.clock()
        if self._bar is None:
            if done >= total or self.clock() - self._started < self.show_after:
                return
            label = _LABELS.get(stage, stage)
            if stage == "saving":
                label += f" {total / 1e9:.2f} GB" if total >= 1e8 else f" {total / 1e6:.1f} MB"
            self._bar = click.progressbar(length=total, label=label, file=self.file, show_percent=True)
            self._bar.__enter__()
        self._bar.update(done - self._bar.pos)

    def finish(self) -> None:
        """End the current bar's line (nothing when no bar is shown)."""
        if self._bar is not None:
            self._bar.render_finish()
            self._bar = None
        self._stage = None

    def __enter__(self) -> ProgressBars:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.finish()
