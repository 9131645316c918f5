"""Writing ``.safetensors`` files tensor by tensor, without holding the tensors.

A safetensors file is an 8-byte little-endian header length, a JSON header (the optional
``__metadata__`` of strings, then each tensor's ``dtype``, ``shape`` and ``data_offsets``
into the data that follows), padded with spaces to a multiple of 8 bytes, then the raw
little-endian tensor data, back to back. The header needs only names, dtypes and shapes,
so it is written first; then each tensor is read (usually a view of the memory-mapped
weights) and written a block at a time (:mod:`onnxgrow.export.array_blocks`), and dropped.

The tensors are laid out as the safetensors library lays them out: by element type, widest
first (the library's order of types, :data:`SAFETENSORS_DTYPES`), then by name, so every
tensor starts at a multiple of its element size and the file is byte for byte the one
``safetensors.numpy.save_file`` / ``safetensors.torch.save_file`` writes (but for the
order of two or more metadata entries, which the library leaves to a hash map; here they
are sorted).

Hugging Face checkpoints (:func:`write_safetensors_shards`): one ``model.safetensors``, or
shards ``model-00001-of-00003.safetensors``... and the index
``model.safetensors.index.json`` (``{"metadata": {"total_parameters", "total_size"},
"weight_map": {name: file}}``, as ``save_pretrained`` writes it). A new shard starts before
a tensor that would overflow the current one; a tensor larger than the limit gets a shard
of its own. ``from_pretrained`` needs the metadata ``{"format": "pt"}`` in every file.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from onnxgrow.atomic import start_flush
from onnxgrow.errors import GrowError
from onnxgrow.export.array_blocks import write_array

SUFFIX = ".safetensors"
#: numpy element type name → safetensors dtype, in the safetensors library's layout order
#: (widest first; bfloat16 and float8 are ml_dtypes' types, which onnx-ir gives).
SAFETENSORS_DTYPES: dict[str, str] = {
    "uint64": "U64", "int64": "I64", "float64": "F64", "complex64": "C64", "float32": "F32", "uint32": "U32",
    "int32": "I32", "bfloat16": "BF16", "float16": "F16", "uint16": "U16", "int16": "I16",
    "float8_e4m3fn": "F8_E4M3", "float8_e5m2": "F8_E5M2", "int8": "I8", "uint8": "U8", "bool": "BOOL",
}
_RANK = {code: rank for rank, code in enumerate(SAFETENSORS_DTYPES.values())}


def safetensors_dtype(name: str, array: np.ndarray) -> str:
    """The safetensors dtype of ``array`` (the tensor ``name``); a GrowError for a type the
    format has no code for."""
    code = SAFETENSORS_DTYPES.get(array.dtype.name)
    if code is None:
        raise GrowError(f"tensor {name!r}: safetensors has no element type for {array.dtype.name}")
    return code


def safetensors_header(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
                       ) -> tuple[bytes, list[str]]:
    """The file's first bytes (length and padded JSON header) and the names in data order;
    each tensor is looked up once, for its dtype and shape."""
    entries = []
    for name in tensors:
        array = tensors[name]
        dtype = safetensors_dtype(name, array)
        entries.append((_RANK[dtype], name, dtype, [int(d) for d in array.shape], array.nbytes))
    entries.sort(key=lambda entry: (entry[0], entry[1]))
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(sorted(metadata.items()))
    offset = 0
    for _, name, dtype, shape, nbytes in entries:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, [entry[1] for entry in entries]


def write_safetensors(path: Path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None
                      ) -> None:
    """Write ``tensors`` (name → array; each looked up when written, so a mapping of
    memory-mapped views, or one that reads on lookup, is written one tensor at a time) to
    the ``.safetensors`` file ``path``, with ``metadata`` (string → string) in its header."""
    header, order = safetensors_header(tensors, metadata)
    with open(path, "wb") as file:
        file.write(header)
        for name in order:
            since = file.tell()
            array = tensors[name]
            written = write_array(file, array)
            if written != array.nbytes:
                raise AssertionError(f"tensor {name!r}: wrote {written} bytes of {array.nbytes}")
            start_flush(file, since)


def index_name(stem: str = "model") -> str:
    """The index file of a sharded checkpoint: ``model.safetensors.index.json``."""
    return f"{stem}{SUFFIX}.index.json"


def write_safetensors_shards(folder: Path, tensors: Mapping[str, np.ndarray], *, max_shard_bytes: int | None = None,
                             stem: str = "model", metadata: Mapping[str, str] | None = None) -> list[str]:
    """Write ``tensors`` into ``folder`` as a Hugging Face checkpoint (see the module
    docstring): ``<stem>.safetensors`` when they fit in ``max_shard_bytes`` (None: no
    limit), else numbered shards and ``<stem>.safetensors.index.json``. Each file gets
    ``metadata`` (``{"format": "pt"}`` for ``from_pretrained``). Returns the names written."""
    if max_shard_bytes is not None and max_shard_bytes <= 0:
        raise GrowError(f"the maximum shard size must be positive, got {max_shard_bytes} bytes")
    shards: list[list[str]] = [[]]
    size = total_size = total_elements = 0
    for name in tensors:
        array = tensors[name]
        safetensors_dtype(name, array)
        if shards[-1] and max_shard_bytes is not None and size + array.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += array.nbytes
        total_size += array.nbytes
        total_elements += array.size
    if len(shards) == 1:
        write_safetensors(folder / f"{stem}{SUFFIX}", tensors, metadata)
        return [f"{stem}{SUFFIX}"]
    names = [f"{stem}-{i:05d}-of-{len(shards):05d}{SUFFIX}" for i in range(1, len(shards) + 1)]
    weight_map = {}
    for file_name, members in zip(names, shards):
        write_safetensors(folder / file_name, _Subset(tensors, members), metadata)
        weight_map.update(dict.fromkeys(members, file_name))
    index = {"metadata": {"total_parameters": total_elements, "total_size": total_size}, "weight_map": weight_map}
    (folder / index_name(stem)).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return [*names, index_name(stem)]


class _Subset(Mapping[str, np.ndarray]):
    """The entries ``names`` of ``tensors``, looked up in it when asked for."""

    def __init__(self, tensors: Mapping[str, np.ndarray], names: list[str]) -> None:
        self._tensors = tensors
        self._names = names
        self._members = frozenset(names)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._members:
            raise KeyError(name)
        return self._tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)
