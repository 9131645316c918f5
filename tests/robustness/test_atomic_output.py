"""Atomic output: inputs are never modified, a failed or interrupted save leaves nothing.

- Every command (the table :data:`COMMANDS`; add a command there) leaves its input model
  and external data byte-identical, and writes nothing but its output.
- A save that fails half-way (disk full after part of the data, an exception, Ctrl-C,
  SIGTERM from a cancelled CI job) leaves no output and no temporary file; an earlier
  output of the same name is kept intact when the final rename fails.
- A folder output (:func:`onnxgrow.atomic.atomic_folder`) appears whole, replaces an
  earlier folder of its name whole (swapped in one step, or by two renames where the
  platform cannot swap), and a failure or Ctrl-C inside it, or a failed rename, leaves
  the earlier folder as it was and nothing else.
- Every written file gets the permissions of a new file under the umask (``0644`` under
  ``022``), whichever library wrote it.
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import onnx_ir as ir
import pytest

import onnxgrow
from onnxgrow import atomic, model_io
from tests.helpers.optional import command_needs
from tests.helpers.paths import FIXTURES, REFERENCE_MODELS, REPO
from tests.helpers.robustness import (
    assert_checker_passes,
    assert_clean,
    hashes,
    listing,
    model_files,
    run_cli,
    untouched,
)

#: Fixture stem → (layer to grow, new width).
LAYERS = {"mlp_legacy": ("layer_1", 7), "mlp_dynamo": ("layer_2", 9),
          "mnist_cnn_legacy": ("fc1", 70), "mnist_cnn_dynamo": ("fc1", 70)}

#: command → CLI arguments for (model, output, layer, width); output None: writes nothing.
COMMANDS: dict[str, Callable[[Path, Path, str, int], list[object]]] = {
    "widen": lambda m, out, layer, width: ["widen", m, "--node", layer, "--to", width, "-o", out],
    "deepen": lambda m, out, layer, width: ["deepen", m, "--after", layer, "-o", out],
    "deepen --width": lambda m, out, layer, width: ["deepen", m, "--after", layer, "--width", width, "-o", out],
    "inspect": lambda m, out, layer, width: ["inspect", m],
    "inspect --json": lambda m, out, layer, width: ["inspect", m, "--json", "-"],
    "verify": lambda m, out, layer, width: ["verify", m, m, "--samples", 2],
    "diff": lambda m, out, layer, width: ["diff", m, m, "--numeric"],
    "export --to state-dict": lambda m, out, layer, width: ["export", m, "--to", "state-dict", "-o",
                                                           out.with_suffix(".safetensors")],
    "export --to torch": lambda m, out, layer, width: ["export", m, "--to", "torch", "-o", out.with_suffix(".pt")],
    "export --to keras": lambda m, out, layer, width: ["export", m, "--to", "keras", "-o", out.with_suffix(".keras")],
}
#: command → the files it writes for ``-o grown.onnx`` (ONNX outputs pass the checker and
#: write the data files they reference, ``grown.<8 hex>.onnx.data``, and nothing else).
WRITES = {"widen": {"grown.onnx"}, "deepen": {"grown.onnx"}, "deepen --width": {"grown.onnx"},
          "export --to state-dict": {"grown.safetensors"}, "export --to torch": {"grown.pt"},
          "export --to keras": {"grown.keras"}}
ONNX_WRITERS = {"widen", "deepen", "deepen --width"}


def copy_fixture(stem: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for src in FIXTURES.glob(f"{stem}.onnx*"):
        (folder / src.name).write_bytes(src.read_bytes())
    return folder / f"{stem}.onnx"


@pytest.mark.parametrize("command", [pytest.param(c, marks=command_needs(c)) for c in sorted(COMMANDS)])
@pytest.mark.parametrize("stem", REFERENCE_MODELS)
def test_inputs_are_byte_identical_after_every_command(tmp_path: Path, stem: str, command: str) -> None:
    src = copy_fixture(stem, tmp_path / "in")
    out_folder = tmp_path / "out"
    out_folder.mkdir()
    out = out_folder / "grown.onnx"
    layer, width = LAYERS[stem]
    with untouched(src.parent):
        result = run_cli(*COMMANDS[command](src, out, layer, width))
    assert_clean(result, (0,))
    written = listing(out_folder)
    if command in ONNX_WRITERS:
        assert written == {p.name for p in model_files(out)}, written
    elif command in WRITES:
        assert written and written <= WRITES[command], written
    else:
        assert written == set()
    if command in ONNX_WRITERS:
        assert_checker_passes(out)


@pytest.mark.parametrize("mask", [0o022, 0o002], ids=["umask 022", "umask 002"])
@pytest.mark.parametrize("command", [pytest.param(c, marks=command_needs(c))
                                     for c in ("widen", "export --to state-dict", "export --to torch")])
def test_outputs_get_the_permissions_the_umask_gives(tmp_path: Path, command: str, mask: int) -> None:
    """safetensors creates its file 0600 and the temporary folder is 0700: the outputs are
    0666 less the umask all the same (a widen's model and external data file alike)."""
    src = copy_fixture("mnist_cnn_dynamo", tmp_path / "in")
    out_folder = tmp_path / "out"
    out_folder.mkdir()
    previous = os.umask(mask)
    try:
        result = run_cli(*COMMANDS[command](src, out_folder / "grown.onnx", "fc1", 70))
    finally:
        os.umask(previous)
    assert_clean(result, (0,))
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out_folder.iterdir()}
    assert modes and set(modes.values()) == {0o666 & ~mask}, {name: oct(m) for name, m in modes.items()}


