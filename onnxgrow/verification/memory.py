"""How much memory a check may use, and whether a model's onnxruntime session fits in it.

Rules (docs/design.md §6):

- A whole-model session holds about :data:`ORT_MEMORY_FACTOR` times the model's weights
  (measured 1.1-1.65x on CPU with external data: onnxruntime's copies, arena and kernel
  buffers). The two models run one after the other, so a check run whole needs that much
  for the larger of the two; it runs whole when that fits the limit, else segment by
  segment, each segment's weights at most ``limit / ORT_MEMORY_FACTOR``.
- The limit is ``--max-memory`` or, by default, :data:`DEFAULT_MEMORY_SHARE` of the memory
  available when the check starts: the smaller of the kernel's ``MemAvailable`` and what
  the process's cgroups (a container's memory limit, or a group it was started in) leave.
  Half, because the check shares the process with the growth that precedes it (the
  loaded graph and the rewritten tensors stay in memory while the saved files are
  checked), the carried activations of both models
  come on top of the weights, and the factor above is an estimate: a segmented check that
  was not needed costs some time, a whole one that did not fit costs the machine. Where
  neither figure can be read, there is no limit and the check runs whole.
"""

from __future__ import annotations

import math
from pathlib import Path

import onnx
import onnx_ir as ir

from onnxgrow.options import VerifyOptions

#: A whole-model onnxruntime session holds about this many times the model's weight bytes.
ORT_MEMORY_FACTOR = 1.65
#: Share of the available memory a check may use when ``--max-memory`` is not given.
DEFAULT_MEMORY_SHARE = 0.5

_CGROUP = Path("/sys/fs/cgroup")
_PROC_CGROUP = Path("/proc/self/cgroup")


def memory_limit(options: VerifyOptions) -> int | None:
    """The bytes the check may hold: ``options.max_memory``, else the default share of the
    available memory (None where it cannot be read: no limit)."""
    if options.max_memory is not None:
        return options.max_memory
    available = available_memory()
    return None if available is None else int(available * DEFAULT_MEMORY_SHARE)


def memory_ceiling(options: VerifyOptions) -> int | None:
    """The most a command may hold at all, checked before its work (:mod:`onnxgrow.resources`):
    the available memory, or ``--max-memory`` where larger (the user's word); None where the
    available memory cannot be read. Not the check's limit, which only chooses between a
    whole and a segmented check (a node heavier than a segment's budget still runs alone)."""
    available = available_memory()
    return None if available is None else max(available, options.max_memory or 0)


#: How a refusal names :func:`memory_ceiling`.
CEILING_IS = "the memory available, or --max-memory where larger"


