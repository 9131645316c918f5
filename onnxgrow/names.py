"""The names users type for a layer, and resolving them to nodes.

A node answers to the names of every registered naming convention (:data:`CONVENTIONS`,
one small function each, in display priority):

- ``skl2onnx``: a scikit-learn MLP's ``coefs_[i]`` MatMul (weights ``coefficient``,
  ``coefficient1``...) answers to ``coefs_[i]``, and a hidden one also to ``hidden_i``;
- ``flax``: a Flax module's path as ``model.tabulate`` prints it (``Dense_0``,
  ``Block_1/Dense_0``, a named ``head``), from a jax2tf + tf2onnx node
  name ``jax2tf_<function>_/<Model>/Block_1/Dense_0/einsum/Einsum``: the jax2tf function
  scope, the top module's class and the op go, and so do the scopes of JAX primitives and
  TensorFlow ops below the module (``einsum``, ``dot_general``, ``pjit_add_``...);
- ``keras``: the Keras layer name as ``model.summary()`` prints it, and its path under
  the model (``mnist_cnn/fc1``), from a tf2onnx scope in the node's or its weights' names
  with the converter's additions removed: ``StatefulPartitionedCall/`` prefixes, the op
  tails (``/MatMul``, ``/BiasAdd``, ``/Cast/ReadVariableOp:0``, ``/convolution/merged_input``,
  ``/Conv2D_weights_fused_bn``...) and, in Keras 3 graphs, the ``_1`` Keras 3 adds to
  every scope (``mnist_cnn_1/fc1_1`` → ``fc1``). In a tf2onnx graph, an unscoped node
  without scoped weights (the fused ``LSTM__33``) takes the scope of the node feeding it.
  Not for jax2tf names (``flax``), and a Caffe2 device scope (``gpu_0/``) is no layer;
- ``caffe2``: the layer of a Caffe2 weight blob the node reads, ``[gpu_0/]conv1_w_0`` →
  ``conv1`` (and ``gpu_0/conv1``): ``_w_0``, ``_b_0``, ``_s_0``, ``_rm_0``, ``_riv_0`` end
  the blobs of a layer. Read from the node's inputs, so an IR-3 weight (an initializer that
  is also a graph input) names its layer too;
- ``weight-prefix``: the prefix of its first weight's name (``fc1.weight`` → ``fc1``);
- ``dynamo``: its PyTorch module path from the dynamo exporter's node metadata
  ``pkg.torch.onnx.name_scopes``;
- ``legacy``: its PyTorch module path from the legacy exporter's scoped node name
  (``/layer1/layer1.0/conv1/Conv`` → ``layer1.0.conv1``), with the outer modules the scope
  leaves out put back (:func:`legacy_outer_prefixes`: ``model.layers.0.mlp.up_proj`` when
  ``forward`` called ``self.model.layers[0]``), the path as scoped, and that scope as written;
- ``scope``: a scope as written (``sequential/dense_1/MatMul`` → ``sequential/dense_1``);
- ``weights``: every weight's prefix, and the weight names themselves.

Besides: its ONNX node name (``/fc1/Gemm``, ``node_linear_3``); the last part of a
module path or scope (``conv1``, ``dense_1``) when that is unique; and a node without a
name: the generated name ``<op_type>_<k>``, ``k`` its index among the graph's nodes of
that op type (named ones included) in graph order, so ``Gemm_1`` is the second Gemm. It is
computed, not stored: the model is not changed unless the node is grown (then the name is
written into it, so it survives later insertions). A generated name that another node
already has as its real name gets ``_unnamed`` appended.

Resolution tries exact names first, then full paths, then short names; an unknown or
ambiguous name raises a GrowError listing the closest candidates.

A name that no node answers to and that holds ``*``, ``?`` or ``[`` is a *pattern*
(:func:`is_pattern`, shell-style: ``*`` also crosses dots): ``model.layers.*.mlp.up_proj``,
``*.self_attn``. It designates every node one of whose names it matches
(:func:`matches_pattern`). The nodes of one pattern must be of one kind: the part of their
names after the first index (:func:`block_role`: ``mlp.up_proj`` in every layer) is the same
(:mod:`onnxgrow.widening.patterns` checks it and lists what a pattern matched).
"""

from __future__ import annotations

import ast
import difflib
import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

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


