"""Writing a ``torch.save`` file of a dict of tensors tensor by tensor, without PyTorch.

``torch.save`` holds every tensor in memory while it writes, and importing PyTorch alone
takes about 500 MB. The file it writes is a zip archive (stored, not compressed) in one
folder named after the file (``w.pt`` → ``w/``):

- ``data.pkl``: the object, pickled (protocol 2). Each tensor is
  ``torch._utils._rebuild_tensor_v2(storage, 0, shape, stride, False, OrderedDict())``,
  its storage a persistent id ``("storage", torch.FloatStorage, "<key>", "cpu", numel)``;
  element types without a typed storage class (float8, uint16 and wider unsigned) use
  ``_rebuild_tensor_v3`` with ``torch.storage.UntypedStorage`` (numel in bytes) and the
  dtype. A tensor under a second name (tied weights) is the same pickled object (a memo
  reference), as ``torch.save`` writes a dict holding one tensor twice;
- ``.format_version`` (``1``), ``.storage_alignment`` (``64``), ``byteorder``
  (``little``), then ``data/<key>`` (each storage's raw bytes, starting at a multiple of
  64 bytes of the archive: the padding is an extra field of the member's local header,
  as PyTorch writes it) and ``version`` (``3``).

This module writes exactly that, each storage a block at a time from the (memory-mapped)
array (:mod:`onnxgrow.export.array_blocks`). ``torch.load(path)`` reads it with its
default ``weights_only=True``, and with ``mmap=True``.
"""

from __future__ import annotations

import pickle
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, BinaryIO

import numpy as np

from onnxgrow.atomic import start_flush
from onnxgrow.errors import GrowError
from onnxgrow.export.array_blocks import write_array

#: numpy element type name → PyTorch's typed storage class (``_rebuild_tensor_v2``).
TYPED_STORAGES: dict[str, str] = {
    "float64": "DoubleStorage", "float32": "FloatStorage", "float16": "HalfStorage", "bfloat16": "BFloat16Storage",
    "int64": "LongStorage", "int32": "IntStorage", "int16": "ShortStorage", "int8": "CharStorage",
    "uint8": "ByteStorage", "bool": "BoolStorage", "complex64": "ComplexFloatStorage",
    "complex128": "ComplexDoubleStorage",
}
#: numpy element type name → PyTorch dtype stored with an untyped storage (``_rebuild_tensor_v3``).
UNTYPED_DTYPES: dict[str, str] = {
    "uint16": "uint16", "uint32": "uint32", "uint64": "uint64", "float8_e4m3fn": "float8_e4m3fn",
    "float8_e5m2": "float8_e5m2", "float8_e4m3fnuz": "float8_e4m3fnuz", "float8_e5m2fnuz": "float8_e5m2fnuz",
}
#: Where each storage's data starts in the archive: a multiple of this (PyTorch's default).
STORAGE_ALIGNMENT = 64
#: The archive format version PyTorch writes (``version``).
FORMAT_VERSION = b"3\n"
#: Header id of the padding extra field (PyTorch's: ``FB``).
_PADDING_ID = 0x4246
_LOCAL_HEADER = 30
_ZIP64_EXTRA = 20


def check_torch_dtype(name: str, array: np.ndarray) -> None:
    """A GrowError when PyTorch has no element type for ``array`` (the tensor ``name``)."""
    if array.dtype.name not in TYPED_STORAGES and array.dtype.name not in UNTYPED_DTYPES:
        raise GrowError(f"tensor {name!r}: PyTorch has no element type for {array.dtype.name}")


def write_torch_file(path: Path, tensors: Mapping[str, np.ndarray], tied: Mapping[str, str] | None = None) -> None:
    """Write the dict ``tensors`` (name → array, each looked up when it is needed, so that a
    mapping of memory-mapped views is written one tensor at a time) as ``torch.save``
    would write that dict of contiguous CPU tensors, to ``path``. ``tied`` maps a name of
    ``tensors`` to an earlier name whose tensor it is (same object, same storage): its
    array is not read."""
    tied = dict(tied or {})
    names = list(tensors)
    for alias, name in tied.items():
        if alias not in tensors or name not in tensors or names.index(name) > names.index(alias) or name in tied:
            raise ValueError(f"tied entry {alias!r} → {name!r}: both must be entries, the second an untied earlier one")
    stored = [name for name in names if name not in tied]
    specs = {}
    for name in stored:
        array = tensors[name]
        check_torch_dtype(name, array)
        specs[name] = (array.dtype.name, tuple(int(d) for d in array.shape), array.nbytes)
    archive = path.stem
    with open(path, "wb") as raw, zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_STORED) as zip_file:
        _add(zip_file, raw, f"{archive}/data.pkl", _pickled(names, tied, specs))
        _add(zip_file, raw, f"{archive}/.format_version", b"1")
        _add(zip_file, raw, f"{archive}/.storage_alignment", str(STORAGE_ALIGNMENT).encode())
        _add(zip_file, raw, f"{archive}/byteorder", b"little")
        for key, name in enumerate(stored):
            since = raw.tell()
            with _member(zip_file, raw, f"{archive}/data/{key}", specs[name][2]) as member:
                if write_array(member, tensors[name]) != specs[name][2]:
                    raise AssertionError(f"tensor {name!r} changed while it was written")
            start_flush(raw, since)
        _add(zip_file, raw, f"{archive}/version", FORMAT_VERSION)


