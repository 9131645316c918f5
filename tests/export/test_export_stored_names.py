"""Names from a model where a writer stores them (onnxgrow/export/stored_names.py): archive
members of ``.npz``, names of ``.weights.h5``, Keras layer names, state-dict keys. No ``..``
path step, no control character, no NUL; two names stored alike are refused before anything
is written; a long name is kept as it is.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from onnxgrow.errors import GrowError
from onnxgrow.export.keras_layout import KerasLayer, KerasWeights
from onnxgrow.export.keras_weights import write_keras_weights
from onnxgrow.export.stored_names import storable
from tests.helpers.hostile_models import tf_like_dense
from tests.helpers.optional import needs
from tests.helpers.robustness import listing, run_cli

CONTROL = "".join(map(chr, [*range(0x20), *range(0x7F, 0xA0)]))
LONG = "x" * 10_000


@pytest.mark.parametrize(("name", "stored"), [
    ("..", "__"), (".", "_"), ("", "_"), ("a/../b", "a_.._b"), ("a\\b", "a_b"), ("a\x00b", "a_b"),
    ("\x1b[31mred", "_[31mred"), ("b\nc\rd\x9b", "b_c_d_"), ("fc1", "fc1"), ("dense.1", "dense.1"), (LONG, LONG),
])
def test_storable(name: str, stored: str) -> None:
    assert storable(name) == stored


def _members(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


@pytest.mark.parametrize("layers", [["..", "b"], ["a\x1b[31m", "b\nc"], [LONG, "b"]])
def test_npz_members_are_storable_names(tmp_path: Path, layers: list[str]) -> None:
    model = tf_like_dense(tmp_path / "m.onnx", layers)
    result = run_cli("export", model, "--to", "keras-weights", "-o", tmp_path / "w.npz")
    assert result.exception is None and result.code == 0, result.stderr
    members = _members(tmp_path / "w.npz")
    assert members == [f"{storable(layer)}/{var}.npy" for layer in layers for var in ("kernel", "bias")]
    assert not any(c in m for m in members for c in CONTROL) and not any(".." in m.split("/") for m in members)
    with np.load(tmp_path / "w.npz") as weights:
        kernel = weights[f"{storable(layers[0])}/kernel"]
    assert kernel.shape == (16, 16)
    for layer in layers:
        assert (f"note: Keras layer {layer!r} is stored as" in result.stdout) == (
            storable(layer) != layer)


@pytest.mark.parametrize("layers", [["..", "b"], ["a\x1b[31m", "b\nc"], [LONG, "b"]])
def test_h5_names_are_storable_names(tmp_path: Path, layers: list[str]) -> None:
    h5py = pytest.importorskip("h5py")
    model = tf_like_dense(tmp_path / "m.onnx", layers)
    result = run_cli("export", model, "--to", "keras-weights", "-o", tmp_path / "w.weights.h5")
    assert result.exception is None and result.code == 0, result.stderr
    with h5py.File(tmp_path / "w.weights.h5") as file:
        names = [file["layers"][group]["vars"].attrs["name"] for group in ("dense", "dense_1")]
        assert file["layers"]["dense"]["vars"]["0"].shape == (16, 16)
    assert names == [storable(layer) for layer in layers]


@pytest.mark.parametrize("suffix", [".npz", ".weights.h5"])
def test_a_nul_in_a_layer_name_is_stored_without_it(tmp_path: Path, suffix: str) -> None:
    """Through the API (an in-memory model skips the load-time refusal of NUL): no NUL reaches
    zip or HDF5, where it ended the name (two members named ``a``, the kernel lost on load)."""
    if suffix == ".weights.h5":
        h5py = pytest.importorskip("h5py")
    kernel, bias = np.ones((8, 16), np.float32), np.zeros(16, np.float32)
    weights = KerasWeights([KerasLayer("a\x00kernel", "Dense", {"kernel": kernel, "bias": bias}, "n0"),
                            KerasLayer("a", "Dense", {"kernel": kernel.T.copy(), "bias": bias[:8]}, "n1")])
    path = tmp_path / f"w{suffix}"
    write_keras_weights(weights, path, "model\x00name")
    if suffix == ".npz":
        assert _members(path) == ["a_kernel/kernel.npy", "a_kernel/bias.npy", "a/kernel.npy", "a/bias.npy"]
        with np.load(path) as loaded:
            assert loaded["a_kernel/kernel"].shape == (8, 16) and loaded["a/kernel"].shape == (16, 8)
    else:
        with h5py.File(path) as file:
            assert [file["layers"][g]["vars"].attrs["name"] for g in ("dense", "dense_1")] == ["a_kernel", "a"]
            assert file["vars"].attrs["name"] == "model_name"


@pytest.mark.parametrize("suffix", [".npz", ".weights.h5"])
def test_layers_stored_alike_are_refused_before_writing(tmp_path: Path, suffix: str) -> None:
    model = tf_like_dense(tmp_path / "m.onnx", ["a\x01", "a\x02"])
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli("export", model, "--to", "keras-weights", "-o", out / f"w{suffix}")
    assert result.exception is None and result.code == 2, result.stderr
    assert "the Keras layers 'a\\x01' and 'a\\x02' would both be stored as 'a_'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and listing(out) == set()
    with pytest.raises(GrowError, match="would both be stored"):
        write_keras_weights(KerasWeights([KerasLayer(n, "Dense", {}, n) for n in ("a/", "a\\")]), out / "x.npz", None)


def test_a_nul_in_a_layer_name_is_refused_at_load(tmp_path: Path) -> None:
    """The issue's model: a NUL in a Keras layer name gave two members named ``a``."""
    model = tf_like_dense(tmp_path / "m.onnx", ["a\x00b", "a"])
    result = run_cli("export", model, "--to", "keras-weights", "-o", tmp_path / "w.npz")
    assert result.exception is None and result.code == 2 and "holds a NUL character" in result.stderr
    assert not (tmp_path / "w.npz").exists()


