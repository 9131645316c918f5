"""Grow a model larger than a memory limit, with its check, inside a cgroup with that limit (issue 26).

    python scripts/scale_under_limit.py [--model llama-10gb] [--limit 2G] [--workdir /tmp/onnxgrow-limit]
                                        [--keep] [--whole-too SECONDS]

Builds the LLaMA-shaped model (``tests/helpers/scale.py``, ``scale.LLAMA_SHAPES``; never
downloads), makes a cgroup v1 memory group below this process's own
(``/proc/self/cgroup``) with ``memory.limit_in_bytes`` (and ``memory.memsw.limit_in_bytes``,
so that nothing swaps) set to ``--limit``, drops the models' files from the page cache
(so that every page the command reads counts against the group's limit), and runs in it ``onnxgrow widen`` of the middle
block's FFN with its check and the default ``--max-memory`` (half of what the group leaves:
the check must find the limit itself). Reports the command, its wall time, peak RSS
(``ru_maxrss`` of the command), the group's peak usage (``memory.max_usage_in_bytes``: page
cache included) and OOM kills, and the verdict. With ``--whole-too``, then runs ``onnxgrow
verify`` of the model and its grown copy forced whole (``--max-memory`` far above the model)
in the same group, for at most that many seconds. Deletes the models and the group at the
end (the models unless ``--keep``). Needs root and a cgroup v1 memory hierarchy.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import scale  # noqa: E402

MEMORY = Path("/sys/fs/cgroup/memory")
ONNXGROW = [sys.executable, "-m", "onnxgrow"]


def own_group() -> Path:
    """This process's cgroup v1 memory group (its folder)."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return MEMORY / path.strip("/")
    raise SystemExit("no cgroup v1 memory hierarchy in /proc/self/cgroup")


def make_group(limit: int) -> Path:
    group = own_group() / f"onnxgrow-limit-{os.getpid()}"
    group.mkdir()
    (group / "memory.limit_in_bytes").write_text(str(limit))
    if (group / "memory.memsw.limit_in_bytes").exists():
        (group / "memory.memsw.limit_in_bytes").write_text(str(limit))
    return group


def run_in(group: Path, argv: list[str], log: Path, timeout: float | None = None) -> dict[str, object]:
    """Run ``argv`` in ``group``; its wall time, peak RSS, status and the group's peak usage."""
    (group / "memory.max_usage_in_bytes").write_text("0")
    wrapped = ["sh", "-c", f'echo $$ > {shlex.quote(str(group / "cgroup.procs"))} && exec "$@"', "sh", *argv]
    start = time.perf_counter()
    with log.open("wb") as out:
        child = subprocess.Popen(wrapped, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=out,
                                 stderr=subprocess.STDOUT)
        timed_out = False
        deadline = None if timeout is None else start + timeout
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if deadline is not None and time.perf_counter() > deadline:
                child.kill()
                timed_out = True
                pid, status, usage = os.wait4(child.pid, 0)
                break
            time.sleep(0.05)
    wall = time.perf_counter() - start
    oom = [line for line in (group / "memory.oom_control").read_text().splitlines() if line.startswith("oom_kill ")]
    return {"argv": argv, "wall_s": wall, "peak_rss": usage.ru_maxrss * 1024,
            "status": os.waitstatus_to_exitcode(status), "timed_out": timed_out,
            "group_peak": int((group / "memory.max_usage_in_bytes").read_text()),
            "failcnt": int((group / "memory.failcnt").read_text()),
            "oom_kills": int(oom[0].split()[1]) if oom else None,
            "tail": log.read_text(errors="replace")[-1500:]}


def evict(folder: Path) -> None:
    """Write the models' files back and drop them from the page cache
    (``POSIX_FADV_DONTNEED``): pages already cached were charged to the group that read or
    wrote them (the builder's), and a process in the limited group would map them without
    their counting against its limit."""
    os.sync()
    for path in folder.rglob("*.onnx*"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def parse_size(text: str) -> int:
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def show(name: str, result: dict[str, object]) -> None:
    print(f"\n== {name}\n$ {shlex.join(map(str, result['argv']))}")  # type: ignore[call-overload]
    print(f"status {result['status']}{' (timed out)' if result['timed_out'] else ''}; wall {result['wall_s']:.1f} s; "
          f"peak RSS {result['peak_rss'] / 1e6:.0f} MB; the group's peak usage (page cache included) "
          f"{result['group_peak'] / 1e6:.0f} MB; limit hits {result['failcnt']}; OOM kills {result['oom_kills']}")
    print(result["tail"])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="llama-10gb", choices=sorted(scale.LLAMA_SHAPES))
    parser.add_argument("--limit", default="2G", help="the group's memory limit (e.g. 2G)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/onnxgrow-limit"))
    parser.add_argument("--keep", action="store_true", help="keep the models")
    parser.add_argument("--whole-too", type=float, default=0.0, metavar="SECONDS",
                        help="also run the check forced whole in the group, for at most SECONDS")
    args = parser.parse_args(argv)
    limit = parse_size(args.limit)
    folder = args.workdir / args.model
    shape = scale.LLAMA_SHAPES[args.model]
    source = folder / f"{args.model}.onnx"
    if not source.exists():
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        scale.llama(source, **shape)  # type: ignore[arg-type]
        print(f"built {source} in {time.perf_counter() - start:.1f} s")
    data = sum(p.stat().st_size for p in folder.glob(f"{args.model}.onnx*"))
    print(f"model: {data / 1e9:.2f} GB on disk; limit {limit / 2**30:.2f} GiB")
    layers, ffn = int(shape["layers"]), int(shape["ffn"])  # type: ignore[call-overload]
    grown = folder / "grown" / f"{args.model}.onnx"
    shutil.rmtree(grown.parent, ignore_errors=True)
    grown.parent.mkdir()
    group = make_group(limit)
    try:
        evict(folder)
        widen = run_in(group, [*ONNXGROW, "widen", str(source), "--node", f"model.layers.{layers // 2}.mlp.up_proj",
                               "--to", str(ffn + ffn // 8), "-q", "-o", str(grown)], folder / "widen.log")
        show("widen one FFN, with the check (default --max-memory)", widen)
        if args.whole_too and widen["status"] == 0:
            evict(folder)
            whole = run_in(group, [*ONNXGROW, "verify", str(source), str(grown), "--max-memory", "1T"],
                           folder / "whole.log", timeout=args.whole_too)
            show(f"the same check forced whole (--max-memory 1T), at most {args.whole_too:g} s", whole)
    finally:
        for _ in range(50):
            try:
                group.rmdir()
                break
            except OSError:
                time.sleep(0.1)
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return 0 if widen["status"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