def legacy_outer_prefixes(graph: ir.Graph) -> dict[str, str]:
    """The outer module prefixes a legacy scope leaves out, by module path.

    The legacy exporter scopes a node by the modules whose ``forward`` ran, so a model whose
    ``forward`` calls ``self.model.layers[0]`` directly gives ``/layers.0/mlp/up_proj/MatMul``
    for a weight the model names ``model.layers.0.mlp.up_proj.weight``. The rule: when a node
    with legacy path ``M`` reads a value named ``<outer>.M.<slot>`` (an initializer, or the
    Identity a deduplicating exporter leaves under the weight's name), ``M`` and each of
    its ancestors (``layers.0``, ``layers``) map to ``<outer>``; an ancestor that two weights
    map to different outers maps to nothing.
    """
    found: dict[str, set[str]] = {}
    for node in graph:
        path = legacy_module_path(node.name or "")
        if path is None:
            continue
        for value in node.inputs:
            prefix = (value.name or "").rpartition(".")[0] if value is not None else ""
            if not prefix.endswith("." + path):
                continue
            outer = prefix[: -len(path) - 1]
            parts = path.split(".")
            for end in range(len(parts), 0, -1):
                found.setdefault(".".join(parts[:end]), set()).add(outer)
    return {path: next(iter(outers)) for path, outers in found.items() if len(outers) == 1}


def with_outer_prefix(path: str, prefixes: Mapping[str, str]) -> str:
    """``path`` under the outer prefix of its nearest ancestor in ``prefixes`` (see
    :func:`legacy_outer_prefixes`), else unchanged."""
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        outer = prefixes.get(".".join(parts[:end]))
        if outer is not None:
            return f"{outer}.{path}"
    return path


def module_path(node: ir.Node, prefixes: Mapping[str, str] | None = None) -> str | None:
    """The framework module path of a node, from metadata or its scoped name; a legacy path
    gets the outer prefix ``prefixes`` (:func:`legacy_outer_prefixes`) give it."""
    dynamo = dynamo_module_path(node)
    if dynamo:
        return dynamo
    legacy = legacy_module_path(node.name or "")
    return with_outer_prefix(legacy, prefixes) if legacy and prefixes else legacy


# ----- Keras / tf2onnx ---------------------------------------------------------------------

#: Scopes TensorFlow puts around a whole traced function (SavedModel signatures).
_TF_CALL_SCOPE = re.compile(r"^(Stateful)?PartitionedCall(_\d+)?$")
#: Sub-scopes TensorFlow ops open inside a Keras layer's scope, below the layer.
_TF_OP_SCOPES = frozenset({
    "MatMul", "BiasAdd", "Cast", "ReadVariableOp", "convolution", "Conv1D", "Conv2D", "Conv3D",
    "depthwise", "Tensordot", "merged_input", "batchnorm", "BatchNorm", "FusedBatchNormV3",
})
_KERAS3_SCOPE_SUFFIX = re.compile(r"_\d+$")
#: Names only Keras 3 graphs have: its Dense reads its kernel through a Cast, its Conv is
#: ``tf.nn.convolution`` (tf.keras 2: ``MatMul/ReadVariableOp``, ``Conv2D``).
_KERAS3_MARKERS = ("/Cast/ReadVariableOp", "/convolution")


def is_keras3_graph(graph: ir.Graph) -> bool:
    """Whether tf2onnx converted ``graph`` from Keras 3 (whose scopes all end in ``_1``)."""
    names = [n.name or "" for n in graph] + list(graph.initializers)
    return any(marker in name for name in names for marker in _KERAS3_MARKERS)


def keras_layer_path(name: str | None, keras3: bool) -> str | None:
    """The Keras layer path in a tf2onnx node or tensor name: ``StatefulPartitionedCall/
    mnist_cnn_1/fc1_1/Cast/ReadVariableOp:0`` → ``mnist_cnn/fc1`` (``keras3``: strip the
    ``_1`` Keras 3 adds to every scope); None without a scope."""
    if not name or name.startswith("/") or "/" not in name:
        return None
    parts = name.split(":")[0].split("/")[:-1]
    while parts and (_TF_CALL_SCOPE.match(parts[0]) or _CAFFE2_DEVICE.match(parts[0])):
        parts.pop(0)
    while parts and parts[-1] in _TF_OP_SCOPES:
        parts.pop()
    if keras3:
        parts = [_KERAS3_SCOPE_SUFFIX.sub("", part) for part in parts]
    return "/".join(parts) if parts and all(parts) else None