@pytest.mark.parametrize("layers", [["..", "b"], ["a\x1b[31m", "b\nc"], [LONG, "b"]],
                         ids=["dots", "control", "long"])
@pytest.mark.parametrize("case", [pytest.param(0, marks=needs("torch", "keras"))])
def test_keras_model_layer_names_are_identifiers_and_long_ones_kept(tmp_path: Path, layers: list[str],
                                                                    case: int) -> None:
    model = tf_like_dense(tmp_path / "m.onnx", layers)
    result = run_cli("export", model, "--to", "keras", "-o", tmp_path / "m.keras")
    assert result.exception is None and result.code == 0, result.stderr
    assert "PASSED" in result.stdout
    with zipfile.ZipFile(tmp_path / "m.keras") as archive:
        config = json.loads(archive.read("config.json"))
        members = archive.namelist()
    names = [layer["config"]["name"] for layer in config["config"]["layers"]]
    assert not any(c in n for n in names for c in CONTROL) and ".." not in names
    assert all(not any(c in m for c in CONTROL) and ".." not in m.split("/") for m in members)
    if layers[0] == LONG:
        assert LONG in names


def test_state_dict_keys_hold_no_control_character(tmp_path: Path) -> None:
    """A weight named like a framework name but for a trailing newline is no framework name."""
    pytest.importorskip("safetensors")
    from tests.helpers.hostile_models import mlp_edited

    def newline_names(proto) -> None:  # type: ignore[no-untyped-def]
        for tensor in proto.graph.initializer:
            old = tensor.name
            tensor.name = old + "\n"
            for node in proto.graph.node:
                node.input[:] = [tensor.name if i == old else i for i in node.input]

    model = mlp_edited(newline_names, tmp_path, "newline")
    result = run_cli("export", model, "--to", "state-dict", "-o", tmp_path / "w.safetensors")
    assert result.exception is None and result.code == 0, result.stderr
    header_size = int.from_bytes((tmp_path / "w.safetensors").read_bytes()[:8], "little")
    header = json.loads((tmp_path / "w.safetensors").read_bytes()[8:8 + header_size])
    keys = [k for k in header if k != "__metadata__"]
    assert len(keys) == 6 and not any(c in k for k in keys for c in CONTROL), keys
