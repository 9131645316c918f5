"""The streaming writers of the exports: arrays written a block at a time, in C
order, from memory-mapped weights whose pages are dropped once written; ``.safetensors``
files byte for byte what the safetensors library writes, and Hugging Face shards; ``.pt``
files that ``torch.load`` reads as ``torch.save``'s; ``.npz`` members as ``numpy.savez``
writes them. Peak memory on large models: ``test_export_memory.py``.
"""

from __future__ import annotations

import io
import json
import mmap
import pickle
import struct
import sys
import zipfile
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import onnx_ir as ir
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxgrow.errors import GrowError
from onnxgrow.export.array_blocks import blocks, contiguous, release_pages, write_array
from onnxgrow.export.safetensors_file import (
    SAFETENSORS_DTYPES,
    index_name,
    write_safetensors,
    write_safetensors_shards,
)
from onnxgrow.export.state_dict_file import state_dict, write_state_dict
from onnxgrow.export.torch_file import TYPED_STORAGES, UNTYPED_DTYPES, write_torch_file
from tests.helpers import scale


def _safetensors() -> Any:
    """The safetensors library's numpy API, which the tests read the files back with (onnxgrow
    writes them without it); skipped where it is not installed."""
    return pytest.importorskip("safetensors.numpy")


#: The element types safetensors' numpy API reads and writes.
NUMPY_SAFETENSORS = ["float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint64", "uint32",
                     "uint16", "uint8", "bool"]


def random_array(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Seeded values of ``dtype`` (a numpy or ml_dtypes name)."""
    if dtype == "bool":
        return np.asarray(rng.random(shape) < 0.5)
    if dtype.startswith("complex"):
        return np.asarray(rng.standard_normal(shape) + 1j * rng.standard_normal(shape), dtype)
    numpy_dtype = np.dtype(getattr(ml_dtypes, dtype)) if hasattr(ml_dtypes, dtype) else np.dtype(dtype)
    if numpy_dtype.kind in "iu":
        return np.asarray(rng.integers(0, 100, shape), numpy_dtype)
    return np.asarray(rng.standard_normal(shape) * 4).astype(numpy_dtype)


def _torch_tensors(tensors: dict[str, np.ndarray]) -> dict:
    """The arrays as PyTorch tensors (bfloat16 and float8 bit for bit)."""
    import torch

    out = {}
    for name, array in tensors.items():
        array = np.array(array, order="C")
        if array.dtype.name in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
            raw = torch.from_numpy(array.reshape(-1).view(np.uint8))
            out[name] = raw.view(getattr(torch, array.dtype.name)).reshape(array.shape)
        else:
            out[name] = torch.from_numpy(array)
        if array.size == 0:  # numpy's strides of an empty array are 0; a tensor's are the usual ones
            out[name] = torch.empty(array.shape, dtype=out[name].dtype)
    return out


@st.composite
def views(draw: st.DrawFn, dtypes: list[str] = NUMPY_SAFETENSORS) -> np.ndarray:
    """An array as the exports see one: contiguous, a transpose, a slice of a wider array, 0-d."""
    rank = draw(st.integers(0, 3))
    shape = tuple(draw(st.lists(st.integers(0, 7), min_size=rank, max_size=rank)))
    base = random_array(np.random.default_rng(draw(st.integers(0, 99))), shape, draw(st.sampled_from(dtypes)))
    kind = draw(st.sampled_from(["as is", "transposed", "sliced"]))
    if kind == "transposed" and rank >= 2:
        return base.T
    if kind == "sliced" and rank >= 1 and shape[-1] > 1:
        return base[..., ::2]
    return base


# --- blocks ---------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(array=views(), block_bytes=st.integers(1, 200))
def test_blocks_cover_the_array_in_c_order(array: np.ndarray, block_bytes: int) -> None:
    pieces = list(blocks(array, block_bytes))
    rebuilt = np.empty(array.shape, array.dtype)
    for index, block in pieces:
        assert block.flags.c_contiguous
        rebuilt[index] = block
    np.testing.assert_array_equal(rebuilt, array)
    joined = b"".join(block.tobytes() for _, block in pieces)
    assert joined == np.ascontiguousarray(array).tobytes()
    out = io.BytesIO()
    assert write_array(out, array, block_bytes) == array.nbytes
    assert out.getvalue() == joined


def test_a_contiguous_block_is_the_mapped_memory_itself() -> None:
    array = np.arange(24, dtype=np.float32).reshape(4, 6)
    assert all(np.shares_memory(block, array) for _, block in blocks(array, 48))
    tiles = contiguous(np.arange(600 * 300, dtype=np.int32).reshape(600, 300).T)
    assert tiles.flags.c_contiguous
    np.testing.assert_array_equal(tiles, np.arange(600 * 300, dtype=np.int32).reshape(600, 300).T)


def test_big_endian_arrays_are_written_little_endian() -> None:
    out = io.BytesIO()
    write_array(out, np.arange(5, dtype=">i4"))
    assert out.getvalue() == np.arange(5, dtype="<i4").tobytes()


def _resident_bytes(mapping: mmap.mmap) -> int:
    """The process's resident bytes of ``mapping`` (its entry in ``/proc/self/smaps``)."""
    start = np.frombuffer(mapping, dtype=np.uint8, count=1).ctypes.data
    lines = Path("/proc/self/smaps").read_text().splitlines()
    for i, line in enumerate(lines):
        low = line.split(" ", 1)[0].split("-")
        if len(low) == 2 and all(c in "0123456789abcdef" for c in low[0]) and int(low[0], 16) == start:
            for entry in lines[i + 1:]:
                if entry.startswith("Rss:"):
                    return int(entry.split()[1]) * 1024
    raise AssertionError("mapping not found in /proc/self/smaps")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
@pytest.mark.parametrize("layout", ["as is", "transposed"])
def test_pages_read_from_a_read_only_map_are_dropped_once_written(tmp_path: Path, layout: str) -> None:
    data = tmp_path / "weights.bin"
    np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32).tofile(data)  # 16 MiB
    with open(data, "rb") as f:
        mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    array = np.frombuffer(mapping, dtype=np.float32).reshape(2048, 2048)
    view = array if layout == "as is" else array.T
    with open(tmp_path / "out.bin", "wb") as out:
        write_array(out, view, block_bytes=1 << 20)
    assert _resident_bytes(mapping) <= 2 << 20  # a block's worth at most, of 16 MiB read
    np.testing.assert_array_equal(np.fromfile(tmp_path / "out.bin", np.float32).reshape(2048, 2048), view)
    touched = np.asarray(view[:8]).copy()  # read again after the drop: the same values
    np.testing.assert_array_equal(touched, np.ascontiguousarray(view[:8]))
    del array, view
    mapping.close()


