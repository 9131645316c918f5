"""The growth registry and the plan contract.

- A growth defined here, in a test module, with one registration and nothing changed
  elsewhere, gets the whole driver, a CLI command, its report in its own words, and its
  lineage in ``inspect`` and ``diff``.
- Every registered growth has an example below, and each runs through the driver's plan
  check (conftest sets ONNXGROW_CHECK_PLAN=1): a plan that changes the model fails loudly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import onnx_ir as ir
import pytest

import onnxgrow
from onnxgrow.cli._common import GROWTH_EXITS, echo_growth, epilog, user_errors
from onnxgrow.cli._main import main
from onnxgrow.cli._options import CheckArgs, WriteArgs, growth_options, verification_options
from onnxgrow.errors import RefusedError
from onnxgrow.growths import growth, growth_of, registered
from onnxgrow.lineage import describe, read_history
from onnxgrow.pipeline import PlanContractError, Report
from tests.helpers.block_graphs import stack
from tests.helpers.cli import run, tree_hashes
from tests.helpers.paths import fixture_path


@dataclass(kw_only=True)
class AliasReport(Report):
    node: str
    alias: str

    def lines(self) -> list[str]:
        return [f"aliased the output of {self.node} as {self.alias}"]


@growth("toy-alias")
class AliasOp:
    """A toy growth: an Identity after the named node's output, read by every former reader
    (exact by construction)."""

    infer_shapes = False

    def __init__(self, node: str) -> None:
        self.node = node

    def plan(self, model: ir.Model) -> ir.Node:
        for node in model.graph:
            if node.name == self.node:
                return node
        raise RefusedError(f"no node named {self.node!r}", self.node)

    def apply(self, model: ir.Model, plan: ir.Node) -> AliasReport:
        value = plan.outputs[0]
        readers = list(value.uses())
        alias = ir.node("Identity", [value], num_outputs=1, name=f"{plan.name}_alias")
        alias.outputs[0].name = f"{value.name}_alias"
        alias.outputs[0].type, alias.outputs[0].shape = value.type, value.shape
        for use in readers:
            use.node.replace_input_with(use.idx, alias.outputs[0])
        model.graph.insert_after(plan, alias)
        return AliasReport(node=plan.name or "", alias=alias.name or "")

    def history(self, report: AliasReport) -> list[dict[str, Any]]:
        return [{"op": "toy-alias", "node": report.node, "alias": report.alias}]

    @staticmethod
    def describe(entry: Mapping[str, Any]) -> str:
        return f"output of {entry.get('node')} aliased as {entry.get('alias')}"


@click.command("toy-alias", epilog=epilog("onnxgrow toy-alias m.onnx --node n", GROWTH_EXITS))
@click.argument("model", type=click.Path())
@click.option("--node", required=True)
@growth_options
@verification_options
@user_errors
def toy_alias_command(model: str, node: str, write: WriteArgs, check: CheckArgs) -> None:
    """Alias a node's output (a test growth)."""
    source = Path(model)
    report = onnxgrow.grow_file(source, write.output_path(source), AliasOp(node), write.options(check, None))
    echo_growth(report, write.map_out)


@pytest.fixture
def toy_command() -> Iterator[None]:
    """The toy growth's command on the ``onnxgrow`` group, for one test."""
    main.add_command(toy_alias_command)
    try:
        yield
    finally:
        main.commands.pop("toy-alias")


def _first_gemm(path: Path) -> str:
    model = onnxgrow.load_model(path)
    return next(node.name for node in model.graph if node.op_type == "Gemm" and node.name)


def test_a_growth_defined_here_gets_the_driver_the_cli_and_the_lineage(tmp_path: Path, toy_command: None) -> None:
    src = fixture_path("mlp_legacy")
    node = _first_gemm(src)
    out = tmp_path / "aliased.onnx"
    code, stdout, _ = run("toy-alias", str(src), "--node", node, "-o", str(out), "-q")
    assert code == 0, stdout
    assert f"aliased the output of {node} as {node}_alias" in stdout and "PASSED" in stdout
    (entry,) = read_history(onnxgrow.load_model(out))
    assert entry["op"] == "toy-alias" and entry["max_rel_error"] == 0.0
    assert describe(entry).startswith(f"output of {node} aliased as {node}_alias, verified max rel error 0")
    code, stdout, _ = run("inspect", str(out))
    assert code == 0 and f"output of {node} aliased as {node}_alias" in stdout
    code, stdout, _ = run("diff", str(src), str(out))
    assert code == 1 and f"output of {node} aliased as {node}_alias" in stdout


