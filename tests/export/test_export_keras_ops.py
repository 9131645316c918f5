"""The Keras model computes each supported op as onnxruntime does, under Keras' torch and
TensorFlow backends, and refuses the others with a GrowError naming the node. The graphs
tf2onnx writes for Keras layers (NHWC Transposes around NCHW convs, BatchNormalization as
Mul/Add, ReLU6 as Clip, ZeroPadding2D as Pad, DepthwiseConv2D as a grouped Conv,
GlobalAveragePooling as GlobalAveragePool + Squeeze, the dynamic-batch Flatten from
Shape/Gather/Cast/Slice/Concat/Reshape) come back with no Transpose in the Keras model.

Keras reads ``KERAS_BACKEND`` when it is first imported, so all cases of a backend run in
one subprocess with ``KERAS_BACKEND`` set (the torch backend needs no TensorFlow).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.export_op_graphs import OpGraph, op_graphs, tf_pattern_graphs
from tests.helpers.paths import REPO

pytest.importorskip("torch")
pytest.importorskip("keras")

import torch

from tests.helpers.export import TiedLM, TinyEncoder, export_onnx

pytestmark = pytest.mark.torch

TF_PATTERNS = tf_pattern_graphs()
CASES = op_graphs() + TF_PATTERNS
BACKENDS = ["torch"] + (["tensorflow"] if importlib.util.find_spec("tensorflow") is not None else [])
SUPPORTED = [c for c in CASES if c.keras]
REFUSED = [c for c in CASES if not c.keras]
#: The Keras builder's own steps (registered like ops, made by merging ONNX nodes, so no graph
#: node names them) → the SUPPORTED case whose graph makes each one.
BUILDER_STEPS = {"ScaleShift": "tf-conv-bn-relu6-pad-depthwise-pool-dense"}  # tf2onnx's BatchNorm Mul/Add

_RUN = textwrap.dedent("""
    import json, sys
    import numpy as np, keras
    import onnxruntime as ort
    from onnxgrow.errors import GrowError
    from onnxgrow.export import to_keras
    results = {}
    for name, path, feeds_path in json.loads(sys.argv[1]):
        feeds = dict(np.load(feeds_path))
        try:
            exported = to_keras(path)
        except GrowError as exc:
            results[name] = {"refused": str(exc)}
            continue
        except Exception as exc:
            results[name] = {"crash": repr(exc)}
            continue
        out = path[:-5] + ".keras"
        exported.model.save(out)
        model = keras.saving.load_model(out)
        names = [i.name for i in ort.InferenceSession(path).get_inputs()]
        expected = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)
        args = [feeds[n] for n in names]
        got = model(args if len(args) > 1 else args[0], training=False)
        got = got if isinstance(got, (list, tuple)) else [got]
        errors = [float(np.abs(np.asarray(keras.ops.convert_to_numpy(g), np.float64) - e).max()
                        / max(float(np.abs(e).max()), 1e-30)) for g, e in zip(got, expected)]
        results[name] = {"error": max(errors), "outputs": len(got), "expected": len(expected),
                         "trainable": len(model.trainable_variables), "notes": exported.notes(),
                         "transposes": sum(type(op).__name__ == "Transpose" for op in model.operations),
                         "layers": sorted(type(layer).__name__ for layer in model.layers)}
    print(json.dumps(results))