def test_release_pages_leaves_other_arrays_alone() -> None:
    release_pages(np.arange(10))  # owns its memory: nothing to drop
    release_pages(np.frombuffer(b"abcd", dtype=np.uint8))  # a bytes buffer, not a map
    writable = mmap.mmap(-1, 1 << 16)
    copy_on_write = np.frombuffer(writable, dtype=np.uint8)
    copy_on_write[:] = 7
    release_pages(copy_on_write)  # not read-only: its pages are data, never dropped
    assert (copy_on_write == 7).all()
    del copy_on_write
    writable.close()


# --- safetensors ----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(arrays=st.lists(views(), min_size=0, max_size=6),
       metadata=st.none() | st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=5), max_size=3))
def test_safetensors_are_byte_for_byte_the_librarys(tmp_path_factory: pytest.TempPathFactory, arrays: list[np.ndarray],
                                                    metadata: dict[str, str] | None) -> None:
    """The same bytes (the library orders two or more metadata entries at random: the same
    header then)."""
    load_file, save = _safetensors().load_file, _safetensors().save

    tensors = {f"layer.{i}.weight": a for i, a in enumerate(arrays)}
    path = tmp_path_factory.mktemp("st") / "w.safetensors"
    write_safetensors(path, tensors, metadata)
    expected = save({k: np.array(v, order="C") for k, v in tensors.items()}, metadata=metadata or None)
    written = path.read_bytes()
    if metadata is None or len(metadata) < 2:
        assert written == expected
    else:
        assert _header(written) == _header(expected) and len(written) == len(expected)
        assert written[-sum(a.nbytes for a in arrays) or len(written):] == expected[-sum(a.nbytes for a in arrays)
                                                                                   or len(expected):]
    loaded = load_file(path)
    assert set(loaded) == set(tensors)
    for name, array in tensors.items():
        np.testing.assert_array_equal(loaded[name], array)


def _header(data: bytes) -> dict:
    length = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + length])


def test_every_dtype_code_is_known_to_the_library() -> None:
    safetensors_torch = pytest.importorskip("safetensors.torch")
    assert set(SAFETENSORS_DTYPES.values()) <= set(safetensors_torch._TYPES)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float8_e4m3fn", "float8_e5m2", "float32"])
