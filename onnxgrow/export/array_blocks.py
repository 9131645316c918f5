"""Writing arrays a block at a time, in C order, from memory-mapped weights.

The exports write each weight in its framework's layout, usually a view of the memory-mapped
external data (:class:`onnxgrow.parameter_names.Parameter`: a transpose is a view). Rules:

- An array is written as blocks of whole rows along its first axis, each about
  :data:`BLOCK_BYTES` (at least one row; a row larger than that is split the same way
  along the next axis), made contiguous one at a time: a block of an array that already
  is contiguous is the mapped memory itself, a block of a transpose is copied (a 2-D one
  in tiles of :data:`TILE` columns, which reads the source's rows in runs the cache
  holds: twice as fast as numpy's copy of a transpose, measured on 2048 × 5632 float32).
- Reading a mapped page makes it part of the process's resident memory until it is
  unmapped, however little memory is free; onnx-ir keeps each weight's file mapped for
  the model's life. So once a block has been written, the pages it was read from are
  dropped from the process (``madvise(MADV_DONTNEED)``; they stay in the page cache and
  are read again if asked for): peak memory is a block, and the pages one block spans
  (a block of a transpose spans the whole tensor: it is read in strips at least a page
  wide), not the model. Only read-only mappings are touched; where the platform has no
  ``madvise`` the pages stay until the mapping goes.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from typing import IO

import numpy as np

try:
    from numpy.lib.array_utils import byte_bounds
except ImportError:  # numpy < 2
    from numpy import byte_bounds  # type: ignore[attr-defined,no-redef]

#: Bytes per written block. 16 MiB blocks wrote a 1.2 GB model as fast as 64 MiB ones and
#: faster than 4 MiB ones (docs/benchmarks.md, "Exports").
BLOCK_BYTES = 16 * 1024**2

#: Columns per tile when a 2-D transposed block is made contiguous.
TILE = 256

Index = tuple[int | slice, ...]


def blocks(array: np.ndarray, block_bytes: int = BLOCK_BYTES) -> Iterator[tuple[Index, np.ndarray]]:
    """``(index, block)`` for consecutive pieces of ``array`` in C order: ``block`` is
    ``array[index]`` made C-contiguous, at most ``block_bytes`` unless one element row is
    larger (see the module docstring; a 0-d array is one block of one element, index
    ``()``). Once the caller asks for the next block, the mapped pages the previous one
    was read from are dropped."""
    if array.ndim == 0:
        yield (), np.ascontiguousarray(array).reshape(())
        release_pages(array)
        return
    row_bytes = array[:1].nbytes if len(array) else 0
    if array.ndim > 1 and row_bytes > block_bytes:
        for i in range(len(array)):
            for index, block in blocks(array[i], block_bytes):
                yield (i, *index), block
        return
    step = max(1, block_bytes // max(row_bytes, 1))
    for start in range(0, len(array), step):
        view = array[start:start + step]
        yield (slice(start, start + len(view)),), contiguous(view)
        release_pages(view)


def contiguous(array: np.ndarray) -> np.ndarray:
    """``array`` itself when it is C-contiguous, else a C-contiguous copy (a 2-D one copied
    in tiles of :data:`TILE` columns)."""
    if array.flags.c_contiguous:
        return array
    if array.ndim != 2:
        return np.ascontiguousarray(array)
    out = np.empty(array.shape, array.dtype)
    for start in range(0, array.shape[1], TILE):
        out[:, start:start + TILE] = array[:, start:start + TILE]
    return out


def write_array(file: IO[bytes], array: np.ndarray, block_bytes: int = BLOCK_BYTES) -> int:
    """Write ``array``'s elements in C order, little-endian, at the file's position, a block
    at a time; return the bytes written."""
    little = array.dtype.newbyteorder("<")
    written = 0
    for _, block in blocks(array, block_bytes):
        if block.dtype != little:  # a big-endian array (onnx-ir's are little-endian)
            block = block.astype(little)
        written += file.write(block.reshape(-1).view(np.uint8).data)
    return written


def release_pages(array: np.ndarray) -> None:
    """Drop from the process the pages of a read-only memory map that ``array`` spans (a
    no-op for an array that is not a view of one); see the module docstring."""
    mapping = _read_only_mapping(array)
    if mapping is None or array.size == 0:
        return
    start = np.frombuffer(mapping, dtype=np.uint8, count=1).ctypes.data
    low, high = byte_bounds(array)
    first = (low - start) // mmap.PAGESIZE * mmap.PAGESIZE
    if high - start > first:
        mapping.madvise(mmap.MADV_DONTNEED, first, high - start - first)


def _read_only_mapping(array: np.ndarray) -> mmap.mmap | None:
    """The read-only ``mmap`` that ``array`` is a view of, or None."""
    if not hasattr(mmap, "MADV_DONTNEED"):
        return None
    owner: object = array
    while isinstance(owner, np.ndarray):
        owner = owner.base
    if not isinstance(owner, memoryview) or not isinstance(owner.obj, mmap.mmap) or not owner.readonly:
        return None
    return owner.obj
