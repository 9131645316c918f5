"""An ONNX graph as a list of steps a framework can replay, with its weights bound.

Shared by the PyTorch and Keras exports. Every node input becomes one of:

- :class:`ParameterRef`: a named weight (see :mod:`onnxgrow.parameter_names`), with the
  permutation that turns the framework-layout parameter into what the node reads;
- :class:`FixedRef`: any other constant (a shape, an axis list, a scalar such as GELU's
  0.5), stored once in :attr:`Program.constants`;
- :class:`ValueRef`: a value computed at run time (a graph input or a node output).

Only nodes some graph output depends on become steps; chains of ``Identity``,
``Transpose`` and ``Constant`` nodes that merely produce weights are read as constants.
An op the target framework has no function for raises a GrowError naming the node.

An ``If`` whose condition is a constant is replaced by the steps of the branch it takes
(its outputs become ``Identity`` steps), so only that branch has to convert. Any other
``If`` becomes a step holding both branches (:class:`Branch`), for a framework that
runs ``If`` (both must convert). A branch reads the values of the scopes around it by
name, as in ONNX, and its own values stay in it. Weights are named in the main graph
only (:mod:`onnxgrow.export.naming`): a weight read only inside a branch is a constant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxgrow.errors import GrowError
from onnxgrow.parameter_names import ParameterTable, constant_ref


@dataclass(frozen=True)
class ValueRef:
    """A value computed at run time."""

    name: str


@dataclass(frozen=True)
class ParameterRef:
    """A named weight; the node reads ``parameter.permute(perm)`` (as is when None)."""

    name: str
    perm: tuple[int, ...] | None
    buffer: bool


@dataclass(frozen=True)
class FixedRef:
    """A constant that is not a weight, stored in :attr:`Program.constants` under ``key``."""

    key: str


Ref = ValueRef | ParameterRef | FixedRef


@dataclass(frozen=True)
class InputSpec:
    """A graph input: name, shape (None for a dynamic size) and numpy dtype name."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str


@dataclass
class Step:
    """One node: op type, name for messages, input references, output names, attributes,
    and the subgraphs it runs (an ``If``'s ``then_branch`` and ``else_branch``)."""

    op_type: str
    node: str
    inputs: tuple[Ref | None, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any]
    branches: dict[str, Branch] = field(default_factory=dict)


@dataclass
class Branch:
    """A subgraph: its steps, and its outputs as references in its own scope."""

    steps: list[Step]
    outputs: list[Ref]


@dataclass
class Program:
    """The steps computing a graph's outputs from its inputs."""

    inputs: list[InputSpec]
    outputs: list[tuple[str, Ref]]
    steps: list[Step]
    opset: int
    constants: dict[str, np.ndarray] = field(default_factory=dict)


def attribute_values(node: ir.Node) -> dict[str, Any]:
    """A node's attributes as Python values (tensors as numpy arrays); subgraphs are left
    to :class:`Branch` (see :func:`build_program`)."""
    values: dict[str, Any] = {}
    for name, attr in node.attributes.items():
        kind = attr.type
        if kind == ir.AttributeType.GRAPH and node.op_type == "If":
            continue
        if kind == ir.AttributeType.TENSOR:
            values[name] = attr.as_tensor().numpy()
        elif kind in (ir.AttributeType.INTS, ir.AttributeType.FLOATS, ir.AttributeType.STRINGS):
            values[name] = list(attr.value)
        elif kind in (ir.AttributeType.INT, ir.AttributeType.FLOAT, ir.AttributeType.STRING):
            values[name] = attr.value
        else:
            raise GrowError(f"{node.op_type} node {node.name or '(unnamed)'!r}: attribute {name!r} "
                            f"of type {kind.name} (subgraphs, sparse tensors) cannot be exported")
    return values


def _input_spec(value: ir.Value) -> InputSpec:
    dims = value.shape.dims if value.shape is not None else ()
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in dims)
    dtype = value.dtype.numpy().name if value.dtype is not None else "float32"
    return InputSpec(value.name or "", shape, dtype)


