"""Block numbers in names (onnxgrow/deepening/block_names.py): dotted paths, name-scope metadata
and legacy scopes are renumbered at once; names of other containers, of model inputs and
outputs, and of blocks that do not move are left alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx_ir as ir
from hypothesis import given
from hypothesis import strategies as st

from onnxgrow.deepening.block_names import Renumbering, renumber_graph, renumbering_clash
from onnxgrow.names import NAME_SCOPES_KEY, legacy_module_path
from tests.helpers.graphs import save_text

SHIFT = Renumbering("model.layers", {2: 3, 3: 4})


def test_dotted_names_move_and_others_stay() -> None:
    assert SHIFT.name("model.layers.2.mlp.down_proj.weight") == "model.layers.3.mlp.down_proj.weight"
    assert SHIFT.name("model.layers.3") == "model.layers.4"
    assert SHIFT.name("model.layers.1.mlp.down_proj.weight") == "model.layers.1.mlp.down_proj.weight"
    assert SHIFT.name("model.layers.23.mlp") == "model.layers.23.mlp"  # not model.layers.2 followed by 3
    assert SHIFT.name("decoder.model.layers.2") == "decoder.model.layers.2"  # another container's path
    assert SHIFT.name("xmodel.layers.2.w") == "xmodel.layers.2.w"
    assert SHIFT.name("val_2") == "val_2"


def test_name_scope_metadata_renumbers_every_path_it_lists() -> None:
    scopes = "['', 'model', 'model.layers.2', 'model.layers.2.self_attn', 'linear_7']"
    assert SHIFT.dotted(scopes) == "['', 'model', 'model.layers.3', 'model.layers.3.self_attn', 'linear_7']"
    namespace = ": LlamaForCausalLM/model: LlamaModel/model.layers.3: LlamaDecoderLayer/add_9: aten.add"
    assert SHIFT.dotted(namespace) == namespace.replace("model.layers.3", "model.layers.4")


def test_legacy_scopes_renumber_the_part_that_ends_the_block() -> None:
    assert SHIFT.name("/model/layers.2/mlp/down_proj/MatMul") == "/model/layers.3/mlp/down_proj/MatMul"
    assert SHIFT.name("/model/layers.3/Add_1_output_0") == "/model/layers.4/Add_1_output_0"
    assert SHIFT.name("/layers.2/mlp/MatMul") == "/layers.3/mlp/MatMul"  # the outer module left out
    assert SHIFT.name("/encoder/layers.2/fc1/MatMul") == "/encoder/layers.2/fc1/MatMul"  # encoder.layers
    torchvision = Renumbering("layer3", {4: 5, 5: 6})
    name = "/layer3/layer3.4/conv1/Conv"
    assert torchvision.name(name) == "/layer3/layer3.5/conv1/Conv"
    assert legacy_module_path(torchvision.name(name)) == "layer3.5.conv1"
    assert torchvision.name("/layer4/layer4.4/conv1/Conv") == "/layer4/layer4.4/conv1/Conv"
    # renumbered once, although the scope part also reads as a dotted name
    assert torchvision.name("/layer3/layer3.4/relu/Relu_output_0") == "/layer3/layer3.5/relu/Relu_output_0"


def test_a_container_ending_in_an_underscore_joins_its_index_directly() -> None:
    torchvision_vit = Renumbering("encoder.layers.encoder_layer_", {1: 2})
    assert torchvision_vit.name("encoder.layers.encoder_layer_1.mlp.0.weight") == \
        "encoder.layers.encoder_layer_2.mlp.0.weight"


@given(st.lists(st.integers(0, 30), min_size=1, max_size=6, unique=True), st.integers(1, 3))
def test_renumbering_after_copies_never_merges_two_names(copied: list[int], count: int) -> None:
    """Old index k moves up by ``count`` per copied block before it: every old name stays
    distinct, and none takes a copy's number."""
    indices = {k: k + count * sum(1 for s in copied if s < k) for k in range(32)}
    renumbering = Renumbering("model.layers", {k: v for k, v in indices.items() if k != v})
    names = [f"model.layers.{k}.mlp.weight" for k in range(32)]
    renamed = [renumbering.name(n) for n in names]
    assert len(set(renamed)) == len(renamed)
    copies = {indices[s] + t for s in copied for t in range(1, count + 1)}
    assert not copies & {int(n.split(".")[2]) for n in renamed}


GRAPH = """
g (float[2, 4] x) => (float[2, 4] y) {
    a = MatMul (x, "model.layers.1.w")
    b = MatMul (a, "model.layers.2.w")
    y = Identity (b)
}
"""
WEIGHTS = {"model.layers.1.w": np.eye(4, dtype=np.float32), "model.layers.2.w": np.eye(4, dtype=np.float32)}


def test_a_graph_is_renumbered_through_its_values(tmp_path: Path) -> None:
    model = ir.load(save_text(tmp_path / "m.onnx", GRAPH, WEIGHTS))
    graph = model.graph
    first, second, last = list(graph)
    second.name = "/model/layers.2/MatMul"
    second.outputs[0].name = "/model/layers.2/MatMul_output_0"
    second.metadata_props[NAME_SCOPES_KEY] = "['', 'model.layers.2', 'b']"
    last.outputs[0].name = "model.layers.2.out"  # a model output: its name is the interface
    tensor = graph.initializers["model.layers.2.w"].const_value
    renumbering = Renumbering("model.layers", {1: 2, 2: 3})
    assert renumbering_clash(graph, [renumbering]) is None
    renumber_graph(graph, [renumbering])
    assert sorted(graph.initializers) == ["model.layers.2.w", "model.layers.3.w"]
    assert graph.initializers["model.layers.3.w"].const_value is tensor  # renamed, not copied
    assert second.name == "/model/layers.3/MatMul"
    assert second.outputs[0].name == "/model/layers.3/MatMul_output_0"
    assert second.metadata_props[NAME_SCOPES_KEY] == "['', 'model.layers.3', 'b']"
    assert graph.outputs[0].name == "model.layers.2.out"


def test_a_clash_is_found_before_anything_is_renamed(tmp_path: Path) -> None:
    model = ir.load(save_text(tmp_path / "m.onnx", GRAPH, WEIGHTS))
    # only block 1 moves: its new name is block 2's, which stays
    assert renumbering_clash(model.graph, [Renumbering("model.layers", {1: 2})]) == "model.layers.2.w"
    assert sorted(model.graph.initializers) == ["model.layers.1.w", "model.layers.2.w"]
