"""Python's cyclic garbage collector kept off a loaded model's objects.

A loaded model is many long-lived objects (every onnx-ir node, value, attribute and
shape), none of them garbage while a command runs. Each full collection rescans them
all, and the temporaries of planning, rewriting and saving set off such collections
again and again: on a 20,000-node chain they took 0.6 s of a 2.8 s widening (in process).

Rules:

- :func:`paused` turns the collector off while a model is built (the objects being made
  are not garbage) and gives it back its earlier state afterwards.
- :func:`spared_after` runs a load with the collector paused, then puts every object
  alive at that moment (the loaded model, the imported modules) out of the collector's
  reach (``gc.freeze``) until the block ends (``gc.unfreeze``). Objects made inside are
  collected as usual, and what is unfrozen at the end is collectable again. It freezes
  nothing when objects are frozen already (an application's own freeze, or an outer
  :func:`spared_after`), so it never unfreezes what it did not freeze.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """The collector off within the block, then as it was."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@contextlib.contextmanager
def spared_after(load: Callable[[], T]) -> Iterator[T]:
    """``load()`` with the collector paused; within the block, what it made (and every
    other object alive when it returned) is out of the collector's scans."""
    with paused():
        value = load()
        froze = not gc.get_freeze_count()
        if froze:
            gc.freeze()  # before the collector resumes: the young objects are never scanned
    try:
        yield value
    finally:
        if froze:
            gc.unfreeze()
