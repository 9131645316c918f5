"""Grown weights written block by block (onnxgrow/grown_tensors.py) are the bytes the whole-array
edits produce, with memory that follows the block, and unchanged rows copied by the kernel.

The reference is the same widening with the block path switched off (every edit computed on
the whole array, as before): both runs must write identical files, for every init, noise,
several groups at once, and fp16/bf16 weights (whose rounding correction must survive
being computed a block at a time).
"""

from __future__ import annotations

import os
import re
import tracemalloc
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from onnxgrow import atomic, constants, data_files, grown_tensors
from onnxgrow.options import GrowOptions
from onnxgrow.widening.functions import widen_file
from tests.helpers import scale
from tests.helpers.fuzz_graphs import dtype_cnn, dtype_mlp

SMALL_CNN = dict(channels=(8, 16, 16, 16, 16), hidden=64, classes=10, image=32)
SMALL_TRANSFORMER = dict(width=64, ffn=256, heads=4, vocab=100, sequence=8)


def externalised(path: Path) -> Path:
    """``path`` rewritten with every initializer in one external data file."""
    model = onnx.load(str(path))
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=path.name + ".data", size_threshold=0)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("grown")
    built = {
        "cnn": scale.vgg_like(folder / "cnn" / "cnn.onnx", **SMALL_CNN).path,
        "transformer": scale.transformer(folder / "t" / "t.onnx", layers=2, **SMALL_TRANSFORMER).path,
    }
    for dtype, name in ((TensorProto.FLOAT16, "fp16"), (TensorProto.BFLOAT16, "bf16")):
        (folder / name).mkdir()
        built[f"mlp-{name}"] = externalised(dtype_mlp(folder / name / "mlp.onnx", dtype, widths=(24, 40, 48, 8)))
        built[f"cnn-{name}"] = externalised(dtype_cnn(folder / name / "cnn.onnx", dtype))
    return built


CASES = [
    ("cnn", {"fc1": 96}, {}),
    ("cnn", {"conv2": 24}, {"init": "random-pad"}),
    ("cnn", {"fc1": 96, "fc2": 80, "conv3": 20}, {"noise": 0.3, "seed": 4}),
    ("cnn", {"fc1": 100}, {"init": "zero-pad"}),
    ("transformer", {"blocks.1.ffn.up": 300}, {}),
    ("transformer", {"blocks.0.ffn.up": 512, "embed": 128}, {"noise": 0.2}),
    ("mlp-fp16", {"fc1": 64, "fc2": 70}, {}),
    ("mlp-fp16", {"fc2": 96}, {"noise": 0.4, "seed": 2}),
    ("mlp-bf16", {"fc1": 57, "fc2": 70}, {}),
    ("cnn-fp16", {"conv1": 7, "conv2": 9}, {}),
    ("cnn-bf16", {"conv2": 11}, {"init": "random-pad"}),
]


def written(folder: Path) -> dict[str, bytes]:
    """Every file of a save, with the random tag of its data files' names (onnxgrow/model_io.py)
    replaced by ``TAG`` in the names and in the model's references to them."""
    files = {p.name: p.read_bytes() for p in sorted(folder.iterdir())}
    tags = {match.group(1) for name in files if (match := re.fullmatch(r"[^.]+\.([0-9a-f]{8})\..*", name))}
    normal = {}
    for name, data in files.items():
        for tag in tags:
            name, data = name.replace(tag, "TAG"), data.replace(tag.encode(), b"TAG")
        normal[name] = data
    return normal


@pytest.mark.parametrize(("model", "widths", "kwargs"), CASES,
                         ids=[f"{m}-{'+'.join(w)}-{'-'.join(map(str, o.values())) or 'default'}" for m, w, o in CASES])
