"""`onnxgrow diff` and onnxgrow.diff_models: name-keyed structural diff, exit 0/1/2."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import onnx
import onnx_ir as ir
import pytest
from click.testing import CliRunner, Result
from onnx import helper, numpy_helper

from onnxgrow import diff as diff_module
from onnxgrow import diff_models
from onnxgrow.cli import main
from onnxgrow.diff import compare_tensors
from tests.helpers.paths import REPO
from tests.helpers.verify_graphs import (
    cnn,
    embedding,
    mlp,
    mlp_weights,
    perturbed,
    save,
    widened_pair,
    with_history,
)

SCHEMA = json.loads(files("onnxgrow").joinpath("schemas/diff.schema.json").read_text())


def run(*args: object) -> Result:
    return CliRunner().invoke(main, ["diff", *map(str, args)])


def diff_json(tmp_path: Path, old: onnx.ModelProto, new: onnx.ModelProto,
              *options: object, exit_code: int = 1) -> dict[str, Any]:
    """Save both, run ``diff --json -``, check the exit status and the schema."""
    a, b = save(old, tmp_path / "old.onnx"), save(new, tmp_path / "new.onnx")
    result = run(a, b, "--json", "-", *options)
    assert result.exit_code == exit_code, result.output
    data = json.loads(result.stdout)
    jsonschema.validate(data, SCHEMA)
    assert data["identical"] is (exit_code == 0)
    return data


def test_schema_is_valid() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_identical_models(tmp_path: Path) -> None:
    data = diff_json(tmp_path, mlp(), mlp(), exit_code=0)
    assert not any(data["counts"].values())
    assert data["nodes"]["unchanged"] == 3 and data["initializers"]["unchanged"] == 4
    result = run(tmp_path / "old.onnx", tmp_path / "new.onnx")
    assert result.exit_code == 0 and result.stdout.rstrip().endswith("identical")


def test_widened_model_names_every_changed_initializer_and_the_lineage(tmp_path: Path) -> None:
    old, new = widened_pair(5, 7)
    data = diff_json(tmp_path, old, new)
    changed = {c["name"]: (c["change"], c["old"]["shape"], c["new"]["shape"])
               for c in data["initializers"]["changed"]}
    assert changed == {
        "W1": ("shape", [5, 4], [7, 4]),
        "b1": ("shape", [5], [7]),
        "W2": ("shape", [2, 5], [2, 7]),
    }
    assert data["initializers"]["unchanged"] == 1  # b2
    assert [e["description"] for e in data["lineage"]["entries"]] == [
        "fc1 widened 5 → 7, net2wider, seed 0"
    ]
    assert data["lineage"]["entries"][0]["new"] is True
    text = run(tmp_path / "old.onnx", tmp_path / "new.onnx").stdout
    assert "~ W1: FLOAT [5, 4] → FLOAT [7, 4]" in text
    assert "~ W2: FLOAT [2, 5] → FLOAT [2, 7]" in text
    assert "1. fc1 widened 5 → 7, net2wider, seed 0 (new)" in text
    numeric = diff_json(tmp_path, old, new, "--numeric")["numeric"]
    assert numeric["passed"] is True  # different structure, same function: still exit 1


def test_perturbed_weight_is_named_with_its_max_abs_diff(tmp_path: Path) -> None:
    weights = mlp_weights()
    noisy = perturbed(weights, "W2", 1e-3)
    data = diff_json(tmp_path, mlp(weights), mlp(noisy))
    [change] = data["initializers"]["changed"]
    expected = np.abs(noisy["W2"].astype(np.float64) - weights["W2"]).max()
    assert change["name"] == "W2" and change["change"] == "values"
    assert change["max_abs_diff"] == pytest.approx(expected)
    assert change["changed_values"] == np.count_nonzero(noisy["W2"] != weights["W2"])
    assert data["counts"] == {**{k: 0 for k in data["counts"]}, "initializers": 1}
    text = run(tmp_path / "old.onnx", tmp_path / "new.onnx").stdout
    assert f"~ W2: FLOAT [2, 5] values changed, max abs diff {expected:.3g} (10 of 10 values)" in text
    numeric = diff_json(tmp_path, mlp(weights), mlp(noisy), "--numeric")["numeric"]
    assert numeric["passed"] is False


def test_renamed_nodes_are_matched_by_outputs(tmp_path: Path) -> None:
    data = diff_json(tmp_path, mlp(), mlp(names=("dense1", "act1", "dense2")))
    assert data["nodes"]["added"] == [] and data["nodes"]["removed"] == []
    renames = {c["old_key"]: c["key"] for c in data["nodes"]["changed"]}
    assert renames == {"fc1": "dense1", "fc2": "dense2"}
    assert all(c["changes"] == [{"field": "name", "old": c["old_key"], "new": c["key"]}]
               for c in data["nodes"]["changed"])
    assert data["nodes"]["unchanged"] == 1


def test_unnamed_nodes(tmp_path: Path) -> None:
    data = diff_json(tmp_path, embedding(unnamed=True), embedding(unnamed=True), exit_code=0)
    assert data["nodes"]["unchanged"] == 3
    data = diff_json(tmp_path, embedding(), embedding(unnamed=True))
    assert [c["key"] for c in data["nodes"]["changed"]] == [
        "(unnamed Gather → e)", "(unnamed ReduceMean → m)", "(unnamed Gemm → y)"
    ]
    assert "name embed dropped" in run(tmp_path / "old.onnx", tmp_path / "new.onnx").stdout


def test_added_node(tmp_path: Path) -> None:
    data = diff_json(tmp_path, mlp(), mlp(extra_relu=True))
    [added] = data["nodes"]["added"]
    assert (added["name"], added["op_type"], added["inputs"], added["outputs"]) == (
        "act_extra", "Relu", ["a"], ["a2"])
    [rewired] = data["nodes"]["changed"]
    assert rewired["key"] == "fc2"
    assert rewired["changes"] == [{"field": "inputs", "old": ["a", "W2", "b2"], "new": ["a2", "W2", "b2"]}]
    assert data["nodes"]["removed"] == []
    assert diff_json(tmp_path, mlp(extra_relu=True), mlp())["nodes"]["removed"][0]["name"] == "act_extra"


def test_changed_attributes(tmp_path: Path) -> None:
    data = diff_json(tmp_path, mlp(), mlp(alpha=2.0))
    [change] = data["nodes"]["changed"]
    assert change["key"] == "fc1"
    assert change["changes"] == [{"field": "attributes.alpha", "old": 1.0, "new": 2.0}]


def test_tensor_attributes_compared_by_content(tmp_path: Path) -> None:
    def const_model(values: list[float]) -> onnx.ModelProto:
        node = helper.make_node("Constant", [], ["y"], name="c",
                                value=numpy_helper.from_array(np.array(values, np.float32)))
        graph = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("y", 1, [2])])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    diff_json(tmp_path, const_model([1, 2]), const_model([1, 2]), exit_code=0)
    [change] = diff_json(tmp_path, const_model([1, 2]), const_model([1, 3]))["nodes"]["changed"]
    assert change["changes"][0]["field"] == "attributes.value"
    assert change["changes"][0]["old"].startswith("tensor FLOAT [2] sha256:")


def test_different_opsets(tmp_path: Path) -> None:
    data = diff_json(tmp_path, mlp(opset=17), mlp(opset=18))
    assert data["model"] == [{"field": "opset:ai.onnx", "old": 17, "new": 18}]
    markdown = run(tmp_path / "old.onnx", tmp_path / "new.onnx", "--markdown", "-").stdout
    assert "| opset:ai.onnx | 17 | 18 |" in markdown


def test_dynamic_batch_becoming_static(tmp_path: Path) -> None:
    data = diff_json(tmp_path, mlp(batch="N"), mlp(batch=1))
    assert {c["name"]: (c["old"]["shape"], c["new"]["shape"]) for c in data["inputs"]["changed"]} == {
        "x": (["N", 4], [1, 4])
    }
    assert data["outputs"]["changed"][0]["new"]["shape"] == [1, 2]


def test_token_id_model_with_numeric_check(tmp_path: Path) -> None:
    data = diff_json(tmp_path, embedding(vocab=30), embedding(vocab=30), "--numeric",
                     "--input-shapes", "ids:[2,16]", exit_code=0)
    assert data["numeric"]["inputs"] == {"ids": {"shape": [2, 16], "dtype": "int64"}}
    old = embedding(vocab=30)
    new = onnx.ModelProto()
    new.CopyFrom(old)
    table = numpy_helper.to_array(new.graph.initializer[0]).copy()
    table[3] += 0.25
    new.graph.initializer[0].CopyFrom(numpy_helper.from_array(table, "E"))
    data = diff_json(tmp_path, old, new, "--numeric", "--input-shapes", "ids:[2,16]")
    [change] = data["initializers"]["changed"]
    assert (change["name"], change["changed_values"]) == ("E", 4)
    assert change["max_abs_diff"] == pytest.approx(0.25)


def test_metadata_and_lineage(tmp_path: Path) -> None:
    first = {"op": "widen", "node": "fc1", "old_width": 5, "new_width": 7, "init": "net2wider", "seed": 0}
    second = {"op": "deepen", "after": "fc1", "mode": "identity", "seed": 1}
    old = with_history(mlp(), [first])
    new = with_history(mlp(), [first, second])
    onnx.helper.set_model_props(new, {"author": "ci", "onnxgrow.history": new.metadata_props[0].value})
    data = diff_json(tmp_path, old, new)
    assert data["metadata"]["added"] == [{"key": "author", "value": "ci"}]
    assert [(e["description"], e["new"]) for e in data["lineage"]["entries"]] == [
        ("fc1 widened 5 → 7, net2wider, seed 0", False),
        ("layer inserted after fc1 (identity), seed 1", True),
    ]
    history_only = diff_json(tmp_path, mlp(), with_history(mlp(), [first]))
    assert not any(history_only["counts"].values()) and history_only["lineage"]["changed"]


def test_local_functions(tmp_path: Path) -> None:
    def with_function(op: str) -> onnx.ModelProto:
        fn = helper.make_function("local", "Act", ["v"], ["w"], [helper.make_node(op, ["v"], ["w"])],
                                  [helper.make_opsetid("", 17)])
        node = helper.make_node("Act", ["x"], ["y"], name="act", domain="local")
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", 1, [2])],
                                  [helper.make_tensor_value_info("y", 1, [2])])
        return helper.make_model(graph, functions=[fn], opset_imports=[
            helper.make_opsetid("", 17), helper.make_opsetid("local", 1)])

    diff_json(tmp_path, with_function("Relu"), with_function("Relu"), exit_code=0)
    assert diff_json(tmp_path, with_function("Relu"), with_function("Tanh"))["functions"] == {
        "added": [], "removed": [], "changed": ["local::Act"]}


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_external_data_reads_only_tensors_it_compares(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = cnn(channels=3)
    new = cnn(channels=4)  # Wc, bc, Wf change shape; bf keeps it and changes one value
    bf = numpy_helper.to_array(old.graph.initializer[3]).copy()
    bf[1] += 0.5
    new.graph.initializer[3].CopyFrom(numpy_helper.from_array(bf, "bf"))
    new.graph.initializer.append(numpy_helper.from_array(np.zeros((64, 64), np.float32), "extra"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = save(old, tmp_path / "a" / "model.onnx", external=True)
    b = save(new, tmp_path / "b" / "model.onnx", external=True)
    before = {**_digests(a.parent), **{"b/" + k: v for k, v in _digests(b.parent).items()}}

    read: list[str | None] = []
    original_blocks = diff_module.tensor_blocks

    def tracking_blocks(tensor: ir.TensorProtocol, elements: int) -> Iterator[np.ndarray]:
        read.append(tensor.name)
        return original_blocks(tensor, elements)

    def not_mapped(self: ir.ExternalTensor) -> None:
        raise AssertionError(f"{self.name} mapped whole")

    monkeypatch.setattr(diff_module, "tensor_blocks", tracking_blocks)
    monkeypatch.setattr(ir.ExternalTensor, "_load", not_mapped)
    report = diff_models(a, b)
    data = report.to_dict()
    jsonschema.validate(data, SCHEMA)
    assert sorted(read) == ["bf", "bf"]  # only the tensor compared, once per side, in blocks
    by_name = {c["name"]: c for c in data["initializers"]["changed"]}
    assert set(by_name) == {"Wc", "bc", "Wf", "bf"}
    assert by_name["bf"]["max_abs_diff"] == pytest.approx(0.5)
    assert by_name["bf"]["changed_values"] == 1
    assert data["initializers"]["added"] == [{"name": "extra", "dtype": "FLOAT", "shape": [64, 64]}]
    after = {**_digests(a.parent), **{"b/" + k: v for k, v in _digests(b.parent).items()}}
    assert after == before and "model.onnx.data" in after


def test_compare_tensors_in_chunks() -> None:
    rng = np.random.default_rng(0)
    old = rng.standard_normal((5, 7)).astype(np.float32)
    old[0, 0] = np.nan
    new = old.copy()
    new[1, 2] += 0.5
    new[4, 6] -= 2.0
    for chunk in (1, 3, 7, 1000):
        assert compare_tensors(ir.tensor(old), ir.tensor(new), chunk=chunk) == (2, pytest.approx(2.0))
    assert compare_tensors(ir.tensor(old), ir.tensor(old.copy()), chunk=3) == (0, 0.0)
    one_sided = new.copy()
    one_sided[3, 3] = np.nan
    assert compare_tensors(ir.tensor(old), ir.tensor(one_sided), chunk=3) == (3, None)
    ints = np.arange(10, dtype=np.int64)
    assert compare_tensors(ir.tensor(ints), ir.tensor(ints * 2), chunk=4) == (9, 9.0)


def test_markdown_report(tmp_path: Path) -> None:
    old, new = widened_pair()
    a, b = save(old, tmp_path / "old.onnx"), save(new, tmp_path / "new.onnx")
    out = tmp_path / "summary.md"
    result = run(a, b, "--markdown", out, "--numeric")
    assert result.exit_code == 1
    assert "~ W1" in result.stdout  # the text report still goes to stdout
    md = out.read_text()
    assert md.startswith(f"### onnxgrow diff: `{a}` → `{b}`")
    assert "**different: initializers (3), lineage**" in md
    assert "| name | change | old | new | max abs diff |" in md
    assert "| W1 | shape | FLOAT [5, 4] | FLOAT [7, 4] |  |" in md
    assert "#### Lineage of NEW\n\n1. fc1 widened 5 → 7, net2wider, seed 0 (new)" in md
    assert "#### Numeric check" in md and "PASSED  y" in md


def test_markdown_escapes_pipes(tmp_path: Path) -> None:
    report = diff_models(ir.serde.deserialize_model(mlp()),
                         ir.serde.deserialize_model(mlp(names=("fc|1", "act1", "fc2"))))
    assert report.old is None and "| fc\\|1 | Gemm | changed | renamed from fc1 |" in report.to_markdown()


def test_usage_errors(tmp_path: Path) -> None:
    a = save(mlp(), tmp_path / "a.onnx")
    missing = run(a, tmp_path / "absent.onnx")
    assert missing.exit_code == 2 and "absent.onnx: no such file" in missing.stderr
    garbled = tmp_path / "garbled.onnx"
    garbled.write_bytes(b"\x08\x07garbage" * 10)
    result = run(garbled, a)
    assert result.exit_code == 2 and "garbled.onnx: not" in result.stderr
    assert "Traceback" not in result.output
    broken = save(cnn(), tmp_path / "ext.onnx", external=True)
    (tmp_path / "ext.onnx.data").unlink()
    result = run(broken, a)
    assert result.exit_code == 2 and "external data file ext.onnx.data" in result.stderr
    assert run(a, a, "--json", "-", "--markdown", "-").exit_code == 2
    result = run(a, a, "--atol", "1e-3")
    assert result.exit_code == 2 and "need --numeric" in result.stderr
    result = run(a, a, "--json", tmp_path / "no" / "such" / "dir.json")
    assert result.exit_code == 2 and "cannot write" in result.stderr


def test_docs_describe_every_schema_field() -> None:
    doc = (REPO / "docs" / "diff-json.md").read_text()
    fields: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            fields.update(node.get("properties", {}))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(SCHEMA)
    assert {"schema_version", "max_abs_diff", "min_atol", "old_key"} <= fields
    undocumented = sorted(f for f in fields if f"`{f}`" not in doc)
    assert not undocumented, f"docs/diff-json.md does not describe {undocumented}"
    assert re.search(r"`schema_version`.*\b1\b", doc)


def test_subprocess(tmp_path: Path) -> None:
    old, new = widened_pair()
    a, b = save(old, tmp_path / "old.onnx"), save(new, tmp_path / "new.onnx")
    out = tmp_path / "diff.json"
    proc = subprocess.run([sys.executable, "-m", "onnxgrow", "diff", str(a), str(b), "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    jsonschema.validate(json.loads(out.read_text()), SCHEMA)
    same = subprocess.run([sys.executable, "-m", "onnxgrow", "diff", str(a), str(a)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert same.returncode == 0 and same.stdout.rstrip().endswith("identical")
