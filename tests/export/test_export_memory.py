"""Exports stream: every weights export of a model far larger than its largest
tensor peaks within 300 MB plus that tensor, as the kernel counts peak RSS (``wait4``'s
``ru_maxrss``, file-backed pages of the memory-mapped weights included).

The models (``tests/helpers/scale.py``): a LLaMA-shaped decoder of 486 MB whose linear
weights are stored transposed (largest tensor 45 MB), for ``--to state-dict``, and a
Keras-named convnet of 402 MB (largest 38 MB) for ``--to keras-weights``. Writing each
whole, as the exports did, peaked at twice the model or more (``scripts/bench.py --only export``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest

from tests.helpers import scale
from tests.helpers.paths import REPO

pytestmark = pytest.mark.slow

#: The bound exports keep: this many bytes beyond the model's largest tensor.
ALLOWANCE = 300e6
KERAS_SHAPE = dict(convs=(1024,) * 10, dense=(3072, 3072, 1000))


def _largest(model: scale.BuiltModel) -> int:
    graph = ir.load(model.path).graph
    return max(v.const_value.nbytes for v in graph.initializers.values() if v.const_value is not None)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, scale.BuiltModel]:
    folder = tmp_path_factory.mktemp("big")
    return {"llama": scale.llama(folder / "llama" / "llama.onnx", **scale.LLAMA_SHAPES["test"]),  # type: ignore[arg-type]
            "keras": scale.keras_convnet(folder / "keras" / "keras.onnx", **KERAS_SHAPE)}  # type: ignore[arg-type]


@pytest.mark.parametrize(("family", "target", "suffix"), [
    ("llama", "state-dict", ".safetensors"),
    ("llama", "state-dict", ".pt"),
    ("keras", "keras-weights", ".weights.h5"),
    ("keras", "keras-weights", ".npz"),
])
def test_export_peak_memory_is_the_largest_tensor_plus_300_mb(models: dict[str, scale.BuiltModel], tmp_path: Path,
                                                              family: str, target: str, suffix: str) -> None:
    if suffix == ".weights.h5":
        pytest.importorskip("h5py")
    model = models[family]
    largest = _largest(model)
    assert model.weight_bytes > max(5 * largest, ALLOWANCE + largest)  # big enough to tell
    out = tmp_path / f"weights{suffix}"
    done = scale.measure([sys.executable, "-m", "onnxgrow", "export", str(model.path), "--to", target, "-o", str(out)],
                         cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stderr
    assert done.peak_rss <= ALLOWANCE + largest, (done.peak_rss, largest)
    assert out.stat().st_size > 0.99 * model.weight_bytes  # every weight (the graph's small constants are not)
    if suffix == ".safetensors":  # a transposed weight reads back in PyTorch layout
        safe_open = pytest.importorskip("safetensors").safe_open  # the reader, not the writer, needs it
        matmul = next(n for n in ir.load(model.path).graph if n.name == "/model/layers.1/mlp/down_proj/MatMul")
        with safe_open(str(out), framework="numpy") as f:
            np.testing.assert_array_equal(f.get_tensor("model.layers.1.mlp.down_proj.weight"),
                                          matmul.inputs[1].const_value.numpy().T)
    out.unlink()
