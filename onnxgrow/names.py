"""The names users type for a layer, and resolving them to nodes.

A node answers to:
- its ONNX node name (``/fc1/Gemm``, ``node_linear_3``);
- its PyTorch module path: from the legacy exporter's scoped node name
  (``/layer1/layer1.0/conv1/Conv`` → ``layer1.0.conv1``), or from the dynamo
  exporter's node metadata ``pkg.torch.onnx.name_scopes``;
- the prefix of its weight's name (``fc1.weight`` → ``fc1``) and the weight name itself;
- a Keras/tf2onnx scope (``sequential/dense_1/MatMul`` → ``sequential/dense_1``);
- the last part of a module path or scope (``conv1``, ``dense_1``) when that is unique;
- a node without a name: the generated name ``<op_type>_<k>``, ``k`` its index among the
  graph's nodes of that op type (named ones included) in graph order, so ``Gemm_1`` is
  the second Gemm. It is computed, not stored: the model is not changed unless the node
  is grown (then the name is written into it, so it survives later insertions). A
  generated name that another node already has as its real name gets ``_unnamed``
  appended.

Resolution tries exact names first, then full paths, then short names; an unknown or
ambiguous name raises a GrowError listing the closest candidates.
"""

from __future__ import annotations

import ast
import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import onnx_ir as ir

from onnxgrow.errors import GrowError

NAME_SCOPES_KEY = "pkg.torch.onnx.name_scopes"
_WEIGHT_SUFFIXES = (".weight", ".bias", "/kernel", "/bias", ":0")


def legacy_module_path(node_name: str) -> str | None:
    """``/layer1/layer1.0/conv1/Conv`` → ``layer1.0.conv1``; None without a scope.

    The legacy exporter writes one name per module level: the attribute name
    (``conv1``), or, for the children of a container, the container's own level name
    dotted with the child's key (``layer1.0`` under ``layer1``, ``downsample.0`` under
    ``layer2/downsample``), so ``/layer2/downsample/downsample.0/Conv`` →
    ``layer2.downsample.0``.
    """
    if not node_name.startswith("/"):
        return None
    parts = [p for p in node_name.split("/") if p][:-1]
    path, previous = "", ""
    for part in parts:
        if previous and part.startswith(previous + "."):
            path += part[len(previous):]
        else:
            path = f"{path}.{part}" if path else part
        previous = part
    return path or None


def dynamo_module_path(node: ir.Node) -> str | None:
    """The innermost module path in ``pkg.torch.onnx.name_scopes`` (the last entry is the op)."""
    text = node.metadata_props.get(NAME_SCOPES_KEY)
    if not text:
        return None
    try:
        scopes = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return None
    if not isinstance(scopes, list) or len(scopes) < 2:
        return None
    path = scopes[-2]
    return path if isinstance(path, str) and path else None


def scope_path(node_name: str) -> str | None:
    """A tf2onnx/Keras scope: ``model/dense_1/MatMul`` → ``model/dense_1``."""
    if node_name.startswith("/") or "/" not in node_name:
        return None
    scope = node_name.rsplit("/", 1)[0]
    return scope or None


def weight_prefix(name: str | None) -> str | None:
    """``fc1.weight`` → ``fc1``; ``dense/kernel`` → ``dense``; else None."""
    if not name:
        return None
    for suffix in _WEIGHT_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def module_path(node: ir.Node) -> str | None:
    """The framework module path of a node, from metadata or its scoped name."""
    return dynamo_module_path(node) or legacy_module_path(node.name or "")


@dataclass(frozen=True)
class NodeNames:
    """Every name a node answers to, strongest first."""

    node: ir.Node
    exact: tuple[str, ...]  # node name
    full: tuple[str, ...]  # module paths, scopes, weight names and prefixes
    short: tuple[str, ...]  # last part of a path

    @property
    def display(self) -> str:
        """The name to print: the module path when there is one, else the node name."""
        return self.full[0] if self.full else self.exact[0]

    def all(self) -> tuple[str, ...]:
        return self.exact + self.full + self.short