def test_block_path_writes_the_bytes_of_the_whole_array_path(  # type: ignore[no-untyped-def]
        models, tmp_path: Path, monkeypatch, model: str, widths: dict[str, int], kwargs: dict) -> None:
    source = models[model]
    monkeypatch.setattr(grown_tensors, "BLOCK_BYTES", 200)  # many blocks, rows split across them
    monkeypatch.setattr(grown_tensors, "KERNEL_COPY_FROM", 64)
    grown: list[grown_tensors.GrownTensor] = []
    real = constants.edited_lazily

    def spy(tensor, edit, name):  # type: ignore[no-untyped-def]
        result = real(tensor, edit, name)
        if result is not None:
            grown.append(result)
        return result

    monkeypatch.setattr(constants, "edited_lazily", spy)
    (tmp_path / "blocks").mkdir()
    widen_file(source, tmp_path / "blocks" / "m.onnx", widths, options=GrowOptions(verify=None), **kwargs)
    if kwargs.get("init") != "random-pad":  # it draws new units and rows: those edits stay whole
        assert grown, "no weight took the block path"
    if model.startswith("mlp-") and "fc1" in widths:  # fc2's MatMul [K, N]: an fp16/bf16 contraction on axis 0
        assert any(t.axis == 0 and t.edit.scale is not None for t in grown), grown
    monkeypatch.setattr(constants, "edited_lazily", lambda tensor, edit, name: None)
    (tmp_path / "whole").mkdir()
    widen_file(source, tmp_path / "whole" / "m.onnx", widths, options=GrowOptions(verify=None), **kwargs)
    assert written(tmp_path / "blocks") == written(tmp_path / "whole")


@pytest.mark.parametrize("block_bytes", [100, grown_tensors.BLOCK_BYTES], ids=["read-by-runs", "read-whole"])
def test_grown_tensor_values_match_the_edit_for_every_row_order(  # type: ignore[no-untyped-def]
        tmp_path: Path, monkeypatch, block_bytes: int) -> None:
    """``numpy()``, ``take`` of any rows and ``tofile`` agree with the whole-array edit, stacked
    edits too, whether the source's rows are read run by run or the (small) source whole."""
    monkeypatch.setattr(grown_tensors, "BLOCK_BYTES", block_bytes)
    rng = np.random.default_rng(0)
    array = rng.standard_normal((37, 5, 3)).astype(np.float32)
    data = tmp_path / "w.data"
    data.write_bytes(b"\0" * 12 + array.tobytes())
    import onnx_ir as ir

    source = ir.ExternalTensor("w.data", 12, array.nbytes, ir.DataType.FLOAT, shape=ir.Shape(array.shape),
                               name="w", base_dir=str(tmp_path))
    src0 = np.r_[np.arange(37), rng.integers(0, 37, 11)]
    scale1 = rng.uniform(0.2, 1.0, 7)
    src1 = rng.integers(0, 5, 7)
    first = grown_tensors.AxisEdit(0, src0, None, lambda a: np.take(a, src0, axis=0))

    def scaled(a: np.ndarray) -> np.ndarray:
        out = np.take(a, src1, axis=1)
        np.multiply(out, scale1.reshape(1, -1, 1), out=out, casting="unsafe")
        return out

    second = grown_tensors.AxisEdit(1, src1, scale1, scaled)
    once = grown_tensors.GrownTensor(source, first, "w")
    twice = grown_tensors.GrownTensor(once, second, "w")
    expected = scaled(np.take(array, src0, axis=0))
    assert np.array_equal(twice.numpy(), expected)
    rows = rng.integers(0, len(src0), 20)
    assert np.array_equal(twice.take(rows), expected[rows])
    assert once.source_rows() is not None and twice.source_rows() is None
    for tensor, want in ((once, np.take(array, src0, axis=0)), (twice, expected)):
        out = tmp_path / "out.bin"
        with open(out, "wb") as f:
            f.write(b"head")
            tensor.tofile(f)
        assert out.read_bytes() == b"head" + want.tobytes()


