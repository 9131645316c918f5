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

Both are written one variable at a time, a block of rows at a time, from the memory-mapped
weights (:mod:`onnxgrow.export.array_blocks`): peak memory is about the largest variable,
not the model. Written atomically: on any error no file (not even a partial one) is left.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import onnx_ir as ir

from onnxgrow.atomic import atomic_output, start_flush
from onnxgrow.errors import GrowError
from onnxgrow.export.array_blocks import blocks, write_array
from onnxgrow.export.keras_layout import KerasWeights, keras_weights
from onnxgrow.export.stored_names import renamed_notes, storable, storable_names
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


def stored_layer_names(weights: KerasWeights) -> dict[str, str]:
    """Each layer's name as the files store it (:mod:`onnxgrow.export.stored_names`: the
    ``.npz`` member folder, the ``.weights.h5`` name attribute); GrowError, before anything
    is written, when two layers would be stored under one name."""
    return storable_names((layer.name for layer in weights.layers), "Keras layers")


def storage_notes(weights: KerasWeights) -> list[str]:
    """The layers stored under another name than their own (checked for collisions)."""
    return renamed_notes(stored_layer_names(weights), "Keras layer")


def variable_paths(weights: KerasWeights) -> dict[str, np.ndarray]:
    """Every variable under its Keras path ``<layer>/<variable>``, the layer's name stored as
    :func:`stored_layer_names` says (views of the weights where the layout allows: nothing is
    read until written)."""
    stored = stored_layer_names(weights)
    return {f"{stored[layer.name]}/{storable(name)}": array
            for layer in weights.layers for name, array in layer.variables.items()}


def _write_h5(weights: KerasWeights, path: Path, model_name: str) -> None:
    """Keras' weights file; each variable a contiguous dataset, written a block at a time."""
    try:
        import h5py
    except ImportError:
        raise GrowError("writing .weights.h5 needs h5py (pip install 'onnxgrow[keras]'); or write .npz") from None
    counts: dict[str, int] = {}
    stored = stored_layer_names(weights)
    with h5py.File(path, "w") as file:
        layers = file.create_group("layers")
        for layer in weights.layers:
            base = _STORE_NAMES[layer.kind]
            k = counts.get(base, 0)
            counts[base] = k + 1
            group = layers.create_group(base if k == 0 else f"{base}_{k}").create_group("vars")
            group.attrs["name"] = stored[layer.name]
            for i, array in enumerate(layer.ordered()):
                dataset = group.create_dataset(str(i), shape=array.shape, dtype=array.dtype)
                for index, block in blocks(array):
                    dataset[index] = block
        file.create_group("vars").attrs["name"] = storable(model_name)


def _write_npz(arrays: dict[str, np.ndarray], path: Path) -> None:
    """What ``numpy.savez(path, **arrays)`` writes (a zip of ``<key>.npy`` members, stored,
    each forced to ZIP64), each array's data in C order a block at a time."""
    with open(path, "wb") as raw, zipfile.ZipFile(raw, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as npz:
        for key, array in arrays.items():
            since = raw.tell()
            with npz.open(key + ".npy", "w", force_zip64=True) as member:
                header = {"descr": np.lib.format.dtype_to_descr(array.dtype), "fortran_order": False,
                          "shape": array.shape}
                np.lib.format.write_array_header_1_0(member, header)
                write_array(member, array)
            start_flush(raw, since)


def save_keras_weights(weights: KerasWeights, output: str | os.PathLike[str], model_name: str | None = None) -> Path:
    """Write ``weights`` to ``output`` (``.weights.h5`` or ``.npz``, see the module docstring)."""
    out = Path(output)
    check_keras_weights_output(out)
    with atomic_output(out) as tmp:
        write_keras_weights(weights, tmp, model_name)
    return out


def write_keras_weights(weights: KerasWeights, path: Path, model_name: str | None) -> None:
    """Write ``weights`` to ``path``: ``.npz`` by suffix, else Keras' ``.weights.h5`` (whose
    model group is named ``model_name``, Keras' ``functional`` when None or empty)."""
    if path.suffix == NPZ_SUFFIX:
        _write_npz(variable_paths(weights), path)
    else:
        _write_h5(weights, path, model_name or "functional")


def export_keras_weights(model: ir.Model | str | os.PathLike[str], output: str | os.PathLike[str], *,
                         bias_before_norm: bool = True) -> KerasWeights:
    """Find the Keras layers of ``model`` and save their weights to ``output``."""
    check_keras_weights_output(Path(output))
    if not isinstance(model, ir.Model):
        model = load_model(model)
    weights = keras_weights(model, bias_before_norm=bias_before_norm)
    weights.notes += storage_notes(weights)
    save_keras_weights(weights, output, model.graph.name)
    return weights
