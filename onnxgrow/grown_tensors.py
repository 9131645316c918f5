"""Grown weights computed while they are written: row blocks, not whole tensors in memory.

A widening edits a weight along one axis (:class:`AxisEdit`): output position ``j``
along ``axis`` copies input position ``src[j]``, a contraction then multiplies it by
its share ``scale[j]`` (in float64, rounded once to the weight's dtype). When the
weight lives in an external data file, :func:`edited_lazily` returns a
:class:`GrownTensor` instead of an array: nothing is computed until the tensor is
written, and then it is produced a block of leading-axis rows at a time
(:data:`BLOCK_BYTES`), so memory follows the block, not the tensor:

- an edit along axis 0 reads the source rows ``src[a:b]`` of a block (``pread``, one call
  per run of consecutive rows; a source of at most one block, a bias, is read whole once)
  and scales them elementwise: every output value is the
  same operation on the same operands as the whole-array edit, hence the same bits. A
  contraction of fp16/bf16 rows then moves each old row's rounding error onto its copy of
  smallest share, as the whole-array edit does: that copy's value depends on the old row
  and on the shares of all its copies only, so a block computes it from that one source
  row (:meth:`GrownTensor._restore_row_sums`), with the same float64 operations;
- an edit along another axis applies the whole-array function itself to each block of
  rows: its values depend only on the row they are in (the fp16/bf16 rounding
  correction too, which works per row of the contracted axis);
- rows that pure gathers along axis 0 copy unchanged from consecutive source rows
  (net2wider keeps the first ``n`` units where they were) are copied by the kernel
  (``copy_file_range``), never read into the process.

Edits that draw random numbers (fresh units) are done whole, as before, so that the
random stream stays what it was. A second edit of a grown tensor stacks
on the first. Anything that asks for the whole array (``numpy()``, an embedded save)
gets it computed by the same block code.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import onnx_ir as ir

from onnxgrow import data_files
from onnxgrow.atomic import start_flush

#: Output bytes produced per block when a grown tensor is written. A block of float32 rows
#: also needs its float64 product: about three blocks in memory at once. Measured on a
#: 616 MB producer and its contractor: 4 MB blocks peak 24 MB lower than 16 MB blocks and
#: are no slower (docs/benchmarks.md).
BLOCK_BYTES = 4 * 1024**2
#: Runs of unchanged rows at least this long are copied by the kernel; shorter ones are read.
KERNEL_COPY_FROM = 256 * 1024


@dataclass(frozen=True)
class AxisEdit:
    """An edit along ``axis``: position ``j`` copies ``src[j]`` (times ``scale[j]`` when given).

    ``whole`` is the function the rules apply to an array (exactly the edit); it is used on
    whole arrays and on blocks of rows when ``axis`` is not 0. ``lazy`` is False for edits
    that must run on the whole tensor at once (they draw random numbers). ``record`` gives,
    for the tensor's rank, what the growth map records of the edit (an edit computed while
    it is written never runs ``whole`` while the map's log is open).
    """

    axis: int
    src: np.ndarray
    scale: np.ndarray | None
    whole: Callable[[np.ndarray], np.ndarray]
    lazy: bool = True
    record: Callable[[int], object] | None = None
    #: Positions that are fresh units (a contraction's rounding correction leaves them out).
    fresh: np.ndarray | None = None

    def __call__(self, array: np.ndarray) -> np.ndarray:
        return self.whole(array)

    def new_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        axis = self.axis % len(shape)
        return (*shape[:axis], len(self.src), *shape[axis + 1:])


class _Rows:
    """Rows (along axis 0) of a tensor whose bytes can be read from a file."""

    def __init__(self, tensor: ir.ExternalTensor) -> None:
        self.tensor = tensor
        self.shape = tuple(tensor.shape.numpy())
        self.dtype = tensor.dtype.numpy()
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    @functools.cached_property
    def _whole(self) -> np.ndarray:
        return self._read(np.arange(self.shape[0]))

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The rows ``rows`` (any order, repeats allowed), read with one ``pread`` per run; a
        tensor of at most :data:`BLOCK_BYTES` (a bias: thousands of 4-byte runs) is read whole,
        once, and indexed."""
        if self.row_bytes * self.shape[0] <= BLOCK_BYTES:
            return self._whole[rows]
        return self._read(rows)

    def _read(self, rows: np.ndarray) -> np.ndarray:
        out = np.empty((len(rows), *self.shape[1:]), dtype=self.dtype)
        view = out.reshape(-1).view(np.uint8).data
        base = self.tensor.offset or 0
        with open(self.tensor.path, "rb") as f:
            for start, stop, first in _runs(rows):
                want = (stop - start) * self.row_bytes
                got = os.preadv(f.fileno(), [view[start * self.row_bytes:stop * self.row_bytes]],
                                base + first * self.row_bytes)
                if got != want:
                    raise OSError(f"{self.tensor.path}: short read of tensor {self.tensor.name!r}")
        return out


