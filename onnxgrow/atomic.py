"""Writing outputs so that a reader only ever sees a complete file or folder, or the earlier one.

Rules (every file and folder onnxgrow writes goes through here):

- A file is written to a hidden temporary folder beside its final name
  (``.NAME.XXXX.tmp``), flushed to disk (``fsync``), then renamed into place and the
  folder entry flushed too. On an error, Ctrl-C or SIGTERM (which the CLI turns into an
  exception) the temporary folder is removed: nothing partial remains under any name.
  Only SIGKILL or a power cut can leave the hidden folder behind, never a partial output;
  the next save to the same output removes it.
- A folder output (:func:`atomic_folder`) is filled in the temporary folder, every file
  in it flushed, then put in place by :func:`_put_folder_in_place`: swapped with an
  earlier folder of the same name in one step where the platform can, so that it is
  replaced whole (never merged into) and a reader sees the one folder or the other.
- A writer library that keeps temporary files of its own can be pointed into the save's
  temporary folder (:func:`temporary_files_in`), so that they go with it too.
- An output gets the permissions any other tool would give it: files ``0666``, folders
  ``0777``, less the process's umask (``0644``/``0755`` under the usual ``022``), whatever
  the writer library chose (safetensors creates ``0600`` files) and although the
  temporary folder itself is ``0700``.
- Large files are handed to the disk while they are written: after each piece a writer
  calls :func:`start_flush`, which asks the kernel to begin writing that piece out, so
  that the ``fsync`` before the rename waits for the last piece only, not for the whole
  file (copying and flushing overlap: 510 MB measured 0.34 s → 0.23 s).
- A write that fails for lack of space is one line, whatever library wrote (``torch.save``
  and safetensors raise their own kinds): an error from the writer while the output's
  file system has less than :data:`FULL_BELOW_BYTES` free, or whose text says the disk is
  full (safetensors removes its partial file, freeing the space, before the error is
  seen), is reported as ``No space left on device``.
- A model with external data is two or more files, which no rename moves together. So
  :func:`commit` gives each save's data files names of their own (chosen by the caller,
  see :mod:`onnxgrow.model_io`), renames them in first (no existing file is replaced),
  then the model (atomically replacing an earlier one), then deletes the data files the
  caller marks stale. The old model keeps pointing at the old data until the new model is
  in place; a kill at any instant leaves one complete model under the name.
- Writers of one output folder take turns for the renames and the clean-up (an exclusive
  ``flock`` on the folder), so two saves to the same name leave the last one whole, and
  no clean-up deletes the data of a model renamed in meanwhile. Each temporary folder is
  locked while its save runs; the clean-up also removes the unlocked ones of the same
  output, which only a killed save leaves. A save makes and locks its temporary folder
  while holding the output folder's lock, so no clean-up ever sees a running save's
  folder unlocked.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import glob
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from onnxgrow.errors import GrowError, NotEquivalentError

#: A writer's error while fewer bytes than this are free counts as a full disk.
FULL_BELOW_BYTES = 1024 * 1024
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
#: How a writer library that wraps the OS error in its own (safetensors: ``I/O error: No space
#: left on device (os error 28)``) says the disk is full; it may have removed its partial file,
#: freeing the space again, by the time the error is seen.
_NO_SPACE_TEXT = re.compile(r"No space left on device|Disk quota exceeded|File too large|os error (28|122|27)\b")


def check_output_folder(out: Path, suffix: str) -> None:
    """Refuse a file output that is a folder, or whose folder does not exist."""
    if out.is_dir():
        raise GrowError(f"{out}: is a directory; give a file name ending in {suffix}")
    _check_parent(out)


def check_folder_output(out: Path) -> None:
    """Refuse a folder output that is a file, that is named ``.`` or ``..`` (it has no name
    to write a temporary folder beside), or whose parent folder does not exist."""
    if out.name in ("", ".", ".."):
        raise GrowError(f"{out}: give the output folder by its name, not as . or ..")
    if out.exists() and not out.is_dir():
        raise GrowError(f"{out}: is a file; give the name of a folder to write")
    _check_parent(out)


def _check_parent(out: Path) -> None:
    if not out.parent.is_dir():
        raise GrowError(f"{out.parent}: cannot write {out.name}, the output folder does not exist")


def out_of_space(folder: Path) -> bool:
    """Whether the file system holding ``folder`` is (nearly) full."""
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs on Windows
        return False
    return stats.f_bavail * stats.f_frsize < FULL_BELOW_BYTES


def write_failure(out: Path, exc: BaseException) -> GrowError | None:
    """The one-line error for a failed write to ``out``, or None when ``exc`` is not one
    (then it is a bug and propagates): any OSError, or any error of a writer library while
    the disk is full."""
    if isinstance(exc, OSError):
        reason = os.strerror(errno.ENOSPC) if exc.errno in _NO_SPACE else (exc.strerror or str(exc))
    elif isinstance(exc, Exception) and not isinstance(exc, GrowError) and (
            out_of_space(out.parent) or _NO_SPACE_TEXT.search(str(exc))):
        reason = os.strerror(errno.ENOSPC)
    else:
        return None
    return GrowError(f"{out}: cannot write ({reason}); nothing written")


@contextlib.contextmanager
def writing(out: Path) -> Iterator[None]:
    """Report a failed write (disk full, no permission, a folder in the way) in one line."""
    try:
        yield
    except Exception as exc:
        error = write_failure(out, exc)
        if error is None:
            raise
        raise error from None


@contextlib.contextmanager
def temporary_folder(out: Path) -> Iterator[Path]:
    """A hidden temporary folder beside ``out``, removed whatever happens (but SIGKILL).

    The folder is locked (``flock``) while in use, so that :func:`commit` can tell one a
    killed save left behind (unlocked) from one a running save is filling. It is made and
    locked while this save holds the lock of ``out``'s folder, under which every clean-up
    runs: no clean-up sees it between the two steps and takes it for abandoned."""
    with contextlib.ExitStack() as stack:
        with _locked(out.parent, wait=True):
            with writing(out):
                tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
            stack.callback(shutil.rmtree, tmp, ignore_errors=True)
            stack.enter_context(_locked(tmp, wait=True))
        yield tmp


def _abandoned_temporary_folders(out: Path) -> list[Path]:
    """Temporary folders of saves to ``out`` that no running process holds (killed saves)."""
    found = []
    for path in out.parent.glob(f".{glob.escape(out.name)}.*.tmp"):
        if path.is_dir() and not path.is_symlink():
            with _locked(path, wait=False) as free:
                if free:
                    found.append(path)
    return found


def current_umask() -> int:
    """The process's file-creation mask. There is no getter: it is set and put back, and
    for that instant it is ``077``, so a file another thread creates meanwhile only comes
    out more private."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def set_output_mode(path: Path) -> None:
    """Give the written file ``path``, or the folder ``path`` and everything in it, the
    permissions of a new file (``0666``) or folder (``0777``) less the umask."""
    mask = current_umask()
    if path.is_symlink():  # a link has no permissions of its own; its target is not ours
        return
    if not path.is_dir():
        os.chmod(path, 0o666 & ~mask)
        return
    for folder, _, files in os.walk(path):  # links are left as they are, and not followed
        os.chmod(folder, 0o777 & ~mask)
        for name in files:
            file = os.path.join(folder, name)
            if not os.path.islink(file):
                os.chmod(file, 0o666 & ~mask)


