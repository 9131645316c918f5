"""TensorFlow-made test models and their ONNX exports through every route TensorFlow offers.

Keras models (functional, channels_last, every weight seeded random so no bias is zero,
no BatchNorm an identity):

- ``seed_mlp``: ``layer_1`` Dense 4 relu → ``layer_2`` Dense 5 relu → ``layer_3`` Dense 2, on 3 inputs.
- ``mnist_cnn``: the Net2Net MNIST CNN, ``conv1`` 64 (3×3 same, relu) → ``pool1`` →
  ``conv2`` 64 → ``pool2`` → ``flatten`` → ``fc1`` 64 relu → ``fc2`` 10 softmax, on 28×28×1.
- ``bn_resnet``: ``stem`` conv → ``stem_bn`` → relu → ``conv1`` → ``bn1`` → relu → ``conv2`` →
  ``bn2`` → add(stem) → relu → global average pooling → ``fc``, on 16×16×3.
- ``mobilenet_v2``: ``keras.applications.MobileNetV2(weights=None, input_shape=(64, 64, 3), classes=10)``.

Bad-input and placement models: ``td_mlp`` (Dense over 3-D input: ``td_fc1`` relu → ``td_fc2``),
``lstm`` and ``gru`` (``proj`` Dense → the recurrent layer ``rnn`` → ``head``), ``cond``
(``fc1`` → a ``tf.cond`` → ``fc2``, through ``from_function`` only).

Routes (:data:`KERAS_ROUTES`): ``from_keras`` (``tf2onnx.convert.from_keras``; Keras 3 needs
``model.output_names`` set first), ``saved_model`` (``model.export(dir)``, then tf2onnx's
SavedModel loader), ``from_function`` (``tf2onnx.convert.from_function`` on a ``tf.function``),
``keras_onnx`` (Keras 3's ``model.export(path, format="onnx")``), ``tf_keras`` (the same model
built with tf.keras 2 from the ``tf-keras`` package, then ``from_keras``). scikit-learn:
``mlp_classifier``, an ``MLPClassifier(hidden_layer_sizes=(16, 12))`` trained briefly on
digits, through skl2onnx with its default ZipMap output (``zipmap``) and without
(``no_zipmap``).

TensorFlow is slow to import and convert, so :func:`export_all` writes every requested
export in ONE subprocess (also keeping TensorFlow and Keras' TensorFlow backend out of the
test process) and caches the files in a folder per test session. An export that fails
leaves ``<name>.error`` with the reason, which :func:`export_all` raises for that item only.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from tests.helpers.export_cache import exclusive, write_once
from tests.helpers.paths import REPO

KERAS_MODELS = ("seed_mlp", "mnist_cnn", "bn_resnet", "mobilenet_v2")
KERAS_ROUTES = ("from_keras", "saved_model", "from_function", "keras_onnx", "tf_keras")
SKLEARN_ROUTES = ("zipmap", "no_zipmap")
INPUT_SHAPES: dict[str, tuple[int, ...]] = {
    "seed_mlp": (3,), "mnist_cnn": (28, 28, 1), "bn_resnet": (16, 16, 3), "mobilenet_v2": (64, 64, 3),
    "td_mlp": (6, 4), "lstm": (5, 4), "gru": (5, 4), "cond": (4,),
}
#: The hidden (growable, not the output) layers of each model, by Keras name.
HIDDEN: dict[str, tuple[str, ...]] = {
    "seed_mlp": ("layer_1", "layer_2"),
    "mnist_cnn": ("conv1", "conv2", "fc1"),
    "bn_resnet": ("stem", "conv1", "conv2"),
    "td_mlp": ("td_fc1",),
}
#: scikit-learn's MLP hidden layer sizes.
SKLEARN_HIDDEN = (16, 12)
MISSING_REASON = "needs tensorflow, tf2onnx, tf-keras and skl2onnx (pip install -e .[tf])"


def available() -> bool:
    """Whether the TensorFlow converters this zoo needs are importable."""
    return all(find_spec(name) is not None for name in ("tensorflow", "tf2onnx", "tf_keras", "skl2onnx", "keras"))


def file_name(model: str, route: str) -> str:
    return f"{model}-{route}.onnx"


def export_all(directory: Path, items: list[tuple[str, str]]) -> dict[tuple[str, str], Path]:
    """The exports ``(model, route)`` under ``directory``, converting the missing ones in one
    subprocess; raises RuntimeError for an item whose export failed."""
    directory.mkdir(parents=True, exist_ok=True)
    with exclusive(directory / "tf_zoo.lock"):
        todo = [f"{m}:{r}" for m, r in items if not (directory / file_name(m, r)).exists()
                and not (directory / file_name(m, r)).with_suffix(".error").exists()]
        if todo:
            env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3",
                   "CUDA_VISIBLE_DEVICES": "-1", "PYTHONPATH": str(REPO)}
            subprocess.run([sys.executable, "-m", __name__, str(directory), *todo], env=env, check=True,
                           capture_output=True, timeout=1200)
    paths = {}
    for model, route in items:
        path = directory / file_name(model, route)
        error = path.with_suffix(".error")
        if error.exists():
            raise RuntimeError(f"export {model} via {route} failed: {error.read_text()}")
        paths[model, route] = path
    return paths


# ----- everything below runs in the TensorFlow subprocess ---------------------------------


def _randomise(model: Any, seed: int) -> None:
    """Seeded random weights: kernels scaled by their fan-in, BatchNorm variances positive,
    gammas near 1, every bias and beta nonzero."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for weight in model.weights:
        shape = tuple(weight.shape)
        name = weight.name
        if "moving_variance" in name:
            value = 0.5 + rng.random(shape)
        elif "gamma" in name:
            value = 1.0 + 0.2 * rng.standard_normal(shape)
        elif len(shape) >= 2:
            fan_in = int(np.prod(shape[:-1])) if "depthwise" not in name else int(np.prod(shape[:2]))
            value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        else:
            value = 0.2 * rng.standard_normal(shape)
        weight.assign(value.astype("float32"))


