"""The Net2Net transfer experiment on scikit-learn's digits, through onnxgrow.

    python scripts/net2net_experiment.py [--framework torch --framework keras] [--seeds 5] [--out docs]

For a teacher MLP and a teacher CNN, in PyTorch and in Keras (SGD with momentum 0.9), per seed:

1. train the teacher, export it to ONNX (PyTorch: ``torch.onnx.export``, legacy exporter;
   Keras: ``tf2onnx.convert.from_keras``);
2. grow it with onnxgrow: ``widen`` with ``--init net2wider`` (with ``--noise``, an
   unequal but exact split so the copies can drift apart) and with ``--init random-pad``;
   ``deepen`` (identity layers after the ReLU layers) when this onnxgrow has it;
3. bring every grown model back to its framework and load it into the wider/deeper model:
   PyTorch with ``onnxgrow.export.state_dict`` and ``load_state_dict(strict=True)``, Keras
   with ``--to keras-weights`` and ``model.load_weights`` (:mod:`net2net_keras`);
4. fine-tune each student with SGD (momentum 0.9) at a tenth of the teacher's learning
   rate, next to controls trained the same way: the teacher itself, a fresh deeper model
   (random-init), and the deeper model with the teacher's layers and random new layers
   (what the Keras reference calls random-init);
5. the control the Net2Net paper measures: the wider and the deeper model trained from
   scratch at the teacher's rate for the teacher's and the students' epochs together,
   and how many epochs (teacher's plus student's) each route needs to reach the
   from-scratch model's best validation loss.

Students grown by a function-preserving method must start at the teacher's validation
loss: the script asserts it (to 1e-5). It writes ``transfer.md`` (tables of validation
loss per epoch, mean ± std over seeds) and ``transfer.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import onnxgrow  # noqa: E402
from onnxgrow.export import state_dict  # noqa: E402

TEACHER_LR = 0.01
STUDENT_LR = TEACHER_LR / 10
MOMENTUM = 0.9
BATCH = 32
START_TOLERANCE = 1e-5
NOISE = 0.1  # net2wider's unequal split of outgoing weights (exact; breaks the copies' symmetry)


# -- models -----------------------------------------------------------------------------

class DigitsMLP(nn.Module):
    """``fc1 (hidden) → ReLU → [fc1_deep → ReLU] → fc2 (10)`` on the 64 pixels."""

    def __init__(self, hidden: int = 32, deeper: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(64, hidden)
        self.fc1_deep = nn.Linear(hidden, hidden) if deeper else None
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(x))
        if self.fc1_deep is not None:
            x = torch.relu(self.fc1_deep(x))
        return self.fc2(x)


class DigitsCNN(nn.Module):
    """The reference MNIST CNN at digit scale: ``conv1 → ReLU → pool → conv2 → ReLU →
    [conv2_deep → ReLU] → pool → flatten → fc1 → ReLU → [fc1_deep → ReLU] → fc2``."""

    def __init__(self, conv1: int = 8, conv2: int = 16, fc1: int = 32, deeper: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, conv1, 3, padding=1)
        self.conv2 = nn.Conv2d(conv1, conv2, 3, padding=1)
        self.conv2_deep = nn.Conv2d(conv2, conv2, 3, padding=1) if deeper else None
        self.fc1 = nn.Linear(conv2 * 2 * 2, fc1)
        self.fc1_deep = nn.Linear(fc1, fc1) if deeper else None
        self.fc2 = nn.Linear(fc1, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.relu(self.conv2(x))
        if self.conv2_deep is not None:
            x = torch.relu(self.conv2_deep(x))
        x = torch.flatten(F.max_pool2d(x, 2), 1)
        x = torch.relu(self.fc1(x))
        if self.fc1_deep is not None:
            x = torch.relu(self.fc1_deep(x))
        return self.fc2(x)


@dataclass(frozen=True)
class Family:
    """A teacher architecture and how it is grown."""

    name: str
    make: Callable[..., nn.Module]
    shape: tuple[int, ...]  # one example's input shape
    widths: dict[str, int]  # layer → new width for net2wider / random-pad
    wider: dict[str, int]  # the wider class' constructor arguments
    deepen_after: tuple[str, ...]  # layers after which deepen inserts identity layers
    teacher_epochs: int


FAMILIES = (
    Family("MLP", DigitsMLP, (64,), {"fc1": 64}, {"hidden": 64}, ("fc1",), 30),
    Family("CNN", DigitsCNN, (1, 8, 8), {"conv1": 16, "fc1": 64}, {"conv1": 16, "fc1": 64}, ("conv2", "fc1"), 30),
)


# -- data and training ----------------------------------------------------------------

@dataclass
class Data:
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor

    def shaped(self, shape: tuple[int, ...]) -> Data:
        return Data(self.train_x.reshape(-1, *shape), self.train_y, self.val_x.reshape(-1, *shape), self.val_y)


def load_data() -> Data:
    """Digits scaled to [0, 1]; a fixed stratified 70/30 split (the seeds vary the models)."""
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    train_x, val_x, train_y, val_y = train_test_split(x, digits.target, test_size=0.3, random_state=0,
                                                      stratify=digits.target)
    return Data(torch.from_numpy(train_x), torch.from_numpy(train_y).long(), torch.from_numpy(val_x),
                torch.from_numpy(val_y).long())


def validation_loss(model: nn.Module, data: Data) -> float:
    model.eval()
    with torch.no_grad():
        return float(F.cross_entropy(model(data.val_x), data.val_y, reduction="mean"))


def train(model: nn.Module, data: Data, lr: float, epochs: int, seed: int, *, momentum: float = MOMENTUM,
          batch: int = BATCH) -> list[float]:
    """SGD with momentum, shuffled mini-batches; the validation loss after each epoch."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(data.train_x), generator=generator)
        for start in range(0, len(order), batch):
            rows = order[start:start + batch]
            optimizer.zero_grad()
            F.cross_entropy(model(data.train_x[rows]), data.train_y[rows]).backward()
            optimizer.step()
        losses.append(validation_loss(model, data))
    return losses


