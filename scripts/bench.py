"""Benchmark onnxgrow on large synthetic models against the physical limit and against its peers.

    python scripts/bench.py [--reps 3] [--models cnn,transformer] [--only widen,verify,...]
                            [--huge] [--llms llama-0.6gb,qwen2-0.5b] [--providers cpu[,cuda]]
                            [--workdir /tmp/onnxgrow-bench] [--doc docs/benchmarks.md [--section llm]]
                            [--clean]

Builds (never downloads) its models with external data, see ``tests/helpers/scale.py``:
a VGG-like CNN with a large classifier (~0.5 GB), a 54-block transformer (~3 GB, over
the 2 GiB protobuf limit), with ``--huge`` a 194-block transformer (~10 GB, deleted at
the end), and for ``slope`` plain Gemm/Relu chains of 1k, 5k, 20k and 50k nodes. Every
measurement is a subprocess; its wall time and peak RSS come from ``os.wait4`` in a
small launcher. Within each repetition the commands compared with each other run back
to back, in an order that alternates between repetitions, with ``sync`` (untimed)
before each so that one command's dirty pages do not slow the next. Runs are
warm-cache (the models sit in the page cache) unless ``--cold`` drops the cache before
every command.

Measurements (``--only`` picks groups):

- ``startup``: the import floor every Python ONNX tool pays (``python -c "import
  onnx_ir"``), ``onnxgrow --version``, ``onnxgrow --help`` and ``onnxgrow widen --help``.
- ``widen``: ``onnxgrow widen --no-verify`` of a small layer, and for the CNN of a large
  layer (``fc1``), each beside ``cp`` of the input and of the output files (plain, and
  then synced to the disk) and, where it has the edits, a naive script (``onnx.load`` +
  numpy Net2WiderNet + ``onnx.save``, ``scripts/bench_baselines.py``).
- ``inspect``: ``onnxgrow inspect`` of each model.
- ``verify``: ``onnxgrow verify`` of the model and its widened copy vs a script that
  opens the two in plain onnxruntime sessions (default options) and vs Polygraphy
  (``polygraphy run A --onnxrt --save-outputs`` then ``run B --load-outputs``).
- ``naive``: ``onnx.load`` + ``onnx.save`` and onnx-ir ``load`` + ``save`` (CNN).
- ``diff``: ``onnxgrow diff`` of the 3 GB transformer and its widened copy.
- ``slope``: ``inspect`` and a one-layer ``widen`` of the chains, for the node-count slope.
- ``llm`` (issue 26): for each LLaMA-shaped model of ``--llms`` (``scale.llama``, shapes in
  ``scale.LLAMA_SHAPES``: ``llama-0.6gb``, ``qwen2-0.5b`` of about 2 GB, ``llama-10gb``
  deleted at the end), ``inspect``; one FFN, all FFNs by glob (``--node
  'model.layers.*.mlp.up_proj'``), every attention's heads by glob (``--node
  'model.layers.*.self_attn' --heads``) and a copy of the middle block (``deepen
  --block``), each with its check; one FFN checked segment by segment; ``export --to hf``
  (``scale.hf_config``) with its check; the naive script on the same FFN. Each beside a
  durable copy (``cp`` + ``sync``) of the input and a grown output and one onnxruntime
  session + run of the grown model; bound: 2.5 × (durable copy + floor + ORT run). The
  segmented check's peak RSS is bounded by its largest segment + 0.5 GB, the segments'
  sizes from the check's own report (``verify --json``: ``segment_bytes``).
- ``export``: ``export --to hf --no-verify`` of the ``--llms`` models, and ``--to
  keras-weights`` (``.weights.h5``, ``.npz``) of a Keras-named convnet
  (``scale.keras_convnet``, 478 MB), with the sampled peaks of anonymous and file-backed
  memory; bound: peak RSS ≤ 300 MB + the largest tensor.

Prints medians and ratios against the targets of issues 14 and 26 and writes them to
``--doc``, between the markers of ``--section``.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import scale  # noqa: E402

PYTHON = sys.executable
ONNXGROW = [PYTHON, "-m", "onnxgrow"]
BASELINES = [PYTHON, str(Path(__file__).resolve().parent / "bench_baselines.py")]
GROUPS = ("startup", "widen", "inspect", "verify", "naive", "diff", "slope", "llm", "export")
#: Transformer blocks of the ``--huge`` model: 194 blocks of 50.3 MB and 262 MB of embedding and head.
HUGE_LAYERS = 194
#: Node counts of the ``slope`` chains; ``--huge`` adds :data:`HUGE_CHAIN` (issue 25: inspect and a
#: one-layer widen each within 10× their 20,000-node times, memory linear in the node count).
CHAIN_NODES = (1000, 5000, 20_000, 50_000)
HUGE_CHAIN = 200_000
POLYGRAPHY = str(Path(PYTHON).with_name("polygraphy"))
MB = 1e6
#: The LLaMA-shaped models of ``llm`` and ``export`` (shapes: ``scale.LLAMA_SHAPES``).
LLMS = ("llama-0.6gb", "qwen2-0.5b")
#: ``--llms`` models too large to keep: deleted at the end of the run.
DELETED_LLMS = ("llama-10gb",)
#: Issue 26: every growth with its check within this many times (durable copy + floor + one
#: onnxruntime run of the grown model).
GROWTH_LIMIT = 2.5
#: Issue 26: every export's peak RSS within this much beyond the model's largest tensor.
EXPORT_ALLOWANCE = 300 * MB
#: Issue 26: the segmented check's peak RSS within this much beyond its largest segment.
SEGMENT_ALLOWANCE = 500 * MB
#: How often the exports' anonymous and file-backed resident memory is sampled (seconds).
SAMPLE_S = 0.005
#: The Keras-named convnet the ``keras-weights`` exports write: 11 convolutions of 37.7 MB
#: after a small first one, and Dense layers of up to 37.7 MB: 478 MB in all.
KERAS_SHAPE = dict(convs=(1024,) * 12, dense=(3072, 3072, 1000))


# --- running and measuring ----------------------------------------------------------


@dataclass
class Sample:
    wall_s: float
    peak_rss: int  # bytes
    peak_anon: int = 0  # bytes, sampled (0: not sampled)
    peak_file: int = 0


@dataclass
class Measure:
    """One command measured repeatedly."""

    key: str
    label: str
    argv: list[str]
    prepare: Callable[[], None] = lambda: None
    ok_codes: tuple[int, ...] = (0,)
    sample_s: float = 0.0  # how often to sample anonymous/file-backed RSS (0: not)
    samples: list[Sample] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return statistics.median(s.wall_s for s in self.samples)

    @property
    def rss(self) -> int:
        return int(statistics.median(s.peak_rss for s in self.samples))

    @property
    def rss_text(self) -> str:
        """The median peak RSS, with the sampled anonymous/file-backed peaks where measured."""
        text = f"{self.rss / MB:.0f} MB"
        if self.sample_s:
            anon = statistics.median(s.peak_anon for s in self.samples)
            file = statistics.median(s.peak_file for s in self.samples)
            text += f" (anon {anon / MB:.0f}, file {file / MB:.0f})"
        return text


def run_measured(argv: Sequence[str], sample_s: float = 0.0) -> tuple[Sample, int, str]:
    """Run ``argv`` (cwd: the repository); return its wall time, peak RSS (and, sampled every
    ``sample_s``, anonymous and file-backed RSS), status, stderr tail."""
    done = scale.measure(argv, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), sample_s=sample_s)
    return Sample(done.wall_s, done.peak_rss, done.peak_anon, done.peak_file), done.returncode, done.stderr


DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def drop_caches() -> None:
    """Write dirty pages back, then empty the page cache (needs root)."""
    os.sync()
    DROP_CACHES.write_text("3\n")


def measure_once(m: Measure, cold: bool) -> None:
    m.prepare()
    if cold:
        drop_caches()
    else:
        os.sync()
    sample, code, tail = run_measured(m.argv, m.sample_s)
    if code not in m.ok_codes:
        raise SystemExit(f"{m.label} failed with status {code}:\n  {shlex.join(m.argv)}\n{tail}")
    m.samples.append(sample)
    print(f"  {m.label:<48} {sample.wall_s:7.2f} s  {sample.peak_rss / MB:8.0f} MB", flush=True)


def fresh_dir(path: Path) -> Callable[[], None]:
    def prepare() -> None:
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
    return prepare


def quoted(paths: Sequence[Path]) -> str:
    return " ".join(shlex.quote(str(p)) for p in paths)


def durable_copy(key: str, label: str, script: str, folders: list[Path]) -> Measure:
    """``cp`` as onnxgrow writes: its copies flushed to the disk (``sync FILE...``) before it
    returns. onnxgrow fsyncs what it wrote before renaming it into place, so that a crash
    cannot leave a model whose data never reached the disk; plain ``cp`` leaves its
    writes in the page cache, and the untimed ``sync`` between commands flushes them."""
    def prepare() -> None:
        for folder in folders:
            fresh_dir(folder)()
    return Measure(key, label, ["sh", "-c", script], prepare)


def model_files(model: Path) -> list[Path]:
    """The .onnx file and every external data file its tensors name: the files a copy of
    the model must copy (onnxgrow's outputs name theirs ``<stem>.<8 hex>.onnx.data``)."""
    import onnx_ir as ir

    loaded = ir.load(model)
    locations = {tensor.location for graph in loaded.graphs() for value in graph.initializers.values()
                 if isinstance(tensor := value.const_value, ir.ExternalTensor)}
    return [model, *sorted(model.parent / location for location in locations)]


def file_bytes(model: Path) -> int:
    return sum(p.stat().st_size for p in model_files(model))


# --- the models and their widened copies ----------------------------------------------


@dataclass
class Subject:
    """A benchmark model, its widened copies, and the bytes the small widening rewrote."""

    name: str
    built: scale.BuiltModel
    small_out: Path
    large_out: Path | None
    inputs_npz: Path
    rewritten_small: int = 0
    setup_notes: list[str] = field(default_factory=list)


def compile_package() -> None:
    """Byte-compile onnxgrow, as installing a package does. A checkout run with
    ``PYTHONDONTWRITEBYTECODE`` set (this machine sets it) has no ``.pyc`` files, so every
    measured command would compile its ~90 modules from source (about 0.05-0.1 s)."""
    import compileall

    if not compileall.compile_dir(ROOT / "onnxgrow", quiet=1):
        raise SystemExit("byte-compiling onnxgrow failed")


def build_or_reuse(name: str, folder: Path, layers: int, rebuild: bool) -> scale.BuiltModel:
    """Build the model into ``folder``, or reuse the one an earlier run built with the same size."""
    record = folder / "built.json"
    size: dict[str, int] = {}
    if name in ("transformer", "huge"):
        size = {"layers": layers}
    elif name.startswith("chain-"):
        size = {"nodes": int(name.split("-")[1])}
    elif name in scale.LLAMA_SHAPES:
        size = dict(scale.LLAMA_SHAPES[name])  # type: ignore[arg-type]
    if not rebuild and record.exists():
        saved = json.loads(record.read_text())
        if saved.pop("size") == size and Path(saved["path"]).exists():
            return scale.BuiltModel(**{**saved, "path": Path(saved["path"])})
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    path = folder / f"{name}.onnx"
    start = time.perf_counter()
    if name == "cnn":
        built = scale.vgg_like(path)
    elif name.startswith("chain-"):
        built = scale.chain(path, **size)
    elif name in scale.LLAMA_SHAPES:
        built = scale.llama(path, **size)  # type: ignore[arg-type]
    elif name == "keras":
        built = scale.keras_convnet(path, **KERAS_SHAPE)  # type: ignore[arg-type]
    else:
        built = scale.transformer(path, **size)
    print(f"built {path} ({file_bytes(path) / MB:.0f} MB) in {time.perf_counter() - start:.1f} s")
    record.write_text(json.dumps({**asdict(built), "path": str(path), "size": size}))
    return built


def rewritten_bytes(source: Path, grown: Path) -> int:
    """Bytes of the grown model's initializers that are new or changed shape (metadata only)."""
    import onnx_ir as ir

    before = {n: tuple(v.const_value.shape) for n, v in ir.load(source).graph.initializers.items()
              if v.const_value is not None}
    total = 0
    for name, value in ir.load(grown).graph.initializers.items():
        tensor = value.const_value
        if tensor is not None and before.get(name) != tuple(tensor.shape):
            total += tensor.nbytes
    return total


def write_inputs(model: Path, npz: Path) -> None:
    """The seeded random inputs onnxgrow verify would draw, saved for both sides."""
    import numpy as np

    from onnxgrow.model_io import load_model
    from onnxgrow.verification import input_specs, random_inputs

    np.savez(npz, **random_inputs(input_specs(load_model(model)), seed=0))


def prepare_subject(name: str, workdir: Path, layers: int, rebuild: bool, verify: bool = True) -> Subject:
    """Build the model (unless an earlier run did) and widen it once (with verification unless
    ``verify`` is False: onnxruntime would hold the ~10 GB model in memory)."""
    folder = workdir / name
    built = build_or_reuse(name, folder, layers, rebuild)
    path = built.path
    subject = Subject(name, built, folder / "small" / f"{name}.onnx",
                      folder / "large" / f"{name}.onnx" if built.large_layer else None,
                      folder / "inputs.npz")
    jobs = [(subject.small_out, built.small_layer, built.small_width)]
    if built.large_layer and subject.large_out is not None:
        jobs.append((subject.large_out, built.large_layer, built.large_width))
    for out, layer, width in jobs:
        fresh_dir(out.parent)()
        argv = [*ONNXGROW, "widen", str(path), "--node", layer, "--to", str(width), "-o", str(out)]
        if not verify:
            argv.append("--no-verify")
        sample, code, tail = run_measured(argv)
        if code != 0:
            raise SystemExit(f"setup widen failed ({code}): {shlex.join(argv)}\n{tail}")
        how = "with verification" if verify else "without verification"
        note = (f"{name}: `onnxgrow widen --node {layer} --to {width}` {how}: "
                f"{sample.wall_s:.1f} s, peak RSS {sample.peak_rss / MB:.0f} MB")
        print(f"setup: {note}")
        subject.setup_notes.append(note)
    subject.rewritten_small = rewritten_bytes(path, subject.small_out)
    if verify and not subject.inputs_npz.exists():
        write_inputs(path, subject.inputs_npz)
    return subject


# --- the plan ---------------------------------------------------------------------------


@dataclass
class Comparison:
    """A target: ``tool`` within ``limit × (base + extra)`` (+ the median import floor, +
    ``plus_s``); the ratio is of ``tool`` over ``base + extra``."""

    title: str
    tool: Measure
    base: Measure
    limit: float
    base_label: str = ""
    floor: Measure | None = None
    plus_s: float = 0.0
    extra: tuple[Measure, ...] = ()

    @property
    def base_wall(self) -> float:
        return self.base.wall + sum(m.wall for m in self.extra)

    def paired(self) -> list[float]:
        """Each repetition's own ratio (the commands ran back to back), sorted."""
        bases = [sum(parts) for parts in zip(*([x.wall_s for x in m.samples] for m in (self.base, *self.extra)))]
        return sorted(t.wall_s / b for t, b in zip(self.tool.samples, bases))

    @property
    def bound(self) -> float:
        return self.limit * self.base_wall + (self.floor.wall if self.floor else 0.0) + self.plus_s

    @property
    def bound_label(self) -> str:
        parts = [f"{self.limit:g}× {self.base_label}" if self.limit else ""]
        if self.floor is not None:
            parts.append("floor")
        if self.plus_s:
            parts.append(f"{self.plus_s:g} s")
        return " + ".join(p for p in parts if p)


@dataclass
class Plan:
    measures: list[list[Measure]] = field(default_factory=list)  # pairs run back to back
    comparisons: list[Comparison] = field(default_factory=list)
    memory_checks: list[tuple[str, Measure, int, str]] = field(default_factory=list)  # title, m, limit, label
    skipped: list[str] = field(default_factory=list)
    info: list[Measure] = field(default_factory=list)
    slope: list[tuple[int, Measure, Measure]] = field(default_factory=list)  # nodes, inspect, widen
    #: the LLaMA-shaped models: subject, its rows, and the base of their ratios (durable copy, floor, ORT run)
    llm: list[tuple[Subject, list[Measure], tuple[Measure, ...]]] = field(default_factory=list)
    #: the segmented rows: subject, row, its --max-memory (their bounds come from the check's report)
    segmented: list[tuple[Subject, Measure, str]] = field(default_factory=list)


def diff_available() -> bool:
    return run_measured([*ONNXGROW, "diff", "--help"])[1] == 0


def widen_measure(model: str, size: str, src: Path, layer: str, width: int, out: Path) -> Measure:
    """``onnxgrow widen LAYER --to WIDTH --no-verify`` of ``src`` into a fresh ``out`` folder."""
    return Measure(f"{model}:widen-{size}", f"{model}: widen {layer} --no-verify",
                   [*ONNXGROW, "widen", str(src), "--node", layer, "--to", str(width), "--no-verify",
                    "-o", str(out / src.name)], fresh_dir(out))


#: The naive script's edits per model: (producer weight, axis), (bias, axis), (consumer weight, axis).
NAIVE_EDITS = {
    ("cnn", "large"): ["P:fc1.weight:0", "P:fc1.bias:0", "C:fc2.weight:1"],
    ("transformer", "small"): ["P:blocks.27.ffn.up.weight:1", "P:blocks.27.ffn.up.bias:0",
                               "C:blocks.27.ffn.down.weight:0"],
}


def naive_measure(s: Subject, size: str, layer: str, width: int, out: Path) -> Measure | None:
    """The naive script widening ``layer`` of ``s`` like onnxgrow does, if it has edits for it."""
    edits = NAIVE_EDITS.get((s.name, size))
    if edits is None:
        return None
    src = s.built.path
    return Measure(f"{s.name}:naive-{size}", f"{s.name}: naive onnx.load + numpy Net2Net + onnx.save ({layer})",
                   [*BASELINES, "naive-net2net", str(src), str(out / src.name), str(width), *edits],
                   fresh_dir(out))
#: Peak RSS allowed for any widening: 150 MB plus one block of the largest rewritten tensor.
RSS_BASE = 150 * MB


def rss_limit() -> tuple[int, str]:
    from onnxgrow import grown_tensors

    block = grown_tensors.BLOCK_BYTES
    return int(RSS_BASE + block), f"150 MB + {block / MB:.0f} MB block"


def startup_measures(plan: Plan, only: set[str]) -> Measure:
    """The import floor (always measured: the bounds use it) and, with ``startup``, the CLI's own start."""
    floor = Measure("floor", 'python -c "import onnx_ir" (import floor)', [PYTHON, "-c", "import onnx_ir"])
    group = [floor]
    if "startup" in only:
        version = Measure("startup", "onnxgrow --version", [*ONNXGROW, "--version"])
        helps = [Measure("help", "onnxgrow --help", [*ONNXGROW, "--help"]),
                 Measure("help-widen", "onnxgrow widen --help", [*ONNXGROW, "widen", "--help"])]
        group += [version, *helps]
        plan.info.append(version)
        for m in helps:
            plan.comparisons.append(Comparison(f"`onnxgrow {shlex.join(m.argv[3:])}`", m, floor, 0.0, "floor",
                                               plus_s=0.2))
    plan.measures.append(group)
    plan.info.append(floor)
    return floor


def widen_group(plan: Plan, s: Subject, size: str, layer: str, width: int, grown: Path, out: Path,
                floor: Measure) -> list[Measure]:
    """``onnxgrow widen`` of one layer beside ``cp`` of the input and of the output files
    (issue 14's baseline: the bytes read plus the bytes written), plain and then synced to
    the disk as onnxgrow's save is, and beside the naive script where it has the edits.
    Every command of the group writes into ``out``, emptied before each: one copy at a time."""
    limit, limit_label = rss_limit()
    copies = f"mkdir {out / 'in'} {out / 'out'} && cp {quoted(model_files(s.built.path))} {out / 'in'} " \
             f"&& cp {quoted(model_files(grown))} {out / 'out'}"
    cp = Measure(f"{s.name}:cp-{size}", f"{s.name}: cp input + cp output files ({layer})",
                 ["sh", "-c", copies], fresh_dir(out))
    durable = durable_copy(f"{s.name}:cp-sync-{size}",
                           f"{s.name}: cp input + cp output files, then sync the copies ({layer})",
                           f"{copies} && sync {quoted([out / 'in'])}/* {quoted([out / 'out'])}/*", [out])
    widen = widen_measure(s.name, size, s.built.path, layer, width, out)
    title = f"{s.name}: widen of a {size} layer ({layer})"
    plan.comparisons.append(Comparison(title, widen, cp, 1.3, "cp of input + cp of output", floor))
    plan.comparisons.append(Comparison(f"{title}, beside durable copies", widen, durable, 1.3,
                                       "cp + sync of input and output", floor))
    plan.memory_checks.append((title, widen, limit, limit_label))
    group = [cp, durable, widen]
    naive = naive_measure(s, size, layer, width, out)
    if naive is not None:
        group.append(naive)
        plan.comparisons.append(Comparison(f"{s.name}: widen of {layer} vs the naive script", widen, naive, 1.0,
                                           "naive script"))
    return group


def largest_tensor(model: Path) -> int:
    """Bytes of the model's largest initializer (metadata only)."""
    import onnx_ir as ir

    return max(v.const_value.nbytes for v in ir.load(model).graph.initializers.values() if v.const_value is not None)


def export_measure(s: Subject, suffix: str, target: str, out: Path) -> Measure:
    """``onnxgrow export --to target`` of ``s`` into ``out/<name><suffix>``, its memory sampled."""
    return Measure(f"{s.name}:export{suffix}", f"{s.name}: export --to {target} ({suffix})",
                   [*ONNXGROW, "export", str(s.built.path), "--to", target, "-o", str(out / f"{s.name}{suffix}")],
                   fresh_dir(out), sample_s=SAMPLE_S)


def import_cost(code: str, runs: int = 3) -> int:
    """Peak RSS bytes that running ``code`` (imports) adds to ``import onnx_ir``: the largest
    of ``runs`` runs (the kernel may reclaim a process's mapped library pages while it runs,
    which lowers a run's RSS below what the import needs)."""
    def peak(more: str) -> int:
        script = f"import resource, onnx_ir; {more}; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
        return int(subprocess.run([PYTHON, "-c", script], check=True, capture_output=True, text=True).stdout) * 1024

    return max(0, max(peak(code) for _ in range(runs)) - min(peak("pass") for _ in range(runs)))


def export_memory_check(plan: Plan, s: Subject, m: Measure, what: str = "", framework: str = "") -> None:
    """The export's peak RSS within ``EXPORT_ALLOWANCE`` + the largest tensor, + what importing
    ``framework`` costs where the export needs it (``--to hf`` checks the folder's layout
    against the transformers class, built with torch, even with ``--no-verify``)."""
    largest = largest_tensor(s.built.path)
    extra = import_cost(framework) if framework else 0
    label = f"300 MB + largest tensor {largest / MB:.0f} MB"
    if framework:
        label += f" + `{framework}` {extra / MB:.0f} MB"
    plan.memory_checks.append((f"{s.name}: export {what or m.argv[-1].rsplit('/', 1)[-1]}", m,
                               int(EXPORT_ALLOWANCE + largest + extra), label))


def ffn_edits(model: Path, block: int) -> list[str]:
    """The naive script's edits widening block ``block``'s gated FFN: the gate and up
    projections' weights (``[in, out]``: units on axis 1) and the down projection's (axis 0)."""
    import onnx_ir as ir

    weights = {node.name: node.inputs[1].name for node in ir.load(model).graph
               if node.op_type == "MatMul" and node.inputs[1] is not None}
    scope = f"/model/layers.{block}/mlp"
    return [f"P:{weights[f'{scope}/gate_proj/MatMul']}:1", f"P:{weights[f'{scope}/up_proj/MatMul']}:1",
            f"C:{weights[f'{scope}/down_proj/MatMul']}:0"]


def llm_group(plan: Plan, s: Subject, only: set[str], floor: Measure, out: Path) -> list[Measure]:
    """Issue 26's rows for a LLaMA-shaped model, back to back with their baselines: a durable
    copy of the input and of a grown output (``cp`` + ``sync``) and one onnxruntime session
    and run of the grown model. ``llm``: ``inspect``; one FFN, every FFN by glob, every
    attention's heads by glob and a copy of the middle block (``deepen --block``), each with
    the check; one FFN with the check made segment by segment (``--max-memory`` a quarter of
    the weights; its peak RSS bounded by the largest segment + 0.5 GB, from the check's own
    report: :func:`segment_bounds`); ``export --to hf`` with its check (the transformers
    model, whole); the naive script widening the same FFN (no check; models under 2 GiB).
    ``export``: ``export --to hf --no-verify``, memory sampled. Every growth is bounded by
    ``GROWTH_LIMIT × (durable copy + floor + ORT run)``, every export's peak RSS without its
    check by ``EXPORT_ALLOWANCE`` + the largest tensor."""
    src = s.built.path
    shape = scale.LLAMA_SHAPES[s.name]
    layers, ffn, heads, kv_heads = (int(shape[k]) for k in ("layers", "ffn", "heads", "kv_heads"))
    middle = layers // 2
    grown = s.small_out
    config = src.parent / "hf" / "config.json"
    config.parent.mkdir(exist_ok=True)
    config.write_text(json.dumps(scale.hf_config(shape), indent=2))
    copies = (f"mkdir {out / 'in'} {out / 'out'} && cp {quoted(model_files(src))} {out / 'in'} "
              f"&& cp {quoted(model_files(grown))} {out / 'out'} && sync {out / 'in'}/* {out / 'out'}/*")
    durable = durable_copy(f"{s.name}:cp-sync", f"{s.name}: cp + sync of input and grown output", copies, [out])
    ort_run = Measure(f"{s.name}:ort-run", f"{s.name}: one onnxruntime session + run of the grown model",
                      [*BASELINES, "one-run", str(grown), str(s.inputs_npz), "cpu"])
    bases = (durable, floor, ort_run)
    rows: list[Measure] = []

    def grow(key: str, label: str, *args: str) -> Measure:
        return Measure(f"{s.name}:{key}", f"{s.name}: {label}",
                       [*ONNXGROW, args[0], str(src), *args[1:], "-q", "-o", str(out / src.name)], fresh_dir(out))

    def export_hf(key: str, label: str, *args: str, sample_s: float = 0.0) -> Measure:
        return Measure(f"{s.name}:{key}", f"{s.name}: {label}",
                       [*ONNXGROW, "export", str(src), "--to", "hf", "--config", str(config), *args,
                        "-o", str(out / "hf")], fresh_dir(out), sample_s=sample_s)

    if "llm" in only:
        rows.append(Measure(f"{s.name}:inspect", f"{s.name}: inspect", [*ONNXGROW, "inspect", str(src)]))
        ffn_node = f"model.layers.{middle}.mlp.up_proj"
        width = ffn + ffn // 8
        quarter = f"{s.built.weight_bytes // 4 // 10**6}MB"
        segmented = grow("segmented", f"widen one FFN, checked segment by segment (--max-memory {quarter}: "
                                      "¼ of the weights)",
                         "widen", "--node", ffn_node, "--to", str(width), "--max-memory", quarter)
        growths = [
            grow("widen-ffn", f"widen one FFN ({ffn_node} → {width}), with the check",
                 "widen", "--node", ffn_node, "--to", str(width)),
            grow("widen-ffns", f"widen all {layers} FFNs by glob (model.layers.*.mlp.up_proj → {width}), "
                               "with the check",
                 "widen", "--node", "model.layers.*.mlp.up_proj", "--to", str(width)),
            grow("heads", f"all {layers} attentions by glob (model.layers.*.self_attn) {heads} → "
                          f"{heads + kv_heads} heads, with the check",
                 "widen", "--node", "model.layers.*.self_attn", "--heads", str(heads + kv_heads)),
            grow("deepen", f"deepen --block model.layers.{middle} (a zero-initialised copy), with the check",
                 "deepen", "--block", f"model.layers.{middle}"),
            segmented,
        ]
        rows += growths
        for m in growths:
            plan.comparisons.append(Comparison(m.label, m, durable, GROWTH_LIMIT, "cp + sync, floor, one ORT run",
                                               extra=(floor, ort_run)))
        plan.segmented.append((s, segmented, quarter))
        rows.append(export_hf("export-hf", "export --to hf, with its check (the transformers model, whole)"))
        if file_bytes(src) < 2**31:
            rows.append(Measure(f"{s.name}:naive-ffn", f"{s.name}: naive script, the same FFN (no check)",
                                [*BASELINES, "naive-net2net", str(src), str(out / src.name), str(width),
                                 *ffn_edits(src, middle)], fresh_dir(out)))
        else:
            plan.skipped.append(f"{s.name}: the naive script (onnx.load + onnx.save) not run: over 2 GiB")
    if "export" in only:
        m = export_hf("export-hf-stream", "export --to hf --no-verify", "--no-verify", sample_s=SAMPLE_S)
        rows.append(m)
        export_memory_check(plan, s, m, "hf folder, no check",
                            framework="import torch, transformers; transformers.LlamaForCausalLM")
    plan.llm.append((s, rows, bases))
    return [durable, ort_run, *rows]


def segment_bounds(plan: Plan) -> None:
    """Issue 26: the segmented check's peak RSS within its largest segment + 0.5 GB. The
    segments' sizes are the check's own: ``onnxgrow verify`` of the model and the grown copy
    the segmented row makes (the same widening), under the same ``--max-memory``, reports
    every segment's weight bytes (``segment_bytes``); run once, untimed, after the rows."""
    from onnxgrow.verification.memory import ORT_MEMORY_FACTOR

    for s, m, limit in plan.segmented:
        report = s.built.path.parent / "segments.json"
        argv = [*ONNXGROW, "verify", str(s.built.path), str(s.small_out), "--max-memory", limit, "--json",
                str(report)]
        done = subprocess.run(argv, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise SystemExit(f"{shlex.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
        data = json.loads(report.read_text())
        if data["mode"] != "segmented" or not data["passed"]:
            raise SystemExit(f"{shlex.join(argv)}: not a passing segmented check: {data['mode']}")
        largest = max(data["segment_bytes"])
        what = f"{data['segments']} segments, the largest {largest / MB:.0f} MB of weights"
        plan.memory_checks.append((m.label, m, int(largest + SEGMENT_ALLOWANCE),
                                   f"largest segment + 0.5 GB; {what}"))
        plan.memory_checks.append((m.label, m, int(ORT_MEMORY_FACTOR * largest + SEGMENT_ALLOWANCE),
                                   f"{ORT_MEMORY_FACTOR}× largest segment (its session, as the check "
                                   "estimates it) + 0.5 GB"))


def plan_for(subjects: list[Subject], only: set[str], providers: list[str], scratch: Path,
             chains: list[Subject], llms: list[Subject], keras: Subject | None) -> Plan:
    plan = Plan()
    floor = startup_measures(plan, only)
    for s in llms:
        plan.measures.append(llm_group(plan, s, only, floor, scratch / s.name))
    if keras is not None:
        group = [export_measure(keras, suffix, "keras-weights", scratch / "keras")
                 for suffix in (".weights.h5", ".npz")]
        for m in group:
            export_memory_check(plan, keras, m)
        plan.measures.append(group)
        plan.info.extend(group)
    for s in subjects:
        src = s.built.path
        out = scratch / s.name
        if "widen" in only:
            widenings = [("small", s.built.small_layer, s.built.small_width, s.small_out)]
            if s.built.large_layer and s.large_out is not None:
                widenings.append(("large", s.built.large_layer, s.built.large_width, s.large_out))
            for size, layer, width, grown in widenings:
                plan.measures.append(widen_group(plan, s, size, layer, width, grown, out / "x", floor))
        if "inspect" in only:
            inspect = Measure(f"{s.name}:inspect", f"{s.name}: onnxgrow inspect", [*ONNXGROW, "inspect", str(src)])
            plan.measures.append([inspect])
            if s.name == "transformer":
                plan.comparisons.append(Comparison(f"{s.name}: inspect", inspect, floor, 1.0, "floor", plus_s=1.5))
            else:
                plan.info.append(inspect)
        if "verify" in only and s.inputs_npz.exists():
            for provider in providers:
                tool = Measure(f"{s.name}:verify-{provider}", f"{s.name}: onnxgrow verify ({provider})",
                               [*ONNXGROW, "verify", str(src), str(s.small_out), "--inputs",
                                str(s.inputs_npz), "--providers", provider])
                base = Measure(f"{s.name}:plain-{provider}", f"{s.name}: two plain ORT sessions ({provider})",
                               [*BASELINES, "plain-sessions", str(src), str(s.small_out),
                                str(s.inputs_npz), provider])
                group = [base, tool]
                plan.comparisons.append(Comparison(f"{s.name}: verify ({provider}) vs two plain sessions", tool,
                                                   base, 1.2, "two plain sessions"))
                if provider == "cpu":
                    saved = out / "polygraphy" / "outputs.json"
                    poly = Measure(
                        f"{s.name}:polygraphy", f"{s.name}: polygraphy run A --save-outputs, run B --load-outputs",
                        ["sh", "-c", f"{POLYGRAPHY} run {shlex.quote(str(src))} --onnxrt --save-outputs {saved} "
                                     f"&& {POLYGRAPHY} run {shlex.quote(str(s.small_out))} --onnxrt "
                                     f"--load-outputs {saved}"],
                        fresh_dir(saved.parent))
                    group.append(poly)
                    plan.comparisons.append(Comparison(f"{s.name}: verify vs Polygraphy", tool, poly, 1.0,
                                                       "Polygraphy pair"))
                plan.measures.append(group)
        if "naive" in only:
            if s.built.weight_bytes > 2**31 or file_bytes(src) > 2**31:
                plan.skipped.append(f"{s.name}: naive onnx.load/onnx.save not run: the model is over "
                                    "2 GiB, which one protobuf message cannot hold (onnx.save fails), "
                                    "and loading it would take ~12× its size in memory")
            else:
                naive = Measure(f"{s.name}:naive", f"{s.name}: onnx.load + onnx.save",
                                [*BASELINES, "naive-onnx", str(src), str(out / "n" / src.name)],
                                fresh_dir(out / "n"))
                roundtrip = Measure(f"{s.name}:ir", f"{s.name}: onnx-ir load + save",
                                    [*BASELINES, "ir-roundtrip", str(src), str(out / "n" / src.name)],
                                    fresh_dir(out / "n"))
                plan.measures.append([roundtrip, naive])
                plan.info.extend([naive, roundtrip])
        if "diff" in only and s.name == "transformer":
            if diff_available():
                diff = Measure(f"{s.name}:diff", f"{s.name}: onnxgrow diff (two ~3 GB models)",
                               [*ONNXGROW, "diff", str(src), str(s.small_out)], ok_codes=(0, 1))
                plan.measures.append([diff])
                plan.info.append(diff)
            else:
                plan.skipped.append("diff: `onnxgrow diff` is not available on this branch yet")
    for c in chains:
        nodes = int(c.name.split("-")[1])
        src = c.built.path
        inspect = Measure(f"{c.name}:inspect", f"{nodes} nodes: onnxgrow inspect", [*ONNXGROW, "inspect", str(src)])
        widen = widen_measure(c.name, "one", src, c.built.small_layer, c.built.small_width, scratch / c.name)
        widen.label = f"{nodes} nodes: widen {c.built.small_layer} --no-verify"
        plan.measures.append([inspect, widen])
        plan.slope.append((nodes, inspect, widen))
        if nodes == 20_000:
            plan.comparisons.append(Comparison("20,000-node chain: inspect", inspect, floor, 1.0, "floor",
                                               plus_s=5.0))
            plan.comparisons.append(Comparison("20,000-node chain: one-layer widen", widen, floor, 1.0, "floor",
                                               plus_s=3.0))
        if nodes == HUGE_CHAIN:
            inspect_20k, widen_20k = next((i, w) for n, i, w in plan.slope if n == 20_000)
            plan.comparisons.append(Comparison(f"{HUGE_CHAIN:,}-node chain: inspect", inspect, inspect_20k, 10.0,
                                               "the 20,000-node inspect"))
            plan.comparisons.append(Comparison(f"{HUGE_CHAIN:,}-node chain: one-layer widen", widen, widen_20k, 10.0,
                                               "the 20,000-node widen"))
    return plan


def run_plan(plan: Plan, reps: int, cold: bool) -> None:
    """Every repetition of the groups, alternating the order within each; the ~10 GB model's
    groups come after all repetitions of the others, since its copies push every other
    model out of the page cache (their later repetitions would read the disk)."""
    evicting = [group for group in plan.measures if group[0].key.startswith(("huge:", *DELETED_LLMS))]
    warm = [group for group in plan.measures if group not in evicting]
    for label, groups in (("", warm), ("~10 GB model, ", evicting)):
        for rep in range(reps if groups else 0):
            print(f"{label}repetition {rep + 1}/{reps} (load average {os.getloadavg()[0]:.2f})", flush=True)
            for group in groups:
                for m in (group if rep % 2 == 0 else list(reversed(group))):
                    measure_once(m, cold)


# --- profile ----------------------------------------------------------------------------


def profile_widen(subject: Subject, scratch: Path, top: int = 14) -> str:
    """cProfile of the small widening, in-process after imports: the top cumulative entries."""
    from onnxgrow.options import GrowOptions
    from onnxgrow.widening.functions import widen_file

    out = scratch / subject.name / "p"
    fresh_dir(out)()
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    widen_file(subject.built.path, out / subject.built.path.name,
               {subject.built.small_layer: subject.built.small_width},
               options=GrowOptions(verify=None))
    profiler.disable()
    wall = time.perf_counter() - start
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("cumulative").print_stats(top)
    lines = [line for line in text.getvalue().splitlines() if line.strip()]
    body = [line for line in lines if "{" in line or "/" in line or "ncalls" in line]
    shutil.rmtree(out, ignore_errors=True)
    return f"widen_file in-process (imports excluded): {wall:.2f} s\n" + "\n".join(
        _shorten(line) for line in body[: top + 1])


def _shorten(line: str) -> str:
    for prefix in (str(ROOT) + "/", sys.prefix + "/lib/python3.11/site-packages/"):
        line = line.replace(prefix, "")
    return line


# --- report -------------------------------------------------------------------------------


def gpu_names() -> str:
    """The GPUs ``nvidia-smi`` lists, or why none could be named."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"not named (nvidia-smi: {exc})"
    return "; ".join(line.strip() for line in out.stdout.splitlines() if line.strip())


def machine(workdir: Path, providers: list[str]) -> list[str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError, ValueError):
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = f"{kb / 1024**2:.1f} GiB"
    disk = shutil.disk_usage(workdir)
    fs = "?"
    with contextlib.suppress(OSError, ValueError):
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
        best = max((m for m in mounts if str(workdir.resolve()).startswith(m[1])), key=lambda m: len(m[1]))
        fs = f"{best[2]} ({best[0]} on {best[1]})"
    import numpy
    import onnx
    import onnx_ir
    import onnxruntime

    lines = [
        f"- CPU: {os.cpu_count()} cores ({cpu}); RAM {mem}; shared with other jobs",
        f"- disk (models in `{workdir}`): {fs}, {disk.total / 1e9:.0f} GB, {disk.free / 1e9:.0f} GB free",
        f"- {platform.platform()}; Python {platform.python_version()}; onnx {onnx.__version__}, "
        f"onnx-ir {onnx_ir.__version__}, onnxruntime {onnxruntime.__version__}, numpy {numpy.__version__}",
    ]
    if "cuda" in providers:
        lines.append(f"- GPU: {gpu_names()}; onnxruntime providers {onnxruntime.get_available_providers()}")
    return lines


def cache_note(cold: bool) -> str:
    if cold:
        return ("cold cache: before every measured command, `sync` and "
                "`echo 3 > /proc/sys/vm/drop_caches`, so models, libraries and Python modules "
                "are read from disk")
    return ("warm cache: the models were read while setting up, so every run reads them from "
            "memory and `cp` is a memory-speed copy; `sync` (untimed) before every command. "
            "Run with `--cold` to drop the page cache before each command (needs root)")


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def report(plan: Plan, subjects: list[Subject], argv: list[str], loads: tuple[list[float], list[float]],
           reps: int, cold: bool, profiles: dict[str, str], started: str, workdir: Path,
           providers: list[str]) -> str:
    lines = [
        "Generated by `scripts/bench.py`; re-running it replaces this section only.",
        "",
        "```",
        f"python {shlex.join(['scripts/bench.py', *argv])}",
        "```",
        "",
        f"Run {started}, {reps} repetitions, medians shown. Machine:",
        "",
        *machine(workdir, providers),
        f"- load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in loads[0])}; "
        f"after: {', '.join(f'{x:.2f}' for x in loads[1])}",
        f"- {cache_note(cold)}",
    ]
    if subjects:
        lines += ["", "### Models", "", "| model | on disk | files | widened (small) | widened (large) |",
                  "|---|---|---|---|---|"]
    for s in subjects:
        large = f"`{s.built.large_layer}` → {s.built.large_width}" if s.built.large_layer else "—"
        lines.append(f"| {s.name} | {file_bytes(s.built.path) / MB:.0f} MB | "
                     f"{len(model_files(s.built.path))} file(s) | `{s.built.small_layer}` → "
                     f"{s.built.small_width} (rewrites {s.rewritten_small / MB:.1f} MB) | {large} |")
    notes = [n for s in subjects for n in s.setup_notes]
    if notes:
        lines += ["", "Setup (verified once, not timed against a target):", ""]
        lines += [f"- {n}" for n in notes]
    lines += ["", "### Targets", "",
              "Ratio: onnxgrow over the baseline, of the medians; paired: each repetition's own ratio, "
              "min / median / max (the commands ran back to back). Bound: what the target allows, "
              "from the medians (floor: `python -c \"import onnx_ir\"`).", "",
              "| target | onnxgrow | baseline | ratio | paired | bound | |",
              "|---|---|---|---|---|---|---|"]
    for c in plan.comparisons:
        ratio = c.tool.wall / c.base_wall
        paired = c.paired()
        base = c.base_label or c.base.label
        lines.append(f"| {c.title}: wall | {c.tool.wall:.2f} s | {c.base_wall:.2f} s ({base}) | "
                     f"{ratio:.2f}× | {paired[0]:.2f} / {statistics.median(paired):.2f} / {paired[-1]:.2f} | "
                     f"≤ {c.bound:.2f} s ({c.bound_label}) | {verdict(c.tool.wall <= c.bound)} |")
    for title, m, limit, label in plan.memory_checks:
        lines.append(f"| {title}: peak RSS | {m.rss_text} | | | | ≤ {limit / MB:.0f} MB ({label}) | "
                     f"{verdict(m.rss <= limit)} |")
    diff = next((m for m in plan.info if m.key.endswith(":diff")), None)
    if diff is not None:
        model_size = next(file_bytes(s.built.path) for s in subjects if s.name == "transformer")
        ok = diff.rss < model_size / 4
        lines.append(f"| diff of two ~3 GB models without loading whole weights: peak RSS | "
                     f"{diff.rss / MB:.0f} MB | {model_size / MB:.0f} MB per model | "
                     f"{diff.rss / model_size:.2f}× | | < ¼ of one model | {verdict(ok)} |")
    lines += ["", "### All measurements", "", "| command | wall (median) | min–max | peak RSS (median) |",
              "|---|---|---|---|"]
    for group in plan.measures:
        for m in group:
            walls = [x.wall_s for x in m.samples]
            lines.append(f"| {m.label} | {m.wall:.2f} s | {min(walls):.2f}–{max(walls):.2f} s | "
                         f"{m.rss_text} |")
    for llm, rows, bases in plan.llm:
        base_s = sum(m.wall for m in bases)
        lines += ["", f"### {llm.name}: LLaMA-shaped, {file_bytes(llm.built.path) / MB:.0f} MB "
                      f"({len(model_files(llm.built.path))} files)", "",
                  f"Ratio: the row's wall over the sum of the three baselines above it, measured back to back "
                  f"with it: {' + '.join(f'{m.wall:.2f}' for m in bases)} = {base_s:.2f} s. Peak RSS: `ru_maxrss`; "
                  "for the exports also the sampled peaks of anonymous and file-backed resident memory (MB).", "",
                  "| command | wall (median) | min–max | × (copy + floor + ORT run) | peak RSS (median) |",
                  "|---|---|---|---|---|"]
        for m in (*bases, *rows):
            walls = [x.wall_s for x in m.samples]
            lines.append(f"| {m.label} | {m.wall:.2f} s | {min(walls):.2f}–{max(walls):.2f} s | "
                         f"{m.wall / base_s:.2f}× | {m.rss_text} |")
    if plan.slope:
        floor = next(m for m in plan.info if m.key == "floor")
        lines += ["", "### Graph size: the node-count slope", "",
                  "Plain chains of Gemm → Relu layers (`scale.chain`, 8 features, weights inside the "
                  "`.onnx`); the widening is of one layer in the middle. Above floor: the median minus the "
                  "import floor; per 1k nodes: that divided by the node count (flat when linear).", "",
                  "| nodes | inspect | above floor | per 1k nodes | widen one layer | above floor | per 1k nodes |",
                  "|---|---|---|---|---|---|---|"]
        for nodes, inspect, widen in plan.slope:
            cells = []
            for m in (inspect, widen):
                above = m.wall - floor.wall
                cells += [f"{m.wall:.2f} s", f"{above:.2f} s", f"{above / nodes * 1000:.3f} s"]
            lines.append(f"| {nodes:,} | " + " | ".join(cells) + " |")
    if plan.skipped:
        lines += ["", "Not measured:", ""]
        lines += [f"- {s}" for s in plan.skipped]
    startup = next((m for m in plan.info if m.key == "floor"), None)
    against = [c for c in plan.comparisons if "widen" in c.tool.key and c.base.key != "floor" and not c.extra]
    if startup is not None and against:
        lines += ["", "### Where the time goes", "",
                  f"Every Python ONNX tool starts an interpreter and imports onnx-ir (or onnx): "
                  f"`python -c \"import onnx_ir\"` takes {startup.wall:.2f} s. "
                  "Against each baseline, the widening's own work (its wall time minus that floor) is:", ""]
        for c in against:
            own = c.tool.wall - startup.wall
            lines.append(f"- {c.title}: {own:.2f} s of work vs {c.base.wall:.2f} s of `{c.base_label}` "
                         f"({own / c.base.wall:.2f}×)")
    for name, text in profiles.items():
        lines += ["", f"Profile of the small widening of {name} (cProfile, cumulative time):", "",
                  "```", text, "```"]
    return "\n".join(lines) + "\n"


def write_doc(doc: Path, results: str, section: str = "") -> None:
    """Put ``results`` between the markers of ``section`` in ``doc`` (``<!-- bench.py results:
    [SECTION: ]begin -->`` … ``end -->``), keeping the text around them; without them, append."""
    prefix = f"<!-- bench.py results: {section + ': ' if section else ''}"
    begin, end = f"{prefix}begin -->", f"{prefix}end -->"
    block = f"{begin}\n{results}{end}\n"
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        text = head + block + ("\n" + after if after else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


# --- main ------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every measurement (≥ 3)")
    parser.add_argument("--models", default="cnn,transformer", help="cnn, transformer, or both")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"measurement groups: {', '.join(GROUPS)}")
    parser.add_argument("--providers", default="cpu", help="providers for the verify pair: cpu, cuda")
    parser.add_argument("--layers", type=int, default=54, help="transformer blocks (54 ≈ 3 GB)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/onnxgrow-bench"))
    parser.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md",
                        help="where to write the report ('-' for stdout only)")
    parser.add_argument("--section", default="",
                        help="which results section of --doc to replace (its markers name it; default: the first)")
    parser.add_argument("--cold", action="store_true",
                        help="drop the page cache before every measured command (needs root)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the models even if present")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile of the small widening")
    parser.add_argument("--clean", action="store_true", help="delete --workdir at the end")
    parser.add_argument("--huge", action="store_true",
                        help=f"also a {HUGE_LAYERS}-block transformer (~10 GB of external data; widen, inspect; "
                             "deleted at the end; with its widened copy and the copies, ~50 GB of free disk) "
                             f"unless slope is the only group, and a {HUGE_CHAIN:,}-node chain in slope")
    parser.add_argument("--huge-layers", type=int, default=HUGE_LAYERS, help=argparse.SUPPRESS)
    parser.add_argument("--llms", default=",".join(LLMS),
                        help=f"LLaMA-shaped models of the llm and export groups, from {', '.join(scale.LLAMA_SHAPES)} "
                             f"({', '.join(DELETED_LLMS)}: deleted at the end)")
    args = parser.parse_args(argv)
    only = {g.strip() for g in args.only.split(",") if g.strip()}
    unknown = only - set(GROUPS)
    if unknown:
        parser.error(f"unknown --only group(s): {', '.join(sorted(unknown))}")
    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    load_before = list(os.getloadavg())
    args.workdir.mkdir(parents=True, exist_ok=True)
    compile_package()
    subjects = [prepare_subject(name.strip(), args.workdir, args.layers, args.rebuild)
                for name in args.models.split(",") if name.strip()]
    scratch = args.workdir / "scratch"
    # before the ~10 GB model pushes the others out of the page cache: profiles of warm runs
    profiles = {} if args.no_profile or "widen" not in only else {s.name: profile_widen(s, scratch) for s in subjects}
    if args.huge and only - {"slope"}:
        subjects.append(prepare_subject("huge", args.workdir, args.huge_layers, args.rebuild, verify=False))
    llm_names = [n.strip() for n in args.llms.split(",") if n.strip()] if only & {"llm", "export"} else []
    if unknown_llms := set(llm_names) - set(scale.LLAMA_SHAPES):
        parser.error(f"unknown --llms model(s): {', '.join(sorted(unknown_llms))}")
    llms = [prepare_subject(name, args.workdir, 0, args.rebuild) for name in llm_names]
    keras = None
    if "export" in only:
        keras = Subject("keras", build_or_reuse("keras", args.workdir / "keras", 0, args.rebuild), Path(), None, Path())
    chains = [Subject(f"chain-{n}", build_or_reuse(f"chain-{n}", args.workdir / f"chain-{n}", 0, args.rebuild),
                      Path(), None, Path())
              for n in (*CHAIN_NODES, *([HUGE_CHAIN] if args.huge else []))] if "slope" in only else []
    plan = plan_for(subjects, only, providers, scratch, chains, llms, keras)
    if args.cold:
        try:
            drop_caches()
        except OSError as exc:
            parser.error(f"--cold: cannot drop the page cache ({exc.strerror}); run as root or leave it out")
    run_plan(plan, args.reps, args.cold)
    segment_bounds(plan)
    text = report(plan, subjects, argv, (load_before, list(os.getloadavg())), args.reps, args.cold,
                  profiles, started, args.workdir, providers)
    print(text)
    if str(args.doc) != "-":
        write_doc(args.doc, text, args.section)
        print(f"wrote {args.doc}")
    shutil.rmtree(scratch, ignore_errors=True)
    if args.huge:
        shutil.rmtree(args.workdir / "huge", ignore_errors=True)
    for name in set(llm_names) & set(DELETED_LLMS):
        shutil.rmtree(args.workdir / name, ignore_errors=True)
    if args.clean:
        shutil.rmtree(args.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
