"""What a command needs, checked before it works: memory for what it holds at once, disk room
for what it writes (docs/design.md §6, "Resources up front").

Rules:

- Sizes are the model's declared ones (shapes × element types, read from metadata; no weight
  is read), so a model that declares a 10¹²-element tensor in a sparse data file is refused
  in about the time loading takes, naming what it would need.
- Memory is held against :func:`onnxgrow.verification.memory.memory_ceiling` (the memory
  available, or ``--max-memory`` where larger; a growth's new weights against the
  machine's memory, :func:`onnxgrow.widening.api.memory_limit`); where it cannot be read,
  nothing is refused. What streams (a diff compares tensors in blocks, a save copies data
  files) holds a block, not the tensor.
- Disk: the output's file system must have room for the output, the weights it will hold
  (a grown model's, an export's), before any of it is written: a full disk is then one line
  up front, not a write that fills the disk and fails.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from onnxgrow.errors import GrowError

#: Room an output needs besides its weights: the graph, the headers, the file system's own.
DISK_MARGIN_BYTES = 1024 * 1024


def size_text(count: int) -> str:
    """``1,234.5 GiB``-style size: GiB from one GiB on (three significant digits past a
    petabyte), else MiB or KiB with one decimal, else bytes."""
    if count >= 1024**5:
        return f"{count / 1024**3:.3g} GiB"
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= scale:
            return f"{count / scale:,.1f} {unit}"
    return f"{count} bytes"


def check_memory(needed: int, doing: str, limit: int | None, limit_is: str) -> None:
    """Refuse ``doing`` (``exporting --to torch``) when it would hold ``needed`` bytes at once,
    more than ``limit`` (None: no limit known), which ``limit_is`` explains."""
    if limit is not None and needed > limit:
        raise GrowError(f"{doing} would need about {size_text(needed)} of memory; the limit is {size_text(limit)} "
                        f"({limit_is}); nothing written")


def free_bytes(folder: Path) -> int | None:
    """Bytes an unprivileged writer may still use on ``folder``'s file system (None where the
    platform cannot tell)."""
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs on Windows; a folder that vanished
        return None
    return stats.f_bavail * stats.f_frsize


def check_disk(out: Path, needed: int, what: str) -> None:
    """Refuse to write ``out`` when its folder's file system has less room than ``needed``
    bytes (plus :data:`DISK_MARGIN_BYTES`); ``what`` names the output (``the grown model``)."""
    free = free_bytes(out.parent)
    if free is not None and needed + DISK_MARGIN_BYTES > free:
        raise GrowError(f"{out}: cannot write ({os.strerror(errno.ENOSPC)}): {what} needs about "
                        f"{size_text(needed + DISK_MARGIN_BYTES)}, the file system has {size_text(free)} free; "
                        "nothing written")
