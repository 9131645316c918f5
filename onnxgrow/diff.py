"""A name-keyed structural diff of two ONNX models, with the lineage of the new one.

Rules:
- Model: IR version, opset per domain, producer, model domain/version, graph name.
- Inputs and outputs are keyed by name (dtype and shape); a new order of the same
  names is a difference too. Initializer-backed graph inputs count as inputs.
- Nodes are matched in three steps: (1) by name, when the name is non-empty and
  unique on both sides; (2) the rest by (domain, op type, output names), when that
  key is unique among the rest on both sides: this pairs unnamed and renamed nodes,
  a rename is reported as a change of ``name``; (3) what is left is removed or added.
  A matched node is changed when its name, op type, domain, inputs, outputs or
  attributes differ. Subgraph and tensor attributes are compared by a SHA-256 of
  their serialized form. Node order, doc strings and value_info are not compared.
- Initializers are keyed by name. A new dtype or shape is reported without reading
  any data. Same dtype and shape: the values are compared chunk by chunk over the
  memory-mapped (external) or parsed (embedded) data, NaN at the same place counting
  as equal; a change reports the max abs difference and how many values differ.
  Added and removed initializers are never read.
- Metadata props are keyed by key, except ``onnxgrow.history``, which is the lineage:
  NEW's history in plain words, entries after the history OLD already had marked new.
- Local functions are compared by a SHA-256 of their serialized form.
- ``numeric=True`` adds a :func:`onnxgrow.verification.verify` run of OLD against NEW.

Two models are identical when no section differs (and the numeric check, if run,
passed). :meth:`DiffReport.to_dict` follows ``onnxgrow/schemas/diff.schema.json``.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxgrow import __version__
from onnxgrow.errors import GrowError
from onnxgrow.lineage import HISTORY_KEY, describe, read_history
from onnxgrow.model_io import load_model
from onnxgrow.options import VerifyOptions
from onnxgrow.terminal import printable
from onnxgrow.verification import VerifyReport, format_dims, shape_dims, verify

#: Version of the JSON report; bumped when a field is removed or changes meaning.
SCHEMA_VERSION = 1
#: Elements compared at a time when two initializers have the same dtype and shape.
CHUNK_ELEMENTS = 1 << 20

Json = dict[str, Any]


@dataclass
class DiffReport:
    """What differs between OLD and NEW, section by section (JSON-ready dicts)."""

    old: str | None
    new: str | None
    model: list[Json] = field(default_factory=list)
    inputs: Json = field(default_factory=dict)
    outputs: Json = field(default_factory=dict)
    nodes: Json = field(default_factory=dict)
    initializers: Json = field(default_factory=dict)
    metadata: Json = field(default_factory=dict)
    functions: Json = field(default_factory=dict)
    lineage: Json = field(default_factory=dict)
    numeric: VerifyReport | None = None

    def counts(self) -> dict[str, int]:
        """Number of differences per structural section."""
        def keyed(section: Json) -> int:
            return sum(len(section.get(k, [])) for k in ("added", "removed", "changed"))

        return {
            "model": len(self.model),
            "inputs": keyed(self.inputs) + int(self.inputs.get("reordered", False)),
            "outputs": keyed(self.outputs) + int(self.outputs.get("reordered", False)),
            "nodes": keyed(self.nodes),
            "initializers": keyed(self.initializers),
            "metadata": keyed(self.metadata),
            "functions": keyed(self.functions),
        }

    @property
    def identical(self) -> bool:
        """No structural difference, same lineage, and the numeric check (if run) passed."""
        return (
            not any(self.counts().values())
            and not self.lineage.get("changed", False)
            and (self.numeric is None or self.numeric.passed)
        )

    def to_dict(self) -> Json:
        """The report as JSON (see ``docs/diff-json.md``)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "tool": f"onnxgrow {__version__}",
            "old": self.old,
            "new": self.new,
            "identical": self.identical,
            "counts": self.counts(),
            "model": self.model,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "nodes": self.nodes,
            "initializers": self.initializers,
            "metadata": self.metadata,
            "functions": self.functions,
            "lineage": self.lineage,
            "numeric": None if self.numeric is None else self.numeric.to_dict(),
        }

    def to_text(self) -> str:
        """A terminal report: ``+`` added, ``-`` removed, ``~`` changed."""
        lines = [f"OLD {self.old or '(in memory)'}", f"NEW {self.new or '(in memory)'}"]
        sections: list[tuple[str, list[str]]] = [
            ("model", [f"~ {c['field']}: {_v(c['old'])} → {_v(c['new'])}" for c in self.model]),
            ("inputs", _io_lines(self.inputs)),
            ("outputs", _io_lines(self.outputs)),
            ("nodes", _keyed_lines(self.nodes, _node_text, _node_change_text)),
            ("initializers", _keyed_lines(self.initializers, _tensor_text, _initializer_change_text)),
            ("metadata", _keyed_lines(self.metadata, _meta_text, _meta_change_text)),
            ("functions", _keyed_lines(self.functions, str, str)),
        ]
        for title, body in sections:
            if body:
                lines.append(f"{title}:")
                lines.extend(f"  {line}" for line in body)
        lines.extend(_lineage_lines(self.lineage))
        if self.numeric is not None:
            lines.append("numeric check:")
            lines.extend(f"  {line}" for line in self.numeric.lines())
        lines.append(self.verdict())
        return "\n".join(printable(line) for line in lines)  # names may hold control characters

    def verdict(self) -> str:
        """``identical``, or ``different: initializers (3), nodes (1), lineage``."""
        if self.identical:
            return "identical"
        parts = [f"{name} ({n})" for name, n in self.counts().items() if n]
        if self.lineage.get("changed"):
            parts.append("lineage")
        if self.numeric is not None and not self.numeric.passed:
            parts.append("numeric check FAILED")
        return "different: " + ", ".join(parts)

    def to_markdown(self) -> str:
        """A report for a CI job summary (GitHub-flavoured markdown)."""
        out = [
            f"### onnxgrow diff: {_code(self.old or 'OLD')} → {_code(self.new or 'NEW')}",
            "",
            f"**{self.verdict()}**",
        ]

        def table(title: str, header: Sequence[str], rows: list[list[str]]) -> None:
            if rows:
                out.extend(["", f"#### {title}", "", "| " + " | ".join(header) + " |",
                            "|" + "---|" * len(header)])
                out.extend("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows)

        table("Model", ["field", "old", "new"],
              [[c["field"], _v(c["old"]), _v(c["new"])] for c in self.model])
        for title, section in (("Inputs", self.inputs), ("Outputs", self.outputs)):
            table(title, ["name", "change", "old", "new"], _io_rows(section))
        table("Nodes", ["node", "op", "change", "details"], _node_rows(self.nodes))
        table("Initializers", ["name", "change", "old", "new", "max abs diff"],
              _initializer_rows(self.initializers))
        table("Metadata", ["key", "change", "old", "new"], _meta_rows(self.metadata))
        table("Functions", ["function", "change"],
              [[name, kind] for kind in ("added", "removed", "changed")
               for name in self.functions.get(kind, [])])
        lineage = _lineage_lines(self.lineage)
        if lineage:
            out.extend(["", "#### Lineage of NEW", ""])
            out.extend(f"{line.strip()}" for line in lineage[1:])
        if self.numeric is not None:
            out.extend(["", "#### Numeric check", "", "```", *self.numeric.lines(), "```"])
        return "\n".join(printable(line) for line in out) + "\n"


def diff_models(
    old: ir.Model | str | os.PathLike[str],
    new: ir.Model | str | os.PathLike[str],
    numeric: VerifyOptions | None = None,
) -> DiffReport:
    """Diff two models (paths or loaded models); ``numeric`` adds a :func:`onnxgrow.verify`
    run with those options. Raises GrowError when a model cannot be read.
    """
    old_model = old if isinstance(old, ir.Model) else load_model(old)
    new_model = new if isinstance(new, ir.Model) else load_model(new)
    report = DiffReport(
        old=None if isinstance(old, ir.Model) else os.fspath(old),
        new=None if isinstance(new, ir.Model) else os.fspath(new),
        model=_model_changes(old_model, new_model),
        inputs=_io_diff(old_model.graph.inputs, new_model.graph.inputs),
        outputs=_io_diff(old_model.graph.outputs, new_model.graph.outputs),
        nodes=_node_diff(list(old_model.graph), list(new_model.graph)),
        initializers=_initializer_diff(old_model.graph.initializers, new_model.graph.initializers),
        metadata=_metadata_diff(old_model.metadata_props, new_model.metadata_props),
        functions=_function_diff(old_model, new_model),
        lineage=_lineage(old_model, new_model),
    )
    if numeric is not None:
        report.numeric = verify(old_model if report.old is None else report.old,
                                new_model if report.new is None else report.new, numeric)
    return report


# --- model -------------------------------------------------------------------------


def _model_changes(old: ir.Model, new: ir.Model) -> list[Json]:
    def fields(m: ir.Model) -> dict[str, Any]:
        values: dict[str, Any] = {
            "ir_version": m.ir_version,
            "producer_name": m.producer_name,
            "producer_version": m.producer_version,
            "domain": m.domain,
            "model_version": m.model_version,
            "graph_name": m.graph.name,
        }
        for domain, version in m.opset_imports.items():
            values[f"opset:{domain or 'ai.onnx'}"] = version
        return values

    a, b = fields(old), fields(new)
    keys = list(a) + [k for k in b if k not in a]
    return [{"field": k, "old": a.get(k), "new": b.get(k)} for k in keys if a.get(k) != b.get(k)]


# --- inputs and outputs -----------------------------------------------------------


def _value_info(value: ir.Value) -> Json:
    """``{"name", "dtype", "shape"}``; dtype is the ONNX name, or the type for non-tensors."""
    dtype: str | None
    if value.type is not None and not isinstance(value.type, ir.TensorType):
        dtype = str(value.type)
    else:
        dtype = value.dtype.name if value.dtype is not None else None
    return {"name": value.name, "dtype": dtype, "shape": shape_dims(value.shape)}


def _io_diff(old: Iterable[ir.Value], new: Iterable[ir.Value]) -> Json:
    a = {v.name: _value_info(v) for v in old}
    b = {v.name: _value_info(v) for v in new}
    common_old = [n for n in a if n in b]
    common_new = [n for n in b if n in a]
    return {
        "added": [b[n] for n in b if n not in a],
        "removed": [a[n] for n in a if n not in b],
        "changed": [{"name": n, "old": a[n], "new": b[n]} for n in common_new if a[n] != b[n]],
        "reordered": common_old != common_new,
    }


# --- nodes -------------------------------------------------------------------------


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()[:16]


def _attribute_value(attr: ir.Attr) -> Any:
    """An attribute as a JSON value; tensors and graphs by type, shape and digest."""
    if attr.is_ref():
        return f"@{attr.ref_attr_name}"
    kind = attr.type
    if kind == ir.AttributeType.TENSOR:
        return _tensor_digest(attr.as_tensor())
    if kind == ir.AttributeType.TENSORS:
        return [_tensor_digest(t) for t in attr.as_tensors()]
    if kind == ir.AttributeType.GRAPH:
        return _graph_digest(attr.as_graph())
    if kind == ir.AttributeType.GRAPHS:
        return [_graph_digest(g) for g in attr.as_graphs()]
    if kind in (ir.AttributeType.FLOAT, ir.AttributeType.FLOATS):
        values = [attr.value] if kind == ir.AttributeType.FLOAT else list(attr.value)
        safe = [v if math.isfinite(v) else str(v) for v in values]
        return safe[0] if kind == ir.AttributeType.FLOAT else safe
    if kind in (ir.AttributeType.INT, ir.AttributeType.STRING):
        return attr.value
    if kind in (ir.AttributeType.INTS, ir.AttributeType.STRINGS):
        return list(attr.value)
    return str(attr.value)


def _tensor_digest(tensor: ir.TensorProtocol) -> str:
    return f"tensor {tensor.dtype.name} {list(tensor.shape.numpy())} {_digest(tensor.tobytes())}"


def _graph_digest(graph: ir.Graph) -> str:
    proto = ir.serde.serialize_graph(graph)
    return f"graph {graph.name or '(unnamed)'} {_digest(proto.SerializeToString(deterministic=True))}"


def _node_key(node: ir.Node) -> str:
    """The node's name, or ``(unnamed Op → first output)``."""
    if node.name:
        return node.name
    first = node.outputs[0].name if node.outputs else ""
    return f"(unnamed {node.op_type} → {first})"


def _node_info(node: ir.Node) -> Json:
    return {
        "key": _node_key(node),
        "name": node.name or "",
        "op_type": node.op_type,
        "domain": node.domain or "ai.onnx",
        "inputs": [v.name if v is not None else "" for v in node.inputs],
        "outputs": [v.name for v in node.outputs],
        "attributes": {name: _attribute_value(a) for name, a in node.attributes.items()},
    }


def _match(
    old: list[Json], new: list[Json], key: Callable[[Json], Any]
) -> tuple[list[tuple[Json, Json]], list[Json], list[Json]]:
    """Pair items whose key is not None and unique on both sides; return pairs and the rest."""
    old_count = Counter(key(n) for n in old)
    new_count = Counter(key(n) for n in new)
    unique = {k for k in old_count if k is not None and old_count[k] == 1 and new_count[k] == 1}
    by_key = {key(n): n for n in new if key(n) in unique}
    pairs = [(n, by_key[key(n)]) for n in old if key(n) in unique]
    return (
        pairs,
        [n for n in old if key(n) not in unique],
        [n for n in new if key(n) not in unique],
    )


def _node_diff(old_nodes: list[ir.Node], new_nodes: list[ir.Node]) -> Json:
    old = [_node_info(n) for n in old_nodes]
    new = [_node_info(n) for n in new_nodes]
    by_name, old_rest, new_rest = _match(old, new, lambda n: n["name"] or None)
    by_outputs, removed, added = _match(
        old_rest, new_rest, lambda n: (n["domain"], n["op_type"], tuple(n["outputs"]))
    )
    changed = []
    pairs = by_name + by_outputs
    position = {id(n): i for i, n in enumerate(new)}
    for a, b in sorted(pairs, key=lambda p: position[id(p[1])]):
        changes = [
            {"field": f, "old": a[f], "new": b[f]}
            for f in ("name", "op_type", "domain", "inputs", "outputs")
            if a[f] != b[f]
        ]
        for attr in list(a["attributes"]) + [k for k in b["attributes"] if k not in a["attributes"]]:
            old_value, new_value = a["attributes"].get(attr), b["attributes"].get(attr)
            if old_value != new_value:
                changes.append({"field": f"attributes.{attr}", "old": old_value, "new": new_value})
        if changes:
            changed.append({"key": b["key"], "old_key": a["key"], "op_type": b["op_type"],
                            "changes": changes})
    return {
        "added": added,
        "removed": removed,
        "changed": changed,
        "unchanged": len(pairs) - len(changed),
    }


# --- initializers ------------------------------------------------------------------


def _tensor_info(value: ir.Value) -> Json:
    """Name, dtype and shape from the tensor's header; no data is read."""
    tensor = value.const_value
    if tensor is None:
        return {"name": value.name, "dtype": value.dtype.name if value.dtype else None,
                "shape": shape_dims(value.shape)}
    return {"name": value.name, "dtype": tensor.dtype.name, "shape": list(tensor.shape.numpy())}


def compare_tensors(
    old: ir.TensorProtocol, new: ir.TensorProtocol, chunk: int = CHUNK_ELEMENTS
) -> tuple[int, float | None]:
    """(values that differ, max abs difference) of two tensors of one dtype and shape.

    Compares ``chunk`` elements of each at a time (:func:`tensor_blocks`: an external
    tensor's file is read block by block, never mapped whole, so memory stays a few blocks
    whatever the tensor's size or rank); NaN at the same place is equal. Two external
    tensors that are the same bytes of the same file are equal unread. The max abs
    difference is None when it is not finite (NaN or infinity on one side only) or the
    dtype has no distance (strings).
    """
    if _same_stored_bytes(old, new):
        return 0, 0.0
    floating = old.dtype.is_floating_point()
    differ, max_abs, numeric = 0, 0.0, True
    for x, y in zip(tensor_blocks(old, chunk), tensor_blocks(new, chunk)):
        n, gap, numeric = _compare_block(x, y, floating)
        differ += n
        if math.isnan(gap) or gap > max_abs:  # a NaN stays: nothing compares above it
            max_abs = gap
    if not numeric or not math.isfinite(max_abs):
        return differ, None
    return differ, max_abs


def tensor_blocks(tensor: ir.TensorProtocol, elements: int) -> Iterator[np.ndarray]:
    """The values of ``tensor``, flat, ``elements`` at a time: read from an external tensor's
    file with plain reads (a memory map would keep every page read resident), taken from the
    serialized bytes of a parsed one (whatever its rank: numpy arrays have at most 64 axes),
    or sliced from an in-memory array. Sub-byte and string tensors come whole."""
    dtype = tensor.dtype
    if dtype == ir.DataType.STRING or dtype.bitwidth < 8:  # a string has no bitwidth
        yield tensor.numpy().reshape(-1)
        return
    item = np.dtype(dtype.numpy()).newbyteorder("<")
    size = math.prod(tensor.shape.numpy())
    if isinstance(tensor, ir.ExternalTensor):
        with open(tensor.path, "rb") as file:
            file.seek(tensor.offset or 0)
            for start in range(0, size, elements):
                count = min(elements, size - start)
                block = np.frombuffer(file.read(count * item.itemsize), item)
                if block.size != count:
                    raise GrowError(f"{tensor.path}: external data of tensor {tensor.name!r} ends early")
                yield block
        return
    flat = np.frombuffer(tensor.tobytes(), item) if isinstance(tensor, ir.serde.TensorProtoTensor) else \
        tensor.numpy().reshape(-1)
    for start in range(0, size, elements):
        yield flat[start:start + elements]


def _same_stored_bytes(old: ir.TensorProtocol, new: ir.TensorProtocol) -> bool:
    """Whether both are external tensors stored at one offset of one file (``diff M M``)."""
    if not (isinstance(old, ir.ExternalTensor) and isinstance(new, ir.ExternalTensor)):
        return False
    try:
        return (old.offset or 0) == (new.offset or 0) and os.path.samefile(old.path, new.path)
    except OSError:
        return False


@np.errstate(invalid="ignore", over="ignore")
def _compare_block(x: np.ndarray, y: np.ndarray, floating: bool) -> tuple[int, float, bool]:
    """(values that differ, max abs difference (0 if none, NaN if not finite), whether the
    dtype has a distance) of two blocks."""
    numeric = x.dtype.kind not in "OSU"
    if floating:  # NaN/Inf payloads of damaged weights compare as values, without warnings
        x, y = x.astype(np.float64), y.astype(np.float64)
        same = (x == y) | (np.isnan(x) & np.isnan(y))
    else:
        same = x == y
    n = int(same.size - np.count_nonzero(same))
    gap = 0.0
    if n and numeric:
        gap = float(np.abs(x[~same].astype(np.float64) - y[~same].astype(np.float64)).max())
    return n, gap, numeric


def _initializer_diff(old: Mapping[str, ir.Value], new: Mapping[str, ir.Value]) -> Json:
    changed = []
    unchanged = 0
    for name, value in new.items():
        if name not in old:
            continue
        a, b = _tensor_info(old[name]), _tensor_info(value)
        kinds = [k for k in ("dtype", "shape") if a[k] != b[k]]
        entry: Json = {"name": name, "old": a, "new": b, "change": "_and_".join(kinds) or "values",
                       "changed_values": None, "max_abs_diff": None}
        if not kinds:
            old_t, new_t = old[name].const_value, value.const_value
            if old_t is None or new_t is None:
                unchanged += 1
                continue
            differ, max_abs = compare_tensors(old_t, new_t)
            if not differ:
                unchanged += 1
                continue
            entry.update(changed_values=differ, max_abs_diff=max_abs)
        changed.append(entry)
    return {
        "added": [_tensor_info(v) for n, v in new.items() if n not in old],
        "removed": [_tensor_info(v) for n, v in old.items() if n not in new],
        "changed": changed,
        "unchanged": unchanged,
    }


# --- metadata, functions, lineage -------------------------------------------------------


def _metadata_diff(old: Mapping[str, str], new: Mapping[str, str]) -> Json:
    a = {k: v for k, v in old.items() if k != HISTORY_KEY}
    b = {k: v for k, v in new.items() if k != HISTORY_KEY}
    return {
        "added": [{"key": k, "value": v} for k, v in b.items() if k not in a],
        "removed": [{"key": k, "value": v} for k, v in a.items() if k not in b],
        "changed": [{"key": k, "old": a[k], "new": v} for k, v in b.items() if k in a and a[k] != v],
    }


def _function_diff(old: ir.Model, new: ir.Model) -> Json:
    def digests(m: ir.Model) -> dict[str, str]:
        return {
            "::".join(p for p in key if p): _digest(
                ir.serde.serialize_function(fn).SerializeToString(deterministic=True)
            )
            for key, fn in m.functions.items()
        }

    a, b = digests(old), digests(new)
    return {
        "added": [k for k in b if k not in a],
        "removed": [k for k in a if k not in b],
        "changed": [k for k in b if k in a and a[k] != b[k]],
    }


def _lineage(old: ir.Model, new: ir.Model) -> Json:
    """NEW's history in words; entries past the part OLD already had are ``new``."""
    before, after = read_history(old), read_history(new)
    common = 0
    while common < min(len(before), len(after)) and before[common] == after[common]:
        common += 1
    return {
        "changed": before != after,
        "entries": [
            {"description": describe(e), "new": i >= common, "entry": e}
            for i, e in enumerate(after)
        ],
    }


# --- rendering ---------------------------------------------------------------------


def _v(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_v(v) for v in value) + "]"
    return "—" if value is None else str(value)


def _code(text: str) -> str:
    return "`" + text.replace("`", "'") + "`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _type_text(info: Json) -> str:
    return f"{info['dtype']} {format_dims(info['shape'])}"


def _io_lines(section: Json) -> list[str]:
    lines = [f"+ {i['name']}: {_type_text(i)}" for i in section.get("added", [])]
    lines += [f"- {i['name']}: {_type_text(i)}" for i in section.get("removed", [])]
    lines += [f"~ {c['name']}: {_type_text(c['old'])} → {_type_text(c['new'])}"
              for c in section.get("changed", [])]
    if section.get("reordered"):
        lines.append("~ order changed")
    return lines


def _io_rows(section: Json) -> list[list[str]]:
    rows = [[i["name"], "added", "", _type_text(i)] for i in section.get("added", [])]
    rows += [[i["name"], "removed", _type_text(i), ""] for i in section.get("removed", [])]
    rows += [[c["name"], "changed", _type_text(c["old"]), _type_text(c["new"])]
             for c in section.get("changed", [])]
    if section.get("reordered"):
        rows.append(["", "order changed", "", ""])
    return rows


def _keyed_lines(
    section: Json, show: Callable[[Any], str], show_change: Callable[[Any], str]
) -> list[str]:
    return (
        [f"+ {show(i)}" for i in section.get("added", [])]
        + [f"- {show(i)}" for i in section.get("removed", [])]
        + [f"~ {show_change(c)}" for c in section.get("changed", [])]
    )


def _node_text(node: Json) -> str:
    return (f"{node['key']} ({node['op_type']}): "
            f"{', '.join(node['inputs'])} → {', '.join(node['outputs'])}")


def _change_text(change: Json) -> str:
    if change["field"] == "name":
        if not change["new"]:
            return f"name {change['old']} dropped"
        return f"renamed from {change['old']}" if change["old"] else "given a name (was unnamed)"
    return f"{change['field']} {_v(change['old'])} → {_v(change['new'])}"


def _node_change_text(change: Json) -> str:
    return f"{change['key']} ({change['op_type']}): " + "; ".join(
        _change_text(c) for c in change["changes"]
    )


def _node_rows(section: Json) -> list[list[str]]:
    def wiring(n: Json) -> str:
        return f"{', '.join(n['inputs'])} → {', '.join(n['outputs'])}"

    rows = [[n["key"], n["op_type"], "added", wiring(n)] for n in section.get("added", [])]
    rows += [[n["key"], n["op_type"], "removed", wiring(n)] for n in section.get("removed", [])]
    rows += [[c["key"], c["op_type"], "changed", "; ".join(_change_text(x) for x in c["changes"])]
             for c in section.get("changed", [])]
    return rows


def _tensor_text(info: Json) -> str:
    return f"{info['name']}: {_type_text(info)}"


def _initializer_change_text(change: Json) -> str:
    if change["change"] != "values":
        return f"{change['name']}: {_type_text(change['old'])} → {_type_text(change['new'])}"
    return f"{change['name']}: {_type_text(change['new'])} values changed, {_values_text(change)}"


def _values_text(change: Json) -> str:
    size = math.prod(d for d in change["new"]["shape"] if isinstance(d, int))
    diff = change["max_abs_diff"]
    return (f"max abs diff {'not finite' if diff is None else format(diff, '.3g')} "
            f"({change['changed_values']} of {size} values)")


def _initializer_rows(section: Json) -> list[list[str]]:
    rows = [[i["name"], "added", "", _type_text(i), ""] for i in section.get("added", [])]
    rows += [[i["name"], "removed", _type_text(i), "", ""] for i in section.get("removed", [])]
    rows += [
        [c["name"], c["change"].replace("_", " "), _type_text(c["old"]), _type_text(c["new"]),
         _values_text(c) if c["change"] == "values" else ""]
        for c in section.get("changed", [])
    ]
    return rows


def _meta_text(item: Json) -> str:
    return f"{item['key']} = {item['value']!r}"


def _meta_change_text(change: Json) -> str:
    return f"{change['key']}: {change['old']!r} → {change['new']!r}"


def _meta_rows(section: Json) -> list[list[str]]:
    rows = [[i["key"], "added", "", i["value"]] for i in section.get("added", [])]
    rows += [[i["key"], "removed", i["value"], ""] for i in section.get("removed", [])]
    rows += [[c["key"], "changed", c["old"], c["new"]] for c in section.get("changed", [])]
    return rows


def _lineage_lines(lineage: Json) -> list[str]:
    entries = lineage.get("entries", [])
    if not entries and not lineage.get("changed"):
        return []
    if not entries:
        return ["lineage of NEW:", "  (none; OLD had an onnxgrow history)"]
    return ["lineage of NEW:"] + [
        f"  {i}. {e['description']}{' (new)' if e['new'] else ''}"
        for i, e in enumerate(entries, 1)
    ]
