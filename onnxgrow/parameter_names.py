"""The framework name and layout of every weight of an ONNX model.

Shared by the exports (state dict, PyTorch, Keras) and the growth map
(:mod:`onnxgrow.growth_map`), which names grown weights as the exports do. The rules:

- **Parameters** are constant floating-point inputs in a parameter slot of a known op
  (:data:`PARAMETER_SLOTS`: Gemm B/C, MatMul B (2-D), Conv/ConvTranspose W/B,
  BatchNormalization scale/B/mean/var, Layer/Instance/GroupNormalization scale/B, PRelu
  slope, Gather data on axis 0), the bias constant an ``Add`` puts on a MatMul's output,
  and any other floating-point constant whose name is a framework name (a position
  embedding, a class token), except inputs that configure an op (a dropout ratio, clip
  bounds, a pad value). BatchNormalization means and variances are buffers.
- **Name**: the name the exporter gave the value the node reads (an initializer, or the
  ``Identity`` output a deduplicating exporter leaves under each original name), found
  by looking back through ``Transpose`` nodes, when it is a framework name (dotted
  identifiers; not ``onnx::Conv_35``, ``val_0``, ``/fc/Transpose_output_0`` nor the
  ``<weight>_bias`` the dynamo optimiser makes). Otherwise ``<module>.<slot>``: the
  module is the prefix of the node's framework-named weight, else the node's module path
  (:func:`onnxgrow.names.module_path`; a legacy scope with the outer modules it leaves out
  put back, :func:`onnxgrow.names.legacy_outer_prefixes`), and the slot suffix comes from the op
  (Gemm B → ``weight``, C → ``bias``; BatchNormalization → ``weight``, ``bias``,
  ``running_mean``, ``running_var``...).
- **Folded constants**: a constant the dynamo exporter's optimiser computed carries
  ``pkg.onnxscript.optimizer.folded_from`` (``embedding_1``: the position-embedding rows a
  static sequence length selects from ``transformer.wpe.weight``). Its name is the FX
  node's, not a framework name: it is not a parameter, export keeps it as a constant, and
  the framework weights it was computed from and that the model no longer holds are
  reported.
- **Layout**: a value named by its exporter keeps the layout the framework stored (the
  node reads it through the Transposes in between). A value the exporter computed is
  brought back to PyTorch layout: Gemm ``transB=0`` and MatMul weights are ``[K, N]``
  in ONNX and ``[out, in]`` in PyTorch.
- **Folded BatchNorm**: the legacy exporter's constant folding gives a Conv that
  absorbed a BatchNorm a generated weight name; the dynamo optimiser keeps the conv's
  weight name but runs the node under the BatchNorm's name scope. Both are reported
  with the BatchNorm parameters that no longer exist.
- Every BatchNorm module gets ``num_batches_tracked`` (0): ONNX has no such tensor and
  strict loading into ``nn.BatchNorm*d`` needs it.
- A slot value that cannot be named is reported and kept under its ONNX node's name.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from onnxgrow.constants import PASS_THROUGH_OPS, ConstantRef, find_constant
from onnxgrow.names import NAME_SCOPES_KEY, legacy_outer_prefixes, module_path


@dataclass(frozen=True)
class Layout:
    """How a node sees a parameter: ``onnx = parameter.transpose(perm)`` (None: as is)."""

    perm: tuple[int, ...] | None = None

    def to_onnx(self, array: np.ndarray) -> np.ndarray:
        return array if self.perm is None else np.transpose(array, self.perm)

    def to_framework(self, array: np.ndarray) -> np.ndarray:
        return array if self.perm is None else np.transpose(array, np.argsort(self.perm))

    def then(self, perm: tuple[int, ...]) -> Layout:
        """This layout followed by a Transpose with ``perm``."""
        base = self.perm or tuple(range(len(perm)))
        combined = tuple(base[p] for p in perm)
        return Layout(None if combined == tuple(range(len(perm))) else combined)


AS_IS = Layout()
TRANSPOSED = Layout((1, 0))


@dataclass(frozen=True)
class SlotSpec:
    """A parameter input of an op: its index, state-dict suffix, and PyTorch layout."""

    index: int
    suffix: str
    buffer: bool = False
    layout: Callable[[ir.Node], Layout] = lambda node: AS_IS


def _gemm_b_layout(node: ir.Node) -> Layout:
    return AS_IS if node.attributes.get_int("transB", 0) else TRANSPOSED


def _norm(*, buffers: bool = False) -> tuple[SlotSpec, ...]:
    slots: tuple[SlotSpec, ...] = (SlotSpec(1, "weight"), SlotSpec(2, "bias"))
    if buffers:
        slots += (SlotSpec(3, "running_mean", buffer=True), SlotSpec(4, "running_var", buffer=True))
    return slots


#: op type → its parameter slots; the first is the weight that names the node's module.
PARAMETER_SLOTS: dict[str, tuple[SlotSpec, ...]] = {
    "Gemm": (SlotSpec(1, "weight", layout=_gemm_b_layout), SlotSpec(2, "bias")),
    "MatMul": (SlotSpec(1, "weight", layout=lambda node: TRANSPOSED),),
    "Conv": (SlotSpec(1, "weight"), SlotSpec(2, "bias")),
    "ConvTranspose": (SlotSpec(1, "weight"), SlotSpec(2, "bias")),
    "BatchNormalization": _norm(buffers=True),
    "LayerNormalization": _norm(),
    "InstanceNormalization": _norm(),
    "GroupNormalization": _norm(),
    "PRelu": (SlotSpec(1, "weight"),),
    "Gather": (SlotSpec(0, "weight"),),
}
#: Inputs that configure an op (a dropout ratio, clip bounds, a pad value): never weights.
_SETTINGS = {"Dropout": frozenset({1, 2}), "Clip": frozenset({1, 2}), "Pad": frozenset({2})}
#: Ops whose weights absorb a BatchNorm when an exporter folds it.
_FOLD_TARGETS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
_BATCH_NORM_STATE = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

_IDENTIFIER_PATH = re.compile(r"[A-Za-z_]\w*(\.\w+)*")  # fullmatch: a trailing newline is no identifier
_GENERATED = re.compile(
    r"^(_?val_\d+|(c_)?lifted_tensor_\d+|_tensor_constant\d+|_param_constant\d+)$|_output_\d+$"
)


#: Metadata the dynamo optimiser writes on a constant it computed: the values it came from.
FOLDED_FROM_KEY = "pkg.onnxscript.optimizer.folded_from"


def folded_from(value: ir.Value) -> list[str] | None:
    """The values the dynamo optimiser computed ``value`` from; None when it did not."""
    text = value.metadata_props.get(FOLDED_FROM_KEY)
    if text is None:
        return None
    try:
        sources = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return []
    return [s for s in sources if isinstance(s, str)] if isinstance(sources, list) else []


def is_framework_name(name: str | None) -> bool:
    """``fc1.weight``, ``layer1.0.conv1.weight``, ``cls_token``: yes; ``onnx::Conv_35``, ``val_0``: no."""
    return bool(name) and name is not None and bool(_IDENTIFIER_PATH.fullmatch(name)) and not _GENERATED.search(name)


@dataclass
class Parameter:
    """One state-dict entry: framework name, where its value is read from, the inputs that read it.

    The value is read when :attr:`array` is asked for, never kept: ``ref`` (the constant an
    input of a reader sees) brought back to framework layout through ``stored`` (how that
    input sees the framework layout), or ``value``, an entry the table made itself
    (``num_batches_tracked``). For a weight in external data the array is a view of the
    memory-mapped file wherever the layout allows (a transpose is a view), so a table of a
    large model holds no weights and a writer reads them one at a time.
    """

    name: str
    ref: ConstantRef | None
    stored: Layout = AS_IS
    buffer: bool = False
    uses: list[tuple[ir.Node, int, Layout]] = field(default_factory=list)
    onnx_name: str = ""
    value: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        """The value in framework layout (read now; see the class docstring)."""
        if self.ref is None:
            assert self.value is not None
            return self.value
        return self.stored.to_framework(self.ref.array())

    def same_source(self, ref: ConstantRef, stored: Layout) -> bool:
        """Whether ``ref`` seen through ``stored`` is this parameter's own source (so the
        same values, without reading them)."""
        return (self.ref is not None and self.ref.root is ref.root and self.stored == stored
                and len(self.ref.chain) == len(ref.chain) and all(a is b for a, b in zip(self.ref.chain, ref.chain)))


@dataclass
class FoldedNorm:
    """A BatchNorm an exporter folded into the weights of ``into``."""

    into: str | None  # the layer that absorbed it; None when the model does not say
    node: str
    norm: str | None  # the BatchNorm's module path, when the model still records it
    exporter: str  # "legacy" or "dynamo"

    @property
    def lost(self) -> list[str]:
        """The BatchNorm's state-dict keys that no longer exist."""
        return [f"{self.norm}.{key}" for key in _BATCH_NORM_STATE] if self.norm else []

    def describe(self) -> str:
        into = self.into or f"node {self.node!r}"
        if self.norm:
            text = (f"BatchNorm {self.norm} was folded into {into} by the {self.exporter} exporter: its "
                    f"weight and bias hold the folded values; {', '.join(self.lost)} no longer exist")
        else:
            text = (f"{into}'s weights were computed by the {self.exporter} exporter's constant folding "
                    "(a BatchNorm folded into it, whose name the model does not keep)")
        flag = "do_constant_folding=False" if self.exporter == "legacy" else "optimize=False"
        return text + f". Re-export with {flag} to keep them apart."


