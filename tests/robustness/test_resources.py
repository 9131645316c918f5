"""Resources are checked before the work (docs/design.md §6, "Resources up front"): a model
that declares more weights than the disk or the memory holds is refused in one line naming
what it needs and what there is, with nothing written; diff streams instead.

The huge model declares one [10⁶, 10⁶] float32 weight (3,725.3 GiB) in a sparse data file:
nothing of it is ever read by a command that refuses it.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

import onnxgrow
from onnxgrow import resources
from onnxgrow.atomic import write_failure
from onnxgrow.diff import compare_tensors
from onnxgrow.errors import GrowError
from onnxgrow.model_io import load_model
from onnxgrow.verification import memory
from onnxgrow.verification.memory import model_weight_bytes
from tests.helpers.cli import assert_refused, run
from tests.helpers.paths import fixture_path

HUGE = 10**6
HUGE_TEXT = "3,725.3 GiB"  # 10¹² float32 values


def matmul_model(folder: Path, rows: int, data: np.ndarray | None = None, *, dims: list[int] | None = None) -> Path:
    """``y = x @ W`` with ``W`` [rows, rows] float32 in the external file ``w.bin`` of ``folder``:
    ``data`` written there, else a sparse file of the declared length (nothing on disk)."""
    folder.mkdir(parents=True, exist_ok=True)
    shape = dims or [rows, rows]
    length = math.prod(shape) * 4
    weight = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=shape, data_location=TensorProto.EXTERNAL)
    for key, value in (("location", "w.bin"), ("offset", "0"), ("length", str(length))):
        weight.external_data.add(key=key, value=value)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"], name="fc")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, rows])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, rows])], [weight])
    path = folder / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with open(folder / "w.bin", "wb") as file:
        if data is not None:
            file.write(data.astype("<f4").tobytes())
        else:
            file.truncate(length)
    return path


@pytest.fixture(scope="module")
def huge(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("huge")
    try:
        return matmul_model(folder, HUGE)
    except OSError as exc:  # a file system without sparse files this large
        pytest.skip(f"no 4 TB sparse file here: {exc}")


@pytest.mark.parametrize(("args", "output"), [
    (["export", "--to", "state-dict"], "w.safetensors"),
    (["export", "--to", "state-dict"], "w.pt"),
    (["export", "--to", "keras-weights"], "w.npz"),
    (["export", "--to", "keras-weights"], "w.weights.h5"),
    (["export", "--to", "torch"], "m.pt"),
    (["export", "--to", "keras"], "m.keras"),
    (["widen", "--node", "fc", "--to", str(2 * HUGE)], "wide.onnx"),
], ids=lambda v: v if isinstance(v, str) else v[2] if v[0] == "export" else v[0])
def test_output_larger_than_the_disk_is_refused_up_front(huge: Path, tmp_path: Path, args: list[str],
                                                         output: str) -> None:
    """``export --to state-dict -o x.safetensors`` wrote until the disk was full, then a traceback."""
    out = tmp_path / output
    line = assert_refused(tmp_path, [args[0], str(huge), *args[1:], "-o", str(out)], "cannot write", out)
    found = re.search(r"needs about ([\d,.]+ GiB), the file system has ([\d,.]+ [KMG]iB|\d+ bytes) free; "
                      r"nothing written", line)
    assert found and found.group(1) == HUGE_TEXT, line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["verify"], ["diff", "--numeric"]], ids=["verify", "diff --numeric"])
def test_check_of_a_node_beyond_memory_is_refused_up_front(huge: Path, tmp_path: Path, args: list[str]) -> None:
    """``diff --numeric S S`` reached 8.3 GiB before it was killed."""
    line = assert_refused(tmp_path, [*args, str(huge), str(huge), "--max-memory", "8G"],
                          f"checking node 'fc', which reads {HUGE_TEXT} of weights", tmp_path / "none")
    assert re.search(r"would need about [\d,.]+ GiB of memory; the limit is [\d,.]+ GiB \(the memory available, "
                     r"or --max-memory where larger\)", line), line


def test_diff_of_one_huge_model_with_itself_reads_no_weight(huge: Path) -> None:
    """``diff S S`` reached 8.2 GiB: two external tensors at one offset of one file are equal unread."""
    code, stdout, stderr = run("diff", str(huge), str(huge))
    assert (code, stderr) == (0, "") and "identical" in stdout


def test_export_beyond_memory_is_refused_up_front(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An export holds every weight twice; over the memory available it is refused, unless
    ``--max-memory`` says more may be used."""
    src = fixture_path("mlp_legacy")
    weights = model_weight_bytes(load_model(src))
    monkeypatch.setattr(memory, "available_memory", lambda: weights)
    out = tmp_path / "w.safetensors"
    line = assert_refused(tmp_path, ["export", str(src), "--to", "state-dict", "-o", str(out)],
                          "exporting --to state-dict would need about", out)
    assert f"about {weights * 2} bytes of memory; the limit is {weights} bytes (the memory available" in line
    code, _, _ = run("export", str(src), "--to", "state-dict", "--max-memory", str(2 * weights), "-o", str(out))
    assert code == 0 and out.exists()