""")


def _torch_exports(folder: Path) -> list[tuple[str, str, str]]:
    """A transformer-ish block and a tied-embedding LM, exported from PyTorch."""
    jobs = []
    tokens = np.random.default_rng(0).integers(0, 20, (3, 5)).astype(np.int64)
    for name, cls, dynamo in (("TinyEncoder-legacy", TinyEncoder, False), ("TiedLM-dynamo", TiedLM, True)):
        torch.manual_seed(0)
        path = export_onnx(cls(), (torch.from_numpy(tokens),), folder / f"{name}.onnx", dynamo=dynamo,
                           input_names=("tokens",))
        np.savez(folder / f"{name}.npz", tokens=tokens)
        jobs.append((name, str(path), str(folder / f"{name}.npz")))
    return jobs


@pytest.fixture(scope="module", params=BACKENDS)
def results(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    folder = tmp_path_factory.mktemp("keras_ops")
    jobs = _torch_exports(folder)
    for case in CASES:
        feeds = folder / f"{case.id}.npz"
        np.savez(feeds, **case.feeds)
        jobs.append((case.id, str(case.save(folder)), str(feeds)))
    env = {**os.environ, "KERAS_BACKEND": request.param, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1",
           "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", _RUN, json.dumps(jobs)], capture_output=True, text=True,
                         env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case", SUPPORTED, ids=[c.id for c in SUPPORTED])
def test_keras_op_matches_onnxruntime(results: dict[str, dict], case: OpGraph) -> None:
    result = results[case.id]
    assert "error" in result, result
    assert result["outputs"] == result["expected"]
    assert result["error"] <= 1e-5


@pytest.mark.parametrize("case", REFUSED, ids=[c.id for c in REFUSED])
def test_keras_refuses_with_a_message_naming_the_node(results: dict[str, dict], case: OpGraph) -> None:
    result = results[case.id]
    assert "refused" in result, result
    assert "_node" in result["refused"]


@pytest.mark.parametrize("name, variables", [("Gemm-transB", 2), ("Conv-group-dilation", 2), ("PRelu", 1),
                                             ("BatchNormalization", 2), ("LayerNormalization-axis-2", 2),
                                             ("Gather-embedding", 1), ("MatMul-Add-3d", 2)])
def test_weights_become_trainable_keras_variables(results: dict[str, dict], name: str, variables: int) -> None:
    assert results[name]["trainable"] == variables


def test_a_free_parameter_is_a_listed_constant_in_keras(results: dict[str, dict]) -> None:
    """``pos`` is added to a tensor: Keras has no layer to hold it as a variable."""
    result = results["TinyEncoder-legacy"]
    assert result["error"] <= 1e-5
    assert result["notes"] == ["pos: read by an op with no Keras layer; kept as a constant (not trainable)"]
    assert result["trainable"] == 6  # emb, norm (2), up (2), down


def test_tied_weights_are_listed_as_untied_copies_in_keras(results: dict[str, dict]) -> None:
    result = results["TiedLM-dynamo"]
    assert result["error"] <= 1e-5 and result["trainable"] == 2
    assert "head.weight: read by 2 layers; in Keras each holds its own copy (they start equal and are no "\
           "longer tied)" in result["notes"]


@pytest.mark.parametrize("case", TF_PATTERNS[:2], ids=[c.id for c in TF_PATTERNS[:2]])
def test_tensorflow_patterns_come_back_channels_last_without_transposes(results: dict[str, dict],
                                                                        case: OpGraph) -> None:
    assert results[case.id]["transposes"] == 0, results[case.id]


def test_tensorflow_layers_are_rebuilt_as_keras_layers(results: dict[str, dict]) -> None:
    """Conv → Conv2D, tf2onnx's batchnorm Mul/Add → a ScaleShift (EinsumDense), Pad → ZeroPadding2D,
    a Conv with one group per channel → DepthwiseConv2D, MatMul + Add → Dense: all trainable
    (the first conv's own padding is a ZeroPadding2D before it, too)."""
    result = results[BUILDER_STEPS["ScaleShift"]]
    assert result["layers"] == ["Conv2D", "Dense", "DepthwiseConv2D", "EinsumDense", "InputLayer",
                                "ZeroPadding2D", "ZeroPadding2D"]
    assert result["trainable"] == 7  # conv (2), bn (2), depthwise kernel, dense (2)
    assert not any("kept as a constant" in note for note in result["notes"])