def _calibrate_batch_norms(model: Any, keras: Any) -> None:
    """Set every BatchNorm's moving statistics to those of its input on a random batch, so a
    deep random network neither saturates (an output that ignores its input) nor amplifies
    rounding beyond what trained networks do: one training-mode call with momentum 0 (each
    BatchNorm then normalises by, and stores, its batch's statistics, in graph order)."""
    import numpy as np

    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    rng = np.random.default_rng(2)
    for layer in norms:  # residual branches start small, as in trained networks
        if layer.name.endswith("_project_BN"):
            gamma, *rest = layer.get_weights()
            layer.set_weights([(0.2 + 0.2 * rng.random(gamma.shape)).astype("float32"), *rest])
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    x = np.random.default_rng(1).standard_normal((8, *model.input_shape[1:])).astype("float32")
    model(x, training=True)
    for layer, momentum in zip(norms, momenta):
        layer.momentum = momentum


def build(name: str, keras: Any) -> Any:
    """Keras model ``name`` built with ``keras`` (Keras 3 or tf.keras 2), seeded."""
    layers = keras.layers
    inputs = keras.Input(INPUT_SHAPES[name], name="x")
    if name == "seed_mlp":
        h = layers.Dense(4, activation="relu", name="layer_1")(inputs)
        h = layers.Dense(5, activation="relu", name="layer_2")(h)
        outputs = layers.Dense(2, name="layer_3")(h)
    elif name == "mnist_cnn":
        h = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv1")(inputs)
        h = layers.MaxPooling2D(name="pool1")(h)
        h = layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2")(h)
        h = layers.MaxPooling2D(name="pool2")(h)
        h = layers.Flatten(name="flatten")(h)
        h = layers.Dense(64, activation="relu", name="fc1")(h)
        outputs = layers.Dense(10, activation="softmax", name="fc2")(h)
    elif name == "bn_resnet":
        stem = layers.ReLU(name="stem_relu")(layers.BatchNormalization(name="stem_bn")(
            layers.Conv2D(8, 3, padding="same", name="stem")(inputs)))
        h = layers.ReLU(name="relu1")(layers.BatchNormalization(name="bn1")(
            layers.Conv2D(8, 3, padding="same", name="conv1")(stem)))
        h = layers.BatchNormalization(name="bn2")(layers.Conv2D(8, 3, padding="same", name="conv2")(h))
        h = layers.ReLU(name="relu2")(layers.Add(name="add")([h, stem]))
        outputs = layers.Dense(5, name="fc")(layers.GlobalAveragePooling2D(name="pool")(h))
    elif name == "mobilenet_v2":
        model = keras.applications.MobileNetV2(weights=None, input_shape=INPUT_SHAPES[name], classes=10)
        _randomise(model, 0)
        _calibrate_batch_norms(model, keras)
        head = model.get_layer("predictions")  # logits near 0: a softmax that does not amplify rounding
        head.set_weights([w * 0.1 for w in head.get_weights()])
        return model
    elif name == "td_mlp":
        h = layers.Dense(8, activation="relu", name="td_fc1")(inputs)
        outputs = layers.Dense(3, name="td_fc2")(h)
    elif name in ("lstm", "gru"):
        h = layers.Dense(6, name="proj")(inputs)
        h = (layers.LSTM if name == "lstm" else layers.GRU)(7, name="rnn")(h)
        outputs = layers.Dense(3, name="head")(h)
    else:
        raise KeyError(name)
    model = keras.Model(inputs, outputs, name=name)
    _randomise(model, 0)
    return model