# ----- Flax through jax2tf, Caffe2 -------------------------------------------------------------

#: The scope jax2tf opens around a converted function: ``jax2tf_<function name>_``.
_JAX2TF_SCOPE = re.compile(r"^jax2tf_\w*_$")
#: Scopes of JAX primitives and of the TensorFlow ops jax2tf lowers them to, below a module.
_JAX_OP_SCOPES = frozenset({
    "einsum", "dot_general", "conv_general_dilated", "convolution", "Tensordot", "BroadcastTo", "Reshape",
    "reshape", "transpose", "broadcast_in_dim", "squeeze", "expand_dims", "Conv2D", "Conv1D", "Conv3D",
    "MatMul", "BiasAdd",
})
_COUNTER = re.compile(r"_\d+$")
#: A Caffe2 device scope: ``gpu_0/``.
_CAFFE2_DEVICE = re.compile(r"^(gpu|cpu)_\d+$")
#: A Caffe2 weight blob, ``[gpu_0/]<layer>_<kind>_0``: weight, bias, BatchNorm scale, running mean, variance.
_CAFFE2_BLOB = re.compile(r"^(?P<device>(gpu|cpu)_\d+/)?(?P<layer>\w+?)_(w|b|s|rm|riv)_0$")


def _without_call_scopes(name: str) -> list[str]:
    """The ``/`` parts of a TensorFlow name (``:0`` dropped), less the outer call scopes."""
    parts = name.split(":")[0].split("/")
    while parts and _TF_CALL_SCOPE.match(parts[0]):
        parts.pop(0)
    return parts


def is_jax2tf_name(name: str | None) -> bool:
    """Whether a node name lies in a jax2tf function scope (``jax2tf_predict_/...``)."""
    parts = _without_call_scopes(name) if name else []
    return len(parts) > 1 and bool(_JAX2TF_SCOPE.match(parts[0]))


def flax_module_path(name: str | None) -> str | None:
    """The Flax module path in a jax2tf + tf2onnx node name, as ``model.tabulate`` prints it:
    ``jax2tf_predict_/Net/Block_1/Dense_0/pjit_add_/AddV2`` → ``Block_1/Dense_0``; None
    outside a module (``jax2tf_predict_/Net/pjit_relu_/Maximum``) or jax2tf."""
    if not is_jax2tf_name(name):
        return None
    parts = _without_call_scopes(name or "")[2:-1]  # less the jax2tf scope, the top module, the op
    while parts and (parts[-1].startswith(("pjit_", "jit_")) or _COUNTER.sub("", parts[-1]) in _JAX_OP_SCOPES):
        parts.pop()
    return "/".join(parts) if parts and all(parts) else None


def caffe2_layer(blob: str | None) -> tuple[str, str] | None:
    """The layer of a Caffe2 weight blob and its device-scoped path: ``gpu_0/conv1_w_0`` →
    (``conv1``, ``gpu_0/conv1``), ``res_conv1_bn_riv_0`` → (``res_conv1_bn``, same); else None."""
    match = _CAFFE2_BLOB.match(blob or "")
    if match is None:
        return None
    layer = match.group("layer")
    return layer, (match.group("device") or "") + layer


def is_tf2onnx_graph(graph: ir.Graph) -> bool:
    """Whether tf2onnx wrote ``graph``: its weights keep TensorFlow's ``ReadVariableOp`` names."""
    return any("ReadVariableOp" in name for name in graph.initializers)


def keras_layer_of(node: ir.Node) -> str | None:
    """The Keras layer a node of a tf2onnx graph belongs to (for messages): from its scope,
    else (an unscoped node) from the scope of the node feeding it; None elsewhere."""
    feeder = _fed_by(node) if "/" not in (node.name or "/") else None
    scoped = node.name if keras_layer_path(node.name, False) else feeder.name if feeder is not None else None
    if node.graph is None or keras_layer_path(scoped, False) is None or not is_tf2onnx_graph(node.graph):
        return None
    path = keras_layer_path(scoped, is_keras3_graph(node.graph))
    return path.rsplit("/", 1)[-1] if path else None


def _fed_by(node: ir.Node) -> ir.Node | None:
    first = node.inputs[0] if node.inputs else None
    return first.producer() if first is not None else None


