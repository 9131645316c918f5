"""``onnxgrow export --to keras-weights``: the TensorFlow-made models, widened through
tf2onnx and onnxgrow, come back as Keras weights that a wider Keras model built by the test
loads with ``model.load_weights`` (``.weights.h5``) or by variable path (``.npz``) and runs
as onnxruntime runs the grown ONNX model (max relative error ≤ 1e-5), in a fresh process
under Keras' TensorFlow backend. Bad input: one line, exit 2, nothing written.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import onnxgrow
from onnxgrow.errors import GrowError
from onnxgrow.export import keras_weights as keras_weights_module
from tests.helpers import tf_zoo
from tests.helpers.cli import assert_refused, run
from tests.helpers.export_cache import shared_directory
from tests.helpers.keras_roundtrip import check_in_fresh_process

pytestmark = [pytest.mark.tf, pytest.mark.skipif(not tf_zoo.available(), reason=tf_zoo.MISSING_REASON)]

#: (model, route, Keras layer → new width, whether the layers before a BatchNorm have a bias):
#: every Keras model, every route at least once, n+1 and 2n widths.
CASES = [
    ("seed_mlp", "from_keras", {"layer_2": 10}, True),
    ("seed_mlp", "saved_model", {"layer_1": 5}, True),
    ("seed_mlp", "from_function", {"layer_1": 8, "layer_2": 6}, True),
    ("mnist_cnn", "from_keras", {"conv1": 65, "fc1": 128}, True),
    ("mnist_cnn", "keras_onnx", {"conv2": 128}, True),
    ("mnist_cnn", "tf_keras", {"fc1": 65}, True),
    ("bn_resnet", "from_keras", {"conv1": 16}, True),
    ("bn_resnet", "tf_keras", {"conv1": 9}, True),
    ("mobilenet_v2", "from_keras", {"block_2_expand": 145}, False),
    ("td_mlp", "from_keras", {"td_fc1": 16}, True),
]
IDS = [f"{m}-{r}-{'-'.join(f'{k}{v}' for k, v in w.items())}" for m, r, w, _ in CASES]


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    folder = shared_directory(tmp_path_factory.getbasetemp(), "tf_zoo")
    return tf_zoo.export_all(folder, sorted({(m, r) for m, r, _, _ in CASES}))


@pytest.fixture(scope="module")
def results(exports: dict[tuple[str, str], Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Widen, export both formats through the CLI, and load both in one fresh TensorFlow process."""
    folder = tmp_path_factory.mktemp("keras_weights")
    jobs, outputs = [], {}
    for case_id, (model, route, widths, bias) in zip(IDS, CASES):
        source = exports[model, route]
        grown = folder / f"{case_id}.onnx"
        onnxgrow.widen_file(source, grown, widths)  # by Keras layer name
        for kind, suffix in (("h5", ".weights.h5"), ("npz", ".npz")):
            out = folder / f"{case_id}{suffix}"
            args = ["export", str(grown), "--to", "keras-weights", "-o", str(out)]
            code, stdout, stderr = run(*args, *([] if bias else ["--no-bias-before-norm"]))
            assert code == 0, stderr
            outputs[f"{case_id}-{kind}"] = stdout
            jobs.append({"id": f"{case_id}-{kind}", "kind": kind, "onnx": str(grown), "file": str(out),
                         "model": model, "widths": widths})
    found = check_in_fresh_process(jobs)
    return {key: {**value, "stdout": outputs[key]} for key, value in found.items()}


@pytest.mark.parametrize("kind", ["h5", "npz"])
@pytest.mark.parametrize("case_id", IDS)
def test_wider_keras_model_loads_the_weights_and_matches_onnxruntime(results: dict[str, dict], case_id: str,
                                                                     kind: str) -> None:
    result = results[f"{case_id}-{kind}"]
    assert "error" in result, result
    assert result["error"] <= 1e-5, result
    assert "not compared with onnxruntime" in result["stdout"]