def fsync_file(path: Path) -> None:
    """Flush a written file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: ``sync_file_range``'s flag: start writing the range's dirty pages out, without waiting.
_SYNC_FILE_RANGE_WRITE = 2


def start_flush(file: BinaryIO, since: int) -> None:
    """Start writing bytes ``[since, position)`` of ``file`` to disk, without waiting for them
    (Linux ``sync_file_range``); a no-op where the platform has no such call."""
    file.flush()
    end = file.tell()
    sync_file_range = _libc_function("sync_file_range")
    if sync_file_range is not None and end > since:  # else not Linux: the fsync does all the work
        sync_file_range(file.fileno(), ctypes.c_int64(since), ctypes.c_int64(end - since),
                        ctypes.c_uint(_SYNC_FILE_RANGE_WRITE))


@functools.cache
def _libc_function(name: str) -> Callable[..., int] | None:
    """The C library's function ``name`` (errno kept for :func:`ctypes.get_errno`), or None."""
    try:
        return getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError, TypeError):
        return None


def fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (the renames into it) to disk, where the platform can."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open a folder
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems do not sync folders; the rename itself is still atomic
    finally:
        os.close(fd)


@contextlib.contextmanager
def _locked(folder: Path, wait: bool) -> Iterator[bool]:
    """An exclusive ``flock`` on ``folder`` itself (no lock file), released by the kernel
    when the process dies. Yields whether it was taken (always, with ``wait``); where
    flock is missing (Windows) it yields ``wait``: nothing is then judged abandoned."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield wait
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def atomic_output(output: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path to write ``output`` at; flushed and renamed into place when the
    block succeeds. Any failure leaves nothing; a failed write is one-line GrowError."""
    out = Path(output)
    check_output_folder(out, out.suffix or "a suffix")
    with temporary_folder(out) as tmp:
        path = tmp / out.name
        with writing(out):
            yield path
            set_output_mode(path)
            fsync_file(path)
            os.replace(path, out)
            fsync_folder(out.parent)