def test_default_output_beside_the_input(tmp_path: Path) -> None:
    """Without -o the output goes beside the input; the input files themselves stay identical."""
    src = copy_fixture("mnist_cnn_dynamo", tmp_path)
    before = hashes(model_files(src))
    assert_clean(run_cli("widen", src, "--node", "conv1", "--to", 80), (0,))
    assert hashes(model_files(src)) == before
    out = tmp_path / "mnist_cnn_dynamo.grown.onnx"
    assert listing(tmp_path) == {src.name, src.name + ".data", *(p.name for p in model_files(out))}
    assert len(model_files(out)) == 2


# ----- failures during the save -----------------------------------------------------------
def partial_save(failure: BaseException) -> Callable[..., None]:
    """An ``ir.save`` that writes the model and data, cuts the data in half, then fails."""
    real_save = ir.save

    def save(model: ir.Model, path: str | os.PathLike[str], **kwargs: object) -> None:
        real_save(model, path, **kwargs)
        data = Path(path).with_name(Path(path).name + ".data")
        written = data if data.exists() else Path(path)
        written.write_bytes(written.read_bytes()[: written.stat().st_size // 2])
        raise failure

    return save


FAILURES = {
    "disk full": (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), 2, "No space left on device"),
    "Ctrl-C": (KeyboardInterrupt(), 130, "interrupted; nothing written"),
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
@pytest.mark.parametrize("command", sorted(ONNX_WRITERS))
@pytest.mark.parametrize("stem", ["mlp_legacy", "mnist_cnn_dynamo"])
def test_failed_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stem: str,
                                    command: str, failure: str) -> None:
    exc, code, message = FAILURES[failure]
    src = copy_fixture(stem, tmp_path)
    out = tmp_path / "grown.onnx"
    monkeypatch.setattr(model_io.ir, "save", partial_save(exc))
    layer, width = LAYERS[stem]
    with untouched(tmp_path):
        result = run_cli(*COMMANDS[command](src, out, layer, width))
    assert result.exception is None and result.code == code, (result.code, result.stderr, result.exception)
    assert message in result.stderr and "Traceback" not in result.stderr


def test_any_exception_during_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = copy_fixture("mnist_cnn_dynamo", tmp_path)
    monkeypatch.setattr(model_io.ir, "save", partial_save(RuntimeError("serializer bug")))
    with untouched(tmp_path), pytest.raises(RuntimeError, match="serializer bug"):
        onnxgrow.widen_file(src, tmp_path / "grown.onnx", {"fc1": 70})


def test_failed_final_rename_restores_the_earlier_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The data file is in place, then renaming the model fails: the earlier output comes back whole."""
    src = copy_fixture("mnist_cnn_dynamo", tmp_path)
    out = tmp_path / "grown.onnx"
    assert_clean(run_cli("widen", src, "--node", "fc1", "--to", 70, "-o", out), (0,))
    real_replace = os.replace

    def replace(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> None:
        if Path(b) == out and Path(a).name == out.name:  # the new model, not the restore of the old one
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_replace(a, b)

    monkeypatch.setattr(model_io.os, "replace", replace)
    with untouched(tmp_path):
        result = run_cli("widen", src, "--node", "fc1", "--to", 90, "-o", out)
    assert_clean(result, (2,))
    assert "cannot write" in result.stderr
    monkeypatch.undo()
    assert_checker_passes(out)
    assert onnxgrow.load_model(out).graph.initializers["fc1.weight"].const_value.shape[0] == 70


@pytest.mark.torch
@pytest.mark.parametrize("fmt", ["state-dict", "torch"])
def test_export_failed_rename_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    pytest.importorskip("torch")  # both write .pt files
    src = copy_fixture("mnist_cnn_dynamo", tmp_path)
    real_replace = os.replace

    def replace(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> None:
        if Path(b).parent == tmp_path:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_replace(a, b)

    monkeypatch.setattr(model_io.os, "replace", replace)
    with untouched(tmp_path):
        result = run_cli("export", src, "--to", fmt, "-o", tmp_path / "weights.pt")
    assert_clean(result, (2,))
    assert "No space left on device" in result.stderr


def test_failed_check_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A grown model that onnxruntime finds different (simulated): exit 1, nothing written."""
    from onnxgrow import pipeline

    src = copy_fixture("mlp_dynamo", tmp_path)
    real_verify = pipeline.verify

    def failing_verify(*args: object, **kwargs: object) -> onnxgrow.VerifyReport:
        report = real_verify(*args, **kwargs)
        report.passed = False
        return report

    monkeypatch.setattr(pipeline, "verify", failing_verify)
    with untouched(tmp_path):
        result = run_cli("widen", src, "--node", "layer_2", "--to", 9, "-o", tmp_path / "grown.onnx")
    assert_clean(result, (1,))
    assert "nothing written" in result.stderr


@pytest.mark.parametrize("output_kind", ["folder in the way of the model", "output folder is a file"])
def test_unwritable_output_is_one_line(tmp_path: Path, output_kind: str) -> None:
    src = copy_fixture("mnist_cnn_dynamo", tmp_path / "in")
    if output_kind == "folder in the way of the model":
        out = tmp_path / "grown.onnx"
        out.mkdir()
    else:
        (tmp_path / "file").write_text("not a folder")
        out = tmp_path / "file" / "grown.onnx"
    with untouched(tmp_path):
        result = run_cli("widen", src, "--node", "fc1", "--to", 70, "-o", out)
    assert_clean(result, (2,))


SIGTERM_SCRIPT = """
import os, signal, sys, time
from pathlib import Path
import onnx_ir as ir
from onnxgrow import model_io
from onnxgrow.cli import main
real_save = ir.save
def save(model, path, **kwargs):
    real_save(model, path, **kwargs)
    os.kill(os.getpid(), signal.SIGTERM)  # the CI job is cancelled while the data is on disk
    time.sleep(30)
model_io.ir.save = save
sys.argv = ["onnxgrow", *sys.argv[1:]]
main()
"""


def test_sigterm_during_save_leaves_nothing(tmp_path: Path) -> None:
    src = copy_fixture("mnist_cnn_dynamo", tmp_path)
    with untouched(tmp_path):
        proc = subprocess.run([sys.executable, "-c", SIGTERM_SCRIPT, "widen", str(src), "--node", "fc1",
                               "--to", "70", "-o", str(tmp_path / "grown.onnx")],
                              capture_output=True, text=True, timeout=120, check=False,
                              cwd=REPO)
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip() == "terminated; nothing written"


# ----- folder outputs --------------------------------------------------------------------------
def tree(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder``: its relative path → its text ("/" for a folder)."""
    return {str(p.relative_to(folder)): "/" if p.is_dir() else p.read_text() for p in sorted(folder.rglob("*"))}


def write_folder(out: Path, files: dict[str, str]) -> None:
    with atomic.atomic_folder(out) as folder:
        for name, text in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)


@pytest.fixture(params=["swapped", "two renames"])
def swap(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Replacing a folder by Linux's atomic swap, or as where the platform has none."""
    if request.param == "two renames":
        monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    return str(request.param)


def test_folder_output_appears_whole(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        write_folder(tmp_path / "hf", {"config.json": "{}", "weights/model.safetensors": "w"})
    finally:
        os.umask(previous)
    assert listing(tmp_path) == {"hf"}
    assert tree(tmp_path / "hf") == {"config.json": "{}", "weights": "/", "weights/model.safetensors": "w"}
    modes = {stat.S_IMODE(p.stat().st_mode) for p in [tmp_path / "hf", *(tmp_path / "hf").rglob("*")]}
    assert modes == {0o755, 0o644}


def test_folder_output_replaces_an_earlier_folder_whole(tmp_path: Path, swap: str) -> None:
    write_folder(tmp_path / "hf", {"old.bin": "old", "sub/old.txt": "old"})
    write_folder(tmp_path / "hf", {"new.bin": "new"})
    assert listing(tmp_path) == {"hf"}
    assert tree(tmp_path / "hf") == {"new.bin": "new"}


FOLDER_FAILURES = {"disk full": OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "Ctrl-C": KeyboardInterrupt(),
                   "a bug": RuntimeError("writer bug")}


@pytest.mark.parametrize("earlier", [False, True], ids=["new folder", "replacing one"])
@pytest.mark.parametrize("failure", sorted(FOLDER_FAILURES))
def test_failure_inside_a_folder_output_leaves_the_earlier_one(tmp_path: Path, failure: str, earlier: bool) -> None:
    out = tmp_path / "hf"
    if earlier:
        write_folder(out, {"old.bin": "old"})
    before = tree(tmp_path)
    expected: type[BaseException] = onnxgrow.GrowError if failure == "disk full" else type(FOLDER_FAILURES[failure])
    with pytest.raises(expected) as raised, atomic.atomic_folder(out) as folder:
        (folder / "new.bin").write_text("half")
        raise FOLDER_FAILURES[failure]
    if failure == "disk full":
        assert str(raised.value) == f"{out}: cannot write (No space left on device); nothing written"
    assert tree(tmp_path) == before
    assert listing(tmp_path) == ({"hf"} if earlier else set())


def test_failed_rename_of_a_folder_output_puts_the_earlier_one_back(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the swap: the earlier folder is renamed aside, the new one's rename fails, the
    earlier one comes back."""
    out = tmp_path / "hf"
    write_folder(out, {"old.bin": "old"})
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    real_rename = os.rename

    def rename(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> None:
        if Path(b) == out and Path(a).name == out.name:  # the new folder, not the earlier one coming back
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_rename(a, b)

    monkeypatch.setattr(atomic.os, "rename", rename)
    with pytest.raises(onnxgrow.GrowError, match="cannot write"):
        write_folder(out, {"new.bin": "new"})
    monkeypatch.undo()
    assert listing(tmp_path) == {"hf"}
    assert tree(out) == {"old.bin": "old"}


@pytest.mark.parametrize(("where", "message"), [("a file", "is a file"),
                                                ("in a missing folder", "the output folder does not exist"),
                                                ("..", "not as . or ..")])
def test_folder_output_refused_before_anything_is_written(tmp_path: Path, where: str, message: str) -> None:
    (tmp_path / "hf").write_text("a file")
    (tmp_path / "sub").mkdir()
    out = {"a file": tmp_path / "hf", "in a missing folder": tmp_path / "missing" / "hf",
           "..": tmp_path / "sub" / ".."}[where]
    with untouched(tmp_path), pytest.raises(onnxgrow.GrowError, match=message), atomic.atomic_folder(out):
        pytest.fail("the block ran")


# ----- a command's reports: checked before the work, written together --------------------------
REPORTS = {
    "diff --json --markdown": lambda m, a, b: ["diff", m, m, "--numeric", "--json", a, "--markdown", b],
    "inspect --json": lambda m, a, b: ["inspect", m, "--json", a],
    "verify --json": lambda m, a, b: ["verify", m, m, "-q", "--json", a],
}


@pytest.mark.parametrize("command", list(REPORTS))
def test_a_report_path_is_checked_before_the_work(tmp_path: Path, command: str) -> None:
    """A report into a missing folder is refused before any model is read (a missing model
    would be the first error otherwise)."""
    result = run_cli(*REPORTS[command](tmp_path / "missing.onnx", tmp_path / "no" / "r.json", tmp_path / "r.md"))
    assert_clean(result, (2,))
    assert "output folder does not exist" in result.stderr, result.stderr
    assert listing(tmp_path) == set()


@pytest.mark.parametrize("command", list(REPORTS))
def test_a_report_never_replaces_the_input_model(tmp_path: Path, command: str) -> None:
    src = copy_fixture("mnist_cnn_dynamo", tmp_path)
    for target in (src, src.with_name(src.name + ".data")):
        with untouched(tmp_path):
            result = run_cli(*REPORTS[command](src, target, tmp_path / "r.md"))
        assert_clean(result, (2,))
        assert "refusing to overwrite the input" in result.stderr, result.stderr


def test_two_reports_to_one_file_are_refused(tmp_path: Path) -> None:
    src = copy_fixture("mlp_legacy", tmp_path)
    with untouched(tmp_path):
        result = run_cli(*REPORTS["diff --json --markdown"](src, tmp_path / "r", tmp_path / "." / "r"))
    assert_clean(result, (2,))
    assert "two reports name the same file" in result.stderr


def test_diff_reports_are_written_together_or_not_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Renaming the second report fails: the first one is undone, and an earlier file of its
    name comes back as it was."""
    src = copy_fixture("mlp_legacy", tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "d.json").write_text("earlier")
    real_replace = os.replace

    def replace(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> None:
        if Path(b) == out / "d.md":
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_replace(a, b)

    monkeypatch.setattr(atomic.os, "replace", replace)
    result = run_cli(*REPORTS["diff --json --markdown"](src, out / "d.json", out / "d.md"))
    assert_clean(result, (2,))
    assert "cannot write" in result.stderr and "Input/output error" in result.stderr
    assert listing(out) == {"d.json"} and (out / "d.json").read_text() == "earlier"
    monkeypatch.undo()
    result = run_cli(*REPORTS["diff --json --markdown"](src, out / "d.json", out / "d.md"))
    assert_clean(result, (0,))
    assert listing(out) == {"d.json", "d.md"} and (out / "d.json").read_text().startswith("{")
