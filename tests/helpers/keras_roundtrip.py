"""Loading onnxgrow's Keras exports back in a FRESH process, with the Keras backend set in
its environment, and comparing them with onnxruntime on the ONNX model they came from.

Each job is a dict:

- ``onnx``: the (grown) ONNX model; ``file``: what onnxgrow exported from it;
- ``kind``: ``h5`` (``model.load_weights(file)``), ``npz`` (``v.assign(weights[v.path])``
  for every variable) or ``keras`` (``keras.saving.load_model(file)``);
- for ``h5``/``npz``: ``model`` (a :mod:`tf_zoo` model name) or ``original`` (a saved
  ``.keras`` file), and ``widths`` (Keras layer → new units/filters): the test builds that
  wider Keras model itself from the original's config; ``vocabulary``: the input is token
  ids below it;
- ``fit``: also train one epoch (SGD, momentum 0.9) on scikit-learn's digits shaped as the
  input (``samples`` of them, 512 unless given; learning rate ``lr``, 0.01 unless given),
  and report the loss on them before and after (``probabilities``: the model ends in a
  softmax).

The result per job: ``error`` (max relative error against onnxruntime on random inputs),
the ``trainable`` variable count and the ``non_trainable`` variables' paths, ``layers``
(name → class), ``transposes`` (Transpose ops in the Keras model), ``losses`` (when
fitted) or ``failed`` with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

from tests.helpers.paths import REPO

_CHECK = textwrap.dedent('''
    import json, sys
    import numpy as np, keras, onnxruntime as ort
    from tests.helpers import tf_zoo

    def wider(job):
        """The original model (tf_zoo's, or a saved one) with some layers' units/filters
        changed, built from its config."""
        original = keras.saving.load_model(job["original"]) if "original" in job else tf_zoo.build(job["model"], keras)
        widths = job["widths"]
        config = original.get_config()
        for entry in config["layers"]:
            entry.pop("build_config", None)
            width = widths.get(entry["config"]["name"])
            if width is not None:
                entry["config"]["units" if "units" in entry["config"] else "filters"] = width
        return keras.Model.from_config(config)

    def digits_as(shape, count=512):
        """scikit-learn's digits shaped as the model's input: images resized (nearest) to
        H×W and repeated over the channels; a vector input gets the pixel means of as many
        groups of pixels."""
        from sklearn.datasets import load_digits
        images, labels = load_digits(return_X_y=True)
        images = (images[:count] / 16.0).astype(np.float32)
        if len(shape) == 3:
            rows = np.arange(shape[0]) * 8 // shape[0]
            cols = np.arange(shape[1]) * 8 // shape[1]
            pictures = images.reshape(-1, 8, 8)[:, rows][:, :, cols]
            return np.repeat(pictures[..., None], shape[2], axis=-1), labels[:count]
        groups = np.array_split(np.arange(64), shape[-1])
        return np.stack([images[:, g].mean(axis=1) for g in groups], axis=1), labels[:count]

    def transposes(model):
        ops = [type(op).__name__ for op in model.operations]
        return sum(name == "Transpose" for name in ops)

    results = {}
    for job in json.loads(sys.argv[1]):
        try:
            session = ort.InferenceSession(job["onnx"], providers=["CPUExecutionProvider"])
            spec = session.get_inputs()[0]
            shape = [4 if not isinstance(d, int) else d for d in spec.shape]
            rng = np.random.default_rng(0)
            x = (rng.integers(0, job["vocabulary"], shape).astype(np.int32) if "vocabulary" in job
                 else rng.standard_normal(shape).astype(np.float32))
            expected = session.run(None, {spec.name: x})[0]
            if job["kind"] == "keras":
                model = keras.saving.load_model(job["file"])
            else:
                model = wider(job)
                if job["kind"] == "h5":
                    model.load_weights(job["file"])
                else:
                    weights = np.load(job["file"])
                    for v in model.weights:
                        v.assign(weights[v.path])
            got = np.asarray(keras.ops.convert_to_numpy(model(x, training=False)), np.float64)
            result = {"error": float(np.abs(got - expected).max() / max(float(np.abs(expected).max()), 1e-30)),
                      "trainable": len(model.trainable_variables),
                      "non_trainable": [v.path for v in model.non_trainable_variables],
                      "transposes": transposes(model),
                      "layers": {layer.name: type(layer).__name__ for layer in model.layers}}
            if job.get("fit"):
                data, labels = digits_as(shape[1:], job.get("samples", 512))
                labels = labels % int(got.shape[-1])
                model.compile(optimizer=keras.optimizers.SGD(job.get("lr", 0.01), momentum=0.9),
                              loss=keras.losses.SparseCategoricalCrossentropy(
                                  from_logits=not job.get("probabilities", False)))
                before = float(model.evaluate(data, labels, verbose=0))
                model.fit(data, labels, epochs=1, batch_size=32, verbose=0, shuffle=False)
                after = float(model.evaluate(data, labels, verbose=0))
                result["losses"] = [before, after]
            results[job["id"]] = result
        except Exception as exc:
            results[job["id"]] = {"failed": f"{type(exc).__name__}: {exc}"[:2000]}
    print(json.dumps(results))
''')


_CLI = textwrap.dedent('''
    import json, sys
    from click.testing import CliRunner
    from onnxgrow.cli import main
    runner = CliRunner()
    results = []
    for args in json.loads(sys.argv[1]):
        result = runner.invoke(main, args)
        results.append([result.exit_code, result.stdout, result.stderr])
    print(json.dumps(results))
''')


def _environment(backend: str) -> dict[str, str]:
    return {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1",
            "PYTHONPATH": str(REPO)}


def cli_in_subprocess(commands: list[list[str]], backend: str = "tensorflow",
                      timeout: int = 900) -> list[tuple[int, str, str]]:
    """Run onnxgrow CLI commands in one new process under ``backend``: (exit code, stdout, stderr) each."""
    run = subprocess.run([sys.executable, "-c", _CLI, json.dumps(commands)], check=False, capture_output=True,
                         text=True, env=_environment(backend), timeout=timeout)
    assert run.returncode == 0, run.stderr[-3000:]
    return [tuple(r) for r in json.loads(run.stdout.strip().splitlines()[-1])]  # type: ignore[misc]


def check_in_fresh_process(jobs: list[dict[str, Any]], backend: str = "tensorflow",
                           timeout: int = 900) -> dict[str, dict[str, Any]]:
    """Run ``jobs`` (see the module docstring) in one new Python process under ``backend``."""
    run = subprocess.run([sys.executable, "-c", _CHECK, json.dumps(jobs)], check=False, capture_output=True, text=True,
                         env=_environment(backend), timeout=timeout)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])
