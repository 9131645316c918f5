"""Which blocks ``--block NAME`` names, and whether copying each keeps the function (docs/design.md §5).

- NAME is a block's framework name (or a tail of it only that block has, as
  :meth:`onnxgrow.structure.ModelStructure.block` reads it) or a glob (``*``, ``?``, ``[...]``,
  :mod:`fnmatch`) matched against every block's name: ``model.layers.*`` is every block of
  ``model.layers``. A name that matches no block gets the list of blocks.
- A block can be copied when it is numbered (it has a container and an index, so its copy
  has a name), every shortcut of it is the identity (a projection shortcut changes the
  shape: the copy would not fit; the refusal names the shortcut), it holds no control-flow
  node, and it writes no model output besides the stream (a key/value cache: ``present.1.key``
  written, ``past_key_values.1.key`` read; a copy needs its own, which changes the model's
  interface, so it is refused naming them).
- ``--init zero``: in the copy, every branch ends in zeros: the output projections' weights
  and biases (``Gemm`` C, ``Conv`` B, the bias ``Add`` after a ``MatMul``), or, where a
  normalisation lies between them and the residual Add (a ResNet's last BatchNorm), that
  normalisation's scale and shift. The ops between there and the Add must keep a zero (a
  Reshape, a Dropout, a product: :data:`KEEPS_ZERO`), else the request is refused naming the
  op. Then ``x + branch = x`` and the copy is the identity when what follows each Add (its
  *post region*) is nothing, a pass-through (Identity, Dropout, a Cast to the same type), or
  the same clamp chain (a ResNet's ReLU) as the block's last post region, whose output is the
  copy's input: a clamp chain is idempotent. A post-norm block (``LN(x + 0) = LN(x) ≠ x``)
  is refused naming the norm; any other post region naming its first op.
- ``--init copy`` keeps every weight (stacking); nothing is zeroed and any copyable block
  may be copied, post-norm ones included.
"""

from __future__ import annotations

import enum
import fnmatch
from dataclasses import dataclass

import onnx_ir as ir

from onnxgrow.constants import constant_array, find_constant
from onnxgrow.deepening.activation import is_bias_add, is_clamp_chain
from onnxgrow.deepening.block_names import Renumbering, block_name
from onnxgrow.errors import GrowError, RefusedError
from onnxgrow.graph import node_label
from onnxgrow.structure import Block, ModelStructure, Residual
from onnxgrow.structure.flow import DataFlow
from onnxgrow.structure.patterns import block_pattern

#: Ops whose output is zero when their first input is (the others configure them).
KEEPS_ZERO_FIRST = frozenset({
    "Identity", "Dropout", "Cast", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Relu", "Neg",
    "Slice", "Expand", "Tile", "Gather", "Split", "Div", "LeakyRelu", "Abs", "Tanh", "Erf", "Gelu", "Sin",
    "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "SpaceToDepth", "DepthToSpace",
})
#: Ops whose output is zero when any computed input is.
KEEPS_ZERO_ANY = frozenset({"Mul", "MatMul", "Einsum"})
#: Ops whose output is zero when every input is.
KEEPS_ZERO_ALL = frozenset({"Add", "Sub", "Concat", "Sum", "Max", "Min", "Mean"})
KEEPS_ZERO = KEEPS_ZERO_FIRST | KEEPS_ZERO_ANY | KEEPS_ZERO_ALL
_GLOB = frozenset("*?[")


class BlockInit(str, enum.Enum):
    """How a copy of a block starts."""

    ZERO = "zero"  # every branch ends in zeros: exact
    COPY = "copy"  # every weight copied (stacking): not function-preserving


@dataclass
class BlockCopies:
    """One block to copy: the block, its copies' new indices, and the inputs of its nodes that
    read zeros in the copies (``(node, input index)``) with the modules they belong to."""

    block: Block
    copies: list[int]
    zero: list[tuple[ir.Node, int]]
    zeroed: list[str]

    @property
    def container(self) -> str:
        assert self.block.container is not None
        return self.block.container

    def copy_names(self) -> list[str]:
        return [block_name(self.container, index) for index in self.copies]


@dataclass
class BlocksPlan:
    """Everything :class:`~onnxgrow.deepening.block_op.DeepenBlockOp` does: the blocks to copy
    (graph order), the renumbering of the blocks already there, and each container's block
    count before and after."""

    request: str
    init: BlockInit
    count: int
    blocks: list[BlockCopies]
    renumberings: list[Renumbering]
    layers: dict[str, tuple[int, int]]


def select_blocks(structure: ModelStructure, name: str) -> list[Block]:
    """The blocks ``name`` designates (see the module rules); GrowError naming the blocks otherwise."""
    if not _GLOB & set(name):
        return [structure.block(name)]
    found = [b for b in structure.blocks if b.name is not None and fnmatch.fnmatchcase(b.name, name)]
    if not found:
        known = ", ".join(block_pattern(s.blocks) for s in structure.streams) or "none found"
        raise GrowError(f"no block matches {name!r} (blocks: {known})")
    return found