def _short(path: str) -> str | None:
    for sep in ("/", "."):
        if sep in path:
            tail = path.rsplit(sep, 1)[1]
            return tail if tail and not tail.isdigit() else None
    return None


def generated_names(graph: ir.Graph) -> dict[ir.Node, str]:
    """The generated name of every unnamed node of ``graph`` (see the module rules)."""
    taken = {node.name for node in graph if node.name}
    counts: dict[str, int] = {}
    names: dict[ir.Node, str] = {}
    for node in graph:
        index = counts.get(node.op_type, 0)
        counts[node.op_type] = index + 1
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_unnamed"
            names[node] = name
    return names


def generated_name(node: ir.Node) -> str | None:
    """The generated name of one unnamed node (None when it has a name or no graph)."""
    if node.name or node.graph is None:
        return None
    return generated_names(node.graph).get(node)


def names_of(node: ir.Node, weight_names: Sequence[str | None] = (), generated: str | None = None) -> NodeNames:
    """All names of ``node``; ``weight_names`` are its parameter initializers' names,
    ``generated`` its generated name when it has none."""
    full: list[str] = []

    def add(name: str | None) -> None:
        if name and name not in full:
            full.append(name)

    for weight in weight_names[:1]:
        add(weight_prefix(weight))
    add(dynamo_module_path(node))
    node_name = node.name or ""
    legacy = legacy_module_path(node_name)
    add(legacy)
    if legacy:
        add(node_name.strip("/").rsplit("/", 1)[0])
    add(scope_path(node_name))
    for weight in weight_names:
        add(weight_prefix(weight))
    paths = list(full)
    for weight in weight_names:
        add(weight)
    short = []
    for path in paths:
        tail = _short(path)
        if tail and tail not in short and tail not in full:
            short.append(tail)
    exact = (node_name,) if node_name else ((generated,) if generated else ())
    return NodeNames(node, exact, tuple(n for n in full if n != node_name), tuple(short))


class NameIndex:
    """Names to candidates, per level, built once: resolving a name costs its hits, not the
    number of candidates (``inspect`` resolves every layer's display name)."""

    _LEVELS = ("exact", "full", "short")

    def __init__(self, candidates: Iterable[NodeNames]) -> None:
        self.candidates = list(candidates)
        self._hits: dict[str, dict[str, dict[int, NodeNames]]] = {level: {} for level in self._LEVELS}
        for c in self.candidates:
            for level in self._LEVELS:
                for name in getattr(c, level):
                    self._hits[level].setdefault(name, {})[id(c.node)] = c

    def resolve(self, name: str, what: str = "layer") -> NodeNames:
        """The one candidate ``name`` designates; GrowError when unknown or ambiguous.

        Exact names first, then full paths, then short names; at the first level where
        ``name`` is known, it must designate one node.
        """
        for level in self._LEVELS:
            unique = list(self._hits[level].get(name, {}).values())
            if len(unique) == 1:
                return unique[0]
            if len(unique) > 1:
                listing = ", ".join(sorted(f"{c.display} ({c.exact[0] if c.exact else c.node.op_type})"
                                           for c in unique))
                raise GrowError(f"{what} name {name!r} is ambiguous; it matches: {listing}")
        vocabulary = sorted({n for c in self.candidates for n in c.all()})
        close = difflib.get_close_matches(name, vocabulary, n=5, cutoff=0.5)
        if not close:
            close = sorted({c.display for c in self.candidates})[:8]
        hint = f"; closest: {', '.join(close)}" if close else f"; the model has no {what}s"
        raise GrowError(f"no {what} named {name!r}{hint}")


def resolve(name: str, candidates: Iterable[NodeNames], what: str = "layer") -> NodeNames:
    """The one candidate ``name`` designates; GrowError when unknown or ambiguous (see :class:`NameIndex`)."""
    return NameIndex(candidates).resolve(name, what)