@dataclass
class Unnamed:
    """A weight kept under a name made from its node: where it is read, and why."""

    onnx_name: str
    node: str
    op_type: str
    kept_as: str
    reason: str = "no framework name"

    def describe(self) -> str:
        return f"{self.onnx_name!r} ({self.op_type} node {self.node!r}): {self.reason}; kept as {self.kept_as!r}"


@dataclass
class Computed:
    """A constant the exporter computed from framework weights that the model no longer holds."""

    onnx_name: str
    node: str
    op_type: str
    lost: list[str]

    def describe(self) -> str:
        return (f"{self.onnx_name!r} ({self.op_type} node {self.node!r}): a constant the dynamo exporter's "
                f"optimiser computed from {', '.join(self.lost)}, which the model no longer holds, so the "
                "state dict lacks it. Re-export with optimize=False (or a dynamic axis) to keep it.")


@dataclass
class ParameterTable:
    """Every parameter of a model under its framework name, and what could not be named."""

    parameters: dict[str, Parameter]
    aliases: dict[str, str]  # a tied weight's second name → its first
    folded: list[FoldedNorm]
    generated: list[str]  # entries not in the ONNX model (num_batches_tracked)
    unnamed: list[Unnamed]
    computed: list[Computed] = field(default_factory=list)
    #: (id(node), input index) → parameter: valid while the model the table was made from lives.
    _slots: dict[tuple[int, int], tuple[str, Layout]] = field(default_factory=dict, repr=False)

    def arrays(self, *, aliases: bool = True) -> dict[str, np.ndarray]:
        """Every entry, and with ``aliases`` every tied name after them (the same array
        object as its entry), mapped to its array in framework layout
        (:attr:`Parameter.array`: views of the memory-mapped weights, which hold no memory
        until they are read)."""
        arrays = {name: param.array for name, param in self.parameters.items()}
        if aliases:
            arrays.update({alias: arrays[name] for alias, name in self.aliases.items()})
        return arrays

    def binding(self, node: ir.Node, index: int) -> tuple[str, Layout] | None:
        """The parameter (name, layout) ``node`` reads at input ``index``, if any."""
        return self._slots.get((id(node), index))

    def notes(self) -> list[str]:
        """One line per folded BatchNorm, generated entry, tie and unnamed weight."""
        lines = [f.describe() for f in self.folded]
        lines += [f"{name}: not in the ONNX model; set to 0 so strict loading works" for name in self.generated]
        lines += [f"{alias}: the same tensor as {name} (tied weights, or equal ones the exporter stored once)"
                  for alias, name in self.aliases.items()]
        lines += [u.describe() for u in self.unnamed]
        lines += [c.describe() for c in self.computed]
        return lines


