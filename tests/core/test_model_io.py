"""Model I/O: lazy loads, atomic saves, external data, nothing left behind on failure."""

from __future__ import annotations

import os
import re
from pathlib import Path

import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper

import onnxgrow
from onnxgrow import model_io
from onnxgrow.model_io import save_model
from tests.helpers.cli import tree_hashes
from tests.helpers.graphs import mlp
from tests.helpers.paths import fixture_path


def test_external_weights_stay_lazy() -> None:
    model = onnxgrow.load_model(fixture_path("mnist_cnn_dynamo"))
    assert isinstance(model.graph.initializers["fc1.weight"].const_value, ir.ExternalTensor)


def test_failed_check_leaves_nothing(tmp_path: Path, fixture_copy) -> None:  # type: ignore[no-untyped-def]
    src = fixture_copy("mnist_cnn_dynamo")
    model = onnxgrow.load_model(src)
    out = tmp_path / "out.onnx"

    def failing_check(path: Path) -> None:
        assert path.exists() and [p.suffixes[-2:] for p in path.parent.iterdir() if p != path] == [[".onnx", ".data"]]
        raise RuntimeError("simulated failure after writing")

    before = tree_hashes(tmp_path)
    with pytest.raises(RuntimeError):
        save_model(model, out, check=failing_check)
    assert tree_hashes(tmp_path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["mnist_cnn_dynamo.onnx", "mnist_cnn_dynamo.onnx.data"])


def test_save_keeps_opset_producer_metadata(tmp_path: Path) -> None:
    model = onnxgrow.load_model(fixture_path("mnist_cnn_legacy"))
    model.metadata_props["team"] = "vision"
    out = save_model(model, tmp_path / "copy.onnx")
    proto = onnx.load(str(out))
    original = onnx.load(str(fixture_path("mnist_cnn_legacy")))
    assert {o.domain: o.version for o in proto.opset_import} == {o.domain: o.version for o in original.opset_import}
    assert proto.ir_version == original.ir_version
    assert proto.producer_name == original.producer_name
    assert {p.key: p.value for p in proto.metadata_props}["team"] == "vision"
    assert model_io.written_files(out) == [out]  # embedded source stays embedded


def _annotations(path: Path) -> dict[str, list[int | str]]:
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in onnx.load(str(path)).graph.value_info}


@pytest.mark.parametrize("annotated", [False, True])
def test_saved_model_annotates_what_its_source_did(tmp_path: Path, annotated: bool) -> None:
    """The grown file's value_info is the source's, with the grown shapes: none for the
    shapes inferred while planning, none for the initializers (onnx-ir writes one each)."""
    src = mlp(tmp_path / "mlp.onnx", [3, 5, 4, 2], ["Relu"])
    proto = onnx.load(str(src))
    if annotated:
        proto.graph.value_info.append(helper.make_tensor_value_info("dense_1_out", TensorProto.FLOAT, ["batch", 5]))
        onnx.save(proto, str(src))
    out = tmp_path / "wide.onnx"
    report = onnxgrow.widen_file(src, out, {"dense_1": 7})
    assert report.verification is not None and report.verification.passed
    assert _annotations(out) == ({"dense_1_out": ["batch", 7]} if annotated else {})
    model = onnxgrow.load_model(src)
    save_model(model, tmp_path / "copy.onnx")
    assert _annotations(tmp_path / "copy.onnx") == _annotations(src)
    assert all(v.shape is not None for v in model.graph.initializers.values())  # given back after the save


def test_external_source_saves_external(tmp_path: Path) -> None:
    model = onnxgrow.load_model(fixture_path("mnist_cnn_dynamo"))
    out = save_model(model, tmp_path / "copy.onnx")
    model_file, data_file = model_io.written_files(out)
    assert re.fullmatch(r"copy\.[0-9a-f]{8}\.onnx\.data", data_file.name) and data_file.stat().st_size > 900_000
    onnx.checker.check_model(str(out), full_check=True)


