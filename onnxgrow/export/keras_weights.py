"""Keras weights from an ONNX model, written so a Keras 3 model with the same layers loads
them (the layers and layouts are found by :mod:`onnxgrow.export.keras_layout`).

- ``.weights.h5``: Keras 3's own weights file, read by ``model.load_weights(path)``.
  Keras stores a layer's variables under ``layers/<class>/vars/<i>`` (the class in snake
  case, ``_1``, ``_2``... for the second and third layer of a class, in the order of
  ``model.layers``) with the layer's name as the ``name`` attribute; it loads by that
  position, not by name. The file lists the layers in the ONNX graph's order, which is
  ``model.layers``' order for a model whose layers of one class do not sit in parallel
  branches; for any other model use ``.npz``.
- ``.npz``: one array per Keras variable under its path (``fc1/kernel``,
  ``bn/moving_mean``), loaded by name whatever the order:
  ``for v in model.weights: v.assign(weights[v.path])`` with ``weights = numpy.load(path)``.

Written atomically: on any error no file (not even a partial one) is left.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx_ir as ir

from onnxgrow.atomic import atomic_output
from onnxgrow.errors import GrowError
from onnxgrow.export.keras_layout import KerasWeights, keras_weights
from onnxgrow.model_io import load_model

H5_SUFFIX = ".weights.h5"
NPZ_SUFFIX = ".npz"
#: Keras class → the group name Keras' weights file gives its first layer.
_STORE_NAMES = {
    "Dense": "dense", "Conv1D": "conv1d", "Conv2D": "conv2d", "Conv3D": "conv3d",
    "DepthwiseConv2D": "depthwise_conv2d", "BatchNormalization": "batch_normalization",
    "LayerNormalization": "layer_normalization", "Embedding": "embedding",
}


def check_keras_weights_output(output: Path) -> None:
    """A Keras weights file must end in ``.weights.h5`` (Keras checks this) or ``.npz``."""
    if not (output.name.endswith(H5_SUFFIX) or output.suffix == NPZ_SUFFIX):
        raise GrowError(f"{output}: a Keras weights file must end in {H5_SUFFIX} (model.load_weights) "
                        f"or {NPZ_SUFFIX}")


def variable_paths(weights: KerasWeights) -> dict[str, np.ndarray]:
    """Every variable under its Keras path ``<layer>/<variable>``."""
    return {f"{layer.name}/{name}": np.ascontiguousarray(array)
            for layer in weights.layers for name, array in layer.variables.items()}


def _write_h5(weights: KerasWeights, path: Path, model_name: str) -> None:
    try:
        import h5py
    except ImportError:
        raise GrowError("writing .weights.h5 needs h5py (pip install 'onnxgrow[keras]'); or write .npz") from None
    counts: dict[str, int] = {}
    with h5py.File(path, "w") as file:
        layers = file.create_group("layers")
        for layer in weights.layers:
            base = _STORE_NAMES[layer.kind]
            k = counts.get(base, 0)
            counts[base] = k + 1
            group = layers.create_group(base if k == 0 else f"{base}_{k}").create_group("vars")
            group.attrs["name"] = layer.name
            for i, array in enumerate(layer.ordered()):
                group.create_dataset(str(i), data=np.ascontiguousarray(array))
        file.create_group("vars").attrs["name"] = model_name


def save_keras_weights(weights: KerasWeights, output: str | os.PathLike[str], model_name: str = "functional") -> Path:
    """Write ``weights`` to ``output`` (``.weights.h5`` or ``.npz``, see the module docstring)."""
    out = Path(output)
    check_keras_weights_output(out)
    with atomic_output(out) as tmp:
        if out.suffix == NPZ_SUFFIX:
            with open(tmp, "wb") as handle:
                np.savez(handle, **variable_paths(weights))  # type: ignore[arg-type]
        else:
            _write_h5(weights, tmp, model_name)
    return out


def export_keras_weights(model: ir.Model | str | os.PathLike[str], output: str | os.PathLike[str], *,
                         bias_before_norm: bool = True) -> KerasWeights:
    """Find the Keras layers of ``model`` and save their weights to ``output``."""
    check_keras_weights_output(Path(output))
    if not isinstance(model, ir.Model):
        model = load_model(model)
    weights = keras_weights(model, bias_before_norm=bias_before_norm)
    save_keras_weights(weights, output, model.graph.name or "functional")
    return weights