def constant_ref(value: ir.Value | None) -> ConstantRef | None:
    """The constant behind ``value`` (also an initializer listed as a graph input, IR < 4)."""
    ref = find_constant(value)
    if ref is None and value is not None and value.is_graph_input() and value.const_value is not None:
        ref = ConstantRef(value, value, value.const_value, [])
    return ref


def _rank(value: ir.Value) -> int | None:
    ref = constant_ref(value)
    if ref is not None:
        return len(ref.tensor.shape)
    return len(value.shape) if value.shape is not None else None


def named_value(value: ir.Value) -> tuple[ir.Value, Layout]:
    """The value whose name the exporter chose, looking back through Transposes, and the
    layout in which the node's input sees it."""
    perms: list[tuple[int, ...]] = []
    while (producer := value.producer()) is not None and producer.op_type == "Transpose" \
            and producer.inputs and producer.inputs[0] is not None:
        source = producer.inputs[0]
        perm = producer.attributes.get_ints("perm", None)
        if perm is None:
            rank = _rank(source)
            if rank is None:
                break
            perm = tuple(reversed(range(rank)))
        perms.append(tuple(perm))
        value = source
    layout = AS_IS
    for perm in reversed(perms):  # the Transpose nearest the named value first
        layout = layout.then(perm)
    return value, layout


