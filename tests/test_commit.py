"""The two-file commit: a model and its external data replace an earlier output safely.

- A widen that replaces an earlier output is killed (SIGKILL, no clean-up) right before
  its k-th file-system step (every ``fsync``, ``rename``/``replace``, ``unlink`` and
  ``rmdir`` of the process), for every k until it completes. After each kill the output
  name holds a model that loads, passes ``onnx.checker`` and verifies against the source:
  the earlier one or the new one, never a mix; each data file it names is its own.
- Two widens to the same ``-o`` at once: both succeed, the last one wins whole, the
  output verifies, and only its own data file is left beside it.
- A later save removes what killed ones left (unreferenced data, abandoned temporary
  folders), and never a data file that another onnxgrow model of the output... (only
  files named after the output's stem are touched).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from conftest import fixture_path
from robust_helpers import assert_checker_passes, listing, model_files

import onnxgrow

ROOT = Path(__file__).resolve().parent.parent

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
    env = dict(os.environ, PYTHONPATH=str(ROOT), KILL_AT=str(kill_at))
    return subprocess.run([sys.executable, "-c", KILL_SCRIPT, *widen_args(src, out, width)], env=env,
                          capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)


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
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for _ in range(3):
        procs = [subprocess.Popen([sys.executable, "-m", "onnxgrow", *widen_args(src, out, width)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
                 for width in (70, 90)]
        for proc in procs:
            _, stderr = proc.communicate(timeout=300)
            assert proc.returncode == 0, stderr
        assert_whole(src, out, {70, 90})
        assert listing(tmp_path) == {p.name for p in model_files(out)}


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