def test_samples_beyond_memory_are_refused_up_front(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``verify --samples 1000000000`` ran with no cap and no estimate."""
    monkeypatch.setattr(memory, "available_memory", lambda: 1024**3)
    src = str(fixture_path("mlp_legacy"))
    line = assert_refused(tmp_path, ["verify", src, src, "--samples", "1000000000"],
                          "checking 1000000000 sample(s) of ", tmp_path / "none")
    # a few dozen bytes a sample, a billion times: far above 1 GiB
    assert re.search(r"sample\(s\) of \d+ bytes of inputs and outputs each would need about [\d,.]+ GiB", line), line
    code, stdout, _ = run("verify", src, src, "--samples", "100")
    assert code == 0 and "PASSED" in stdout


def test_grown_weights_beyond_the_disk_are_refused_before_saving(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk is checked again for the grown model's weights, before any byte is written: room
    for the input's weights alone is not enough."""
    src = fixture_path("mlp_legacy")
    before = model_weight_bytes(load_model(src))
    monkeypatch.setattr(resources, "free_bytes", lambda folder: before + resources.DISK_MARGIN_BYTES)
    out = tmp_path / "wide.onnx"
    with pytest.raises(GrowError, match=r"the model with its weights needs about 1.\d MiB, the file system has "
                                        r"1.0 MiB free; nothing written"):
        onnxgrow.widen_file(src, out, {"layer_1": 64})
    assert list(tmp_path.iterdir()) == []


def test_no_figure_no_refusal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the platform cannot tell the free space, nothing is refused for it."""
    monkeypatch.setattr(resources.os, "statvfs", lambda folder: (_ for _ in ()).throw(OSError("no statvfs")))
    assert resources.free_bytes(tmp_path) is None
    resources.check_disk(tmp_path / "x.onnx", 10**15, "the model")


@pytest.mark.parametrize(("count", "text"), [(0, "0 bytes"), (1023, "1023 bytes"), (1536, "1.5 KiB"),
                                             (5 * 1024**2, "5.0 MiB"), (3 * 1024**3, "3.0 GiB"),
                                             (4 * 10**12, HUGE_TEXT), (2**63, "8.59e+09 GiB")])
def test_size_text(count: int, text: str) -> None:
    assert resources.size_text(count) == text


def test_a_full_disk_said_by_a_writer_library_is_one_line(tmp_path: Path) -> None:
    """safetensors wraps the OS error in its own and removes its partial file (the space is free
    again when the error is seen): ``export --to state-dict -o x.safetensors`` on a full disk
    was a ``SafetensorError`` traceback."""
    error = write_failure(tmp_path / "x.safetensors", Exception("I/O error: No space left on device (os error 28)"))
    assert error is not None and str(error) == f"{tmp_path / 'x.safetensors'}: cannot write (No space left on " \
                                               "device); nothing written"
    assert write_failure(tmp_path / "x.safetensors", Exception("header too large")) is None


# ----- diff compares in blocks -------------------------------------------------------------------
def _external(folder: Path, data: np.ndarray) -> ir.TensorProtocol:
    path = matmul_model(folder, data.shape[0], data)
    return load_model(path).graph.initializers["W"].const_value


@settings(max_examples=25, deadline=None)
@given(rows=st.integers(1, 40), chunk=st.integers(1, 300), changes=st.lists(st.tuples(st.integers(0, 1599),
       st.sampled_from([0.5, -3.0, float("nan"), float("inf")])), max_size=5))
def test_blocks_compare_like_whole_arrays(tmp_path_factory: pytest.TempPathFactory, rows: int, chunk: int,
                                          changes: list[tuple[int, float]]) -> None:
    """Block by block, external or in memory, the count of differing values and the max abs
    difference are the whole arrays' (NaN at one place on both sides equal)."""
    rng = np.random.default_rng(rows)
    old = rng.standard_normal((rows, rows)).astype(np.float32)
    old.flat[0] = np.nan
    new = old.copy()
    for index, value in changes:
        new.flat[index % new.size] = value
    same = (old == new) | (np.isnan(old) & np.isnan(new))
    gaps = np.abs(old.astype(np.float64) - new.astype(np.float64))[~same]
    expected_gap = float(gaps.max()) if gaps.size and np.isfinite(gaps).all() else None
    expected = (int((~same).sum()), 0.0 if not gaps.size else expected_gap)
    folder = tmp_path_factory.mktemp("blocks")
    external = (_external(folder / "old", old), _external(folder / "new", new))
    in_memory = (ir.Tensor(old), ir.Tensor(new))
    for pair in (external, in_memory, (external[0], in_memory[1])):
        assert compare_tensors(*pair, chunk=chunk) == expected


def test_external_data_cut_short_after_loading_is_one_error(tmp_path: Path) -> None:
    """Loading refuses a data file shorter than its tensors; one cut short after loading (while
    a diff reads it) is an error naming the tensor, not a short block compared."""
    old = _external(tmp_path / "old", np.ones((4, 4), np.float32))
    new = _external(tmp_path / "new", np.ones((4, 4), np.float32))
    (tmp_path / "new" / "w.bin").write_bytes(b"\0" * 20)
    with pytest.raises(GrowError, match="external data of tensor 'W' ends early"):
        compare_tensors(old, new, chunk=4)


def test_diff_of_a_tensor_with_200000_dimensions(tmp_path: Path) -> None:
    """numpy arrays have at most 64 axes: ``diff`` of such a tensor was a traceback."""
    paths = []
    for name, value in (("a", 1.0), ("b", 2.0)):
        weight = helper.make_tensor("W", TensorProto.FLOAT, [1] * 200_000, [value])
        graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [weight])
        paths.append(tmp_path / f"{name}.onnx")
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(paths[-1]))
    code, stdout, stderr = run("diff", str(paths[0]), str(paths[1]))
    assert (code, stderr) == (1, ""), (code, stderr)
    assert "values changed, max abs diff 1 (1 of 1 values)" in stdout[-200:]


def _string_model(path: Path, words: list[bytes]) -> Path:
    """``y = x`` (float) and ``z = T``, ``T`` a constant string tensor [2]: static string output."""
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Identity", ["T"], ["z"])],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2]),
                               helper.make_tensor_value_info("z", TensorProto.STRING, [2])],
                              [helper.make_tensor("T", TensorProto.STRING, [2], words)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_strings_have_no_bitwidth_and_are_still_diffed_and_checked(tmp_path: Path) -> None:
    """A string tensor or a static string output has no bit width (onnx-ir raises TypeError):
    the blocks of a diff and the size of a sample count it without one."""
    old = _string_model(tmp_path / "a.onnx", [b"a", b"b"])
    new = _string_model(tmp_path / "b.onnx", [b"a", b"c"])
    code, stdout, stderr = run("diff", str(old), str(new))
    assert (code, stderr) == (1, "") and "T: STRING [2] values changed" in stdout and "(1 of 2 values)" in stdout
    code, stdout, stderr = run("verify", str(old), str(old))
    assert (code, stderr) == (0, "") and "PASSED: 2 output(s) within tolerance" in stdout
