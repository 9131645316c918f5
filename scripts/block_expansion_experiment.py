"""Depth by whole blocks on a small GPT-2, through onnxgrow (issue 23, the seed's experiment).

    python scripts/block_expansion_experiment.py [--teacher-steps 300] [--student-steps 150] [--out docs]

1. A 2-block ``transformers`` GPT-2 (bytes as tokens, width 64) is trained on the Python
   standard library's source files (local text on every machine; a fixed 90/10 split by file),
   AdamW, and exported with ``torch.onnx.export(dynamo=True)``.
2. It is grown with ``deepen --block``: ``zero`` after ``transformer.h.0`` (3 blocks: the copy
   is ``transformer.h.1``, the old ``h.1`` becomes ``h.2``), ``zero`` with the glob
   ``transformer.h.*`` (4 blocks, each followed by its copy), and ``copy`` with the glob
   (4 blocks, stacking).
3. Each grown model comes back with ``onnxgrow.export.state_dict`` into ``GPT2LMHeadModel``
   built from a config that :func:`onnxgrow.deepening.block_op.config_updates` updated from
   the lineage (``n_layer``), loaded with ``load_state_dict(strict=True)``.
4. Every student is fine-tuned at the same rate next to controls: the teacher trained on,
   the 3-block model with the teacher's blocks and a randomly initialised new block, and
   the 3- and 4-block models trained from scratch for the teacher's and the students' steps
   together.

The ``zero`` students must start at the teacher's validation loss (|difference| ≤ 1e-5): the
script asserts it. It writes the section between the markers in ``transfer.md`` and
``transfer-blocks.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import onnxgrow  # noqa: E402
from onnxgrow.deepening.block_op import config_updates  # noqa: E402
from onnxgrow.export import state_dict  # noqa: E402
from onnxgrow.lineage import read_history  # noqa: E402
from onnxgrow.model_io import load_model  # noqa: E402

CONFIG = dict(vocab_size=256, n_embd=64, n_layer=2, n_head=4, n_positions=128, bos_token_id=0, eos_token_id=0,
              use_cache=False, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
CONTEXT = 64
BATCH = 16
LR = 1e-3
STUDENT_LR = LR  # students continue training at the teacher's rate, as block expansion does
EVAL_BATCHES = 8
START_TOLERANCE = 1e-5
BEGIN, END = "<!-- block-expansion:begin -->", "<!-- block-expansion:end -->"


def load_text(limit: int = 3_000_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Bytes of the standard library's ``.py`` files (sorted), split 90/10 by file."""
    files = sorted(Path(os.__file__).parent.glob("*.py"))
    train, val, total = bytearray(), bytearray(), 0
    for k, path in enumerate(files):
        data = path.read_bytes()
        (val if k % 10 == 9 else train).extend(data)
        total += len(data)
        if total >= limit:
            break
    return (torch.tensor(np.frombuffer(bytes(train), dtype=np.uint8).astype(np.int64)),
            torch.tensor(np.frombuffer(bytes(val), dtype=np.uint8).astype(np.int64)))


def make(layers: int) -> transformers.GPT2LMHeadModel:
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**{**CONFIG, "n_layer": layers}))


def batches(data: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    starts = torch.randint(0, len(data) - CONTEXT - 1, (count, BATCH), generator=torch.Generator().manual_seed(seed))
    return torch.stack([torch.stack([data[s:s + CONTEXT + 1] for s in row]) for row in starts])


def loss(model: torch.nn.Module, chunk: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=chunk[:, :-1]).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1))


def validation_loss(model: torch.nn.Module, val: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float(torch.stack([loss(model, chunk) for chunk in val]).mean())


def train(model: torch.nn.Module, train_data: torch.Tensor, val: torch.Tensor, steps: int, lr: float, seed: int,
          every: int) -> list[float]:
    """AdamW on random windows; the validation loss before training and every ``every`` steps."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = [validation_loss(model, val)]
    for step, chunk in enumerate(batches(train_data, steps, seed), start=1):
        model.train()
        optimizer.zero_grad()
        loss(model, chunk).backward()
        optimizer.step()
        if step % every == 0:
            losses.append(validation_loss(model, val))
    return losses


def export(model: torch.nn.Module, path: Path) -> Path:
    ids = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch, seq = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("seq", min=2, max=CONTEXT)
        program = torch.onnx.export(model.eval(), (), kwargs={"input_ids": ids}, dynamo=True,
                                    dynamic_shapes={"input_ids": {0: batch, 1: seq}}, verbose=False)
    assert program is not None
    program.save(str(path), external_data=False)
    return path


def student(grown: Path) -> transformers.GPT2LMHeadModel:
    """The grown model's weights in a GPT-2 whose config the lineage updated, loaded strictly."""
    config = dict(CONFIG)
    config.update(config_updates(config, read_history(load_model(grown))))
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**config))
    tensors = state_dict(grown).tensors
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}, strict=True)
    return model


