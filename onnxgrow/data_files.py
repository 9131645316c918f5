"""A saved model's external data files: their names, their layout, and writing them at copy speed.

Rules (``model_io.save_model`` relies on them):

- The data of ``<stem>.onnx`` goes to ``<stem>.onnx.data``, or, split into shards of at
  most ``max_shard_bytes``, to ``<stem>-00001-of-00003.onnx.data`` and so on. A new
  shard starts before a tensor that would overflow the current one; a tensor larger
  than the limit gets a shard of its own.
- Tensors are laid out in the order given (initializer order, as onnx-ir does).
- Tensors that already lie back to back in one source data file form a *run*, copied
  by one kernel copy per :data:`COPY_CHUNK_BYTES` (onnx-ir's ``ExternalTensor.tofile``:
  ``copy_file_range``, with its path checks and its fallback), never read into memory.
  Tensors held in memory are written as they are.
- A run of at least :data:`ALIGN_RUNS_FROM` bytes starts at an offset congruent to its
  source offset modulo :data:`RUN_ALIGNMENT`, so that the kernel copies whole pages: on
  ext4 a copy shifted off the page grid was measured about 40 % slower, and one call per
  tensor about 25 % slower, than one aligned copy (docs/benchmarks.md). The gap before
  such a run is under 64 KiB, at most 1.6 % of the run.
"""

from __future__ import annotations

import os
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import onnx_ir as ir

from onnxgrow.atomic import start_flush

#: A long run starts at an offset congruent to its source offset modulo this.
RUN_ALIGNMENT = 64 * 1024
#: Runs at least this long are aligned; shorter ones are packed densely.
ALIGN_RUNS_FROM = 4 * 1024 * 1024
#: A run is copied in pieces of this size, so that progress can be reported and each piece
#: handed to the disk while the next one is copied (:func:`onnxgrow.atomic.start_flush`).
COPY_CHUNK_BYTES = 64 * 1024 * 1024

def data_file_name(model: Path) -> str:
    """The external data file of ``model``: ``<name>.data``."""
    return model.name + ".data"


def data_file_names(model: Path, count: int) -> list[str]:
    """The ``count`` data files of ``model``: one plain name, or numbered shards."""
    if count == 1:
        return [data_file_name(model)]
    stem, ext = os.path.splitext(model.name)
    return [f"{stem}-{i:05d}-of-{count:05d}{ext}.data" for i in range(1, count + 1)]


def is_data_file_of(model: Path, path: Path) -> bool:
    """True when ``path`` is ``model``'s data file or one of its shards (of any count)."""
    if path.parent.resolve() != model.parent.resolve():
        return False
    stem, ext = os.path.splitext(model.name)
    shard = re.escape(stem) + r"-\d{5,}-of-\d{5,}" + re.escape(ext) + r"\.data"
    return path.name == data_file_name(model) or re.fullmatch(shard, path.name) is not None


@dataclass
class _Run:
    """Tensors written by one copy: back to back in one source file, or one in-memory tensor."""

    tensors: list[ir.TensorProtocol]
    source: ir.ExternalTensor | None
    source_offset: int
    length: int
    offset: int = 0

    def takes(self, tensor: ir.TensorProtocol) -> bool:
        """Whether ``tensor`` continues this run in its source file."""
        return (
            self.source is not None
            and isinstance(tensor, ir.ExternalTensor)
            and tensor.path == self.source.path
            and (tensor.offset or 0) == self.source_offset + self.length
        )


@dataclass
class _File:
    runs: list[_Run] = field(default_factory=list)

    @property
    def end(self) -> int:
        return self.runs[-1].offset + self.runs[-1].length if self.runs else 0


def _start(tensor: ir.TensorProtocol) -> _Run:
    if isinstance(tensor, ir.ExternalTensor):
        return _Run([tensor], tensor, tensor.offset or 0, tensor.nbytes)
    return _Run([tensor], None, 0, tensor.nbytes)


def _place(run: _Run, end: int) -> int:
    """Where ``run`` starts in a file whose data ends at ``end``."""
    if run.source is None or run.length < ALIGN_RUNS_FROM:
        return end
    return end + (run.source_offset - end) % RUN_ALIGNMENT


def _group(tensors: Sequence[ir.TensorProtocol]) -> list[_Run]:
    """Maximal runs, in order."""
    runs: list[_Run] = []
    for tensor in tensors:
        if runs and runs[-1].takes(tensor):
            runs[-1].tensors.append(tensor)
            runs[-1].length += tensor.nbytes
        else:
            runs.append(_start(tensor))
    return runs


