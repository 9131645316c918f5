"""Benchmark onnxgrow on large synthetic models against the physical limit: copying the files.

    python scripts/bench.py [--reps 3] [--models cnn,transformer] [--only widen,verify,...]
                            [--providers cpu[,cuda]] [--workdir /tmp/onnxgrow-bench]
                            [--doc docs/benchmarks.md] [--clean]

Builds (never downloads) two models with external data, see ``tests/scale_helpers.py``:
a VGG-like CNN with a large classifier (~0.5 GB) and a 54-block transformer (~3 GB, over
the 2 GiB protobuf limit). Every measurement is a subprocess; its wall time and peak
RSS come from ``os.wait4`` in a small launcher. Within each repetition the commands
compared with each other run back to back, in an order that alternates between
repetitions, with ``sync`` (untimed) before each so that one command's dirty pages do
not slow the next. Runs are warm-cache (the models sit in the page cache) unless
``--cold`` drops the cache before every command.

Measurements (``--only`` picks groups):

- ``startup``: ``onnxgrow --version``, the interpreter and import cost every command pays.
- ``widen``: ``cp`` of the model files vs ``onnxgrow widen`` of a small layer with
  ``--no-verify``; for the CNN also a large layer (``fc1``) vs ``cp`` of the input and
  of the output files.
- ``verify``: ``onnxgrow verify`` of the model and its widened copy vs a script that
  opens the two in plain onnxruntime sessions (default options) and runs them on the
  same inputs (an ``.npz`` both read). One pair per provider in ``--providers``.
- ``naive``: ``onnx.load`` + ``onnx.save`` (CNN only: protobuf cannot hold the 3 GB
  model) and, for scale, onnx-ir ``load`` + ``save``.
- ``diff``: ``onnxgrow diff`` of the 3 GB transformer and its widened copy.

Prints medians and ratios against the targets of issue 7 and writes them to ``--doc``.
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
sys.path.insert(0, str(ROOT / "tests"))

import scale_helpers  # noqa: E402

PYTHON = sys.executable
ONNXGROW = [PYTHON, "-m", "onnxgrow"]
BASELINES = [PYTHON, str(Path(__file__).resolve().parent / "bench_baselines.py")]
GROUPS = ("startup", "widen", "verify", "naive", "diff")
MB = 1e6


# --- running and measuring ----------------------------------------------------------


@dataclass
class Sample:
    wall_s: float
    peak_rss: int  # bytes


@dataclass
class Measure:
    """One command measured repeatedly."""

    key: str
    label: str
    argv: list[str]
    prepare: Callable[[], None] = lambda: None
    ok_codes: tuple[int, ...] = (0,)
    samples: list[Sample] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return statistics.median(s.wall_s for s in self.samples)

    @property
    def rss(self) -> int:
        return int(statistics.median(s.peak_rss for s in self.samples))


def run_measured(argv: Sequence[str]) -> tuple[Sample, int, str]:
    """Run ``argv`` (cwd: the repository); return its wall time, peak RSS, status, stderr tail."""
    done = scale_helpers.measure(argv, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return Sample(done.wall_s, done.peak_rss), done.returncode, done.stderr


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
    sample, code, tail = run_measured(m.argv)
    if code not in m.ok_codes:
        raise SystemExit(f"{m.label} failed with status {code}:\n  {shlex.join(m.argv)}\n{tail}")
    m.samples.append(sample)
    print(f"  {m.label:<48} {sample.wall_s:7.2f} s  {sample.peak_rss / MB:8.0f} MB", flush=True)


def fresh_dir(path: Path) -> Callable[[], None]:
    def prepare() -> None:
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
    return prepare


def model_files(model: Path) -> list[Path]:
    """The .onnx file and every external data file beside it named after it."""
    return [model, *sorted(model.parent.glob(model.name + ".data*"))]


def file_bytes(model: Path) -> int:
    return sum(p.stat().st_size for p in model_files(model))


# --- the models and their widened copies ----------------------------------------------


@dataclass
class Subject:
    """A benchmark model, its widened copies, and the bytes the small widening rewrote."""

    name: str
    built: scale_helpers.BuiltModel
    small_out: Path
    large_out: Path | None
    inputs_npz: Path
    rewritten_small: int = 0
    setup_notes: list[str] = field(default_factory=list)


def build_or_reuse(name: str, folder: Path, layers: int, rebuild: bool) -> scale_helpers.BuiltModel:
    """Build the model into ``folder``, or reuse the one an earlier run built with the same size."""
    record = folder / "built.json"
    size = {"layers": layers} if name == "transformer" else {}
    if not rebuild and record.exists():
        saved = json.loads(record.read_text())
        if saved.pop("size") == size and Path(saved["path"]).exists():
            return scale_helpers.BuiltModel(**{**saved, "path": Path(saved["path"])})
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    path = folder / f"{name}.onnx"
    start = time.perf_counter()
    built = scale_helpers.vgg_like(path) if name == "cnn" else scale_helpers.transformer(path, **size)
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


def prepare_subject(name: str, workdir: Path, layers: int, rebuild: bool) -> Subject:
    """Build the model (unless an earlier run did) and widen it, with verification, once."""
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
        sample, code, tail = run_measured(argv)
        if code != 0:
            raise SystemExit(f"setup widen failed ({code}): {shlex.join(argv)}\n{tail}")
        note = (f"{name}: `onnxgrow widen --node {layer} --to {width}` with verification: "
                f"{sample.wall_s:.1f} s, peak RSS {sample.peak_rss / MB:.0f} MB")
        print(f"setup: {note}")
        subject.setup_notes.append(note)
    subject.rewritten_small = rewritten_bytes(path, subject.small_out)
    if not subject.inputs_npz.exists():
        write_inputs(path, subject.inputs_npz)
    return subject


# --- the plan ---------------------------------------------------------------------------


@dataclass
class Comparison:
    """A target: ``tool`` against ``limit × base``."""

    title: str
    tool: Measure
    base: Measure
    limit: float
    base_label: str = ""


@dataclass
class Plan:
    measures: list[list[Measure]] = field(default_factory=list)  # pairs run back to back
    comparisons: list[Comparison] = field(default_factory=list)
    memory_checks: list[tuple[str, Measure, int]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    info: list[Measure] = field(default_factory=list)


def diff_available() -> bool:
    return run_measured([*ONNXGROW, "diff", "--help"])[1] == 0


def widen_measure(model: str, size: str, src: Path, layer: str, width: int, out: Path) -> Measure:
    """``onnxgrow widen LAYER --to WIDTH --no-verify`` of ``src`` into a fresh ``out`` folder."""
    return Measure(f"{model}:widen-{size}", f"{model}: widen {layer} --no-verify",
                   [*ONNXGROW, "widen", str(src), "--node", layer, "--to", str(width), "--no-verify",
                    "-o", str(out / src.name)], fresh_dir(out))


def plan_for(subjects: list[Subject], only: set[str], providers: list[str], scratch: Path) -> Plan:
    plan = Plan()
    if "startup" in only:
        startup = Measure("startup", "onnxgrow --version (start-up)", [*ONNXGROW, "--version"])
        plan.measures.append([startup])
        plan.info.append(startup)
    for s in subjects:
        src = s.built.path
        out = scratch / s.name
        if "widen" in only:
            cp = Measure(f"{s.name}:cp", f"{s.name}: cp model files",
                         ["cp", *map(str, model_files(src)), str(out / "cp")], fresh_dir(out / "cp"))
            small = widen_measure(s.name, "small", src, s.built.small_layer, s.built.small_width, out / "w")
            plan.measures.append([cp, small])
            plan.comparisons.append(Comparison(f"{s.name}: widen of a small layer ({s.built.small_layer})",
                                               small, cp, 1.3, "cp of the model"))
            plan.memory_checks.append((f"{s.name}: widen of a small layer", small, s.rewritten_small))
            if s.built.large_layer and s.large_out is not None:
                both = " ".join(shlex.quote(str(p)) for p in model_files(src))
                grown = " ".join(shlex.quote(str(p)) for p in model_files(s.large_out))
                cp2 = Measure(f"{s.name}:cp-in-out", f"{s.name}: cp input + cp output files",
                              ["sh", "-c", f"cp {both} {out / 'cp'} && cp {grown} {out / 'cp2'}"],
                              lambda o=out: (fresh_dir(o / "cp")(), fresh_dir(o / "cp2")()))
                large = widen_measure(s.name, "large", src, s.built.large_layer, s.built.large_width, out / "w")
                plan.measures.append([cp2, large])
                plan.comparisons.append(Comparison(f"{s.name}: widen of a large layer ({s.built.large_layer})",
                                                   large, cp2, 1.5, "cp of input + cp of output"))
        if "verify" in only:
            for provider in providers:
                tool = Measure(f"{s.name}:verify-{provider}", f"{s.name}: onnxgrow verify ({provider})",
                               [*ONNXGROW, "verify", str(src), str(s.small_out), "--inputs",
                                str(s.inputs_npz), "--providers", provider])
                base = Measure(f"{s.name}:plain-{provider}", f"{s.name}: two plain ORT sessions ({provider})",
                               [*BASELINES, "plain-sessions", str(src), str(s.small_out),
                                str(s.inputs_npz), provider])
                plan.measures.append([base, tool])
                plan.comparisons.append(Comparison(f"{s.name}: verify ({provider})", tool, base, 1.2,
                                                   "two plain sessions"))
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
    return plan


def run_plan(plan: Plan, reps: int, cold: bool) -> None:
    for rep in range(reps):
        print(f"repetition {rep + 1}/{reps} (load average {os.getloadavg()[0]:.2f})", flush=True)
        for group in plan.measures:
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
        "",
        "### Models",
        "",
        "| model | on disk | files | widened (small) | widened (large) |",
        "|---|---|---|---|---|",
    ]
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
              "Ratio: of the medians (the verdict); paired: each repetition's own ratio, "
              "min / median / max (the two commands ran back to back).", "",
              "| target | onnxgrow | baseline | ratio | paired | limit | |",
              "|---|---|---|---|---|---|---|"]
    for c in plan.comparisons:
        ratio = c.tool.wall / c.base.wall
        paired = sorted(t.wall_s / b.wall_s for t, b in zip(c.tool.samples, c.base.samples))
        lines.append(f"| {c.title}: wall | {c.tool.wall:.2f} s | {c.base.wall:.2f} s ({c.base_label}) | "
                     f"{ratio:.2f}× | {paired[0]:.2f} / {statistics.median(paired):.2f} / {paired[-1]:.2f} | "
                     f"≤ {c.limit}× | {verdict(ratio <= c.limit)} |")
    for title, m, rewritten in plan.memory_checks:
        limit = 150 * MB + rewritten
        lines.append(f"| {title}: peak RSS | {m.rss / MB:.0f} MB | 150 MB + {rewritten / MB:.0f} MB rewritten | "
                     f"{m.rss / limit:.2f}× | | ≤ {limit / MB:.0f} MB | {verdict(m.rss <= limit)} |")
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
                         f"{m.rss / MB:.0f} MB |")
    if plan.skipped:
        lines += ["", "Not measured:", ""]
        lines += [f"- {s}" for s in plan.skipped]
    startup = next((m for m in plan.info if m.key == "startup"), None)
    if startup is not None:
        lines += ["", "### Where the time goes", "",
                  f"Every `onnxgrow` command starts a Python interpreter and imports numpy, onnx and "
                  f"onnx-ir: `onnxgrow --version` takes {startup.wall:.2f} s and {startup.rss / MB:.0f} MB. "
                  "Against each `cp`, the widening's own work (its wall time minus that start-up) is:", ""]
        for c in plan.comparisons:
            if "widen" in c.tool.key:
                own = c.tool.wall - startup.wall
                lines.append(f"- {c.title}: {own:.2f} s of work vs {c.base.wall:.2f} s of `{c.base_label}` "
                             f"({own / c.base.wall:.2f}×)")
    for name, text in profiles.items():
        lines += ["", f"Profile of the small widening of {name} (cProfile, cumulative time):", "",
                  "```", text, "```"]
    return "\n".join(lines) + "\n"


BEGIN, END = "<!-- bench.py results: begin -->", "<!-- bench.py results: end -->"


def write_doc(doc: Path, results: str) -> None:
    """Put ``results`` between the markers of ``doc``, keeping the text around them."""
    block = f"{BEGIN}\n{results}{END}\n"
    text = doc.read_text() if doc.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        after = rest.split(END, 1)[1].lstrip("\n")
        text = head + block + ("\n" + after if after else "")
    else:
        text = "# Benchmarks\n\n" + block
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
    parser.add_argument("--cold", action="store_true",
                        help="drop the page cache before every measured command (needs root)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the models even if present")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile of the small widening")
    parser.add_argument("--clean", action="store_true", help="delete --workdir at the end")
    args = parser.parse_args(argv)
    only = {g.strip() for g in args.only.split(",") if g.strip()}
    unknown = only - set(GROUPS)
    if unknown:
        parser.error(f"unknown --only group(s): {', '.join(sorted(unknown))}")
    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    load_before = list(os.getloadavg())
    subjects = [prepare_subject(name.strip(), args.workdir, args.layers, args.rebuild)
                for name in args.models.split(",") if name.strip()]
    scratch = args.workdir / "scratch"
    plan = plan_for(subjects, only, providers, scratch)
    if args.cold:
        try:
            drop_caches()
        except OSError as exc:
            parser.error(f"--cold: cannot drop the page cache ({exc.strerror}); run as root or leave it out")
    run_plan(plan, args.reps, args.cold)
    profiles = {} if args.no_profile or "widen" not in only else {
        s.name: profile_widen(s, scratch) for s in subjects}
    text = report(plan, subjects, argv, (load_before, list(os.getloadavg())), args.reps, args.cold,
                  profiles, started, args.workdir, providers)
    print(text)
    if str(args.doc) != "-":
        write_doc(args.doc, text)
        print(f"wrote {args.doc}")
    shutil.rmtree(scratch, ignore_errors=True)
    if args.clean:
        shutil.rmtree(args.workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