@contextlib.contextmanager
def atomic_outputs(outputs: Sequence[Path]) -> Iterator[list[Path]]:
    """Temporary paths to write the files ``outputs`` at, all put in place together when the
    block succeeds, none otherwise (one command's reports: ``--json`` and ``--markdown``).

    Every file is written and flushed before the first rename; then each is renamed into
    place. Should a rename fail, the ones already done are undone: an output that replaced an
    earlier file gets it back (kept by a hard link in its temporary folder), a new one is
    removed. Any failure leaves nothing, and the earlier files as they were; a failed write
    is one-line GrowError."""
    if len({p.resolve() for p in outputs}) < len(outputs):
        raise GrowError(f"{outputs[0]}: two outputs of one command name the same file; give each its own")
    for out in outputs:
        check_output_folder(out, out.suffix or "a suffix")
    with contextlib.ExitStack() as stack:
        folders = [stack.enter_context(temporary_folder(out)) for out in outputs]
        paths = [folder / out.name for folder, out in zip(folders, outputs)]
        with writing(outputs[0]) if outputs else contextlib.nullcontext():
            yield paths
            for path in paths:
                set_output_mode(path)
                fsync_file(path)
            _replace_all(paths, list(outputs))


def _replace_all(paths: list[Path], outputs: list[Path]) -> None:
    """Rename each of ``paths`` onto its output; undo the renames done when one fails."""
    done: list[tuple[Path, Path | None]] = []  # (output, the earlier file kept aside, or None)
    try:
        for path, out in zip(paths, outputs):
            kept = None
            if out.is_file() and not out.is_symlink():
                kept = path.with_name(path.name + ".earlier")
                try:
                    os.link(out, kept)
                except OSError:  # a file system without hard links: a copy (reports are small)
                    shutil.copyfile(out, kept)
            os.replace(path, out)
            done.append((out, kept))
            fsync_folder(out.parent)
    except BaseException:
        for out, kept in reversed(done):
            with contextlib.suppress(OSError):
                if kept is not None:
                    os.replace(kept, out)
                else:
                    out.unlink()
        raise


@contextlib.contextmanager
def atomic_folder(output: str | os.PathLike[str]) -> Iterator[Path]:
    """An empty temporary folder to fill for the folder ``output``. When the block succeeds,
    everything in it is flushed to disk and the folder takes ``output``'s place whole: an
    earlier folder of that name is replaced, never merged into, and a reader sees the one
    or the other (see :func:`_put_folder_in_place`). Any failure leaves nothing, and the
    earlier folder as it was; a failed write is one-line GrowError."""
    out = Path(output)
    check_folder_output(out)
    with temporary_folder(out) as tmp:
        staged = tmp / out.name
        with writing(out):
            staged.mkdir()
            yield staged
            set_output_mode(staged)
            _fsync_tree(staged)
            _put_folder_in_place(staged, out)
            fsync_folder(out.parent)


def _fsync_tree(folder: Path) -> None:
    """Flush every file under ``folder`` and every folder's entries (links not followed)."""
    for path, _, files in os.walk(folder):
        for name in files:
            if not os.path.islink(os.path.join(path, name)):
                fsync_file(Path(path, name))
        fsync_folder(Path(path))