# ----- naming conventions --------------------------------------------------------------------


@dataclass(frozen=True)
class NamingContext:
    """What conventions know about the whole graph (computed once per graph)."""

    keras3: bool = False
    tf2onnx: bool = False
    sklearn_layers: int = 0  # number of ``coefficient*`` weights (skl2onnx MLP layers)
    legacy_prefixes: Mapping[str, str] = field(default_factory=dict)  # see legacy_outer_prefixes


def naming_context(graph: ir.Graph | None) -> NamingContext:
    """The :class:`NamingContext` of ``graph``."""
    if graph is None:
        return NamingContext()
    return NamingContext(keras3=is_keras3_graph(graph), tf2onnx=is_tf2onnx_graph(graph),
                         sklearn_layers=sum(1 for name in graph.initializers if _SKLEARN_COEF.match(name)),
                         legacy_prefixes=legacy_outer_prefixes(graph))


@dataclass(frozen=True)
class NameSource:
    """What a naming convention reads: the node, its weights' names and the graph context."""

    node: ir.Node
    weight_names: Sequence[str | None]
    context: NamingContext


Convention = Callable[[NameSource], Iterable[str | None]]
#: The registered naming conventions, in display priority.
CONVENTIONS: dict[str, Convention] = {}


def convention(name: str) -> Callable[[Convention], Convention]:
    """Register a naming convention under ``name`` (later registrations rank lower)."""

    def register(function: Convention) -> Convention:
        CONVENTIONS[name] = function
        return function

    return register


_SKLEARN_COEF = re.compile(r"^coefficient(\d*)$")


@convention("skl2onnx")
def _sklearn(source: NameSource) -> Iterable[str | None]:
    """skl2onnx names an MLP's i-th weight matrix ``coefficient`` + (i or nothing for 0):
    the layer is ``coefs_[i]``, a hidden one (all but the last) also ``hidden_i``."""
    if source.node.op_type != "MatMul" or not source.weight_names:
        return
    match = _SKLEARN_COEF.match(source.weight_names[0] or "")
    if match is None or not source.context.sklearn_layers:
        return
    index = int(match.group(1) or 0)
    yield f"coefs_[{index}]"
    if index < source.context.sklearn_layers - 1:
        yield f"hidden_{index}"


@convention("flax")
def _flax(source: NameSource) -> Iterable[str | None]:
    """The Flax module path (see :func:`flax_module_path`); its last part is a short name."""
    yield flax_module_path(source.node.name)


@convention("keras")
def _keras(source: NameSource) -> Iterable[str | None]:
    """The Keras layer name and path (see :func:`keras_layer_path`), from the node's name,
    else its weights' names, else (unscoped nodes) the node that feeds it; nothing for a
    jax2tf node (its scopes are JAX's, see ``flax``)."""
    if is_jax2tf_name(source.node.name):
        return
    keras3 = source.context.keras3
    path = keras_layer_path(source.node.name, keras3)
    for weight in source.weight_names:
        path = path or keras_layer_path(weight, keras3)
    unscoped = "/" not in (source.node.name or "/") and not any(map(weight_prefix, source.weight_names))
    if path is None and unscoped and source.context.tf2onnx:
        feeder = _fed_by(source.node)
        path = keras_layer_path(feeder.name, keras3) if feeder is not None else None
    if path:
        yield path.rsplit("/", 1)[-1]
        yield path


@convention("caffe2")
def _caffe2(source: NameSource) -> Iterable[str | None]:
    """The layer of the first Caffe2 weight blob among the node's inputs (see :func:`caffe2_layer`)."""
    for value in source.node.inputs[1:]:
        found = caffe2_layer(value.name if value is not None else None)
        if found is not None:
            yield from found
            return


@convention("weight-prefix")
def _first_weight_prefix(source: NameSource) -> Iterable[str | None]:
    for weight in source.weight_names[:1]:
        yield weight_prefix(weight)


@convention("dynamo")
def _dynamo(source: NameSource) -> Iterable[str | None]:
    yield dynamo_module_path(source.node)


@convention("legacy")
def _legacy(source: NameSource) -> Iterable[str | None]:
    node_name = source.node.name or ""
    legacy = legacy_module_path(node_name)
    if legacy:
        yield with_outer_prefix(legacy, source.context.legacy_prefixes)
        yield legacy
        yield node_name.strip("/").rsplit("/", 1)[0]