# -- growing through onnxgrow -----------------------------------------------------------

def export_teacher(teacher: nn.Module, shape: tuple[int, ...], path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(teacher.eval(), (torch.zeros(2, *shape),), str(path), dynamo=False,
                          input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "batch"}})
    return path


def load_student(grown: Path, model: nn.Module) -> nn.Module:
    """The grown ONNX model's weights, under their PyTorch names, loaded strictly."""
    tensors = state_dict(grown).tensors
    model.load_state_dict({name: torch.from_numpy(np.array(array)) for name, array in tensors.items()}, strict=True)
    return model


def widened(teacher_onnx: Path, family: Family, init: str, seed: int, folder: Path, fw: Any) -> Any:
    out = folder / f"{family.name}-{init}.onnx"
    onnxgrow.widen_file(teacher_onnx, out, family.widths, init=init, noise=NOISE if init == "net2wider" else 0.0,
                        seed=seed)
    return fw.load_student(out, fw.make(family, **family.wider))


def deepened(teacher_onnx: Path, family: Family, seed: int, folder: Path, fw: Any) -> Any:
    current = teacher_onnx
    for k, layer in enumerate(family.deepen_after):
        out = folder / f"{family.name}-deeper-{k}.onnx"
        onnxgrow.deepen_file(current, out, layer, seed=seed)  # type: ignore[attr-defined]
        current = out
    return fw.load_student(current, fw.make(family, deeper=True))


def with_teacher_layers(deeper: nn.Module, teacher: nn.Module) -> nn.Module:
    """The Keras reference's random-init: the teacher's layers copied, the new ones left random."""
    missing, unexpected = deeper.load_state_dict(teacher.state_dict(), strict=False)
    assert not unexpected and all("_deep." in key for key in missing), (missing, unexpected)
    return deeper


def has_deepen() -> bool:
    return hasattr(onnxgrow, "deepen_file")


class TorchFramework:
    """The PyTorch side of the experiment, with the interface :mod:`net2net_keras` has."""

    NAME = "PyTorch"
    LOAD = "`onnxgrow.export.state_dict`, loaded with `load_state_dict(strict=True)` into"
    seed = staticmethod(torch.manual_seed)
    validation_loss = staticmethod(validation_loss)
    train = staticmethod(train)
    load_student = staticmethod(load_student)
    with_teacher_layers = staticmethod(with_teacher_layers)

    @staticmethod
    def make(family: Family, **kwargs: object) -> nn.Module:
        return family.make(**kwargs)

    @staticmethod
    def shaped(data: Data, family: Family) -> Data:
        return data.shaped(family.shape)

    @staticmethod
    def export_teacher(teacher: nn.Module, family: Family, path: Path) -> Path:
        return export_teacher(teacher, family.shape, path)


