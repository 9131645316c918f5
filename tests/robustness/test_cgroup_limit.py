"""The memory a check may use by default is read from the process's own cgroup and every group
above it (``/proc/self/cgroup``), cgroup v1 and v2, not only from the mount's root: a process
started in a child group with a limit (``cgexec``, a group made by hand) sees that limit."""

from __future__ import annotations

from pathlib import Path

import pytest

from onnxgrow.verification import memory


def _group(folder: Path, limit: str, usage: int, v2: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ("memory.max" if v2 else "memory.limit_in_bytes")).write_text(limit + "\n")
    (folder / ("memory.current" if v2 else "memory.usage_in_bytes")).write_text(f"{usage}\n")


def test_the_limit_is_the_process_own_cgroup_s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cgroup"
    _group(root / "memory", "9223372036854771712", 5 * 2**30)  # v1's root: no limit
    _group(root / "memory" / "jobs", "9223372036854771712", 3 * 2**30)
    _group(root / "memory" / "jobs" / "mine", str(2 * 2**30), 2**29)
    proc = tmp_path / "proc-cgroup"
    proc.write_text("9:name=systemd:/\n4:memory:/jobs/mine\n1:cpu:/\n0::/\n")
    monkeypatch.setattr(memory, "_CGROUP", root)
    monkeypatch.setattr(memory, "_PROC_CGROUP", proc)
    assert memory._cgroup_room() == 2 * 2**30 - 2**29  # its own group's limit less its usage
    _group(root / "memory" / "jobs", str(4 * 2**30), 3 * 2**30 + 2**28)  # a parent with less room left
    assert memory._cgroup_room() == 2**30 - 2**28
    proc.write_text("4:cpu,memory:/\n0::/\n")  # at the root: no limit anywhere
    assert memory._cgroup_room() is None
    _group(root / "job", str(3 * 2**30), 2**30, v2=True)  # cgroup v2, the process in /job
    proc.write_text("0::/job\n")
    assert memory._cgroup_room() == 2 * 2**30
    proc.unlink()  # unreadable: the mount's roots only, as in a container's own namespace
    assert memory._cgroup_room() is None
    _group(root, "max", 2**30, v2=True)
    assert memory._cgroup_room() is None


def test_the_page_cache_a_group_can_reclaim_is_room(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A group's usage counts the files it read and wrote (a growth has just written its
    model): its active and inactive file pages are room, not use (v1's totals, v2's own)."""
    root = tmp_path / "cgroup"
    _group(root / "memory" / "mine", str(2 * 2**30), 2 * 2**30 - 2**20)  # full, mostly page cache
    (root / "memory" / "mine" / "memory.stat").write_text(
        f"cache 1\nrss 2\ninactive_file 5\nactive_file 7\ntotal_inactive_file {2**30}\ntotal_active_file {2**29}\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text("4:memory:/mine\n")
    monkeypatch.setattr(memory, "_CGROUP", root)
    monkeypatch.setattr(memory, "_PROC_CGROUP", proc)
    assert memory._cgroup_room() == 2 * 2**30 - (2 * 2**30 - 2**20 - 2**30 - 2**29)
    _group(root / "job", str(2**30), 2**30, v2=True)
    (root / "job" / "memory.stat").write_text(f"anon {2**28}\nfile {3 * 2**28}\nactive_file {2**28}\n"
                                              f"inactive_file {2**29}\n")
    proc.write_text("0::/job\n")
    assert memory._cgroup_room() == 2**30 - 2**28