def copy_refusal(block: Block) -> RefusedError | None:
    """Why ``block`` cannot be copied at all (see the module rules), or None."""
    label = block.label
    if block.name is None or block.container is None:
        node = block.residuals[0].add
        return RefusedError(f"block {label!r} has no framework number, so its copy would have no name; "
                            "onnxgrow copies numbered blocks (model.layers.3, layer2.1)", node.name)
    for residual in block.residuals:
        if residual.shortcut_projections:
            shortcut = residual.shortcut_projections[0]
            return RefusedError(
                f"cannot copy block {label!r}: its shortcut is not the identity ({shortcut.name} projects it), so "
                "the block changes the shape of the stream and a copy after it would not fit",
                shortcut.node.name)
    for node in block.nodes:
        if any(attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for attr in node.attributes.values()):
            return RefusedError(f"cannot copy block {label!r}: it holds the control-flow node {node_label(node)}",
                                node.name)
    written = [v for node in block.nodes for v in node.outputs if v.is_graph_output() and v is not block.exit]
    if written:
        inside = set(block.nodes)
        read = [v for v in block.side_inputs if v.is_graph_input() and all(c in inside for c in v.consumers())]
        reads = f" and reads {_names(read)}" if read else ""
        return RefusedError(
            f"cannot copy block {label!r}: it writes the model outputs {_names(written)}{reads} (a key/value "
            "cache); a copy would need its own, which changes the model's interface. Export the model without "
            "a cache (optimum --task text-generation, use_cache=False) to insert blocks",
            written[0].producer().name if written[0].producer() is not None else None)  # type: ignore[union-attr]
    return None


def zero_refusal(block: Block, flow: DataFlow) -> RefusedError | None:
    """Why a copy of ``block`` with zeroed branch ends is not the identity, or None."""
    last = _clamps(block.residuals[-1])
    for residual in block.residuals:
        if residual.post_norm is not None:
            norm = residual.post_norm
            name = norm.name or node_label(norm.nodes[0])
            return RefusedError(
                f"--init zero for block {block.label!r} is not exact: it is post-norm, its {norm.op} {name} "
                "normalises x + f(x), and LN(x + 0) = LN(x) differs from x; --init copy (stacking, not "
                "function-preserving) is available", norm.nodes[0].name)
        if not residual.post:
            continue
        if not is_clamp_chain(list(residual.post), residual.add.outputs[0]):
            first = residual.post[0]
            return RefusedError(
                f"--init zero for block {block.label!r} is not exact: after its residual Add comes "
                f"{node_label(first)}, which does not pass x + 0 = x through unchanged; --init copy is available",
                first.name)
        own = _clamps(residual)
        if own and own != last:
            first = residual.post[0]
            return RefusedError(
                f"--init zero for block {block.label!r} is not exact: the clamps after its residual Add "
                f"({node_label(first)}) differ from those its output comes from; --init copy is available",
                first.name)
    for residual in block.residuals:
        _, refusal = zero_targets(residual, flow, block.label)
        if refusal is not None:
            return refusal
    return None


def _clamps(residual: Residual) -> tuple[tuple[str, tuple[float, ...]], ...]:
    """The clamps of a post region with their constant bounds (pass-throughs left out)."""
    found = []
    for node in residual.post:
        if node.op_type in ("Relu", "Clip", "Max", "Min"):
            bounds = [constant_array(v) for v in node.inputs[1:] if v is not None]
            found.append((node.op_type, tuple(float(b) for b in bounds if b is not None and b.size == 1)))
    return tuple(found)


def zero_targets(residual: Residual, flow: DataFlow, label: str
                 ) -> tuple[list[tuple[ir.Node, int]], RefusedError | None]:
    """The inputs to set to zero so the branch of ``residual`` ends in zeros (see the module
    rules), and the refusal when the ops after them do not keep a zero."""
    targets: list[tuple[ir.Node, int]] = []
    zero: set[ir.Value] = set()
    norm = residual.output_norm
    if norm is not None:
        node = norm.nodes[0]
        targets += [(node, k) for k in (1, 2) if k < len(node.inputs) and node.inputs[k] is not None]
        zero.add(norm.output)
    else:
        for projection in residual.outputs:
            node = projection.node
            targets.append((node, 1))
            if node.op_type in ("Gemm", "Conv") and len(node.inputs) > 2 and node.inputs[2] is not None:
                targets.append((node, 2))
            out = node.outputs[0]
            consumers = out.consumers()
            if node.op_type == "MatMul" and len(consumers) == 1 and is_bias_add(consumers[0], out):
                add = consumers[0]
                targets.append((add, 1 if add.inputs[0] is out else 0))
                out = add.outputs[0]
            zero.add(out)
    branch_output = next(v for v in residual.add.inputs if v is not None and v is not residual.entry)
    inside = set(residual.branch)
    lost: ir.Node | None = None
    for node in flow.in_order(inside):
        computed = flow.computed_inputs(node)
        if not any(v in zero for v in computed):
            continue
        if _keeps_zero(node, computed, zero):
            zero.update(node.outputs)
        elif lost is None:
            lost = node
    if branch_output in zero:
        return targets, None
    blocker = lost or residual.add
    return targets, RefusedError(
        f"--init zero for block {label!r}: its branch after {_names_of(residual)} passes through "
        f"{node_label(blocker)}, which does not keep a zero; --init copy is available", blocker.name)