def test_batchnorms_written_as_arithmetic_or_folded_are_listed(results: dict[str, dict]) -> None:
    """Keras 3 routes keep a BatchNorm as Mul/Add; tf.keras 2 folds it into the conv."""
    keras3 = results["bn_resnet-from_keras-conv116-h5"]["stdout"]
    assert "note: BatchNormalization bn1 was written by the converter as Mul/Add by constants" in keras3
    tf_keras = results["bn_resnet-tf_keras-conv19-h5"]["stdout"]
    assert "note: BatchNormalization bn1 was folded into Conv2D conv1 by the converter" in tf_keras
    mobilenet = results["mobilenet_v2-from_keras-block_2_expand145-h5"]["stdout"]
    assert "note: BatchNormalization block_2_expand_BN was folded into Conv2D block_2_expand" in mobilenet


@pytest.mark.parametrize("name", ["wide.h5", "wide.keras", "wide.weights"])
def test_a_keras_weights_file_needs_its_suffix(exports: dict[tuple[str, str], Path], tmp_path: Path,
                                               name: str) -> None:
    source = tmp_path / "mlp.onnx"
    source.write_bytes(exports["seed_mlp", "from_keras"].read_bytes())
    out = tmp_path / name
    assert_refused(tmp_path, ["export", str(source), "--to", "keras-weights", "-o", str(out)],
                   "--to keras-weights writes .weights.h5 or .npz files", out)


def test_a_graph_without_keras_scopes_is_refused_naming_the_node(fixture_copy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = fixture_copy("mlp_dynamo")
    out = tmp_path / "w.npz"
    assert_refused(source.parent, ["export", str(source), "--to", "keras-weights", "-o", str(out)],
                   "has no Keras layer name", out)


def test_a_failed_write_leaves_no_partial_file(exports: dict[tuple[str, str], Path], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def half_write(weights, path, model_name):  # type: ignore[no-untyped-def]
        path.write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(keras_weights_module, "_write_h5", half_write)
    out = tmp_path / "wide.weights.h5"
    with pytest.raises(GrowError, match="cannot write .disk full.; nothing written"):
        keras_weights_module.export_keras_weights(exports["seed_mlp", "from_keras"], out)
    assert list(tmp_path.iterdir()) == []


_ENCODER = textwrap.dedent("""
    import sys
    import keras, numpy as np, tensorflow as tf, tf2onnx
    keras.utils.set_random_seed(0)
    tokens = keras.Input((5,), dtype="int32", name="tokens")
    h = keras.layers.LayerNormalization(name="ln")(keras.layers.Embedding(20, 8, name="emb")(tokens))
    h = keras.layers.Dense(6, activation="relu", name="fc1")(h)
    model = keras.Model(tokens, keras.layers.Dense(3, name="fc2")(h), name="encoder")
    rng = np.random.default_rng(1)
    for w in model.weights:  # no zero bias, no unit gamma
        w.assign((0.5 * rng.standard_normal(w.shape) + (1.0 if "gamma" in w.name else 0.0)).astype("float32"))
    model.save(sys.argv[2])
    model.output_names = ["y"]
    tf2onnx.convert.from_keras(model, input_signature=(tf.TensorSpec((None, 5), tf.int32, name="tokens"),),
                               output_path=sys.argv[1])
""")


def test_embedding_and_layer_norm_weights_load_into_the_wider_model(tmp_path: Path) -> None:
    """tf2onnx writes Embedding as Gather and LayerNormalization as moments/Mul/Add, and the
    Dense over 3-D input as MatMul, Reshape, Add: all come back, fc1 widened 6 → 12."""
    source, original = tmp_path / "encoder.onnx", tmp_path / "encoder.keras"
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1"}
    made = subprocess.run([sys.executable, "-c", _ENCODER, str(source), str(original)], check=False,
                          capture_output=True, text=True, env=env, timeout=600)
    assert made.returncode == 0, made.stderr[-2000:]
    grown = tmp_path / "wide.onnx"
    onnxgrow.widen_file(source, grown, {"fc1": 12})
    out = tmp_path / "wide.weights.h5"
    code, stdout, stderr = run("export", str(grown), "--to", "keras-weights", "-o", str(out))
    assert code == 0, stderr
    assert "no bias" not in stdout  # the Dense biases after tf2onnx's Reshape are found
    job = {"id": "encoder", "kind": "h5", "onnx": str(grown), "file": str(out), "original": str(original),
           "widths": {"fc1": 12}, "vocabulary": 20}
    result = check_in_fresh_process([job])["encoder"]
    assert "error" in result, result
    assert result["error"] <= 1e-5