def test_safetensors_of_torch_types_are_the_librarys_and_load_in_torch(tmp_path: Path, dtype: str) -> None:
    torch = pytest.importorskip("torch")
    from safetensors import safe_open
    from safetensors.torch import load_file, save

    rng = np.random.default_rng(1)
    tensors = {"a.weight": random_array(rng, (6, 4), dtype).T, "a.bias": random_array(rng, (4,), dtype),
               "scale": random_array(rng, (), dtype), "n": np.array(0, np.int64)}
    path = tmp_path / "w.safetensors"
    write_safetensors(path, tensors, {"format": "pt"})
    expected = _torch_tensors(tensors)
    assert path.read_bytes() == save(expected, metadata={"format": "pt"})
    loaded = load_file(path)
    for name, tensor in expected.items():
        assert loaded[name].dtype == tensor.dtype and loaded[name].shape == tensor.shape, name
        assert torch.equal(loaded[name].reshape(-1).view(torch.uint8), tensor.reshape(-1).view(torch.uint8)), name
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
        weight = f.get_tensor("a.weight")
        assert torch.equal(weight.reshape(-1).view(torch.uint8), expected["a.weight"].reshape(-1).view(torch.uint8))


def test_a_type_safetensors_lacks_is_refused_naming_the_tensor(tmp_path: Path) -> None:
    with pytest.raises(GrowError, match=r"tensor 'w': safetensors has no element type for int4"):
        write_safetensors(tmp_path / "w.safetensors", {"w": np.zeros(3, ml_dtypes.int4)})
    assert not (tmp_path / "w.safetensors").exists()


def _sizes(**sizes: int) -> dict[str, np.ndarray]:
    return {name: np.full(size, i, np.uint8) for i, (name, size) in enumerate(sizes.items())}


