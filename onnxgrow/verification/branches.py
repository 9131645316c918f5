"""Which branches of each If a check ran, and whether a rewritten branch never ran.

onnxruntime does not say which branch an If took, so the conditions are computed here: the
nodes of the main graph that a condition is computed from (its cone: no control flow, at
most :data:`MAX_CONE_NODES` nodes reading at most :data:`MAX_CONE_WEIGHT_BYTES` of weights)
make a small model of their own whose outputs are the conditions, which onnxruntime runs on
the check's feeds. A condition that is a model input is read from the feeds. The condition of
an If inside another subgraph, or one computed by control flow or a larger cone, is not
determined.

A branch is **rewritten** when the candidate's If (paired with the reference's by node name,
else by output names) holds other nodes there than the reference's, or its nodes read a weight
with other bytes (a widened layer, an inserted one); an If without a counterpart counts as
rewritten in both branches. A rewritten branch that no sample ran (or that may not have run:
its If's condition is not determined) was not checked, and the verdict says so
(:meth:`~onnxgrow.verification.report.BranchRuns.warning`). A framework candidate (an export) is compared with the
reference's runs only: nothing there is rewritten.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import onnx
import onnx_ir as ir

from onnxgrow.graph import node_label, subgraphs_of
from onnxgrow.verification.report import BRANCHES, BranchRuns
from onnxgrow.verification.runtime import open_session
from onnxgrow.verification.segment_models import type_of
from onnxgrow.verification.unchanged import _Files, same_node, same_tensor

#: A condition computed from more nodes than this is not determined.
MAX_CONE_NODES = 200
#: A condition computed from more weight bytes than this is not determined.
MAX_CONE_WEIGHT_BYTES = 16 * 2**20


def has_if(model: ir.Model) -> bool:
    return any(node.op_type == "If" and node.domain in ("", "ai.onnx") for node in model.graph.all_nodes())


def branch_runs(reference: ir.Model, candidate: ir.Model | None, feeds_list: Sequence[Mapping[str, np.ndarray]],
                providers: list[str]) -> list[BranchRuns]:
    """Every If of the reference's main graph, and every rewritten If elsewhere (module docstring)."""
    found: list[BranchRuns] = []
    conditions = _conditions(reference, feeds_list, providers)
    cand_ifs = _ifs_by_key(candidate) if candidate is not None else {}
    for node in reference.graph.all_nodes():
        if node.op_type != "If" or node.domain not in ("", "ai.onnx"):
            continue
        rewritten = _rewritten(node, cand_ifs.get(_key(node)), candidate) if candidate is not None else []
        taken = conditions.get(node)
        if node.graph is not reference.graph and not rewritten:
            continue
        runs = None if taken is None else {"then_branch": sum(taken), "else_branch": len(taken) - sum(taken)}
        found.append(BranchRuns(node_label(node), runs, rewritten))
    return found


def _key(node: ir.Node) -> tuple[str, ...]:
    return (node.name,) if node.name else tuple(v.name or "" for v in node.outputs)


def _ifs_by_key(model: ir.Model) -> dict[tuple[str, ...], ir.Node]:
    return {_key(n): n for n in model.graph.all_nodes() if n.op_type == "If" and n.domain in ("", "ai.onnx")}


def _rewritten(ref: ir.Node, cand: ir.Node | None, candidate: ir.Model | None) -> list[str]:
    if cand is None or candidate is None:
        return list(BRANCHES)
    ref_branches, cand_branches = dict(subgraphs_of(ref)), dict(subgraphs_of(cand))
    return [b for b in BRANCHES if b not in ref_branches or b not in cand_branches
            or not _same_branch(ref_branches[b], cand_branches[b], candidate)]


def _same_branch(ref: ir.Graph, cand: ir.Graph, candidate: ir.Model) -> bool:
    """Same nodes, one for one, reading weights of the same bytes (outer ones included)."""
    if len(ref) != len(cand) or not all(same_node(a, b) for a, b in zip(ref, cand)):
        return False
    weights = {name: v for g in (candidate.graph, *_enclosing(cand)) for name, v in g.initializers.items()}
    with _Files() as files:
        for node in ref.all_nodes():
            for value in node.inputs:
                if value is None or not value.is_initializer():
                    continue
                other = weights.get(value.name or "")
                if other is None or not same_tensor(value.const_value, other.const_value, files):
                    return False
    return True


