"""Progress on stderr for the long steps of a command: loading, planning, saving, verifying.

Rules: progress is drawn only when stderr is a terminal and the command was not given
``--quiet``, and only once its step has run for :data:`SHOW_AFTER_S` seconds, so quick
commands print nothing extra. A step reported with a total (``saving`` in bytes,
``verifying`` in model loads and runs, ``planning`` in layers) gets a bar
(``click.progressbar``); a step without one (``total`` 0: ``loading``, whose work
onnx-ir does in one call) gets a line with its elapsed seconds, redrawn by a
background thread and erased when the step ends. Each step's display is finished when
the next step starts or the command ends, errors included, so that messages never
land on a progress line.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

import click

#: A step's progress appears once the step has taken this long.
SHOW_AFTER_S = 1.0
#: How often a step without a total redraws its elapsed time.
TICK_S = 0.2

_LABELS = {"saving": "saving   ", "verifying": "verifying", "planning": "planning ", "loading": "loading  "}


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
        self._ticker: tuple[threading.Thread, threading.Event] | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if stage != self._stage:
            self.finish()
            self._stage, self._started = stage, self.clock()
            if total <= 0:
                self._start_ticker(_LABELS.get(stage, stage))
        if total <= 0:
            return
        if self._bar is None:
            if done >= total or self.clock() - self._started < self.show_after:
                return
            label = _LABELS.get(stage, stage)
            if stage == "saving":
                label += f" {total / 1e9:.2f} GB" if total >= 1e8 else f" {total / 1e6:.1f} MB"
            self._bar = click.progressbar(length=total, label=label, file=self.file, show_percent=True)
            self._bar.__enter__()
        self._bar.update(done - self._bar.pos)

    def _start_ticker(self, label: str) -> None:
        stop = threading.Event()
        thread = threading.Thread(target=self._tick, args=(label, self._started, stop), daemon=True)
        self._ticker = (thread, stop)
        thread.start()

    def _tick(self, label: str, started: float, stop: threading.Event) -> None:
        """Redraw ``label`` and the elapsed seconds until ``stop``; then erase the line."""
        shown = False
        while not stop.wait(TICK_S):
            elapsed = self.clock() - started
            if elapsed >= self.show_after:
                self.file.write(f"\r{label} {elapsed:5.1f} s")
                self.file.flush()
                shown = True
        if shown:
            self.file.write("\r\x1b[K")
            self.file.flush()

    def finish(self) -> None:
        """End the current step's display (nothing when none is shown)."""
        if self._ticker is not None:
            thread, stop = self._ticker
            stop.set()
            thread.join()
            self._ticker = None
        if self._bar is not None:
            self._bar.render_finish()
            self._bar = None
        self._stage = None

    def __enter__(self) -> ProgressBars:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.finish()
