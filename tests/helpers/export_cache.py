"""Test exports written once per test session, even when pytest-xdist workers share the folder."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # not on Windows: exports may then be written twice, never half
    fcntl = None  # type: ignore[assignment]


@contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (other test processes wait)."""
    with open(lock_path, "w") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def write_once(path: Path, make: Callable[[Path], None]) -> Path:
    """``path``, calling ``make(tmp)`` to write it first when it does not exist yet; the file
    appears whole (renamed from ``tmp``) and only one process writes it."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(path.with_suffix(".lock")):
        if not path.exists():
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp{path.suffix}")
            make(tmp)
            tmp.rename(path)
    return path


def shared_directory(base: Path, name: str) -> Path:
    """Where a test session keeps its exports: shared by its xdist workers, new each session."""
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name