def _member(zip_file: zipfile.ZipFile, raw: BinaryIO, name: str, size: int) -> IO[bytes]:
    """A member of ``size`` bytes opened for writing at ``raw``'s position (where the zip
    file writes its next member), its data starting at a multiple of
    :data:`STORAGE_ALIGNMENT` (the padding in its local header's extra field)."""
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_STORED
    info.file_size = size
    zip64 = size * 1.05 > zipfile.ZIP64_LIMIT  # as ZipFile.open decides
    start = raw.tell() + _LOCAL_HEADER + len(name.encode()) + (_ZIP64_EXTRA if zip64 else 0)
    padding = -start % STORAGE_ALIGNMENT
    if 0 < padding < 4:  # an extra field needs 4 bytes of its own
        padding += STORAGE_ALIGNMENT
    if padding:
        info.extra = struct.pack("<HH", _PADDING_ID, padding - 4) + b"Z" * (padding - 4)
    return zip_file.open(info, "w")


def _add(zip_file: zipfile.ZipFile, raw: BinaryIO, name: str, data: bytes) -> None:
    with _member(zip_file, raw, name, len(data)) as member:
        member.write(data)


# --- the pickle (protocol 2, as torch.save writes it) -------------------------------------


def _pickled(names: list[str], tied: Mapping[str, str], specs: Mapping[str, tuple[str, tuple[int, ...], int]]
             ) -> bytes:
    """``data.pkl``: the dict ``name → tensor`` (see the module docstring)."""
    out = [pickle.PROTO, b"\x02", pickle.EMPTY_DICT]
    if names:
        out.append(pickle.MARK)
    memo: dict[str, int] = {}
    for name in names:
        out.append(_text(name))
        target = tied.get(name)
        if target is not None:
            out.append(_memo_get(memo[target]))
            continue
        dtype, shape, nbytes = specs[name]
        key = str(len(memo))
        untyped = dtype in UNTYPED_DTYPES
        out += [_global("torch._utils", "_rebuild_tensor_v3" if untyped else "_rebuild_tensor_v2"), pickle.MARK,
                pickle.MARK, _text("storage"),
                _global("torch.storage", "UntypedStorage") if untyped else _global("torch", TYPED_STORAGES[dtype]),
                _text(key), _text("cpu"), _int(nbytes if untyped else int(np.prod(shape, dtype=np.int64))),
                pickle.TUPLE, pickle.BINPERSID, _int(0), _tuple(shape), _tuple(_strides(shape)), pickle.NEWFALSE,
                _global("collections", "OrderedDict"), pickle.EMPTY_TUPLE, pickle.REDUCE]
        if untyped:
            out.append(_global("torch", UNTYPED_DTYPES[dtype]))
        out += [pickle.TUPLE, pickle.REDUCE, _memo_put(len(memo))]
        memo[name] = len(memo)
    if names:
        out.append(pickle.SETITEMS)
    out.append(pickle.STOP)
    return b"".join(out)


def _strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """PyTorch's strides of a contiguous tensor (a zero-size axis counts as one)."""
    strides, step = [], 1
    for dim in reversed(shape):
        strides.append(step)
        step *= max(dim, 1)
    return tuple(reversed(strides))


def _text(value: str) -> bytes:
    data = value.encode("utf-8", "surrogatepass")
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def _global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def _int(value: int) -> bytes:
    if 0 <= value <= 0xFF:
        return pickle.BININT1 + struct.pack("<B", value)
    if 0 <= value <= 0xFFFF:
        return pickle.BININT2 + struct.pack("<H", value)
    if -(2**31) <= value < 2**31:
        return pickle.BININT + struct.pack("<i", value)
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)  # as pickle encodes it
    return pickle.LONG1 + struct.pack("<B", len(data)) + data


def _tuple(values: tuple[int, ...]) -> bytes:
    items = b"".join(_int(v) for v in values)
    if len(values) <= 3:
        return items + (pickle.EMPTY_TUPLE, pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3)[len(values)]
    return pickle.MARK + items + pickle.TUPLE


def _memo_put(index: int) -> bytes:
    return pickle.BINPUT + struct.pack("<B", index) if index < 256 else pickle.LONG_BINPUT + struct.pack("<I", index)


def _memo_get(index: int) -> bytes:
    return pickle.BINGET + struct.pack("<B", index) if index < 256 else pickle.LONG_BINGET + struct.pack("<I", index)
