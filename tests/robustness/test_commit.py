"""The two-file commit: a model and its external data replace an earlier output safely.

- A widen that replaces an earlier output is killed (SIGKILL, no clean-up) right before
  its k-th file-system step (every ``fsync``, ``rename``/``replace``, ``unlink`` and
  ``rmdir`` of the process), for every k until it completes. After each kill the output
  name holds a model that loads, passes ``onnx.checker`` and verifies against the source:
  the earlier one or the new one, never a mix; each data file it names is its own.
- Two widens to the same ``-o`` at once: both succeed, the last one wins whole, the
  output verifies, and only its own data file is left beside it.
- A save's temporary folder is never taken for one a killed save left: another save
  that commits (and cleans up) right after the folder was made, before this save locked
  it, spares it.
- A later save removes what killed ones left (unreferenced data, abandoned temporary
  folders), and never a data file that another onnxgrow model of the output... (only
  files named after the output's stem are touched).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import onnx
import pytest

import onnxgrow
from onnxgrow import atomic
from tests.helpers.paths import REPO, fixture_path
from tests.helpers.robustness import assert_checker_passes, listing, model_files

#: Runs the CLI with every file-system step counted; SIGKILL right before step KILL_AT.
KILL_SCRIPT = """
import os, signal, sys
kill_at = int(os.environ["KILL_AT"])
count = 0
def counted(real):
    def call(*args, **kwargs):
        global count
        count += 1
        if count == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return call
for name in ("fsync", "rename", "replace", "unlink", "rmdir"):
    setattr(os, name, counted(getattr(os, name)))