class _ProgramBuilder:
    """Turns node inputs into references, storing each non-weight constant once."""

    def __init__(self, model: ir.Model, table: ParameterTable) -> None:
        self.model = model
        self.table = table
        self.constants: dict[str, np.ndarray] = {}
        self.constant_keys: dict[int, str] = {}

    def fixed(self, value: ir.Value) -> FixedRef | None:
        ref = constant_ref(value)
        if ref is None:
            return None
        key = self.constant_keys.get(id(value))
        if key is None:
            key = f"c{len(self.constants)}"
            self.constant_keys[id(value)] = key
            self.constants[key] = np.array(ref.array())
        return FixedRef(key)

    def reference(self, node: ir.Node | None, index: int, value: ir.Value | None) -> Ref | None:
        if value is None:
            return None
        binding = self.table.binding(node, index) if node is not None else None
        if binding is not None:
            name, layout = binding
            return ParameterRef(name, layout.perm, self.table.parameters[name].buffer)
        return self.fixed(value) or ValueRef(value.name or "")

    def needed_nodes(self) -> set[int]:
        """Nodes some graph output depends on through run-time values (inside the branches
        an ``If`` may take too, and the outer values those read)."""
        needed: set[int] = set()
        stack = list(self.model.graph.outputs)
        while stack:
            value = stack.pop()
            producer = value.producer()
            if producer is None or id(producer) in needed or constant_ref(value) is not None:
                continue
            needed.add(id(producer))
            for index, source in enumerate(producer.inputs):
                if source is not None and self.table.binding(producer, index) is None:
                    stack.append(source)
            for branch in _runnable_branches(producer).values():
                stack.extend(branch.outputs)
        return needed

    def steps(self, graph: ir.Graph, needed: set[int], known: set[str], supported: Mapping[str, int],
              framework: str) -> list[Step]:
        """The steps of ``graph``'s needed nodes, in order; ``known`` (the value names
        computed so far) grows with their outputs. Raises GrowError naming the first
        node the framework cannot run."""
        steps: list[Step] = []
        for node in graph:
            if id(node) not in needed:
                continue
            label = node.name or node.op_type
            taken = _static_branch(node)
            if taken is not None:  # an If with a constant condition: the branch it takes, inlined
                steps += self.steps(taken, needed, known, supported, framework)
                steps += [Step("Identity", label, (self.reference(None, 0, source),), (out.name or "",), {})
                          for source, out in zip(taken.outputs, node.outputs)]
                known.update(o.name for o in node.outputs if o.name)
                continue
            outputs_supported = supported.get(node.op_type) if node.domain in ("", "ai.onnx") else None
            if outputs_supported is None:
                domain = f" (domain {node.domain})" if node.domain not in ("", "ai.onnx") else ""
                raise GrowError(f"cannot export to {framework}: op {node.op_type}{domain} (node {label!r}) "
                                f"is not supported")
            for k, out in enumerate(node.outputs):
                if k >= outputs_supported and (out.uses() or out.is_graph_output()):
                    raise GrowError(f"cannot export to {framework}: output {k} of {node.op_type} node "
                                    f"{label!r} is used, and only the first {outputs_supported} are supported")
            refs = tuple(self.reference(node, i, v) for i, v in enumerate(node.inputs))
            self.check_known(refs, known, label, framework)
            branches = {name: self.branch(subgraph, needed, set(known), supported, framework)
                        for name, subgraph in _runnable_branches(node).items()}
            steps.append(Step(node.op_type, label, refs, tuple(o.name or "" for o in node.outputs),
                              attribute_values(node), branches))
            known.update(o.name for o in node.outputs if o.name)
        return steps

    def branch(self, graph: ir.Graph, needed: set[int], known: set[str], supported: Mapping[str, int],
               framework: str) -> Branch:
        steps = self.steps(graph, needed, known, supported, framework)
        outputs = [self.reference(None, 0, v) for v in graph.outputs]
        self.check_known(outputs, known, graph.name or "a branch", framework)
        return Branch(steps, outputs)  # type: ignore[arg-type]

    @staticmethod
    def check_known(refs: Sequence[Ref | None], known: set[str], label: str, framework: str) -> None:
        for ref in refs:
            if isinstance(ref, ValueRef) and ref.name not in known:
                raise GrowError(f"cannot export to {framework}: {label!r} reads {ref.name!r}, "
                                "which no node computes")


def _static_branch(node: ir.Node) -> ir.Graph | None:
    """The branch an ``If`` with a constant condition takes; None for any other node."""
    if node.op_type != "If" or node.domain not in ("", "ai.onnx") or not node.inputs:
        return None
    condition = constant_ref(node.inputs[0])
    if condition is None:
        return None
    name = "then_branch" if bool(np.asarray(condition.array()).reshape(-1)[0]) else "else_branch"
    attr = node.attributes.get(name)
    return attr.as_graph() if attr is not None and attr.type == ir.AttributeType.GRAPH else None


def _runnable_branches(node: ir.Node) -> dict[str, ir.Graph]:
    """The subgraphs of an ``If`` that may run: the one a constant condition picks, else both."""
    taken = _static_branch(node)
    if taken is not None:
        return {"taken": taken}
    if node.op_type != "If" or node.domain not in ("", "ai.onnx"):
        return {}
    return {name: attr.as_graph() for name, attr in node.attributes.items() if attr.type == ir.AttributeType.GRAPH}


def build_program(model: ir.Model, table: ParameterTable, supported: Mapping[str, int],
                  framework: str) -> Program:
    """The steps for ``model``; ``supported`` maps op types to how many outputs the
    framework computes for them. Raises GrowError naming the first node it cannot run."""
    builder = _ProgramBuilder(model, table)
    graph = model.graph
    inputs = [_input_spec(v) for v in graph.inputs if constant_ref(v) is None]
    known = {spec.name for spec in inputs}
    steps = builder.steps(graph, builder.needed_nodes(), known, supported, framework)
    outputs = [(v.name or "", builder.reference(None, 0, v)) for v in graph.outputs]
    opset = model.opset_imports.get("", model.opset_imports.get("ai.onnx", 1))
    return Program(inputs, outputs, steps, opset, builder.constants)  # type: ignore[arg-type]
