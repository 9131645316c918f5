"""The baselines ``scripts/bench.py`` measures onnxgrow against, each a command of its own.

    python scripts/bench_baselines.py plain-sessions REFERENCE CANDIDATE INPUTS.npz cpu|cuda
    python scripts/bench_baselines.py naive-onnx SOURCE TARGET
    python scripts/bench_baselines.py ir-roundtrip SOURCE TARGET

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


def naive_onnx(source: str, target: str) -> None:
    """``onnx.load`` (every weight into protobuf) and ``onnx.save`` with external data."""
    import onnx

    model = onnx.load(source)
    onnx.save(model, target, save_as_external_data=True, location=Path(target).name + ".data")


def ir_roundtrip(source: str, target: str) -> None:
    """onnx-ir ``load`` + ``save`` with external data (what onnxgrow builds on)."""
    import onnx_ir as ir

    ir.save(ir.load(source), target, external_data=Path(target).name + ".data")


COMMANDS: dict[str, Callable[..., None]] = {
    "plain-sessions": plain_sessions,
    "naive-onnx": naive_onnx,
    "ir-roundtrip": ir_roundtrip,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        raise SystemExit(__doc__)
    COMMANDS[sys.argv[1]](*sys.argv[2:])