@pytest.mark.parametrize(("limit", "files"), [
    (None, [["a", "b", "big", "c", "d"]]),
    (1000, [["a", "b", "big", "c", "d"]]),
    (60, [["a", "b"], ["big"], ["c", "d"]]),
    (30, [["a"], ["b"], ["big"], ["c", "d"]]),
])
def test_shards_split_as_hugging_face_does(tmp_path: Path, limit: int | None, files: list[list[str]]) -> None:
    load_file = _safetensors().load_file

    tensors = _sizes(a=30, b=30, big=100, c=20, d=10)
    written = write_safetensors_shards(tmp_path, tensors, max_shard_bytes=limit, metadata={"format": "pt"})
    if len(files) == 1:
        assert written == ["model.safetensors"] == [p.name for p in tmp_path.iterdir()]
        assert set(load_file(tmp_path / "model.safetensors")) == set(tensors)
        return
    shards = [f"model-{i:05d}-of-{len(files):05d}.safetensors" for i in range(1, len(files) + 1)]
    assert written == [*shards, index_name()] == [*shards, "model.safetensors.index.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(written)
    index = json.loads((tmp_path / index_name()).read_text())
    assert index == {"metadata": {"total_parameters": 190, "total_size": 190},
                     "weight_map": {n: shards[i] for i, names in enumerate(files) for n in names}}
    for shard, names in zip(shards, files):
        loaded = load_file(tmp_path / shard)
        assert set(loaded) == set(names)
        for name in names:
            np.testing.assert_array_equal(loaded[name], tensors[name])


@pytest.mark.transformers
def test_hugging_face_loads_the_shards_by_their_index(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("torch")
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    model = transformers.LlamaForCausalLM(config)
    tensors = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    model.config.save_pretrained(tmp_path)
    files = write_safetensors_shards(tmp_path, tensors, max_shard_bytes=20_000, metadata={"format": "pt"})
    assert len(files) > 2
    loaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path)
    for name, tensor in loaded.state_dict().items():
        np.testing.assert_array_equal(tensor.numpy(), tensors[name], err_msg=name)


# --- .pt --------------------------------------------------------------------------------------


class _Recorder(pickle.Unpickler):
    """Unpickles a ``torch.save`` pickle without PyTorch: globals become their names, calls
    become ``(callable, args)``, storages their persistent ids."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        return _Named(f"{module}.{name}")

    def persistent_load(self, pid: tuple) -> object:
        return ("storage", *pid[1:])


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: object) -> object:
        return (self.name, args)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Named) and other.name == self.name

    def __repr__(self) -> str:
        return self.name


def _structure(path_or_buffer: Path | io.BytesIO) -> tuple[object, list[str]]:
    with zipfile.ZipFile(path_or_buffer) as archive:
        names = archive.namelist()
        root = names[0].split("/")[0]
        data = archive.read(f"{root}/data.pkl")
        records = [n.split("/", 1)[1] for n in names if n.split("/", 1)[1] != ".data/serialization_id"]
    return _Recorder(io.BytesIO(data)).load(), records


TORCH_DTYPES = sorted({*TYPED_STORAGES, *UNTYPED_DTYPES} - {"float8_e4m3fnuz", "float8_e5m2fnuz"})


@pytest.mark.torch
def test_pt_files_load_in_torch_as_torch_saves_them(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    tensors: dict[str, np.ndarray] = {}
    for i, dtype in enumerate(TORCH_DTYPES):
        array = random_array(rng, [(3, 4), (2, 0, 3), (), (5,), (2, 3, 2, 2)][i % 5], dtype)
        tensors[f"m.{dtype}"] = array.T if array.ndim == 2 else array
    tensors["tied"] = tensors["m.float32"]
    path = tmp_path / "w.pt"
    write_torch_file(path, tensors, {"tied": "m.float32"})
    expected = _torch_tensors(tensors)
    expected["tied"] = expected["m.float32"]
    for mmap_load in (False, True):
        loaded = torch.load(path, mmap=mmap_load)  # weights_only=True, torch's default
        assert list(loaded) == list(tensors)
        assert loaded["tied"] is loaded["m.float32"]
        for name, tensor in expected.items():
            got = loaded[name]
            assert got.dtype == tensor.dtype and got.shape == tensor.shape, name
            assert got.is_contiguous() and got.stride() == torch.empty(tensor.shape, dtype=tensor.dtype).stride()
            assert torch.equal(got.reshape(-1).view(torch.uint8), tensor.reshape(-1).view(torch.uint8)), name
    buffer = io.BytesIO()
    torch.save(expected, buffer)
    buffer.seek(0)
    assert _structure(path) == _structure(buffer)  # the same pickled objects and records, in order


def test_pt_data_starts_on_the_storage_alignment(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    write_torch_file(path, {f"w{i}": np.ones(i * 7 + 1, np.float32) for i in range(20)})
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None  # every CRC right
        for info in archive.infolist():
            name_length, extra_length = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
            assert (info.header_offset + 30 + name_length + extra_length) % 64 == 0, info.filename
        assert [n.split("/", 1)[1] for n in archive.namelist()] == [
            "data.pkl", ".format_version", ".storage_alignment", "byteorder", *[f"data/{i}" for i in range(20)],
            "version"]


def test_pt_refuses_a_type_torch_lacks_and_bad_ties(tmp_path: Path) -> None:
    with pytest.raises(GrowError, match=r"tensor 'w': PyTorch has no element type for int4"):
        write_torch_file(tmp_path / "w.pt", {"w": np.zeros(3, ml_dtypes.int4)})
    with pytest.raises(ValueError, match="tied entry 'a'"):
        write_torch_file(tmp_path / "w.pt", {"a": np.zeros(2), "b": np.zeros(2)}, {"a": "b"})


# --- state dicts of a model -------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small LLaMA-shaped models (transposed linear weights, q/k/v biases, tied embeddings)."""
    folder = tmp_path_factory.mktemp("llama")
    return {dtype: scale.llama(folder / f"{dtype}.onnx", layers=2, hidden=64, ffn=96, heads=4, kv_heads=2, vocab=50,
                               sequence=8, qkv_bias=True, tied=True, dtype=getattr(ir.DataType, dtype)).path
            for dtype in ("FLOAT", "BFLOAT16", "FLOAT16")}


@pytest.mark.parametrize("dtype", ["FLOAT", "BFLOAT16", "FLOAT16"])
def test_state_dict_files_hold_the_framework_weights(llama_files: dict[str, Path], tmp_path: Path,
                                                     dtype: str) -> None:
    load = _safetensors().load

    result = state_dict(llama_files[dtype])
    assert result.table.aliases == {"lm_head.weight": "model.embed_tokens.weight"}
    assert result.tensors["lm_head.weight"] is result.tensors["model.embed_tokens.weight"]
    q = result.tensors["model.layers.0.self_attn.q_proj.weight"]
    assert not q.flags.c_contiguous and not q.flags.owndata  # a transposed view of the mapped weights
    write_state_dict(result, tmp_path / "w.safetensors")
    assert set(_header((tmp_path / "w.safetensors").read_bytes())) == set(result.tensors)
    if dtype != "BFLOAT16":  # safetensors' numpy API has no bfloat16
        loaded = load((tmp_path / "w.safetensors").read_bytes())
        for name, array in result.tensors.items():
            np.testing.assert_array_equal(loaded[name], array, err_msg=name)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", ["FLOAT", "BFLOAT16"])
def test_pt_state_dict_loads_and_ties_like_a_module_state_dict(llama_files: dict[str, Path], tmp_path: Path,
                                                               dtype: str) -> None:
    torch = pytest.importorskip("torch")
    result = state_dict(llama_files[dtype])
    write_state_dict(result, tmp_path / "w.pt")
    loaded = torch.load(tmp_path / "w.pt")
    assert list(loaded) == list(result.tensors)
    assert loaded["lm_head.weight"] is loaded["model.embed_tokens.weight"]
    expected = _torch_tensors(result.tensors)
    for name, tensor in expected.items():
        assert torch.equal(loaded[name].reshape(-1).view(torch.uint8), tensor.reshape(-1).view(torch.uint8)), name