def _signature(name: str) -> tuple[Any, ...]:
    import tensorflow as tf

    return (tf.TensorSpec((None, *INPUT_SHAPES[name]), tf.float32, name="x"),)


def _cond_function() -> Any:
    """``fc1`` → ``tf.cond`` (doubling when the input sum is positive) → ``fc2``."""
    import keras
    import tensorflow as tf

    fc1, fc2 = keras.layers.Dense(6, name="fc1"), keras.layers.Dense(3, name="fc2")
    fc1.build((None, 4))
    fc2.build((None, 6))

    @tf.function(input_signature=_signature("cond"))
    def cond(x: Any) -> Any:
        h = fc1(x)
        h = tf.cond(tf.reduce_sum(x) > 0, lambda: h * 2.0, lambda: h - 1.0)
        return fc2(h)

    return cond


def _sklearn(route: str, path: Path) -> None:
    import numpy as np
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    x, y = load_digits(return_X_y=True)
    clf = MLPClassifier(hidden_layer_sizes=SKLEARN_HIDDEN, max_iter=30, random_state=0)
    clf.fit((x / 16.0).astype(np.float32), y)
    options = {id(clf): {"zipmap": False}} if route == "no_zipmap" else None
    onx = convert_sklearn(clf, initial_types=[("x", FloatTensorType([None, 64]))], options=options)
    path.write_bytes(onx.SerializeToString())


_BUILT: dict[str, Any] = {}


def _keras3_model(name: str) -> Any:
    """The Keras 3 model ``name``, built once per process (its routes export the same weights)."""
    if name not in _BUILT:
        import keras

        keras.utils.set_random_seed(0)
        _BUILT[name] = build(name, keras)
    return _BUILT[name]


def export_model(name: str, route: str, path: Path, work: Path) -> None:
    """Write ``name`` exported through ``route`` to ``path`` (``work``: a scratch folder)."""
    import numpy as np
    import tensorflow as tf
    import tf2onnx

    if name == "mlp_classifier":
        _sklearn(route, path)
        return
    if name == "cond":
        tf2onnx.convert.from_function(_cond_function(), input_signature=_signature(name), output_path=str(path))
        return
    if route == "tf_keras":
        import tf_keras

        tf_keras.utils.set_random_seed(0)
        model = build(name, tf_keras)
        tf2onnx.convert.from_keras(model, input_signature=_signature(name), output_path=str(path))
        return
    model = _keras3_model(name)
    if route == "from_keras":
        model.output_names = ["y"]
        tf2onnx.convert.from_keras(model, input_signature=_signature(name), output_path=str(path))
    elif route == "saved_model":
        from tf2onnx import tf_loader

        saved = work / f"{name}-saved"
        model.export(str(saved), verbose=False)
        graph_def, inputs, outputs, _, renames = tf_loader.from_saved_model(
            str(saved), None, None, return_initialized_tables=True, return_tensors_to_rename=True)
        tf2onnx.convert.from_graph_def(graph_def, input_names=inputs, output_names=outputs,
                                       tensors_to_rename=renames, output_path=str(path))
    elif route == "from_function":
        function = tf.function(lambda x: model(x, training=False), input_signature=_signature(name))
        tf2onnx.convert.from_function(function, input_signature=_signature(name), output_path=str(path))
    elif route == "keras_onnx":
        model(np.zeros((1, *INPUT_SHAPES[name]), np.float32))  # Keras exports only a model that has run
        model.export(str(path), format="onnx", verbose=False)
    else:
        raise KeyError(route)


def _main(directory: Path, items: list[str]) -> None:
    import tempfile
    import time
    import traceback

    with tempfile.TemporaryDirectory() as work:
        for item in items:
            name, route = item.split(":")
            path = directory / file_name(name, route)
            start = time.perf_counter()
            try:
                write_once(path, lambda tmp, n=name, r=route: export_model(n, r, tmp, Path(work)))
            except Exception as error:  # noqa: BLE001 - recorded for the one test that needs it
                path.with_suffix(".error").write_text(
                    f"{type(error).__name__}: {error}\n{traceback.format_exc(limit=3)}")
            print(f"{item}: {time.perf_counter() - start:.1f}s", flush=True)


if __name__ == "__main__":
    _main(Path(sys.argv[1]), sys.argv[2:])