def _dynamo_op_scope(node: ir.Node) -> str:
    """The last entry of the dynamo name scopes: the PyTorch op the node came from."""
    text = node.metadata_props.get(NAME_SCOPES_KEY)
    try:
        scopes = ast.literal_eval(text) if text else []
    except (ValueError, SyntaxError):
        return ""
    return scopes[-1] if isinstance(scopes, list) and scopes and isinstance(scopes[-1], str) else ""


def _node_label(node: ir.Node) -> str:
    return node.name or node.op_type


def _fallback_prefix(node: ir.Node) -> str:
    """A module-like name made from the ONNX node name (dots and slashes become ``_``)."""
    text = re.sub(r"\W+", "_", _node_label(node)).strip("_") or node.op_type
    return text if not text[0].isdigit() else f"n{text}"


class _Builder:
    """Walks the graph, naming every parameter slot and framework-named constant."""

    def __init__(self, prefixes: Mapping[str, str]) -> None:
        self.prefixes = prefixes  # outer module prefixes legacy scopes leave out
        self.parameters: dict[str, Parameter] = {}
        self.aliases: dict[str, str] = {}
        self.folded: list[FoldedNorm] = []
        self.unnamed: list[Unnamed] = []
        self.slots: dict[tuple[int, int], tuple[str, Layout]] = {}
        self.norm_modules: list[str] = []
        self.folded_reads: list[tuple[ir.Value, ir.Node]] = []

    def add(self, name: str, ref: ConstantRef, stored: Layout, buffer: bool, node: ir.Node, index: int,
            layout: Layout, source: ir.Value) -> None:
        """Record that ``node`` input ``index`` reads parameter ``name``, whose framework
        value is ``ref``'s array seen through ``stored``."""
        existing = self.parameters.get(name)
        if existing is not None and not existing.same_source(ref, stored) \
                and not _equal(existing.array, stored.to_framework(ref.array())):
            # two different tensors claim one name: keep this one under the node's name
            taken = name
            name = self.unique(f"{_fallback_prefix(node)}.{name.rsplit('.', 1)[-1]}")
            self.unnamed.append(Unnamed(source.name or "", _node_label(node), node.op_type, name,
                                        f"{taken!r} already names a different tensor"))
            existing = None
        if existing is None:
            self.parameters[name] = Parameter(name, ref, stored, buffer, [], source.name or "")
        self.parameters[name].uses.append((node, index, layout))
        self.slots[(id(node), index)] = (name, layout)

    def unique(self, name: str) -> str:
        base, k = name, 1
        while name in self.parameters or any(p.startswith(name + ".") for p in self.parameters):
            name = f"{base}_{k}"
            k += 1
        return name

    def name_slot(self, node: ir.Node, spec: SlotSpec, owner: str | None, weight_name: str | None,
                  fold: FoldedNorm | None, fallback: str) -> None:
        """Name the constant ``node`` reads at ``spec.index`` (see the module docstring);
        ``fallback`` stands in for an unknown ``owner`` and is reported."""
        value = node.inputs[spec.index]
        ref = constant_ref(value)
        if value is None or ref is None or not ref.dtype.is_floating_point():
            return
        source, chain_layout = named_value(value)
        made_by_optimizer = weight_name is not None and source.name == f"{weight_name}_bias"
        if is_framework_name(source.name) and folded_from(source) is None and not made_by_optimizer \
                and fold is None:
            self.add(source.name, constant_ref(source), AS_IS, spec.buffer, node, spec.index,  # type: ignore[arg-type]
                     chain_layout, source)
            return
        layout = spec.layout(node)
        if owner is None:
            owner = fallback
            self.unnamed.append(Unnamed(source.name or "", _node_label(node), node.op_type,
                                        f"{owner}.{spec.suffix}"))
        self.add(f"{owner}.{spec.suffix}", ref, layout, spec.buffer, node, spec.index, layout, source)

    def name_node(self, node: ir.Node) -> bool:
        """Name the parameter slots of ``node``; False when its op has none."""
        specs = PARAMETER_SLOTS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if specs is None or not _is_parameter_use(node):
            return False
        weight_value = node.inputs[specs[0].index] if specs[0].index < len(node.inputs) else None
        weight_name = named_value(weight_value)[0].name if weight_value is not None else None
        fold = fold_of(node, self.prefixes)
        if fold is not None:
            self.folded.append(fold)
            owner = fold.into
        else:
            owner = _owner(node, specs[0].suffix, weight_name, self.prefixes)
        fallback = self.unique(_fallback_prefix(node)) if owner is None else owner
        for spec in specs:
            if spec.index < len(node.inputs):
                self.name_slot(node, spec, owner, weight_name, fold, fallback)
        if node.op_type == "BatchNormalization" and owner:
            self.norm_modules.append(owner)
        return True

    def name_bias_add(self, node: ir.Node) -> None:
        """``Add(MatMul(x, W), b)``: b is the bias of W's module."""
        if node.op_type != "Add" or node.domain not in ("", "ai.onnx") or len(node.inputs) != 2:
            return
        for index, other in ((0, 1), (1, 0)):
            partner = node.inputs[other]
            producer = partner.producer() if partner is not None else None
            ref = constant_ref(node.inputs[index])
            binding = self.slots.get((id(producer), 1)) if producer is not None else None
            if producer is None or producer.op_type != "MatMul" or binding is None \
                    or ref is None or len(ref.tensor.shape) != 1:
                continue
            owner = binding[0].rpartition(".")[0] or None
            fallback = owner or self.unique(_fallback_prefix(node))
            self.name_slot(node, SlotSpec(index, "bias"), owner, None, None, fallback)
            return

    def name_framework_constants(self, node: ir.Node) -> None:
        """Other float constants with framework names are parameters under those names
        (the Identity/Transpose nodes that merely pass a constant on are not readers)."""
        if node.op_type in PASS_THROUGH_OPS:
            return
        settings = _SETTINGS.get(node.op_type, frozenset())
        for index, value in enumerate(node.inputs):
            if value is None or (id(node), index) in self.slots or index in settings:
                continue
            ref = constant_ref(value)
            if ref is None or not ref.dtype.is_floating_point():
                continue
            source, layout = named_value(value)
            if folded_from(source) is not None:
                self.folded_reads.append((source, node))
            elif is_framework_name(source.name):
                self.add(source.name, constant_ref(source), AS_IS, False, node, index, layout,  # type: ignore[arg-type]
                         source)

    def tie_aliases(self) -> None:
        """A weight read by a second module (tied embeddings) also gets that module's name."""
        for name, param in self.parameters.items():
            prefix, _, suffix = name.rpartition(".")
            for node, _, _ in param.uses:
                path = module_path(node, self.prefixes)
                alias = f"{path}.{suffix}"
                if (path and prefix and path != prefix and node.op_type in PARAMETER_SLOTS
                        and fold_of(node, self.prefixes) is None and alias not in self.parameters):
                    self.aliases.setdefault(alias, name)

    def computed_constants(self) -> list[Computed]:
        """The folded constants read outside parameter slots whose framework sources are gone."""
        found: dict[str, Computed] = {}
        for value, node in self.folded_reads:
            lost = [s for s in folded_from(value) or [] if "." in s and is_framework_name(s)
                    and s not in self.parameters and s not in self.aliases]
            if lost and (value.name or "") not in found:
                found[value.name or ""] = Computed(value.name or "", _node_label(node), node.op_type, lost)
        return list(found.values())

    def add_batch_counters(self) -> list[str]:
        """``num_batches_tracked`` for every BatchNorm module (0: ONNX does not keep it)."""
        generated = []
        for module in dict.fromkeys(self.norm_modules):
            key = f"{module}.num_batches_tracked"
            if key not in self.parameters:
                self.parameters[key] = Parameter(key, None, buffer=True, value=np.array(0, dtype=np.int64))
                generated.append(key)
        return generated


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Same shape and values, compared a block of rows at a time (two large tensors are
    compared without a whole-tensor temporary)."""
    if a.shape != b.shape:
        return False
    if a.ndim == 0:
        return bool(np.array_equal(a, b))
    step = max(1, (1 << 22) // max(1, a[:1].nbytes))
    return all(np.array_equal(a[i:i + step], b[i:i + step]) for i in range(0, len(a), step))


def _is_parameter_use(node: ir.Node) -> bool:
    """Gather is an embedding only on axis 0 of a 2-D table; MatMul a Linear only with a 2-D B."""
    if node.op_type == "Gather":
        ref = constant_ref(node.inputs[0])
        return node.attributes.get_int("axis", 0) == 0 and ref is not None and len(ref.tensor.shape) == 2
    if node.op_type == "MatMul":
        ref = constant_ref(node.inputs[1]) if len(node.inputs) > 1 else None
        return ref is not None and len(ref.tensor.shape) == 2
    return True


def _owner(node: ir.Node, weight_suffix: str, weight_name: str | None,
           prefixes: Mapping[str, str]) -> str | None:
    """The module a node's parameters belong to: the prefix of its framework-named weight,
    else its module path (a legacy one with the outer prefix ``prefixes`` give it)."""
    suffix = "." + weight_suffix
    if is_framework_name(weight_name) and weight_name.endswith(suffix):  # type: ignore[union-attr]
        return weight_name[: -len(suffix)]  # type: ignore[index]
    return module_path(node, prefixes)


def fold_of(node: ir.Node, prefixes: Mapping[str, str] | None = None) -> FoldedNorm | None:
    """The BatchNorm an exporter folded into ``node``'s weights, if any."""
    if node.op_type not in _FOLD_TARGETS or len(node.inputs) < 2 or node.inputs[1] is None:
        return None
    weight = node.inputs[1]
    if constant_ref(weight) is None:
        return None
    source_name = named_value(weight)[0].name or ""
    if "batch_norm" in _dynamo_op_scope(node):
        into = source_name[: -len(".weight")] if (
            is_framework_name(source_name) and source_name.endswith(".weight")) else None
        return FoldedNorm(into, _node_label(node), module_path(node, prefixes), "dynamo")
    legacy = (node.name or "").startswith("/")
    if legacy and node.op_type in ("Conv", "ConvTranspose") and not is_framework_name(source_name):
        return FoldedNorm(module_path(node, prefixes), _node_label(node), None, "legacy")
    return None


def parameter_table(model: ir.Model) -> ParameterTable:
    """Name every weight of ``model``'s main graph (see the module docstring for the rules)."""
    builder = _Builder(legacy_outer_prefixes(model.graph))
    for node in model.graph:
        if not builder.name_node(node):
            builder.name_bias_add(node)
    for node in model.graph:
        builder.name_framework_constants(node)
    builder.tie_aliases()
    generated = builder.add_batch_counters()
    return ParameterTable(builder.parameters, builder.aliases, builder.folded, generated,
                          builder.unnamed, builder.computed_constants(), builder.slots)