def with_random_block(teacher: torch.nn.Module) -> torch.nn.Module:
    """3 blocks: the teacher's ``h.0`` and ``h.1`` (as ``h.0`` and ``h.2``), a random ``h.1``."""
    deeper = make(3)
    weights = {}
    for name, tensor in teacher.state_dict().items():
        weights[name.replace("transformer.h.1.", "transformer.h.2.")] = tensor
    missing, unexpected = deeper.load_state_dict(weights, strict=False)
    assert not unexpected and all(k.startswith("transformer.h.1.") for k in missing), (missing, unexpected)
    return deeper


GROWN = {  # name: (block, count, init, blocks after)
    "zero, 3 blocks": ("transformer.h.0", 1, "zero", 3),
    "zero, 4 blocks (glob)": ("transformer.h.*", 1, "zero", 4),
    "copy, 4 blocks (glob)": ("transformer.h.*", 1, "copy", 4),
}


def say(began: float, text: str) -> None:
    print(f"[{time.time() - began:6.0f} s] {text}", flush=True)


def run(teacher_steps: int, student_steps: int, every: int, seed: int, out: Path) -> None:
    began = time.time()
    torch.manual_seed(seed)
    train_data, val_data = load_text()
    val = batches(val_data, EVAL_BATCHES, seed + 1)
    teacher = make(2)
    teacher_curve = train(teacher, train_data, val, teacher_steps, LR, seed, every)
    teacher_loss = validation_loss(teacher, val)
    say(began, f"teacher trained: validation loss {teacher_loss:.4f}")
    curves: dict[str, list[float]] = {}
    checks: list[str] = []
    with tempfile.TemporaryDirectory() as folder:
        onnx = export(teacher, Path(folder) / "teacher.onnx")
        say(began, "teacher exported")
        students: dict[str, Callable[[], torch.nn.Module]] = {}
        for name, (block, count, init, blocks) in GROWN.items():
            grown = Path(folder) / f"{name.split(',')[0]}-{blocks}.onnx"
            report = onnxgrow.deepen_block_file(onnx, grown, block, count=count, init=init)
            check = report.verification
            assert check is not None and check.passed == report.exact, (name, check)
            verdict = "exact" if report.exact else "CHANGED, not function-preserving by design"
            said = "; ".join(line.strip() for line in report.lines())
            checks.append(f"- **{name}**: `deepen --block '{block}' --count {count} --init {init}`: {said}; "
                          f"onnxruntime: {verdict} (max rel {check.max_rel_error:.1e})")
            model = student(grown)
            assert model.config.n_layer == blocks
            start = validation_loss(model, val)
            if init == "zero":
                assert abs(start - teacher_loss) <= START_TOLERANCE, (name, start, teacher_loss)
            students[name] = lambda model=model: model  # type: ignore[misc]
            say(began, f"{name}: starts at {start:.6f} (teacher {teacher_loss:.6f})")
        students["random new block, 3 blocks"] = lambda: with_random_block(teacher)
        for name, build in students.items():
            curves[name] = train(build(), train_data, val, student_steps, STUDENT_LR, seed + 2, every)
            say(began, f"{name}: {curves[name][-1]:.4f} after {student_steps} steps")
    teacher_on = make(2)
    teacher_on.load_state_dict(teacher.state_dict())
    curves["teacher (trained on)"] = train(teacher_on, train_data, val, student_steps, STUDENT_LR, seed + 2, every)
    scratch = {}
    for blocks in (3, 4):
        torch.manual_seed(seed)
        scratch[f"scratch, {blocks} blocks"] = train(make(blocks), train_data, val, teacher_steps + student_steps,
                                                     LR, seed, every)
    write(out, teacher_curve, curves, scratch, checks, teacher_steps, student_steps, every, seed,
          time.time() - began, len(train_data), len(val_data))


def _row(name: str, values: list[float]) -> str:
    return f"| {name} | " + " | ".join(f"{v:.4f}" for v in values) + " |"