def _runs(rows: np.ndarray) -> list[tuple[int, int, int]]:
    """Maximal ``(start, stop, first)``: positions ``start..stop`` hold ``first, first+1, ...``."""
    if len(rows) == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.r_[0, breaks]
    stops = np.r_[breaks, len(rows)]
    return [(int(a), int(b), int(rows[a])) for a, b in zip(starts, stops)]


class GrownTensor(ir.LazyTensor):
    """``edit`` applied to ``base`` (an external tensor or another grown one), computed in row blocks."""

    def __init__(self, base: ir.ExternalTensor | GrownTensor, edit: AxisEdit, name: str) -> None:
        self.base = base
        self.edit = edit
        self.source: _Rows = base.source if isinstance(base, GrownTensor) else _Rows(base)
        old_shape = tuple(base.shape.numpy())
        self.axis = edit.axis % len(old_shape)
        self.dims = edit.new_shape(old_shape)
        super().__init__(self._whole, dtype=base.dtype, shape=ir.Shape(self.dims), name=name)

    def __repr__(self) -> str:
        return f"GrownTensor({self.name!r}, {self.dtype.name}, {list(self.dims)}, axis {self.axis})"

    # --- values ---------------------------------------------------------------------
    def take(self, rows: np.ndarray) -> np.ndarray:
        """Output rows ``rows`` (indices along axis 0)."""
        if self.axis == 0:
            block = self._base_take(self.edit.src[rows])
            if self.edit.scale is not None:
                coef = np.asarray(self.edit.scale[rows], dtype=np.float64).reshape(-1, *[1] * (block.ndim - 1))
                np.multiply(block, coef, out=block, casting="unsafe")
                if block.dtype.itemsize < 4:
                    self._restore_row_sums(rows, block)
            return block
        return np.asarray(self.edit.whole(self._base_take(rows)))

    @functools.cached_property
    def _residues(self) -> tuple[dict[int, int], dict[int, np.ndarray], np.ndarray]:
        """For an axis-0 contraction: each correcting copy → its old row, each such row → its
        copies (grouped smallest share first, as the whole-array edit orders them), and each
        old row's total share. The same selection as ``rules.common._restore_row_sums``."""
        src, scale = self.edit.src, np.asarray(self.edit.scale, dtype=np.float64)
        fresh = self.edit.fresh if self.edit.fresh is not None else np.zeros(len(src), dtype=bool)
        copies = np.flatnonzero(~fresh)
        old_rows = self.source.shape[0]
        counts = np.bincount(src[copies], minlength=old_rows)
        totals = np.bincount(src[copies], weights=scale[copies], minlength=old_rows)
        rows = np.flatnonzero((counts > 1) | ((counts == 1) & (totals != 1.0)))
        by_row = copies[np.lexsort((np.abs(scale[copies]), src[copies]))]
        row_of = src[by_row]
        starts = np.searchsorted(row_of, rows)
        stops = np.searchsorted(row_of, rows, side="right")
        target = {int(by_row[a]): int(r) for r, a in zip(rows, starts)}
        members = {int(r): by_row[a:b] for r, a, b in zip(rows, starts, stops)}
        return target, members, totals

    def _restore_row_sums(self, rows: np.ndarray, block: np.ndarray) -> None:
        """Correct, in ``block`` (output rows ``rows``), each copy that carries its old row's
        rounding error: ``value + row · Σ shares − Σ rounded copies``, in float64."""
        target, members, totals = self._residues
        for k, position in enumerate(rows.tolist()):
            row = target.get(position)
            if row is None:
                continue
            copies = members[row]
            old = self._base_take(np.array([row]))
            rounded = np.repeat(old, len(copies), axis=0)
            coef = np.asarray(self.edit.scale, dtype=np.float64)[copies].reshape(-1, *[1] * (old.ndim - 1))
            np.multiply(rounded, coef, out=rounded, casting="unsafe")
            summed = np.add.reduce(rounded.astype(np.float64), axis=0)
            wanted = old[0].astype(np.float64) * totals[row]
            block[k] = (block[k].astype(np.float64) + wanted - summed).astype(block.dtype)

    def _base_take(self, rows: np.ndarray) -> np.ndarray:
        if isinstance(self.base, GrownTensor):
            return self.base.take(rows)
        return self.source.take(rows)

    def _whole(self) -> ir.Tensor:
        return ir.Tensor(self.take(np.arange(self.dims[0])), dtype=self.dtype)

    # --- writing --------------------------------------------------------------------
    def source_rows(self) -> np.ndarray | None:
        """For each output row, the source row it copies unchanged; None when rows are computed."""
        if self.axis != 0 or self.edit.scale is not None:
            return None
        below = (self.base.source_rows() if isinstance(self.base, GrownTensor)
                 else np.arange(self.source.shape[0]))
        return None if below is None else below[self.edit.src]

    def tofile(self, file: BinaryIO) -> None:
        """Write the bytes at the file's position, a block of rows at a time (see the module
        docstring); each block, and each :data:`~onnxgrow.data_files.COPY_CHUNK_BYTES` of a
        kernel copy, is handed to the disk as soon as it is written."""
        rows_total = self.dims[0]
        row_bytes = int(np.prod(self.dims[1:], dtype=np.int64)) * self.source.dtype.itemsize
        step = max(1, BLOCK_BYTES // max(row_bytes, 1))
        copies = self.source_rows()
        pieces: list[tuple[int, int, int | None]] = []  # (start, stop, first source row to copy or None)
        if copies is None:
            pieces = [(a, min(a + step, rows_total), None) for a in range(0, rows_total, step)]
        else:
            for start, stop, source_row in _runs(copies):
                long_run = (stop - start) * row_bytes >= KERNEL_COPY_FROM
                pieces.append((start, stop, source_row if long_run else None))
            pieces = _blocks(pieces, step, max(1, data_files.COPY_CHUNK_BYTES // max(row_bytes, 1)))
        for start, stop, first in pieces:
            since = file.tell()
            if first is not None:  # only pure gathers along axis 0: rows as wide as the source's
                data_files.copy_range(self.source.tensor, first * row_bytes, (stop - start) * row_bytes, file)
            else:
                file.write(np.ascontiguousarray(self.take(np.arange(start, stop))).view(np.uint8).data)
            start_flush(file, since)


def _blocks(pieces: list[tuple[int, int, int | None]], step: int,
            copy_step: int) -> list[tuple[int, int, int | None]]:
    """Merge neighbouring computed pieces and cut them into blocks of at most ``step`` rows;
    cut copied pieces into copies of at most ``copy_step`` rows."""
    merged: list[tuple[int, int, int | None]] = []
    for piece in pieces:
        if piece[2] is None and merged and merged[-1][2] is None:
            merged[-1] = (merged[-1][0], piece[1], None)
        else:
            merged.append(piece)
    out: list[tuple[int, int, int | None]] = []
    for start, stop, first in merged:
        if first is not None:
            out.extend((a, min(a + copy_step, stop), first + a - start) for a in range(start, stop, copy_step))
        else:
            out.extend((a, min(a + step, stop), None) for a in range(start, stop, step))
    return out


def _block_readable(tensor: ir.TensorProtocol) -> bool:
    """Whether ``tensor``'s rows can be read straight from its file: whole-byte little-endian elements."""
    if isinstance(tensor, GrownTensor):
        return True
    if not isinstance(tensor, ir.ExternalTensor) or sys.byteorder != "little":
        return False
    try:
        return tensor.dtype.bitwidth % 8 == 0 and len(tensor.shape) >= 1 and tensor.dtype != ir.DataType.STRING
    except TypeError:
        return False


def edited_lazily(tensor: ir.TensorProtocol, edit: object, name: str) -> GrownTensor | None:
    """``edit`` of ``tensor`` as a :class:`GrownTensor`, or None when it must be computed whole."""
    if not isinstance(edit, AxisEdit) or not edit.lazy or not _block_readable(tensor):
        return None
    return GrownTensor(tensor, edit, name)  # type: ignore[arg-type]