def test_the_growth_map_is_written_with_the_model_or_neither_is(tmp_path: Path) -> None:
    src = fixture_path("mlp_legacy")
    out, growth_map = tmp_path / "w.onnx", tmp_path / "w.json"
    code, stdout, _ = run("widen", str(src), "--node", "layer_1", "--to", "40", "-o", str(out),
                          "--map-out", str(growth_map), "-q")
    assert code == 0 and out.exists() and f"wrote growth map {growth_map}" in stdout
    assert {w["name"] for w in json.loads(growth_map.read_text())["weights"]} >= {"layer_1.weight", "layer_2.weight"}
    before = tree_hashes(tmp_path)
    for where, message in [(tmp_path / "missing" / "m.json", "the output folder does not exist"),
                           (Path("-"), "give a .json file name"),
                           (tmp_path / "x.onnx", "that is the model itself")]:
        code, _, stderr = run("widen", str(src), "--node", "layer_1", "--to", "48", "-o", str(tmp_path / "x.onnx"),
                              "--map-out", str(where))
        assert code == 2 and message in stderr, stderr
    assert tree_hashes(tmp_path) == before


def test_a_map_that_cannot_be_written_leaves_the_model_unwritten(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The map is written before the model is committed: a full disk there writes nothing."""
    from onnxgrow import pipeline

    def full_disk(report: object) -> Callable[[Path], None]:
        def write(path: Path) -> None:
            raise OSError(28, "No space left on device")

        return write

    monkeypatch.setattr(pipeline, "_map_writer", full_disk)
    out = tmp_path / "w.onnx"
    with pytest.raises(onnxgrow.GrowError, match=r"w.json: cannot write \(No space left on device\); nothing written"):
        onnxgrow.widen_file(fixture_path("mlp_legacy"), out, {"layer_1": 40},
                            options=onnxgrow.GrowOptions(map_out=tmp_path / "w.json"))
    assert list(tmp_path.iterdir()) == []


#: For every registered growth (by its operation class name): a model (made in the given
#: folder when it needs an exporter) and an operation on it.
GROWTH_EXAMPLES: dict[str, Callable[[Path], tuple[Path, Any]]] = {
    "WidenOp": lambda tmp: (fixture_path("mlp_dynamo"), onnxgrow.WidenOp({"layer_1": 40})),
    "NewOutputsOp": lambda tmp: (fixture_path("mlp_dynamo"), onnxgrow.NewOutputsOp({"layer_3": 5})),
    "VocabularyOp": lambda tmp: (_llama(tmp), onnxgrow.VocabularyOp({"embed_tokens": 60})),
    "HeadsOp": lambda tmp: (_llama(tmp), onnxgrow.HeadsOp({"model.layers.0.self_attn": 4})),
    "DeepenOp": lambda tmp: (fixture_path("mnist_cnn_dynamo"), onnxgrow.DeepenOp("conv1")),
    "DeepenBlockOp": lambda tmp: (stack(tmp / "stack.onnx", 3), onnxgrow.DeepenBlockOp("blocks.*")),
    "AliasOp": lambda tmp: (fixture_path("mlp_legacy"), AliasOp(_first_gemm(fixture_path("mlp_legacy")))),
}


def _llama(folder: Path) -> Path:
    """A tiny LLaMA-like language model (tied head), exported by dynamo."""
    pytest.importorskip("torch")
    from tests.helpers.lm_zoo import build_lm, export_lm

    return export_lm(build_lm("llama", tied=True), folder / "llama.onnx", dynamo=True)


def test_every_registered_growth_has_an_example() -> None:
    names = {g.operation.__name__ for g in registered()}
    assert names == set(GROWTH_EXAMPLES), f"registered growths without an example: {names - set(GROWTH_EXAMPLES)}"


@pytest.mark.parametrize("name", sorted(GROWTH_EXAMPLES))
def test_every_growth_plans_without_touching_the_model_and_describes_its_lineage(name: str, tmp_path: Path) -> None:
    path, op = GROWTH_EXAMPLES[name](tmp_path)
    model, _ = onnxgrow.grow(path, op)  # the plan check is on (conftest)
    entries = read_history(model)
    assert entries
    for entry in entries:
        found = growth_of(entry)
        assert found is not None and (found.operation is type(op) or entry["op"] == "widen"), entry
        assert describe(entry) and describe(entry) != str(entry["op"])


class TouchingPlan(AliasOp):
    """A plan that renames the node it found: a bug the driver must catch."""

    def plan(self, model: ir.Model) -> ir.Node:
        node = super().plan(model)
        node.name = "renamed"
        return node


class TouchingRefusal(AliasOp):
    """A plan that annotates a value, then refuses: still a bug."""

    def plan(self, model: ir.Model) -> ir.Node:
        model.graph.outputs[0].shape = ir.Shape([7, 7])
        raise RefusedError("no", None)


@pytest.mark.parametrize("op_type", [TouchingPlan, TouchingRefusal])
def test_a_plan_that_changes_the_model_fails_loudly(op_type: type[AliasOp], tmp_path: Path) -> None:
    src = fixture_path("mlp_legacy")
    with pytest.raises(PlanContractError, match="plan changed the model"):
        onnxgrow.grow_file(src, tmp_path / "out.onnx", op_type(_first_gemm(src)))
    assert list(tmp_path.iterdir()) == []


def test_an_op_key_is_registered_once() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        growth("toy-alias")(TouchingPlan)


def test_unknown_lineage_ops_are_named_as_they_are() -> None:
    assert describe({"op": "from-the-future", "seed": 1}) == "from-the-future, seed 1"