def write(out: Path, teacher: list[float], curves: dict[str, list[float]], scratch: dict[str, list[float]],
          checks: list[str], teacher_steps: int, student_steps: int, every: int, seed: int, seconds: float,
          train_bytes: int, val_bytes: int) -> None:
    steps = [every * k for k in range(len(next(iter(curves.values()))))]
    total = [every * k for k in range(len(next(iter(scratch.values()))))]
    lines = [
        BEGIN,
        "## Depth by whole blocks: GPT-2 on the standard library's source",
        "",
        f"Generated by `python scripts/block_expansion_experiment.py --teacher-steps {teacher_steps} "
        f"--student-steps {student_steps}` (one seed, {seed}; {seconds:.0f} s of wall time on a 2-core CPU "
        "shared with other jobs). One seed, so no seed-to-seed spread is measured: small differences between "
        "runs may be noise.",
        "",
        f"Setup: `transformers` GPT-2, bytes as tokens (vocabulary 256), width 64, 4 heads, context {CONTEXT}, "
        f"no dropout; text: the `.py` files of the Python standard library ({train_bytes} training bytes, "
        f"{val_bytes} validation bytes, every tenth file held out); AdamW, batch {BATCH}. The 2-block teacher "
        f"trains {teacher_steps} steps at lr {LR:g} and is exported with `torch.onnx.export(dynamo=True)`. "
        f"Students and controls then train {student_steps} steps at lr {STUDENT_LR:g}. Validation: "
        f"{EVAL_BATCHES} fixed batches of held-out text, mean cross-entropy per byte (nats).",
        "",
        "Grown with onnxgrow and brought back with `onnxgrow.export.state_dict` into `GPT2LMHeadModel` whose "
        "`n_layer` comes from the lineage (`config_updates`), loaded with `load_state_dict(strict=True)`:",
        "",
        *checks,
        "- **random new block, 3 blocks**: the teacher's blocks as `h.0` and `h.2`, `h.1` freshly initialised "
        "(what a new block without onnxgrow starts as).",
        "- **teacher (trained on)**: the teacher at the students' rate: growing helps only if it beats this.",
        "- **scratch**: the 3- and 4-block models from random weights at the teacher's rate for the teacher's "
        "and the students' steps together.",
        "",
        f"Checked by the script: the `zero` students start at the teacher's validation loss "
        f"(|difference| ≤ {START_TOLERANCE:g}).",
        "",
        f"Teacher: {' → '.join(f'{v:.4f}' for v in teacher[::max(1, len(teacher) // 6)])} "
        f"(final {teacher[-1]:.4f}).",
        "",
        "Students and controls, validation loss every "
        f"{every} steps (step 0: as grown, before training):",
        "",
        "| run | " + " | ".join(f"step {s}" for s in steps) + " |",
        "|---|" + "---|" * len(steps),
        *[_row(name, values) for name, values in curves.items()],
        "",
        f"From scratch, every {every} steps of {teacher_steps + student_steps}:",
        "",
        "| run | " + " | ".join(f"step {s}" for s in total[::max(1, len(total) // 10)]) + " |",
        "|---|" + "---|" * len(total[::max(1, len(total) // 10)]),
        *[_row(name, values[::max(1, len(total) // 10)]) for name, values in scratch.items()],
        "",
        "![block expansion](transfer-blocks.png)",
        END,
    ]
    doc = out / "transfer.md"
    text = doc.read_text() if doc.exists() else ""
    section = "\n".join(lines) + "\n"
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END) + 1:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    doc.write_text(text)
    plot(out / "transfer-blocks.png", teacher, curves, scratch, every)


def plot(path: Path, teacher: list[float], curves: dict[str, list[float]], scratch: dict[str, list[float]],
         every: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    offset = every * (len(teacher) - 1)
    ax.plot([every * k for k in range(len(teacher))], teacher, color="black", label="teacher (2 blocks)")
    for name, values in curves.items():
        ax.plot([offset + every * k for k in range(len(values))], values, label=name)
    for name, values in scratch.items():
        ax.plot([every * k for k in range(len(values))], values, linestyle=":", label=name)
    ax.axvline(offset, color="grey", linewidth=0.5)
    ax.set_xlabel("training step")
    ax.set_ylabel("validation cross-entropy (nats per byte)")
    ax.set_title("GPT-2 grown by whole blocks (onnxgrow deepen --block)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher-steps", type=int, default=300)
    parser.add_argument("--student-steps", type=int, default=150)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    run(args.teacher_steps, args.student_steps, args.every, args.seed, args.out)


if __name__ == "__main__":
    main()