def framework(name: str) -> Any:
    """``torch`` → :class:`TorchFramework`; ``keras`` → the :mod:`net2net_keras` module."""
    if name == "torch":
        return TorchFramework
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import net2net_keras

    return net2net_keras


# -- the experiment ---------------------------------------------------------------------

#: Students that must start exactly where the teacher ended.
EXACT = ("net2wider", "net2deeper")


@dataclass
class Curves:
    """Validation loss per epoch (index 0 = before training) for each run, by name."""

    runs: dict[str, list[list[float]]] = field(default_factory=dict)

    def add(self, name: str, curve: list[float]) -> None:
        self.runs.setdefault(name, []).append(curve)

    def mean_std(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        values = np.array(self.runs[name])
        return values.mean(axis=0), values.std(axis=0)


#: The from-scratch controls: the grown architecture trained from random weights at the teacher's rate.
SCRATCH = {"scratch (wider)": "net2wider", "scratch (deeper)": "net2deeper"}


def run_family(family: Family, data: Data, seeds: list[int], student_epochs: int, folder: Path,
               fw: Any = TorchFramework) -> Curves:
    curves = Curves()
    shaped = fw.shaped(data, family)
    for seed in seeds:
        fw.seed(seed)
        teacher = fw.make(family)
        start = fw.validation_loss(teacher, shaped)
        curves.add("teacher", [start] + fw.train(teacher, shaped, TEACHER_LR, family.teacher_epochs, seed,
                                                 momentum=MOMENTUM, batch=BATCH))
        teacher_loss = fw.validation_loss(teacher, shaped)
        teacher_onnx = fw.export_teacher(teacher, family, folder / f"{family.name}-teacher-{seed}.onnx")

        students: dict[str, Any] = {
            "teacher (trained on)": teacher,
            "net2wider": widened(teacher_onnx, family, "net2wider", seed, folder, fw),
            "random-pad": widened(teacher_onnx, family, "random-pad", seed, folder, fw),
        }
        if has_deepen():
            students["net2deeper"] = deepened(teacher_onnx, family, seed, folder, fw)
            fw.seed(1000 + seed)
            students["random-init"] = fw.make(family, deeper=True)
            fw.seed(2000 + seed)
            students["random new layers"] = fw.with_teacher_layers(fw.make(family, deeper=True), teacher)
        for name, student in students.items():
            initial = fw.validation_loss(student, shaped)
            if name in EXACT and abs(initial - teacher_loss) > START_TOLERANCE:
                raise AssertionError(f"{fw.NAME} {family.name} {name} (seed {seed}) starts at validation loss "
                                     f"{initial:.6f}, the teacher ended at {teacher_loss:.6f}")
            curves.add(name, [initial] + fw.train(student, shaped, STUDENT_LR, student_epochs, seed + 1,
                                                  momentum=MOMENTUM, batch=BATCH))
        for name, grown in SCRATCH.items():
            if grown not in students:
                continue
            fw.seed(3000 + seed)
            model = fw.make(family, **(family.wider if grown == "net2wider" else {"deeper": True}))
            curves.add(name, [fw.validation_loss(model, shaped)] + fw.train(
                model, shaped, TEACHER_LR, family.teacher_epochs + student_epochs, seed + 2,
                momentum=MOMENTUM, batch=BATCH))
        print(f"{fw.NAME} {family.name} seed {seed}: teacher {teacher_loss:.4f}; "
              + ", ".join(f"{n} {c[-1][1]:.4f}" for n, c in curves.runs.items() if n != "teacher"), flush=True)
    return curves


# -- report -----------------------------------------------------------------------------

def _cell(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}"


def table(curves: Curves, names: list[str], epochs: list[int]) -> list[str]:
    """Mean ± std over seeds of each run's validation loss at ``epochs``."""
    lines = ["| run | " + " | ".join(f"epoch {e}" for e in epochs) + " |", "|" + "---|" * (len(epochs) + 1)]
    for name in names:
        mean, std = curves.mean_std(name)
        lines.append(f"| {name} | " + " | ".join(_cell(mean[e], std[e]) for e in epochs) + " |")
    return lines


def _spread(curves: Curves, a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
    """Per epoch: mean of ``a`` minus mean of ``b``, and the seed-to-seed spread of that gap."""
    a_mean, a_std = curves.mean_std(a)
    b_mean, b_std = curves.mean_std(b)
    return a_mean - b_mean, np.maximum(np.hypot(a_std, b_std), 1e-12)


def comparison(curves: Curves, grown: str, baseline: str, epoch: int = 1) -> str:
    """Factual: which is lower after ``epoch``, by how much, and over all epochs whether the
    gap stays within the seed-to-seed spread."""
    gap, spread = _spread(curves, grown, baseline)
    g_mean, _ = curves.mean_std(grown)
    b_mean, _ = curves.mean_std(baseline)
    lower = grown if gap[epoch] < 0 else baseline
    text = (f"after epoch {epoch}: {grown} {g_mean[epoch]:.4f}, {baseline} {b_mean[epoch]:.4f}; {lower} is lower "
            f"by {abs(gap[epoch]):.4f} ({abs(gap[epoch]) / spread[epoch]:.2f}× the seed-to-seed spread)")
    trained = slice(1, None)
    if np.all(np.abs(gap[trained]) <= spread[trained]):
        return text + f". Over epochs 1–{len(gap) - 1} the gap stays within the spread."
    better = int(np.sum(gap[trained] < -spread[trained]))
    worse = int(np.sum(gap[trained] > spread[trained]))
    return text + (f". Over epochs 1–{len(gap) - 1}, {grown} is lower by more than the spread in {better} "
                   f"epoch(s) and higher by more than the spread in {worse}.")


def epochs_to_reach(curves: Curves, name: str, target: str) -> list[int | None]:
    """Per seed: the first epoch, counting the teacher's and the student's (a from-scratch
    run counts its own), at which ``name``'s validation loss is at or below the best that
    the from-scratch run ``target`` reached; None when it never does."""
    teacher_epochs = len(curves.runs["teacher"][0]) - 1
    offset = 0 if name in SCRATCH else teacher_epochs
    reached: list[int | None] = []
    for curve, scratch in zip(curves.runs[name], curves.runs[target]):
        best = min(scratch)
        epoch = next((k for k, loss in enumerate(curve) if loss <= best), None)
        reached.append(None if epoch is None else offset + epoch)
    return reached


def _reach_cell(reached: list[int | None]) -> str:
    done = [e for e in reached if e is not None]
    if not done:
        return f"not reached (0/{len(reached)} seeds)"
    return f"{np.mean(done):.1f} ± {np.std(done):.1f} ({len(done)}/{len(reached)} seeds)"


def reach_table(curves: Curves) -> list[str]:
    """Epochs (teacher's + student's) each route needs to reach the from-scratch model's best."""
    lines = ["| route | epochs to reach the best of scratch (wider) | epochs to reach the best of scratch (deeper) |",
             "|---|---|---|"]
    for name in ("scratch (wider)", "scratch (deeper)", "teacher (trained on)", "net2wider", "random-pad",
                 "net2deeper", "random-init", "random new layers"):
        if name not in curves.runs:
            continue
        cells = [_reach_cell(epochs_to_reach(curves, name, target)) if target in curves.runs else "–"
                 for target in SCRATCH]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


#: Run → (line style, colour), the same in every panel.
STYLES = {"teacher (trained on)": (":", "C0"), "net2wider": ("-", "C1"), "random-pad": ("--", "C2"),
          "net2deeper": ("-", "C3"), "random-init": ("--", "C4"), "random new layers": ("-.", "C5"),
          "scratch (wider)": (":", "C6"), "scratch (deeper)": (":", "C7")}
#: Runs shown in the zoomed row: the function-preserving students and their control.
ZOOMED = ("teacher (trained on)", "net2wider", "net2deeper")


def plot(results: dict[str, Curves], path: Path) -> None:
    """Top row: the teacher's and every student's curve (log scale). Bottom row: the
    students' epochs only, for the function-preserving students and their control."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(results), figsize=(6.5 * len(results), 8.4), squeeze=False)
    for column, (family, curves) in enumerate(results.items()):
        full, zoom = axes[0][column], axes[1][column]
        teacher_mean, _ = curves.mean_std("teacher")
        offset = len(teacher_mean) - 1
        full.plot(range(len(teacher_mean)), teacher_mean, color="black", label=f"teacher (lr {TEACHER_LR:g})")
        for name, (style, color) in STYLES.items():
            if name not in curves.runs:
                continue
            mean, std = curves.mean_std(name)
            start, lr = (0, TEACHER_LR) if name in SCRATCH else (offset, STUDENT_LR)
            xs = np.arange(start, start + len(mean))
            for ax in (full, zoom) if name in ZOOMED else (full,):
                ax.plot(xs, mean, style, color=color, label=f"{name} (lr {lr:g})")
                ax.fill_between(xs, mean - std, mean + std, color=color, alpha=0.12)
        full.set_yscale("log")
        full.set_title(f"{family} on digits: validation loss (mean ± std over seeds)")
        full.axvline(offset, color="grey", linewidth=0.5)
        zoom.set_title(f"{family}: function-preserving students vs the teacher trained on")
        zoom.set_xlabel("epoch (students start where the teacher stopped)")
        for ax in (full, zoom):
            ax.set_ylabel("validation cross-entropy")
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def reading(curves: Curves) -> list[str]:
    """What the numbers say, in words chosen by the numbers."""
    lines = []
    teacher_end = curves.mean_std("teacher")[0][-1]
    pad_start = curves.mean_std("random-pad")[0][0]
    exact = [n for n in EXACT if n in curves.runs]
    lines.append(f"- {' and '.join(exact)} start exactly at the teacher's loss ({teacher_end:.4f}); random-pad "
                 f"starts at {pad_start:.4f} ({pad_start / teacher_end:.1f}× higher) and is still "
                 f"{curves.mean_std('random-pad')[0][-1]:.4f} after the last epoch.")
    for grown in exact:
        gap, spread = _spread(curves, grown, "teacher (trained on)")
        if np.all(np.abs(gap[1:]) <= spread[1:]):
            lines.append(f"- {grown} trains like the teacher trained on at the same rate (within the seed spread "
                         "at every epoch): on this problem the added capacity brings no measurable gain in "
                         "these epochs; what growing bought is a larger model with nothing lost.")
        else:
            direction = "below" if gap[-1] < 0 else "above"
            lines.append(f"- {grown} ends {direction} the teacher trained on at the same rate, by "
                         f"{abs(gap[-1]):.4f} ({abs(gap[-1]) / spread[-1]:.1f}× the seed spread).")
    for baseline in ("random-init", "random new layers"):
        if baseline in curves.runs:
            mean = curves.mean_std(baseline)[0]
            lines.append(f"- {baseline} at the students' rate: {mean[0]:.4f} before training, {mean[1]:.4f} "
                         f"after epoch 1, {mean[-1]:.4f} after epoch {len(mean) - 1} (the teacher ended at "
                         f"{teacher_end:.4f}).")
    return lines


#: Framework → how its teachers go to ONNX.
EXPORTER = {"PyTorch": "`torch.onnx.export` (legacy exporter)",
            "Keras": "`tf2onnx.convert.from_keras` (Keras 3, TensorFlow backend)"}


def write_report(results: dict[str, Curves], seeds: list[int], student_epochs: int, seconds: float,
                 folder: Path, frameworks: tuple[Any, ...] = (TorchFramework,)) -> None:
    lines = [
        "# Net2Net transfer on scikit-learn's digits",
        "",
        "Generated by `python scripts/net2net_experiment.py` "
        f"({len(seeds)} seeds: {', '.join(map(str, seeds))}; this run took {seconds:.0f} s of wall time on a "
        "2-core CPU shared with other jobs).",
        "",
        "Setup: digits (8×8, 1797 images; a fixed stratified 70/30 train/validation split). Teachers are "
        f"trained with SGD (momentum {MOMENTUM}, lr {TEACHER_LR}, batch {BATCH}); every student and control "
        f"is then trained {student_epochs} epochs at lr {STUDENT_LR} (a tenth), same momentum. Students are "
        "grown from the teacher's ONNX export with onnxgrow and brought back to the teacher's framework:",
        "",
        *[f"- {fw.NAME}: exported with {EXPORTER[fw.NAME]}; brought back with {fw.LOAD} the wider/deeper "
          f"{fw.NAME} model (same layer names)." for fw in frameworks],
        "",
        f"- **net2wider**: `widen --init net2wider --noise {NOISE}` (copies split their outgoing weights "
        "unequally, still exact, so they can drift apart). MLP: fc1 32 → 64. CNN: conv1 8 → 16, fc1 32 → 64.",
        "- **random-pad**: `widen --init random-pad` (new units random; not function-preserving).",
        "- **net2deeper**: `deepen` after each ReLU layer (MLP: after fc1; CNN: after conv2 and fc1), "
        "identity layers.",
        "- **random-init**: a fresh deeper model (all weights random), as the issue defines the baseline.",
        "- **random new layers**: the deeper model with the teacher's layers copied and only the new "
        "layers random (PyTorch's default initialisation): what the Keras reference calls random-init.",
        "- **teacher (trained on)**: the teacher itself, trained further at the students' rate (a control "
        "the reference does not have: growing helps only if it beats this).",
        f"- **scratch (wider)**, **scratch (deeper)**: the wider and the deeper model trained from random "
        f"weights at the teacher's rate ({TEACHER_LR}) for the teacher's and the students' epochs together: the "
        "control the Net2Net paper measures. For each route, the table of epochs counts the teacher's and "
        "the student's epochs until the route's validation loss first reaches the best that the from-scratch "
        "model reached (per seed; mean ± std over the seeds that got there).",
        "",
        f"Checked by the script: net2wider and net2deeper students start at the teacher's final validation "
        f"loss (|difference| ≤ {START_TOLERANCE}).",
        "",
        "Reference (Keras MNIST example, validation loss after epoch 1): net2wider 0.0271 vs random-pad "
        "0.0320; net2deeper 0.0292 vs random-init 0.0682.",
        "",
        "![validation loss](transfer.png)",
        "",
    ]
    for family, curves in results.items():
        teacher_epochs = len(curves.runs["teacher"][0]) - 1
        lines += [f"## {family}", "", "Teacher, validation loss every 5 epochs (epoch 0: untrained):", ""]
        lines += table(curves, ["teacher"], list(range(0, teacher_epochs + 1, 5)))
        names = [n for n in ("teacher (trained on)", "net2wider", "random-pad", "net2deeper", "random-init",
                             "random new layers") if n in curves.runs]
        lines += ["", "Students and controls, validation loss per epoch (epoch 0: as grown, before training):", ""]
        lines += table(curves, names, list(range(student_epochs + 1)))
        if any(name in curves.runs for name in SCRATCH):
            lines += ["", "Epochs (teacher's + student's) to reach the from-scratch model's best validation loss "
                      f"(the from-scratch rows: their own epochs; {teacher_epochs} teacher epochs, then "
                      f"{student_epochs} student epochs):", ""]
            lines += reach_table(curves)
        lines += ["", "Reading:", ""] + reading(curves)
        lines += ["", "Measured:", "", f"- {comparison(curves, 'net2wider', 'random-pad')}"]
        lines += [f"- {comparison(curves, 'net2wider', 'teacher (trained on)')}"]
        if "net2deeper" in curves.runs:
            lines += [f"- {comparison(curves, 'net2deeper', 'random-init')}",
                      f"- {comparison(curves, 'net2deeper', 'random new layers')}",
                      f"- {comparison(curves, 'net2deeper', 'teacher (trained on)')}"]
        lines.append("")
    if not any("net2deeper" in c.runs for c in results.values()):
        lines += ["The net2deeper half did not run: this onnxgrow has no `deepen` yet.", ""]
    (folder / "transfer.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--framework", action="append", choices=["torch", "keras"],
                        help="run the experiment in this framework (repeatable; default: both)")
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (at least 3)")
    parser.add_argument("--student-epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs")
    args = parser.parse_args(argv)
    if args.seeds < 3:
        parser.error("use at least 3 seeds")
    torch.set_num_threads(1)  # tiny models: threads only spin against other jobs
    began = time.time()
    data = load_data()
    seeds = list(range(args.seeds))
    if not has_deepen():
        print("this onnxgrow has no deepen: running the net2wider half only", flush=True)
    frameworks = []
    results = {}
    with tempfile.TemporaryDirectory(prefix="net2net-") as tmp:
        # PyTorch first, TensorFlow imported only afterwards: PyTorch training after TensorFlow
        # was imported into the same process crashed it (segfault, exit 139).
        for name in sorted(dict.fromkeys(args.framework or ["torch", "keras"]), key=["torch", "keras"].index):
            fw = framework(name)
            frameworks.append(fw)
            for family in FAMILIES:
                results[f"{fw.NAME} {family.name}"] = run_family(family, data, seeds, args.student_epochs,
                                                                 Path(tmp), fw)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(results, args.out / "transfer.png")
    write_report(results, seeds, args.student_epochs, time.time() - began, args.out, tuple(frameworks))
    print(f"wrote {args.out / 'transfer.md'} and {args.out / 'transfer.png'} in {time.time() - began:.0f} s")


if __name__ == "__main__":
    main()
