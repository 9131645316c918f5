"""The adversarial campaign, kept: every command against every hostile model.

Cases (``tests/helpers/hostile_models.py``): external data reached by ``../``, an absolute path,
a data file or folder symlinked outside, a hard link; the Hugging Face hub cache layout
(supported) and one whose data links outside it; hostile node/tensor/value names (ESC
sequences, ``\\r``, ``\\n``, ``/``, ``..``, NUL, 5000 characters); NaN/Inf weights; a full
disk (a small tmpfs, when running as root). For each case and command:

- no traceback, the documented exit status (refusals: one ``error:`` line naming why);
- nothing read from ``secret/`` (the files outside the model's folder), nothing written
  outside the output folder, the system temp folder or the libraries' caches under HOME:
  every open, rename, unlink and mkdir is recorded, by wrapping Python's calls in-process (default)
  and by ``strace -f`` on a subprocess (which also sees onnxruntime's and torch's C++
  opens) for a subset, for every pair with ``ONNXGROW_FUZZ_LONG=1``;
- the inputs byte-identical; no partial output (nothing on failure, no temporary file);
- no raw control character in what is printed; no numpy RuntimeWarning; no onnxruntime
  log line; a NaN/Inf comparison says so in its verdict.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.hostile_models import CASES, Built, Case
from tests.helpers.optional import command_needs
from tests.helpers.paths import REPO
from tests.helpers.robustness import hashes, listing, model_files, run_cli

LONG = os.environ.get("ONNXGROW_FUZZ_LONG") == "1"
STRACE = shutil.which("strace")
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0

#: command → its arguments for a built case and an output folder.
COMMANDS: dict[str, Callable[[Built, Path], list[object]]] = {
    "inspect": lambda b, out: ["inspect", b.model],
    "inspect --json": lambda b, out: ["inspect", b.model, "--json", out / "inspect.json"],
    "widen": lambda b, out: ["widen", b.model, "--node", b.layer, "--to", b.width, "-o", out / "grown.onnx"],
    "deepen": lambda b, out: ["deepen", b.model, "--after", b.layer, "-o", out / "grown.onnx"],
    "verify --json": lambda b, out: ["verify", b.model, b.model, "-q", "--json", out / "verify.json"],
    "diff --numeric --json --markdown": lambda b, out: ["diff", b.model, b.model, "--numeric", "--json",
                                                        out / "diff.json", "--markdown", out / "diff.md"],
    "export --to state-dict (.pt)": lambda b, out: ["export", b.model, "--to", "state-dict", "-o",
                                                    out / "weights.pt"],
    "export --to state-dict (.safetensors)": lambda b, out: ["export", b.model, "--to", "state-dict", "-o",
                                                             out / "weights.safetensors"],
    "export --to torch": lambda b, out: ["export", b.model, "--to", "torch", "-o", out / "module.pt"],
    "export --to keras": lambda b, out: ["export", b.model, "--to", "keras", "-o", out / "model.keras"],
}
READ_ONLY = {"inspect"}
#: (case, command) pairs also run under strace by default (all pairs in the long mode).
STRACED = {(case, command) for case in ("location ../", "data file symlinked outside",
                                        "data folder symlinked outside", "hub cache layout",
                                        "hub cache, data links outside")
           for command in ("inspect", "widen", "diff --numeric --json --markdown")} | {
    ("hub cache layout", "verify --json"), ("hub cache layout", "export --to keras")}
#: TensorFlow's C++ start-up lines (absl), which it writes to stderr whatever
#: TF_CPP_MIN_LOG_LEVEL says when Keras picks its backend: not onnxgrow's to silence.
TENSORFLOW_LOG = re.compile(r"^(?:WARNING: All log messages before absl::InitializeLog\(\).*|[IWE]\d{4} .*)\n",
                            re.MULTILINE)
#: Printed characters no name may smuggle onto a terminal (line feeds are the reports' own).
RAW_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


# ----- recording opened paths ---------------------------------------------------------------
class _Opened:
    """Paths Python code opens or changes while :meth:`recording`: ``open``/``io.open``,
    ``os.open`` and the ``os`` calls that rename, remove or create, wrapped for the block.

    (Not ``sys.addaudithook``: a hook cannot be removed, so it would run on every audit
    event of every later test in the same pytest worker, C extensions' included.)
    """

    _CHANGES = ("rename", "replace", "remove", "unlink", "mkdir", "rmdir", "link", "symlink")

    def __init__(self) -> None:
        self.reads: list[str] = []
        self.writes: list[str] = []

    def _open(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def opened(file: Any, *args: Any, **kwargs: Any) -> Any:
            mode = args[0] if args else kwargs.get("mode", kwargs.get("flags", "r"))
            written = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(mode, int) and bool(mode & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)))
            if isinstance(file, (str, bytes, os.PathLike)) and kwargs.get("dir_fd") is None:
                (self.writes if written else self.reads).append(os.fsdecode(file))
            return real(file, *args, **kwargs)
        return opened

    def _change(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def changed(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("dir_fd") is None and kwargs.get("src_dir_fd") is None:  # else: rmtree in our folder
                self.writes.extend(os.fsdecode(a) for a in args[:2] if isinstance(a, (str, bytes, os.PathLike)))
            return real(*args, **kwargs)
        return changed

    @contextlib.contextmanager
    def recording(self) -> Iterator[_Opened]:
        self.reads, self.writes = [], []
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(builtins, "open", self._open(builtins.open))
            patch.setattr(io, "open", self._open(io.open))
            patch.setattr(os, "open", self._open(os.open))
            for name in self._CHANGES:
                patch.setattr(os, name, self._change(getattr(os, name)))
            yield self


_OPENED = _Opened()


def _inside(path: str, folders: list[Path]) -> bool:
    real = Path(os.path.realpath(path))
    return any(real == f or f in real.parents for f in (Path(os.path.realpath(f)) for f in folders))


def _writable_folders(out: Path) -> list[Path]:
    """The output folder, the temp folder (onnxruntime copies for verification), the
    libraries' caches and config under HOME (onnxruntime, Keras), /dev, and /proc (thread
    names TensorFlow sets)."""
    home = Path.home()
    return [out, Path(tempfile.gettempdir()), home / ".cache", home / ".keras", home / ".config", Path("/dev"),
            Path("/proc")]


# ----- strace --------------------------------------------------------------------------------
_CALL = re.compile(r"^\d+\s+(\w+)\((.*)$")
_AT_PATH = re.compile(r"(AT_FDCWD|\d+)(?:<([^>]*)>)?, \"((?:[^\"\\]|\\.)*)\"")
_PLAIN_PATH = re.compile(r"^\"((?:[^\"\\]|\\.)*)\"")


def traced_paths(log: Path, cwd: Path) -> tuple[list[str], list[str]]:
    """(read, written) absolute paths of a ``strace -f -y`` log of open/creat/rename/unlink/mkdir."""
    reads: list[str] = []
    writes: list[str] = []
    for line in log.read_text(errors="replace").splitlines():
        match = _CALL.match(line)
        if match is None:
            continue
        call, rest = match.groups()
        found = [(base or (str(cwd) if fd == "AT_FDCWD" else ""), p) for fd, base, p in _AT_PATH.findall(rest)]
        if not found and (plain := _PLAIN_PATH.match(rest)):
            found = [(str(cwd), plain.group(1))]
        paths = [os.path.join(base, p.encode().decode("unicode_escape")) for base, p in found]
        written = call not in ("open", "openat") or bool(re.search(r"O_WRONLY|O_RDWR|O_CREAT", rest))
        (writes if written else reads).extend(paths)
    return reads, writes


def run_traced(args: list[object], tmp: Path) -> tuple[int, str, str, list[str], list[str]]:
    """``python -m onnxgrow ARGS`` under strace (paths recorded), or plainly without strace."""
    log = tmp / "strace.log"
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    trace = [str(STRACE), "-f", "-y", "-qq", "-o", str(log), "-e",
             "trace=open,openat,creat,rename,renameat,renameat2,unlink,unlinkat,mkdir,mkdirat"] if STRACE else []
    proc = subprocess.run([*trace, sys.executable, "-m", "onnxgrow", *map(str, args)],
                          capture_output=True, text=True, timeout=600, check=False, cwd=REPO, env=env)
    reads, writes = traced_paths(log, REPO) if STRACE else ([], [])
    log.unlink(missing_ok=True)
    return proc.returncode, proc.stdout, proc.stderr, reads, writes


# ----- the campaign ------------------------------------------------------------------------------
@contextlib.contextmanager
def full_disk(folder: Path) -> Iterator[None]:
    """``folder`` as a 256 KiB tmpfs with every byte taken by a file ``filler``."""
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(folder)], check=True)
    try:
        with contextlib.suppress(OSError), open(folder / "filler", "wb", buffering=0) as f:
            while True:
                f.write(b"\0" * 4096)
        yield
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def build(case: Case, tmp: Path) -> tuple[Built, Path, contextlib.AbstractContextManager[None]]:
    if case.disk_full and not IS_ROOT:
        pytest.skip("a full tmpfs needs root")
    built = case.build(tmp / "case")
    out = tmp / "case" / "out"
    if case.disk_full:
        return built, out, full_disk(out)
    out.mkdir()
    return built, out, contextlib.nullcontext()


def expected_code(case: Case, command: str) -> int:
    return 2 if case.disk_full and command not in READ_ONLY else case.code


def check_result(case: Case, command: str, built: Built, out: Path, code: int, stdout: str, stderr: str,
                 reads: list[str], writes: list[str], before_out: set[str]) -> None:
    text = stdout + stderr
    want = expected_code(case, command)
    assert "Traceback" not in text, text[-3000:]
    assert code == want, (code, stdout[-2000:], stderr[-2000:])
    if want == 2:
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), stderr
        assert (case.message or "") in lines[0], lines[0]
    assert not RAW_CONTROL.search(text), repr(RAW_CONTROL.search(text))
    assert "RuntimeWarning" not in text and "onnxruntime:" not in stderr, stderr[-2000:]
    secret = out.parent / "secret"
    leaks = [p for p in reads + writes if _inside(p, [secret])]
    assert not leaks, f"opened outside the model's folder: {leaks[:5]}"
    stray = [p for p in writes if not _inside(p, _writable_folders(out))]
    assert not stray, f"written outside the output folder: {stray[:5]}"
    written = listing(out) - before_out
    assert not [n for n in written if n.startswith(".")], f"temporary files left: {written}"
    if code != 0:
        assert written == set(), f"partial output: {written}"
    elif (out / "grown.onnx").exists():
        assert written == {p.name for p in model_files(out / "grown.onnx")}, written
    if case.build.__name__ == "non_finite_weights" and command.startswith(("verify", "widen", "diff")):
        assert "NaN or Inf in both models" in text, text[-2000:]


def _pairs() -> list[tuple[str, str]]:
    return [(case, command) for case in CASES for command in COMMANDS]


#: Commands run in a subprocess even by default: Keras imports TensorFlow, and TensorFlow
#: in a pytest worker makes a later torch.export there crash (importing tensorflow, then
#: torch._dynamo, segfaults in triton's import with the installed versions).
OWN_PROCESS = {"export --to keras"}


@pytest.mark.parametrize(("case_name", "command"), [pytest.param(*p, marks=command_needs(p[1])) for p in _pairs()])
def test_command_on_hostile_model(tmp_path: Path, case_name: str, command: str) -> None:
    case = CASES[case_name]
    had_tensorflow = "tensorflow" in sys.modules  # another test of this worker may have imported it
    built, out, disk = build(case, tmp_path)
    inputs = [tmp_path / "case" / name for name in ("model", "secret") if (tmp_path / "case" / name).exists()]
    before = hashes(inputs)
    with disk:
        before_out = listing(out)
        if command in OWN_PROCESS:
            code, stdout, stderr, reads, writes = run_traced(COMMANDS[command](built, out), tmp_path)
            stderr = TENSORFLOW_LOG.sub("", stderr)
        else:
            with _OPENED.recording() as opened:
                result = run_cli(*COMMANDS[command](built, out))
            assert result.exception is None, f"escaped {type(result.exception).__name__}: {result.exception!r}"
            code, stdout, stderr, reads, writes = (result.code, result.stdout, result.stderr, opened.reads,
                                                   opened.writes)
        check_result(case, command, built, out, code, stdout, stderr, reads, writes, before_out)
    assert hashes(inputs) == before, "inputs modified"
    assert had_tensorflow or "tensorflow" not in sys.modules


@pytest.mark.skipif(STRACE is None, reason="strace is not installed")
@pytest.mark.parametrize(("case_name", "command"),
                         [pytest.param(*p, marks=command_needs(p[1])) for p in _pairs() if LONG or p in STRACED])
def test_command_on_hostile_model_traced(tmp_path: Path, case_name: str, command: str) -> None:
    """The same under ``strace -f``: also the opens of onnxruntime, torch and Keras in C++."""
    case = CASES[case_name]
    built, out, disk = build(case, tmp_path)
    inputs = [tmp_path / "case" / name for name in ("model", "secret") if (tmp_path / "case" / name).exists()]
    before = hashes(inputs)
    with disk:
        before_out = listing(out)
        code, stdout, stderr, reads, writes = run_traced(COMMANDS[command](built, out), tmp_path)
        stderr = TENSORFLOW_LOG.sub("", stderr)
        check_result(case, command, built, out, code, stdout, stderr, reads, writes, before_out)
    assert hashes(inputs) == before, "inputs modified"


# ----- the recorders can fail ------------------------------------------------------------------
def test_recorders_see_a_read_through_a_symlink(tmp_path: Path) -> None:
    """A read of ``secret/`` through a symlink in the model's folder is caught by both."""
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "key").write_text("s3cret")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "w.data").symlink_to("../secret/key")
    with _OPENED.recording() as opened:
        (tmp_path / "model" / "w.data").read_text()
    assert [p for p in opened.reads if _inside(p, [tmp_path / "secret"])]
    if STRACE is not None:
        log = tmp_path / "log"
        subprocess.run([str(STRACE), "-f", "-y", "-qq", "-o", str(log), "-e", "trace=openat,open",
                        sys.executable, "-c", "open('model/w.data').read(); open('out.txt', 'w')"],
                       cwd=tmp_path, check=True)
        reads, writes = traced_paths(log, tmp_path)
        assert [p for p in reads if _inside(p, [tmp_path / "secret"])]
        assert str(tmp_path / "out.txt") in writes