def available_memory() -> int | None:
    """Bytes this process could still allocate: ``MemAvailable``, capped by what its cgroups'
    limits leave (:func:`_cgroup_room`); None where neither can be read."""
    figures = [f for f in (_meminfo_available(), _cgroup_room()) if f is not None]
    return min(figures) if figures else None


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_room() -> int | None:
    """The least room (limit less usage, the reclaimable page cache not counted as used) of
    the process's memory cgroups with a limit: its own group and every group above it (a
    limit applies to everything below it), cgroup v2 and v1 alike; None when none has a
    limit. The groups come from ``/proc/self/cgroup``, so that a process in a child group
    (``cgexec``, ``systemd-run --scope``, a group made by hand) sees that group's limit, not
    the mount's root's."""
    rooms = []
    for folder, limit_file, usage_file in _cgroup_levels():
        try:
            limit_text = (folder / limit_file).read_text().strip()
            usage = int((folder / usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit_text == "max" or not limit_text.isdigit() or int(limit_text) >= 2**60:  # v1 writes ~2^63 for none
            continue
        rooms.append(max(int(limit_text) - max(usage - _file_pages(folder), 0), 0))
    return min(rooms) if rooms else None


def _file_pages(folder: Path) -> int:
    """Bytes of the group's page cache the kernel can reclaim (its active and inactive file
    pages, ``memory.stat``; 0 where unreadable): a group's usage counts the files it read and
    wrote, and a growth that has just written its model would otherwise leave no room."""
    stat: dict[str, int] = {}
    try:
        for line in (folder / "memory.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if value.strip().isdigit():
                stat[key] = int(value)
    except OSError:
        return 0
    prefix = "total_" if "total_inactive_file" in stat else ""  # v1's totals include the groups below
    return stat.get(f"{prefix}inactive_file", 0) + stat.get(f"{prefix}active_file", 0)


def _cgroup_levels() -> list[tuple[Path, str, str]]:
    """(folder, limit file, usage file) of every memory cgroup level that may limit this
    process: from its own group (``/proc/self/cgroup``: ``0::PATH`` for v2, ``N:...memory...:PATH``
    for v1) up to the mount's root, which is all there is when that file cannot be read."""
    mounts = {"v2": (_CGROUP, "memory.max", "memory.current"),
              "v1": (_CGROUP / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes")}
    own = {"v2": "/", "v1": "/"}
    try:
        for line in _PROC_CGROUP.read_text().splitlines():
            number, controllers, path = (line.split(":", 2) + ["", ""])[:3]
            if number == "0" and not controllers:
                own["v2"] = path
            elif "memory" in controllers.split(","):
                own["v1"] = path
    except OSError:
        pass
    levels = []
    for version, (root, limit_file, usage_file) in mounts.items():
        folder = root / own[version].strip("/")
        while True:
            levels.append((folder, limit_file, usage_file))
            if folder == root or root not in folder.parents:
                break
            folder = folder.parent
    return levels


def model_weight_bytes(model: ir.Model) -> int:
    """Bytes of every initializer of every graph and of every Constant node's tensor: what an
    onnxruntime session of the model loads (read from metadata, no weight is read)."""
    total = 0
    for graph in model.graphs():
        total += sum(tensor_bytes(v.const_value) for v in graph.initializers.values() if v.const_value is not None)
        total += sum(constant_bytes(node) for node in graph if node.attributes)
    return total


def largest_node_bytes(model: ir.Model) -> tuple[int, str]:
    """The most weight bytes one node of the main graph reads (its constant inputs and
    attribute tensors), and the node's name: what no segment of a check can split."""
    most, name = 0, ""
    for index, node in enumerate(model.graph):
        held = constant_bytes(node) if node.attributes else 0
        held += sum(tensor_bytes(v.const_value) for v in node.inputs if v is not None and v.const_value is not None)
        if held > most:
            most, name = held, node.name or f"{node.op_type} node {index}"
    return most, name


def constant_bytes(node: ir.Node) -> int:
    """Bytes of the tensors a node holds in its attributes (a Constant's ``value``)."""
    return sum(tensor_bytes(attr.as_tensor()) for attr in node.attributes.values()
               if attr.type == ir.AttributeType.TENSOR)


def tensor_bytes(tensor: ir.TensorProtocol) -> int:
    """``tensor.nbytes``, from a parsed tensor's own dims when it has them (onnx-ir builds a
    new shape object for every such question, a third of planning a 20,000-node graph)."""
    raw = tensor.raw if isinstance(tensor, ir.serde.TensorProtoTensor) else None
    if isinstance(raw, onnx.TensorProto):
        return math.ceil(math.prod(raw.dims) * tensor.dtype.itemsize)
    return tensor.nbytes


def fits_whole(weight_bytes: int, limit: int | None) -> bool:
    """Whether a session of a model with ``weight_bytes`` of weights fits in ``limit``."""
    return limit is None or weight_bytes * ORT_MEMORY_FACTOR <= limit


def segment_budget(limit: int) -> int:
    """The weight bytes one segment may hold under ``limit``."""
    return max(int(limit / ORT_MEMORY_FACTOR), 1)