def _keeps_zero(node: ir.Node, computed: list[ir.Value], zero: set[ir.Value]) -> bool:
    if node.domain not in ("", "ai.onnx"):
        return False
    first = node.inputs[0] if node.inputs else None
    if node.op_type in KEEPS_ZERO_FIRST:
        return first in zero
    if node.op_type in KEEPS_ZERO_ANY:
        return True
    if node.op_type in KEEPS_ZERO_ALL:
        return all(v in zero for v in node.inputs if v is not None) and all(v in zero for v in computed)
    return False


def _names_of(residual: Residual) -> str:
    if residual.output_norm is not None:
        return residual.output_norm.name or node_label(residual.output_norm.nodes[0])
    return ", ".join(p.name for p in residual.outputs) or "its output projection"


def _names(values: list[ir.Value]) -> str:
    return ", ".join(repr(v.name) for v in values)


def zeroed_modules(block: Block) -> list[str]:
    """The modules of ``block`` whose weights a zero copy sets to zero (its output projections,
    or the normalisations after them)."""
    found = []
    for residual in block.residuals:
        if residual.output_norm is not None:
            found.append(residual.output_norm.name or node_label(residual.output_norm.nodes[0]))
        else:
            found += [p.name for p in residual.outputs]
    return found


def weight_refusal(targets: list[tuple[ir.Node, int]], label: str) -> GrowError | None:
    """A zero target that is not a floating-point constant cannot be zeroed."""
    for node, index in targets:
        ref = find_constant(node.inputs[index])
        if ref is None or not ref.dtype.is_floating_point():
            return GrowError(f"--init zero for block {label!r}: input {index} of {node_label(node)} is not a "
                             "floating-point constant, so it cannot start at zero")
    return None


def exact_inits(block: Block, flow: DataFlow) -> tuple[list[str], str]:
    """The ``--init`` modes whose copy of ``block`` is exact, and why there are none (``inspect``)."""
    refusal = copy_refusal(block)
    if refusal is not None:
        return [], _reason(str(refusal))
    refusal = zero_refusal(block, flow)
    if refusal is not None:
        return [], _reason(str(refusal))
    return [BlockInit.ZERO.value], ""


def _reason(message: str) -> str:
    """The reason of a refusal, without the block's name (``post-norm``, ``projection shortcut``)."""
    if "post-norm" in message:
        return "post-norm"
    if "shortcut is not the identity" in message:
        return "projection shortcut"
    if "cache" in message:
        return "key/value cache"
    return message.split(": ", 1)[-1].split(";")[0]


def plan_blocks(structure: ModelStructure, flow: DataFlow, request: str, count: int, init: BlockInit,
                named_indices: dict[str, set[int]]) -> BlocksPlan:
    """The whole insertion (reads only): blocks checked, copies numbered, the rest renumbered.

    ``named_indices``: per container, the indices its names in the graph hold (a block the
    structure did not find is renumbered too, so no name is ever taken twice).
    """
    blocks = select_blocks(structure, request)
    plans: list[BlockCopies] = []
    for block in blocks:
        refusal = copy_refusal(block)
        if refusal is None and init is BlockInit.ZERO:
            refusal = zero_refusal(block, flow)
        if refusal is not None:
            raise refusal
        zero: list[tuple[ir.Node, int]] = []
        if init is BlockInit.ZERO:
            for residual in block.residuals:
                zero += zero_targets(residual, flow, block.label)[0]
            problem = weight_refusal(zero, block.label)
            if problem is not None:
                raise problem
        plans.append(BlockCopies(block, [], zero, zeroed_modules(block) if init is BlockInit.ZERO else []))
    renumberings, layers = _number(plans, structure, count, named_indices)
    return BlocksPlan(request, init, count, plans, renumberings, layers)


def _number(plans: list[BlockCopies], structure: ModelStructure, count: int,
            named_indices: dict[str, set[int]]) -> tuple[list[Renumbering], dict[str, tuple[int, int]]]:
    """Give each copy its index and renumber the blocks after it, per container: old index
    ``k`` moves up by ``count`` for every copied block before it."""
    renumberings = []
    layers = {}
    for container in dict.fromkeys(p.container for p in plans):
        mine = sorted((p for p in plans if p.container == container), key=lambda p: p.block.index)
        copied = [p.block.index for p in mine]
        known = {b.index for b in structure.blocks if b.container == container} | named_indices.get(container, set())
        indices = {}
        for k in range(max(known) + 1):
            moved = k + count * sum(1 for s in copied if s < k)
            if moved != k:
                indices[k] = moved
        for plan in mine:
            start = plan.block.index + count * sum(1 for s in copied if s < plan.block.index)
            plan.copies = [start + t for t in range(1, count + 1)]
        renumberings.append(Renumbering(container, indices))
        layers[container] = (max(known) + 1, max(known) + 1 + count * len(copied))
    return renumberings, layers