def test_a_source_within_a_block_is_read_once_however_scattered_the_rows(  # type: ignore[no-untyped-def]
        tmp_path: Path, monkeypatch) -> None:
    """A bias's gathered copy (each new unit a 4-byte run elsewhere) costs one read, not one per run."""
    import onnx_ir as ir

    array = np.arange(4096, dtype=np.float32)
    (tmp_path / "b.data").write_bytes(array.tobytes())
    source = ir.ExternalTensor("b.data", 0, array.nbytes, ir.DataType.FLOAT, shape=ir.Shape([4096]),
                               name="b", base_dir=str(tmp_path))
    src = np.r_[np.arange(4096), np.random.default_rng(0).integers(0, 4096, 2048)]
    grown = grown_tensors.GrownTensor(source, grown_tensors.AxisEdit(0, src, None, lambda a: a[src]), "b")
    reads: list[int] = []
    real = os.preadv

    def spy(fd, buffers, offset):  # type: ignore[no-untyped-def]
        reads.append(offset)
        return real(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", spy)
    assert np.array_equal(grown.numpy(), array[src])
    assert np.array_equal(grown.take(np.arange(4096, 6144)), array[src[4096:]])
    assert len(reads) == 1


def test_unchanged_rows_are_copied_by_the_kernel(models, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A net2wider producer along axis 0 (Gemm with transB) keeps its old rows: those bytes
    go through ``copy_range``, not through the process."""
    copied: list[int] = []
    real = data_files.copy_range

    def spy(source, start, length, file):  # type: ignore[no-untyped-def]
        copied.append(length)
        return real(source, start, length, file)

    monkeypatch.setattr(data_files, "copy_range", spy)
    monkeypatch.setattr(grown_tensors, "KERNEL_COPY_FROM", 4096)
    widen_file(models["cnn"], tmp_path / "m.onnx", {"fc1": 96}, options=GrowOptions(verify=None))
    old_rows_bytes = 64 * 64 * 4  # fc1.weight [64, 64] float32: its 64 old rows
    assert old_rows_bytes in copied


def test_kernel_copies_are_cut_into_chunks_each_handed_to_the_disk(  # type: ignore[no-untyped-def]
        models, tmp_path: Path, monkeypatch) -> None:
    """The old rows of a grown tensor are copied :data:`data_files.COPY_CHUNK_BYTES` at a time,
    each chunk flushed as soon as it is copied (one flush of a long copy waits for all of it)."""
    events: list[tuple[str, int]] = []
    real_copy, real_flush = data_files.copy_range, atomic.start_flush

    def copy(source, start, length, file):  # type: ignore[no-untyped-def]
        if source.name == "fc1.weight":  # the grown tensor's copy, not a run of untouched tensors
            events.append(("copy", length))
        return real_copy(source, start, length, file)

    def flush(file, since):  # type: ignore[no-untyped-def]
        real_flush(file, since)
        events.append(("flush", file.tell() - since))

    monkeypatch.setattr(data_files, "copy_range", copy)
    monkeypatch.setattr(grown_tensors, "start_flush", flush)
    monkeypatch.setattr(grown_tensors, "KERNEL_COPY_FROM", 4096)
    monkeypatch.setattr(data_files, "COPY_CHUNK_BYTES", 5000)  # not a whole number of fc1's 256-byte rows
    widen_file(models["cnn"], tmp_path / "m.onnx", {"fc1": 96}, options=GrowOptions(verify=None))
    copies = [i for i, (kind, _) in enumerate(events) if kind == "copy"]
    old_rows_bytes = 64 * 64 * 4  # fc1.weight [64, 64] float32: its 64 old rows, 19 rows a chunk
    assert [events[i][1] for i in copies] == [4864, 4864, 4864, 1792]
    assert all(events[i + 1] == ("flush", events[i][1]) for i in copies)
    assert sum(events[i][1] for i in copies) == old_rows_bytes


def test_memory_follows_the_block_not_the_tensor(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Widening fc1 rewrites its contractor fc2 ([2048, 2048] → [2048, 3072] float32, 25 MB)
    with a fraction of that allocated."""
    built = scale.vgg_like(tmp_path / "src" / "cnn.onnx", channels=(8, 16, 16, 16, 64), hidden=2048,
                                   classes=10, image=32)
    monkeypatch.setattr(grown_tensors, "BLOCK_BYTES", 1024**2)
    tracemalloc.start()
    try:
        widen_file(built.path, tmp_path / "m.onnx", {"fc1": 3072}, options=GrowOptions(verify=None))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024**2, f"peak {peak / 1e6:.1f} MB"


@pytest.mark.parametrize("dtype", [TensorProto.FLOAT16, TensorProto.BFLOAT16], ids=["fp16", "bf16"])
def test_narrow_contraction_on_axis_0_follows_the_block(tmp_path: Path, monkeypatch, dtype: int) -> None:  # type: ignore[no-untyped-def]
    """A MatMul [K, N] in fp16/bf16 contracted along K (axis 0): [2048, 4096] → [3072, 4096]
    (24 MB) written with its rounding correction a block at a time, in a fraction of that."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    np_type = helper.tensor_dtype_to_np_dtype(dtype)
    weights = [numpy_helper.from_array(rng.standard_normal((64, 2048)).astype(np.float32), "up.weight"),
               numpy_helper.from_array(rng.standard_normal((2048, 4096)).astype(np.float32) / 45, "down.weight")]
    if dtype == TensorProto.BFLOAT16:
        weights = [helper.make_tensor(w.name, dtype, w.dims, numpy_helper.to_array(w).astype(np_type).tobytes(),
                                      raw=True) for w in weights]  # raw bytes: external data takes only those
    else:
        weights = [numpy_helper.from_array(numpy_helper.to_array(w).astype(np_type), w.name) for w in weights]
    nodes = [helper.make_node("MatMul", ["x", "up.weight"], ["h"], name="/up/MatMul"),
             helper.make_node("Relu", ["h"], ["r"], name="/act/Relu"),
             helper.make_node("MatMul", ["r", "down.weight"], ["y"], name="/down/MatMul")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", dtype, ["N", 64])],
                              [helper.make_tensor_value_info("y", dtype, ["N", 4096])], weights)
    (tmp_path / "src").mkdir()
    source = tmp_path / "src" / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(source))
    externalised(source)
    monkeypatch.setattr(grown_tensors, "BLOCK_BYTES", 1024**2)
    tracemalloc.start()
    try:
        widen_file(source, tmp_path / "m.onnx", {"up": 3072}, options=GrowOptions(verify=None), noise=0.2)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024**2, f"peak {peak / 1e6:.1f} MB"


def test_every_written_byte_is_handed_to_the_disk_while_writing(models, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The data file is flushed piece by piece as it is written (``atomic.start_flush``), so
    that the fsync before the rename waits for the last piece only: the flushed ranges of
    the kernel copies and of the grown tensors' blocks cover the whole file."""
    flushed: list[tuple[int, int]] = []
    real = atomic.start_flush

    def spy(file, since):  # type: ignore[no-untyped-def]
        real(file, since)
        flushed.append((since, file.tell()))

    monkeypatch.setattr(data_files, "start_flush", spy)
    monkeypatch.setattr(grown_tensors, "start_flush", spy)
    monkeypatch.setattr(data_files, "COPY_CHUNK_BYTES", 64 * 1024)
    monkeypatch.setattr(grown_tensors, "BLOCK_BYTES", 4096)
    monkeypatch.setattr(grown_tensors, "KERNEL_COPY_FROM", 4096)
    out = tmp_path / "m.onnx"
    widen_file(models["cnn"], out, {"fc1": 96}, options=GrowOptions(verify=None))
    (data,) = [p for p in tmp_path.iterdir() if p.name.endswith(".data")]
    covered = 0
    for since, end in sorted(flushed):
        assert since <= covered, f"bytes {covered}..{since} were never flushed"
        covered = max(covered, end)
    assert covered == data.stat().st_size
    assert len(flushed) > 10  # piece by piece, not once at the end