def _put_folder_in_place(staged: Path, out: Path) -> None:
    """Rename the folder ``staged`` (inside a temporary folder) to ``out``. An earlier folder
    ``out`` is swapped with it in one step where the platform can (Linux
    ``renameat2(RENAME_EXCHANGE)``), so a reader sees the old folder or the new one; then
    the old one, now at ``staged``, goes with the temporary folder. Elsewhere the old
    folder is first renamed aside into the temporary folder (for that instant ``out`` is
    missing), and renamed back when the second rename fails or is interrupted."""
    if not out.is_dir():
        os.rename(staged, out)
        return
    if _exchange(staged, out):
        return
    aside = staged.with_name(staged.name + ".old")
    os.rename(out, aside)
    try:
        os.rename(staged, out)
    except BaseException:
        os.rename(aside, out)
        raise


#: ``renameat2``'s flag: swap the two names; and the "current folder" file descriptor.
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap the entries ``a`` and ``b`` atomically; False where the platform or the file
    system cannot (then nothing was changed)."""
    renameat2 = _libc_function("renameat2")
    if renameat2 is None:
        return False
    if renameat2(ctypes.c_int(_AT_FDCWD), os.fsencode(a), ctypes.c_int(_AT_FDCWD), os.fsencode(b),
                 ctypes.c_uint(_RENAME_EXCHANGE)) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def temporary_files_in(folder: Path) -> Iterator[None]:
    """Make :mod:`tempfile`'s default folder a new folder inside ``folder`` (a save's
    temporary folder) for the block, so that what a writer library puts in temporary files
    or folders of its own (Keras: the ``assets`` folder of a ``.keras`` file) goes with
    the save's temporary folder, even when the library fails before removing it. The
    default is the process's: another thread's temporary files made meanwhile go there too."""
    scratch = tempfile.mkdtemp(dir=folder)
    previous = tempfile.tempdir
    tempfile.tempdir = scratch
    try:
        yield
    finally:
        tempfile.tempdir = previous


@contextlib.contextmanager
def named_as(out: Path, tmp: Path) -> Iterator[None]:
    """Within the block, a GrowError or NotEquivalentError that names the temporary file ``tmp``
    (or a file of its temporary folder) names ``out`` (or the file of that name beside it)
    instead: a check of a written file reports the output the user asked for, not onnxgrow's
    temporary copy of it."""
    try:
        yield
    except (GrowError, NotEquivalentError) as exc:
        folder, target = str(tmp.parent) + os.sep, str(out.parent) + os.sep
        exc.args = tuple(arg.replace(str(tmp), str(out)).replace(folder, target) if isinstance(arg, str) else arg
                         for arg in exc.args)
        raise


def commit(tmp: Path, data_names: Sequence[str], out: Path, stale: Callable[[Path], bool]) -> None:
    """Move a saved model and its data files from ``tmp`` into ``out``'s folder.

    ``data_names`` must be names no other save uses (the data files are renamed in without
    replacing anything); the model is renamed onto ``out`` last. Then every file of the
    folder for which ``stale(path)`` holds and that is not one of ``data_names`` is deleted.
    If a rename fails, the data files already moved are removed again and the earlier
    output is untouched.
    """
    for name in [*data_names, out.name]:
        set_output_mode(tmp / name)
        fsync_file(tmp / name)
    folder = out.parent
    with _locked(folder, wait=True):
        moved: list[Path] = []
        try:
            for name in data_names:
                target = folder / name
                if target.exists() or target.is_symlink():
                    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target))
                os.replace(tmp / name, target)
                moved.append(target)
            fsync_folder(folder)
            os.replace(tmp / out.name, out)
        except BaseException:
            for target in moved:
                with contextlib.suppress(OSError):
                    target.unlink()
            raise
        fsync_folder(folder)
        keep = set(data_names)
        for path in folder.iterdir():
            if path.name not in keep and stale(path) and path.is_file() and not path.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        for abandoned in _abandoned_temporary_folders(out):
            shutil.rmtree(abandoned, ignore_errors=True)
