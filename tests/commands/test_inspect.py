"""inspect: layers, widths, names to type, groups and refusal reasons."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from onnxgrow.cli import main
from tests.helpers.paths import fixture_path


@pytest.mark.parametrize("model_name", ["mnist_cnn_legacy", "mnist_cnn_dynamo"])
def test_inspect_text(model_name: str) -> None:
    result = CliRunner().invoke(main, ["inspect", str(fixture_path(model_name))])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for name in ("conv1", "conv2", "fc1", "fc2"):
        assert f"\n  {name} " in out
    assert "yes; divides conv2" in out
    assert "fc2    Gemm  10     Softmax     classes (--new-outputs)" in out
    assert "fc2: its outputs are model outputs: grow its classes with --new-outputs" in out
    assert "x  float  [batch, 1, 28, 28]" in out


def test_inspect_json() -> None:
    result = CliRunner().invoke(main, ["inspect", str(fixture_path("mlp_dynamo")), "--json", "-"])
    data = json.loads(result.stdout)
    layers = {layer["name"]: layer for layer in data["layers"]}
    assert layers["layer_2"]["width"] == 5 and layers["layer_2"]["widenable"]
    assert layers["layer_2"]["touches"] == ["layer_3"]
    assert layers["layer_2"]["activation"] == "Relu"
    assert not layers["layer_3"]["widenable"] and "model output" in layers["layer_3"]["reason"]
    assert layers["layer_3"]["new_outputs"] and not layers["layer_2"]["new_outputs"]
    assert "node_linear_1" in layers["layer_2"]["aliases"]


def test_inspect_bad_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "x.onnx"
    bad.write_text("nope")
    result = CliRunner().invoke(main, ["inspect", str(bad)])
    assert result.exit_code == 2 and "not" in result.stderr


@pytest.mark.torch
@pytest.mark.parametrize(("model", "variant"), [("gpt2", "legacy-nofold"), ("bert", "dynamo"), ("resnet", "legacy")])
def test_every_layer_shows_the_group_planned_from_it(tmp_path_factory: pytest.TempPathFactory,
                                                     model: str, variant: str) -> None:
    """inspect closes each channel group once and shares it among the group's layers: every
    layer must still show exactly the group and contractors planning from it finds, in graph
    order, and the constraint nearest before it."""
    pytest.importorskip("torch")
    from onnxgrow.inspect import inspect_model
    from onnxgrow.model_io import load_model
    from onnxgrow.shapes import infer_shapes
    from onnxgrow.widening import find_layers, plan_group
    from tests.helpers import torch_zoo

    path = torch_zoo.export(model, variant, torch_zoo.shared_directory(tmp_path_factory.getbasetemp()))
    summary = {info.name: info for info in inspect_model(path).layers}
    graph_model = load_model(path, infer_shapes=True)
    infer_shapes(graph_model)
    layers, _ = find_layers(graph_model)
    displays = {id(layer.node): layer.display for layer in layers}
    order = {id(node): i for i, node in enumerate(graph_model.graph)}
    shared = 0
    for layer in layers:
        info = summary[layer.display]
        try:
            ctx = plan_group(graph_model.graph, repr(layer.display), layer.node, layer.width,
                             layer.producer.embedding)
        except Exception as exc:  # noqa: BLE001  # the refusal inspect shows, or the classes it offers
            assert not info.widenable
            assert info.reason == str(exc) or (info.new_outputs and "--new-outputs" in info.reason), info.reason
            continue
        in_order = lambda nodes: [displays.get(id(n), n.name or n.op_type)  # noqa: E731
                                  for n in sorted(nodes, key=lambda n: order[id(n)])]
        assert info.group == in_order(ctx.producers), layer.display
        assert info.touches == in_order(ctx.contractors), layer.display
        shared += len(ctx.producers) > 1
        if ctx.uniform_required:
            assert info.reason.endswith(")") and any(f"at {where})" in info.reason for where in ctx.uniform_required)
    assert shared, "no group with several producers: the sharing is not exercised"


def test_why_nothing_grows_names_the_notes_when_layers_exist(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Layers found, each blocked (one by LRN, one by the model output): the one-line answer
    says so and points at the notes, not "no node is a layer"."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), n) for n in ("a", "b")]
    nodes = [helper.make_node("Conv", ["x", "a"], ["e"], name="enc", pads=[1, 1, 1, 1]),
             helper.make_node("LRN", ["e"], ["l"], name="lrn", size=3),
             helper.make_node("Conv", ["l", "b"], ["y"], name="dec", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], weights)
    src = tmp_path / "blocked.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)]), src)
    result = CliRunner().invoke(main, ["inspect", str(src)])
    assert result.exit_code == 0, result.output
    assert "why: none of its 2 layers can be widened; the notes name the node that blocks each" in result.stdout
    assert "a: cannot widen 'a' at LRN node 'lrn'" in result.stdout