@convention("scope")
def _scope(source: NameSource) -> Iterable[str | None]:
    yield scope_path(source.node.name or "")


@convention("weights")
def _weights(source: NameSource) -> Iterable[str | None]:
    for weight in source.weight_names:
        yield weight_prefix(weight)
    for weight in source.weight_names:
        yield weight


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


def names_of(node: ir.Node, weight_names: Sequence[str | None] = (), generated: str | None = None,
             context: NamingContext | None = None) -> NodeNames:
    """All names of ``node``; ``weight_names`` are its parameter initializers' names,
    ``generated`` its generated name when it has none, ``context`` its graph's
    :class:`NamingContext` (computed when not given)."""
    source = NameSource(node, weight_names, context if context is not None else naming_context(node.graph))
    full: list[str] = []
    for names in CONVENTIONS.values():
        for name in names(source):
            if name and name not in full:
                full.append(name)
    weights = set(weight_names)
    short = []
    for path in full:
        tail = _short(path) if path not in weights else None
        if tail and tail not in short and tail not in full:
            short.append(tail)
    node_name = node.name or ""
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
        return _pick(name, self.candidates, lambda level: list(self._hits[level].get(name, {}).values()), what)


def distinct_display(names: NodeNames, everyone: NameIndex) -> str:
    """The first of ``names`` (full paths, short names, node name) that designates its node
    alone among ``everyone``: a name a convention gives many nodes (a shared scope) is passed
    over for the next one, so every node shows a name of its own that resolves to it."""
    for candidate in (*names.full, *names.short, *names.exact):
        try:
            if everyone.resolve(candidate).node is names.node:
                return candidate
        except GrowError:
            continue
    return names.exact[0] if names.exact else names.node.op_type


def resolve(name: str, candidates: Iterable[NodeNames], what: str = "layer") -> NodeNames:
    """The one candidate ``name`` designates; GrowError when unknown or ambiguous (the rule
    of :meth:`NameIndex.resolve`). One name is found by a scan: no index is built."""
    listed = list(candidates)

    def hits(level: str) -> list[NodeNames]:
        return list({id(c.node): c for c in listed if name in getattr(c, level)}.values())

    return _pick(name, listed, hits, what)


def _pick(name: str, candidates: list[NodeNames], hits: Callable[[str], list[NodeNames]], what: str) -> NodeNames:
    """The candidate at the first level of :attr:`NameIndex._LEVELS` where ``hits`` finds
    ``name``; GrowError, with the matches or the closest names, when there is not one."""
    for level in NameIndex._LEVELS:
        unique = hits(level)
        if len(unique) == 1:
            return unique[0]
        if len(unique) > 1:
            listing = ", ".join(sorted(f"{c.display} ({c.exact[0] if c.exact else c.node.op_type})"
                                       for c in unique))
            raise GrowError(f"{what} name {name!r} is ambiguous; it matches: {listing}")
    vocabulary = sorted({n for c in candidates for n in c.all()})
    close = difflib.get_close_matches(name, vocabulary, n=5, cutoff=0.5)
    if not close:
        close = sorted({c.display for c in candidates})[:8]
    hint = f"; closest: {', '.join(close)}" if close else f"; the model has no {what}s"
    raise GrowError(f"no {what} named {name!r}{hint}")


def is_pattern(name: str) -> bool:
    """Whether ``name`` holds a pattern's wildcards (``*``, ``?``, ``[``)."""
    return any(c in name for c in "*?[")


def matches_pattern(pattern: str, names: Iterable[str]) -> bool:
    """Whether one of ``names`` matches the shell-style ``pattern`` (case-sensitive; ``*`` crosses dots)."""
    return any(fnmatch.fnmatchcase(name, pattern) for name in names)


_INDEX_PART = re.compile(r"^(\d+|.*_\d+)$")


def block_role(name: str) -> str:
    """What ``name`` is within its numbered block: the part after its first index
    (``model.layers.3.mlp.up_proj`` → ``mlp.up_proj``; ``layer2.1.conv1`` → ``conv1``),
    the whole name when it has none (``lm_head``) or ends there."""
    parts = re.split(r"[./]", name)
    for k, part in enumerate(parts[:-1]):
        if _INDEX_PART.match(part):
            return ".".join(parts[k + 1:])
    return name
