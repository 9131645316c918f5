"""Block numbers in a graph's names, and renumbering them through the IR (docs/design.md §5).

A block ``C.i`` (container ``C``, index ``i``: ``model.layers.3``; torchvision's ViT
``encoder.layers.encoder_layer_3``, container ``encoder.layers.encoder_layer_``) is named
in a graph in two forms:

- a *dotted* path, in weight names (``model.layers.3.mlp.down_proj.weight``) and in the
  dynamo exporter's node metadata (``pkg.torch.onnx.name_scopes`` and ``namespace``):
  ``C.i`` not preceded by a word character or a dot and not followed by a word character;
- a *legacy scope*, in the node names of the TorchScript exporter and optimum and the
  values named after them (``/model/layers.3/mlp/down_proj/MatMul``,
  ``/layer1/layer1.0/conv1/Conv``): the ``/`` part whose module path (read as
  :func:`onnxgrow.names.legacy_module_path` reads it) ends ``C.i``, or a tail of it at a
  dot (the scope may leave out outer modules: ``/layers.3/...`` for ``model.layers.3``).

:class:`Renumbering` maps indices of one container (``{2: 3, 3: 4}``) in every such name of a
string at once, so a block never takes a name another still holds. :func:`renumber_graph`
applies it to every node name, value name, initializer name and those two metadata entries
of a graph, renaming values (never their data); model inputs and outputs keep their names,
which are the model's interface. The dynamo exporter's other metadata (``fx_node``, the stack
trace) is left as it is: nothing reads names from it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import onnx_ir as ir

from onnxgrow.names import NAME_SCOPES_KEY

#: Node metadata holding dotted module paths.
PATH_METADATA = (NAME_SCOPES_KEY, "namespace")


def joiner(container: str) -> str:
    """What joins a container and an index: ``.`` (``model.layers.3``), nothing after ``_``."""
    return "" if container.endswith("_") else "."


def block_name(container: str, index: int) -> str:
    return f"{container}{joiner(container)}{index}"


@dataclass(frozen=True)
class Renumbering:
    """Indices of the blocks of ``container`` mapped to new ones (see the module rules)."""

    container: str
    indices: Mapping[int, int]
    _dotted: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        prefix = re.escape(self.container + joiner(self.container))
        object.__setattr__(self, "_dotted", re.compile(rf"(?<![\w.]){prefix}(\d+)(?!\w)"))

    def block(self, name: str) -> str:
        """``model.layers.2`` → ``model.layers.3`` (a name of another container as it is)."""
        return self.dotted(name)

    def matches(self, text: str) -> list[re.Match[str]]:
        """The dotted block names of ``text`` (group 1: the index)."""
        return list(self._dotted.finditer(text)) if self.container in text else []

    def dotted(self, text: str) -> str:
        """``text`` with every dotted block name renumbered."""
        if self.container not in text:
            return text
        return self._dotted.sub(lambda m: self._renumbered(m, 1), text)

    def _renumbered(self, match: re.Match[str], group: int) -> str:
        """The matched block name with its index (the match's last digits) renumbered."""
        digits = match.group(group)
        new = self.indices.get(int(digits))
        return match.group(0) if new is None else match.group(0)[: -len(digits)] + str(new)

    def scoped(self, name: str) -> str:
        """A legacy scoped name (``/model/layers.3/mlp/MatMul``) with the block's scope part renumbered."""
        if not name.startswith("/"):
            return name
        parts = name.split("/")
        full = self.container + joiner(self.container)
        path, previous = "", ""
        for k in range(1, len(parts) - 1):
            part = parts[k]
            if not part:
                continue
            if previous and part.startswith(previous + "."):
                path += part[len(previous):]
            else:
                path = f"{path}.{part}" if path else part
            previous = part
            digits = re.search(r"(\d+)$", part)
            if digits is None or not path.endswith(digits.group(1)):
                continue
            head = path[: -len(digits.group(1))]
            new = self.indices.get(int(digits.group(1)))
            if new is not None and (head == full or full.endswith("." + head)):
                parts[k] = part[: digits.start(1)] + str(new)
        return "/".join(parts)

    def name(self, text: str) -> str:
        """A node or value name renumbered: a legacy scoped name as such, any other as dotted
        (once: a scope part can read as a dotted name too, ``/layer3/layer3.4/...``)."""
        return self.scoped(text) if text.startswith("/") else self.dotted(text)


def renumber_node(node: ir.Node, renumbering: Renumbering) -> None:
    """Renumber ``node``'s name and the module paths in its metadata."""
    if node.name:
        node.name = renumbering.name(node.name)
    for key in PATH_METADATA:
        text = node.metadata_props.get(key)
        if text:
            node.metadata_props[key] = renumbering.dotted(text)


def renumber_graph(graph: ir.Graph, renumberings: Iterable[Renumbering]) -> None:
    """Renumber every name of ``graph`` (its subgraphs' too) that ``renumberings`` map (see the
    module rules). Initializers are renamed from the highest old index down, so that no name
    is taken while it is still held."""
    for renumbering in renumberings:
        if not renumbering.indices:
            continue
        for node in graph.all_nodes():
            renumber_node(node, renumbering)
            for value in node.outputs:
                if value.name and not value.is_graph_output():
                    value.name = renumbering.name(value.name)
        moves = []
        for name, value in graph.initializers.items():
            new = renumbering.name(name)
            if new != name and not value.is_graph_input() and not value.is_graph_output():
                moves.append((_highest_index(name, renumbering), value, new))
        for _, value, new in sorted(moves, key=lambda move: -move[0]):
            value.name = new


def _highest_index(name: str, renumbering: Renumbering) -> int:
    """The old index a name is renumbered from (the largest, should it hold several)."""
    found = [int(m.group(1)) for m in renumbering.matches(name) if int(m.group(1)) in renumbering.indices]
    return max(found, default=-1)


def renumbering_clash(graph: ir.Graph, renumberings: Iterable[Renumbering]) -> str | None:
    """A name that two values of ``graph`` would share once renumbered (a block the structure
    did not find, numbered in a way it does not read), or None; reads only."""
    steps = [r for r in renumberings if r.indices]
    if not steps:
        return None
    values = [*graph.inputs, *graph.initializers.values(), *(v for n in graph.all_nodes() for v in n.outputs)]
    seen: dict[str, ir.Value] = {}
    for value in values:
        name = value.name or ""
        if name and not value.is_graph_input() and not value.is_graph_output():
            for renumbering in steps:
                name = renumbering.name(name)
        if name and seen.setdefault(name, value) is not value:
            return name
    return None