sys.argv = ["onnxgrow", *sys.argv[1:]]
from onnxgrow.signals import main
main()
"""


def widen_args(src: Path, out: Path, width: int) -> list[str]:
    return ["widen", str(src), "--node", "fc1", "--to", str(width), "-o", str(out), "-q"]


def run_killed(src: Path, out: Path, width: int, kill_at: int) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO), KILL_AT=str(kill_at))
    return subprocess.run([sys.executable, "-c", KILL_SCRIPT, *widen_args(src, out, width)], env=env,
                          capture_output=True, text=True, timeout=300, check=False, cwd=REPO)


def fc1_width(out: Path) -> int:
    proto = onnx.load(str(out), load_external_data=False)
    return next(t.dims[0] for t in proto.graph.initializer if t.name == "fc1.weight")


def assert_whole(src: Path, out: Path, widths: set[int]) -> int:
    """``out`` is a complete model of one of ``widths`` that verifies against ``src``."""
    assert_checker_passes(out)
    width = fc1_width(out)
    assert width in widths
    assert all(p.is_file() for p in model_files(out))
    report = onnxgrow.verify(src, out)
    assert report.passed, report.summary()
    return width


def test_kill_at_every_step_of_a_replacing_widen(tmp_path: Path) -> None:
    src = fixture_path("mnist_cnn_dynamo")
    out = tmp_path / "grown.onnx"
    onnxgrow.widen_file(src, out, {"fc1": 70})
    outcomes: list[tuple[int, int]] = []
    for kill_at in range(1, 200):
        proc = run_killed(src, out, 90, kill_at)
        if proc.returncode == 0:
            break
        assert proc.returncode == -9, (kill_at, proc.returncode, proc.stderr[-2000:])
        outcomes.append((kill_at, assert_whole(src, out, {70, 90})))
        if outcomes[-1][1] == 90:  # the new model is in place: restore the old one for the next step
            onnxgrow.widen_file(src, out, {"fc1": 70})
    else:
        pytest.fail("the widen never completed")
    print("kill steps (step, width left):", outcomes)
    assert len(outcomes) >= 5, outcomes  # fsyncs and renames of the save, at least
    assert {width for _, width in outcomes} == {70, 90}, outcomes  # killed before and after the model's rename
    assert assert_whole(src, out, {90}) == 90
    # the completed save removed what the killed ones left behind
    assert listing(tmp_path) == {p.name for p in model_files(out)}


def test_concurrent_widens_to_one_output(tmp_path: Path) -> None:
    src = fixture_path("mnist_cnn_dynamo")
    out = tmp_path / "grown.onnx"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for _ in range(3):
        procs = [subprocess.Popen([sys.executable, "-m", "onnxgrow", *widen_args(src, out, width)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
                 for width in (70, 90)]
        for proc in procs:
            _, stderr = proc.communicate(timeout=300)
            assert proc.returncode == 0, stderr
        assert_whole(src, out, {70, 90})
        assert listing(tmp_path) == {p.name for p in model_files(out)}


def test_a_new_temporary_folder_is_not_taken_for_an_abandoned_one(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Right after this save made its temporary folder, another save to the same output runs
    in a thread: it commits and cleans up. This save goes on once the other one has ended or
    waits for a lock this save holds (no timer decides): both complete, one output is left.
    (Before the fix the other save's clean-up removed the folder not yet locked: the flaky
    ``grown.onnx: cannot write (No such file or directory)`` of the concurrent widens.)"""
    out = tmp_path / "grown.onnx"
    other_waits_or_ended = threading.Event()
    others: list[threading.Thread] = []
    errors: list[BaseException] = []
    real_mkdtemp, real_flock = tempfile.mkdtemp, fcntl.flock

    def save(content: bytes) -> None:
        with atomic.temporary_folder(out) as tmp:
            (tmp / out.name).write_bytes(content)
            atomic.commit(tmp, [], out, stale=lambda path: False)

    def other_save() -> None:
        try:
            save(b"other")
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            other_waits_or_ended.set()

    def flock(fd: int, operation: int) -> None:
        if others and threading.current_thread() is others[0] and operation == fcntl.LOCK_EX:
            try:
                return real_flock(fd, operation | fcntl.LOCK_NB)
            except BlockingIOError:
                other_waits_or_ended.set()  # it waits for this save: let this save go on
        return real_flock(fd, operation)

    def mkdtemp(*args: Any, **kwargs: Any) -> str:
        path = real_mkdtemp(*args, **kwargs)
        if not others:  # this save's folder: the other save runs now
            others.append(threading.Thread(target=other_save))
            others[0].start()
            other_waits_or_ended.wait()
        return str(path)

    monkeypatch.setattr(fcntl, "flock", flock)
    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)
    save(b"this")
    others[0].join()
    assert errors == []
    assert out.read_bytes() in {b"this", b"other"}
    assert listing(tmp_path) == {out.name}


def test_clean_up_spares_other_models_data(tmp_path: Path) -> None:
    """Only data files named after the output are removed; another model's stay."""
    src = fixture_path("mnist_cnn_dynamo")
    other = tmp_path / "other.onnx"
    onnxgrow.widen_file(src, other, {"fc1": 70})
    out = tmp_path / "grown.onnx"
    onnxgrow.widen_file(src, out, {"fc1": 80})
    onnxgrow.widen_file(src, out, {"fc1": 90})
    assert assert_whole(src, other, {70}) == 70
    assert listing(tmp_path) == {p.name for p in [*model_files(other), *model_files(out)]}


def test_output_whose_name_an_input_uses_is_refused(tmp_path: Path) -> None:
    """An input whose data file looks like one of the output's is never cleaned up: refused."""
    src = tmp_path / "in.onnx"
    onnxgrow.widen_file(fixture_path("mnist_cnn_dynamo"), tmp_path / "grown.onnx", {"fc1": 70})
    (tmp_path / "grown.onnx").rename(src)  # in.onnx now refers to grown.<hex>.onnx.data
    with pytest.raises(onnxgrow.GrowError, match="refusing to overwrite the input"):
        onnxgrow.widen_file(src, tmp_path / "grown.onnx", {"fc1": 80})
