"""The Keras side of the Net2Net experiment (``net2net_experiment.py --framework keras``).

Keras teacher → ``tf2onnx.convert.from_keras`` → onnxgrow → ``onnxgrow export --to
keras-weights`` (a ``.weights.h5``) → ``model.load_weights`` into the wider/deeper Keras
model → fine-tuning with Keras' SGD. The models mirror the PyTorch ones layer for layer
and name for name (``fc1``, ``conv2_deep``...), channels-last.

Keras reads ``KERAS_BACKEND`` when first imported: this module sets it to TensorFlow
(tf2onnx converts TensorFlow graphs) unless it is set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

from onnxgrow.export.keras_weights import export_keras_weights  # noqa: E402

NAME = "Keras"
LOAD = "`onnxgrow export --to keras-weights` (a Keras 3 `.weights.h5`), loaded with `model.load_weights` into"


def digits_mlp(hidden: int = 32, deeper: bool = False) -> Any:
    """``fc1 (hidden) relu → [fc1_deep relu] → fc2 (10)`` on the 64 pixels (logits)."""
    inputs = keras.Input((64,), name="x")
    h = keras.layers.Dense(hidden, activation="relu", name="fc1")(inputs)
    if deeper:
        h = keras.layers.Dense(hidden, activation="relu", name="fc1_deep")(h)
    return keras.Model(inputs, keras.layers.Dense(10, name="fc2")(h), name="digits_mlp")


def digits_cnn(conv1: int = 8, conv2: int = 16, fc1: int = 32, deeper: bool = False) -> Any:
    """The PyTorch DigitsCNN in Keras, channels-last on 8×8×1."""
    layers = keras.layers
    inputs = keras.Input((8, 8, 1), name="x")
    h = layers.Conv2D(conv1, 3, padding="same", activation="relu", name="conv1")(inputs)
    h = layers.Conv2D(conv2, 3, padding="same", activation="relu", name="conv2")(layers.MaxPooling2D(name="pool1")(h))
    if deeper:
        h = layers.Conv2D(conv2, 3, padding="same", activation="relu", name="conv2_deep")(h)
    h = layers.Flatten(name="flatten")(layers.MaxPooling2D(name="pool2")(h))
    h = layers.Dense(fc1, activation="relu", name="fc1")(h)
    if deeper:
        h = layers.Dense(fc1, activation="relu", name="fc1_deep")(h)
    return keras.Model(inputs, layers.Dense(10, name="fc2")(h), name="digits_cnn")


#: Family name → Keras builder and one example's input shape (channels-last).
MODELS = {"MLP": (digits_mlp, (64,)), "CNN": (digits_cnn, (8, 8, 1))}


def seed(value: int) -> None:
    keras.utils.set_random_seed(value)


def make(family: Any, **kwargs: Any) -> Any:
    return MODELS[family.name][0](**kwargs)


def shaped(data: Any, family: Any) -> dict[str, np.ndarray]:
    shape = MODELS[family.name][1]
    return {"train_x": data.train_x.numpy().reshape(-1, *shape), "train_y": data.train_y.numpy(),
            "val_x": data.val_x.numpy().reshape(-1, *shape), "val_y": data.val_y.numpy()}


def validation_loss(model: Any, data: dict[str, np.ndarray]) -> float:
    """Mean cross-entropy of the logits on the validation set (float64, in numpy)."""
    logits = np.asarray(keras.ops.convert_to_numpy(model(data["val_x"], training=False)), np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(data["val_y"])), data["val_y"]].mean())


def train(model: Any, data: dict[str, np.ndarray], lr: float, epochs: int, seed: int, *, momentum: float,
          batch: int) -> list[float]:
    """SGD with momentum on shuffled mini-batches; the validation loss after each epoch."""
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr, momentum=momentum),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(epochs):
        order = rng.permutation(len(data["train_x"]))
        model.fit(data["train_x"][order], data["train_y"][order], batch_size=batch, epochs=1, shuffle=False,
                  verbose=0)
        losses.append(validation_loss(model, data))
    return losses


def export_teacher(teacher: Any, family: Any, path: Path) -> Path:
    import tensorflow as tf
    import tf2onnx

    shape = MODELS[family.name][1]
    teacher.output_names = ["logits"]  # tf2onnx needs it on Keras 3 models
    tf2onnx.convert.from_keras(teacher, input_signature=(tf.TensorSpec((None, *shape), tf.float32, name="x"),),
                               output_path=str(path))
    return path


def load_student(grown: Path, model: Any) -> Any:
    """The grown ONNX model's weights under their Keras names, loaded with ``load_weights``."""
    weights = grown.with_name(grown.stem + ".weights.h5")
    export_keras_weights(grown, weights)
    model.load_weights(weights)
    return model


def with_teacher_layers(deeper: Any, teacher: Any) -> Any:
    """The teacher's layers copied by name; the new ``*_deep`` layers left random."""
    for layer in teacher.layers:
        if layer.weights:
            deeper.get_layer(layer.name).set_weights(layer.get_weights())
    return deeper