def _enclosing(graph: ir.Graph) -> list[ir.Graph]:
    """``graph`` and every subgraph inside it (initializers a branch's nodes may read)."""
    found = [graph]
    for node in graph.all_nodes():
        found += [g for _, g in subgraphs_of(node)]
    return found


def _conditions(model: ir.Model, feeds_list: Sequence[Mapping[str, np.ndarray]],
                providers: list[str]) -> dict[ir.Node, list[bool]]:
    """The condition of every main-graph If whose condition can be computed, per sample."""
    cones: dict[ir.Node, set[ir.Node]] = {}
    for node in model.graph:
        if node.op_type == "If" and node.domain in ("", "ai.onnx") and node.inputs and node.inputs[0] is not None:
            cone = _cone(node.inputs[0])
            if cone is not None:
                cones[node] = cone
    computed = [v for node, cone in cones.items() if cone and (v := node.inputs[0]) is not None]
    nodes = set().union(*cones.values()) if cones else set()
    try:
        values = _run_cone(model, [n for n in model.graph if n in nodes], list(dict.fromkeys(computed)),
                           feeds_list, providers) if nodes else [{} for _ in feeds_list]
    except Exception:  # noqa: BLE001  # onnxruntime raises its own kinds: the conditions stay undetermined
        return {}
    taken: dict[ir.Node, list[bool]] = {}
    for node in cones:
        condition = node.inputs[0]
        assert condition is not None
        per_sample = [sample.get(condition, feeds.get(condition.name or ""))
                      for sample, feeds in zip(values, feeds_list)]
        if all(isinstance(v, np.ndarray) and v.size for v in per_sample):
            taken[node] = [bool(np.asarray(v).reshape(-1)[0]) for v in per_sample]
    return taken


def _cone(condition: ir.Value) -> set[ir.Node] | None:
    """The nodes ``condition`` is computed from (within the limits of the module docstring)."""
    nodes: set[ir.Node] = set()
    weight_bytes = 0
    todo = [condition]
    while todo:
        value = todo.pop()
        producer = value.producer()
        if producer is None:
            if value.is_initializer() and value.const_value is not None:
                weight_bytes += value.const_value.nbytes
            continue
        if producer in nodes:
            continue
        if subgraphs_of(producer) or len(nodes) >= MAX_CONE_NODES:
            return None
        nodes.add(producer)
        todo.extend(v for v in producer.inputs if v is not None)
    return nodes if weight_bytes <= MAX_CONE_WEIGHT_BYTES else None


def _run_cone(model: ir.Model, nodes: list[ir.Node], outputs: list[ir.Value],
              feeds_list: Sequence[Mapping[str, np.ndarray]], providers: list[str]) -> list[dict[ir.Value, object]]:
    """Run ``nodes`` as a model of their own with ``outputs`` as its outputs, on every sample."""
    inputs: dict[str, ir.Value] = {}
    initializers: dict[str, ir.Value] = {}
    for node in nodes:
        for value in node.inputs:
            if value is not None and value.producer() is None:
                (initializers if value.is_initializer() else inputs)[value.name or ""] = value
    graph = onnx.GraphProto(name="if_conditions")
    graph.node.extend(ir.serde.serialize_node(node) for node in nodes)
    for name, value in initializers.items():
        assert value.const_value is not None
        tensor = ir.serde.serialize_tensor(value.const_value)
        tensor.name = name
        graph.initializer.append(tensor)
    graph.input.extend(onnx.ValueInfoProto(name=name, type=type_of(feeds_list[0][name])) for name in inputs)
    graph.output.extend(onnx.ValueInfoProto(name=v.name) for v in outputs)
    proto = onnx.ModelProto(ir_version=max(model.ir_version, 4), graph=graph, producer_name="onnxgrow conditions")
    for domain, version in model.opset_imports.items():
        proto.opset_import.append(onnx.OperatorSetIdProto(domain=domain, version=version))
    for function in model.functions.values():
        proto.functions.append(ir.serde.serialize_function(function))
    session = open_session(proto.SerializeToString(), providers, label="the If conditions")
    results = []
    for feeds in feeds_list:
        out = session.run({name: feeds[name] for name in inputs})
        results.append({v: out[v.name or ""] for v in outputs})
    return results