def _split(run: _Run, room: int) -> tuple[_Run | None, _Run | None]:
    """The longest prefix of ``run`` within ``room`` bytes (None if not one tensor fits), and the rest."""
    size = k = 0
    while k < len(run.tensors) and size + run.tensors[k].nbytes <= room:
        size += run.tensors[k].nbytes
        k += 1
    if k == 0:
        return None, run
    if k == len(run.tensors):
        return run, None
    rest = run.tensors[k:]
    source = rest[0] if run.source is not None else None
    return (_Run(run.tensors[:k], run.source, run.source_offset, size),
            _Run(rest, source, run.source_offset + size, run.length - size))  # type: ignore[arg-type]


def plan(tensors: Sequence[ir.TensorProtocol], max_shard_bytes: int | None = None) -> list[_File]:
    """Files and runs for ``tensors`` in order (see the module docstring)."""
    files = [_File()]
    pending = deque(_group(tensors))
    while pending:
        run = pending.popleft()
        current = files[-1]
        if max_shard_bytes is not None:
            padding = RUN_ALIGNMENT - 1 if run.source is not None else 0
            head, rest = _split(run, max_shard_bytes - current.end - padding)
            if head is None and current.runs:
                files.append(_File())
                pending.appendleft(run)
                continue
            if head is None:  # one tensor larger than a shard: a file of its own
                head, rest = _split(run, run.tensors[0].nbytes)
            if rest is not None:
                pending.appendleft(rest)
            run = head  # type: ignore[assignment]
        run.offset = _place(run, current.end)
        current.runs.append(run)
    return [f for f in files if f.runs]


def write(
    tensors: Sequence[ir.TensorProtocol],
    model: Path,
    *,
    max_shard_bytes: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[ir.ExternalTensor]:
    """Write the data of ``tensors`` beside ``model``; return each one's new external tensor.

    ``progress(done, total)`` counts bytes written.
    """
    files = plan(tensors, max_shard_bytes)
    names = data_file_names(model, len(files))
    total = sum(t.nbytes for t in tensors)
    done = 0
    written: dict[int, ir.ExternalTensor] = {}
    for data_file, name in zip(files, names):
        with open(model.parent / name, "wb") as f:
            for run in data_file.runs:
                for start, length in _pieces(run):
                    f.seek(run.offset + start)
                    _write_piece(run, start, length, f)
                    start_flush(f, run.offset + start)
                    done += length
                    if progress is not None:
                        progress(done, total)
                offset = run.offset
                for tensor in run.tensors:
                    written[id(tensor)] = ir.ExternalTensor(
                        name, offset, tensor.nbytes, tensor.dtype, shape=ir.Shape(tensor.shape.numpy()),
                        name=tensor.name or "", base_dir=str(model.parent))
                    offset += tensor.nbytes
    return [written[id(t)] for t in tensors]


def _pieces(run: _Run) -> list[tuple[int, int]]:
    """(start, length) of each write: a tensor in memory at once, a file copy in chunks."""
    if run.source is None:
        return [(0, run.length)]
    return [(start, min(COPY_CHUNK_BYTES, run.length - start))
            for start in range(0, run.length, COPY_CHUNK_BYTES)]


def _write_piece(run: _Run, start: int, length: int, file: BinaryIO) -> None:
    """Bytes ``[start, start + length)`` of ``run`` at the file's position."""
    if run.source is None:
        tensor = run.tensors[0]
        if hasattr(tensor, "tofile"):
            tensor.tofile(file)
        else:
            file.write(tensor.tobytes())
        return
    copy_range(run.source, run.source_offset - (run.source.offset or 0) + start, length, file)


def copy_range(source: ir.ExternalTensor, start: int, length: int, file: BinaryIO) -> None:
    """Bytes ``[start, start + length)`` of ``source``'s data (from its offset on) at the file's
    position, by the kernel where it can (onnx-ir's ``ExternalTensor.tofile``: ``copy_file_range``,
    with its path checks and its fallback)."""
    piece = ir.ExternalTensor(source.location, (source.offset or 0) + start, length, ir.DataType.UINT8,
                              shape=ir.Shape([length]), name="run", base_dir=source.base_dir)
    piece.tofile(file)