# ----- input validation, signals, optional packages ------------------------------------------
def _child(script: str, *args: object, tmp: Path) -> subprocess.CompletedProcess[str]:
    """``python -c script args`` started as from a shell: Ctrl-C and SIGTERM at their default
    dispositions, whatever the test process's are (a process whose parent ignores SIGINT
    inherits that, and then rightly ignores Ctrl-C: pytest workers may run so)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True, text=True,
                          timeout=300, check=False, cwd=tmp, env=env, preexec_fn=_default_signals)


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


#: Runs the CLI with a module import hook: ``{action}`` runs when a module of a package
#: named in ``HOOKED`` (comma-separated) is first imported.
IMPORT_HOOK = """
import importlib.abc, os, signal, sys
class Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in os.environ["HOOKED"].split(","):
            {action}
        return None
sys.meta_path.insert(0, Hook())
sys.argv = ["onnxgrow", *sys.argv[1:]]
from onnxgrow.signals import main
main()
"""


@pytest.mark.parametrize(("sig", "code", "message"), [("SIGTERM", 143, "terminated; nothing written"),
                                                      ("SIGINT", 130, "interrupted; nothing written")])
def test_signal_during_the_first_imports(tmp_path: Path, sig: str, code: int, message: str) -> None:
    """A signal while onnx is being imported (before any command code runs): 143 / 130."""
    script = IMPORT_HOOK.format(action=f"os.kill(os.getpid(), signal.{sig})")
    env_script = f"import os; os.environ['HOOKED'] = 'onnx'\n{script}"
    proc = _child(env_script, "inspect", REPO / "fixtures" / "mlp_legacy.onnx", tmp=tmp_path)
    assert proc.returncode == code, proc.stderr[-2000:]
    assert proc.stderr.strip() == message


@pytest.mark.parametrize(("missing", "args", "hint"), [
    ("torch", ["export", "{model}", "--to", "torch", "-o", "m.pt"], "pip install 'onnxgrow[torch]'"),
    ("keras", ["export", "{model}", "--to", "keras", "-o", "m.keras"], "pip install 'onnxgrow[keras]'"),
])
def test_missing_optional_package_gives_an_install_line(tmp_path: Path, missing: str, args: list[str],
                                                        hint: str) -> None:
    script = IMPORT_HOOK.format(action="raise ModuleNotFoundError(f'No module named {name!r}', name=name)")
    env_script = f"import os; os.environ['HOOKED'] = {missing!r}\n{script}"
    model = REPO / "fixtures" / "mlp_legacy.onnx"
    proc = _child(env_script, *[a.format(model=model) for a in args], tmp=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and hint in lines[0], proc.stderr
    assert listing(tmp_path) == set()


@pytest.mark.parametrize("name", ["w.safetensors", "w.pt"])
def test_state_dicts_are_written_without_torch_or_safetensors(tmp_path: Path, name: str) -> None:
    script = IMPORT_HOOK.format(action="raise ModuleNotFoundError(f'No module named {name!r}', name=name)")
    env_script = f"import os; os.environ['HOOKED'] = 'torch,safetensors'\n{script}"
    proc = _child(env_script, "export", REPO / "fixtures" / "mlp_legacy.onnx", "--to", "state-dict", "-o", name,
                  tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert listing(tmp_path) == {name}


def test_random_pad_on_inf_weights_warns_nothing_raw(tmp_path: Path) -> None:
    """Fresh random units take the spread of the finite weights: no numpy RuntimeWarning."""
    built = CASES["NaN and Inf weights"].build(tmp_path / "case")
    proc = _child("import runpy, sys; sys.argv = ['onnxgrow', *sys.argv[1:]]; runpy.run_module('onnxgrow')",
                  "widen", built.model, "--node", "layer_1", "--to", 9, "--init", "random-pad", "-o",
                  tmp_path / "grown.onnx", tmp=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Warning" not in proc.stderr and "random-pad" in proc.stdout


def _verify_args(model: Path, *extra: object) -> list[object]:
    return ["verify", model, model, *extra]


@pytest.mark.parametrize(("make", "extra", "message"), [
    ("npy", [], "not a readable .npz file"),
    ("npz wrong name", [], "unknown"),
    ("npz wrong dtype", [], "has dtype float64"),
    ("npz wrong shape", [], "has shape"),
    (None, ["--input-shapes", "x:[0,3]"], "every dimension must be at least 1"),
])
def test_bad_verification_inputs_are_one_line(tmp_path: Path, make: str | None, extra: list[object],
                                              message: str) -> None:
    import numpy as np

    model = REPO / "fixtures" / "mlp_legacy.onnx"
    args: list[object] = list(extra)
    if make == "npy":
        np.save(tmp_path / "x.npy", np.ones((2, 3), np.float32))
        args += ["--inputs", tmp_path / "x.npy"]
    elif make is not None:
        arrays = {"npz wrong name": {"z": np.ones((2, 3), np.float32)},
                  "npz wrong dtype": {"x": np.ones((2, 3), np.float64)},
                  "npz wrong shape": {"x": np.ones((2, 4), np.float32)}}[make]
        np.savez(tmp_path / "in.npz", **arrays)  # type: ignore[arg-type]
        args += ["--inputs", tmp_path / "in.npz"]
    for command in (_verify_args(model, *args), ["diff", model, model, "--numeric", *args],
                    ["widen", model, "--node", "layer_1", "--to", 7, "-o", tmp_path / "g.onnx", *args]):
        result = run_cli(*command)
        assert result.exception is None and result.code == 2, (command, result.code, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "g.onnx").exists()