def test_missing_external_data(tmp_path: Path, fixture_copy) -> None:  # type: ignore[no-untyped-def]
    src = fixture_copy("mnist_cnn_dynamo")
    src.with_name(src.name + ".data").unlink()
    with pytest.raises(onnxgrow.GrowError, match="external data file .* is missing"):
        onnxgrow.load_model(src)


def test_directory_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(onnxgrow.GrowError, match="is a directory"):
        onnxgrow.load_model(tmp_path)


def test_node_with_too_few_inputs_is_refused_at_load(tmp_path: Path) -> None:
    """A flipped byte can merge input names: a Conv left with one input is refused, not crashed on."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Conv", ["x"], ["y"], name="c")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(onnxgrow.GrowError, match="Conv node 'c' has 1 inputs; its schema wants 2 to 3"):
        onnxgrow.load_model(path)


def test_a_torch_export_keeps_its_own_annotations_with_grown_shapes(tmp_path: Path, fixture_copy) -> None:  # type: ignore[no-untyped-def]
    """The dynamo exporter annotates every weight and activation: widening fc1 keeps
    exactly those entries, the ones fc1's channels flow through with the grown width and
    the others as they were."""
    src = fixture_copy("mnist_cnn_dynamo")
    out = tmp_path / "wide.onnx"
    report = onnxgrow.widen_file(src, out, {"fc1": 80})
    assert report.verification is not None and report.verification.passed
    before, after = _annotations(src), _annotations(out)
    grown = {"fc1.weight": [80, 3136], "fc1.bias": [80], "fc2.weight": [10, 80],
             "linear": ["batch", 80], "relu_2": ["batch", 80]}
    assert after == {**before, **grown}


def test_initializer_entries_that_only_restate_the_tensor_are_not_parsed(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """An initializer's value_info entry with only a type and shape is left out of the parse
    (the value takes both from its tensor) and written again on save; one with metadata
    (torch's record of a parameter) is parsed and kept whole."""
    src = mlp(tmp_path / "mlp.onnx", [3, 5, 4, 2], ["Relu"])
    proto = onnx.load(str(src))
    weights = [t for t in proto.graph.initializer if len(t.dims) == 2]
    plain, tagged = (helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in weights[:2])
    helper.set_metadata_props(tagged, {"pkg.torch.export.graph_signature.InputSpec.kind": "PARAMETER"})
    proto.graph.value_info.extend([plain, tagged])
    onnx.save(proto, str(src))
    parsed: list[set[str]] = []
    real = ir.serde.deserialize_model

    def spy(model_proto):  # type: ignore[no-untyped-def]
        parsed.append({info.name for info in model_proto.graph.value_info})
        return real(model_proto)

    monkeypatch.setattr(ir.serde, "deserialize_model", spy)
    model = onnxgrow.load_model(src)
    assert parsed == [{tagged.name}]
    assert model.graph.initializers[plain.name].shape == ir.Shape(list(weights[0].dims))
    out = save_model(model, tmp_path / "copy.onnx")
    saved = {info.name: info for info in onnx.load(str(out)).graph.value_info}
    assert saved.keys() == {plain.name, tagged.name}
    assert saved[tagged.name] == tagged and saved[plain.name].type == plain.type


def test_a_failed_check_names_the_output_not_the_temporary_copy(tmp_path: Path) -> None:
    """The check runs on a temporary copy; its error names the file the user asked for."""
    from onnxgrow.errors import GrowError

    model = onnxgrow.load_model(fixture_path("mnist_cnn_dynamo"))
    out = tmp_path / "al.onnx"
    seen: list[Path] = []

    def refusing_check(path: Path) -> None:
        seen.append(path)
        data = next(p for p in path.parent.iterdir() if p != path)
        raise GrowError(f"{path}: onnxruntime cannot load this model (its data {data})")

    with pytest.raises(GrowError) as refused:
        save_model(model, out, check=refusing_check)
    message = str(refused.value)
    assert seen and seen[0] != out
    assert message.startswith(f"{out}: onnxruntime cannot load") and str(seen[0].parent) not in message, message
    assert f"its data {tmp_path}{os.sep}al." in message
    assert list(tmp_path.iterdir()) == []
