"""The baselines ``scripts/bench.py`` measures onnxgrow against, each a command of its own.

    python scripts/bench_baselines.py plain-sessions REFERENCE CANDIDATE INPUTS.npz cpu|cuda
    python scripts/bench_baselines.py one-run MODEL INPUTS.npz cpu|cuda
    python scripts/bench_baselines.py naive-onnx SOURCE TARGET
    python scripts/bench_baselines.py ir-roundtrip SOURCE TARGET
    python scripts/bench_baselines.py naive-net2net SOURCE TARGET WIDTH P:fc1.weight:0 P:fc1.bias:0 C:fc2.weight:1

Kept apart from the benchmark so that each imports only what it uses.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def plain_sessions(reference: str, candidate: str, inputs: str, provider: str) -> None:
    """What a user would write: two onnxruntime sessions (default options), the same inputs."""
    import numpy as np
    import onnxruntime as ort

    with np.load(inputs) as data:
        feeds = {k: data[k] for k in data.files}
    sessions = [ort.InferenceSession(p, providers=PROVIDERS[provider]) for p in (reference, candidate)]
    if provider == "cuda" and "CUDAExecutionProvider" not in sessions[0].get_providers():
        raise SystemExit("CUDAExecutionProvider is not available")
    outs = [session.run(None, feeds) for session in sessions]
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(*outs))
    print(f"max abs error {worst:.3g}")


def one_run(model: str, inputs: str, provider: str) -> None:
    """One onnxruntime session of ``model`` (default options) and one run on the inputs: the
    least any check of the model costs."""
    import numpy as np
    import onnxruntime as ort

    with np.load(inputs) as data:
        feeds = {k: data[k] for k in data.files}
    session = ort.InferenceSession(model, providers=PROVIDERS[provider])
    if provider == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        raise SystemExit("CUDAExecutionProvider is not available")
    session.run(None, feeds)


def naive_onnx(source: str, target: str) -> None:
    """``onnx.load`` (every weight into protobuf) and ``onnx.save`` with external data."""
    import onnx

    model = onnx.load(source)
    onnx.save(model, target, save_as_external_data=True, location=Path(target).name + ".data")


def ir_roundtrip(source: str, target: str) -> None:
    """onnx-ir ``load`` + ``save`` with external data (what onnxgrow builds on)."""
    import onnx_ir as ir

    ir.save(ir.load(source), target, external_data=Path(target).name + ".data")


def naive_net2net(source: str, target: str, width: str, *edits: str) -> None:
    """What a user would write without onnxgrow: ``onnx.load`` every weight, Net2WiderNet in
    numpy, ``onnx.save`` with external data.

    Each edit is ``P:<initializer>:<axis>`` (a producer's weight or bias: copy units) or
    ``C:<initializer>:<axis>`` (the consumer's weight: copy inputs, divided by their counts).
    The first edit's axis size is the old width; new units copy random old ones (seed 0).
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    model = onnx.load(source)
    initializers = {t.name: t for t in model.graph.initializer}
    rng = np.random.default_rng(0)
    src = counts = None
    for spec in edits:
        kind, rest = spec.split(":", 1)
        name, axis_text = rest.rsplit(":", 1)  # names may hold colons (onnx::MatMul_12)
        axis = int(axis_text)
        weight = numpy_helper.to_array(initializers[name])
        if src is None:
            old = weight.shape[axis]
            src = np.r_[np.arange(old), rng.integers(0, old, int(width) - old)]
            counts = np.bincount(src, minlength=old)
        grown = np.take(weight, src, axis=axis)
        if kind == "C":
            shape = [1] * grown.ndim
            shape[axis] = -1
            grown = (grown / counts[src].reshape(shape)).astype(weight.dtype)
        initializers[name].CopyFrom(numpy_helper.from_array(grown, name))
    del model.graph.value_info[:]  # stale intermediate shapes; onnxruntime infers them
    onnx.save(model, target, save_as_external_data=True, location=Path(target).name + ".data")


COMMANDS: dict[str, Callable[..., None]] = {
    "plain-sessions": plain_sessions,
    "one-run": one_run,
    "naive-onnx": naive_onnx,
    "ir-roundtrip": ir_roundtrip,
    "naive-net2net": naive_net2net,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        raise SystemExit(__doc__)
    COMMANDS[sys.argv[1]](*sys.argv[2:])
