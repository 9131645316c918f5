"""The structure module on hand-written models (tests/attention_zoo.py, tests/zoo.py), on
torchvision ResNets, and on graphs built with onnx.helper; its naming helpers.

Expectations come from the models' configs and torch modules (head counts, the blocks a
ResNet has and which of them downsample, the convolutions in each), so they can fail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from onnxgrow.model_io import load_model
from onnxgrow.shapes import infer_shapes
from onnxgrow.structure import (
    BlockKind,
    ModelStructure,
    NormPosition,
    ResidualKind,
    find_structure,
    index_ranges,
    indexed_prefixes,
    merge_names,
    split_index,
)
from onnxgrow.structure.patterns import generalise, mention

A, F, C = ResidualKind.ATTENTION, ResidualKind.FFN, ResidualKind.CONV


def structure_of(path: Path) -> ModelStructure:
    model = load_model(path, infer_shapes=True)
    infer_shapes(model)
    return find_structure(model)


# ----- naming helpers ------------------------------------------------------------------------------


@pytest.mark.parametrize(("indices", "text"), [
    ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], "{0..11}"), ([3, 1, 0, 2, 5], "{0..3,5}"), ([0, 1], "{0,1}"),
    ([4], "{4}"), ([0, 2, 4, 5, 6], "{0,2,4..6}")])
def test_index_ranges(indices: list[int], text: str) -> None:
    assert index_ranges(indices) == text


@pytest.mark.parametrize(("path", "prefixes"), [
    ("model.layers.3.self_attn.q_proj", ["model.layers.3"]),
    ("encoder.block.0.layer.1.DenseReluDense", ["encoder.block.0.layer.1", "encoder.block.0"]),
    ("layer2.1.conv1", ["layer2.1"]),
    ("encoder.layers.encoder_layer_3.mlp", ["encoder.layers.encoder_layer_3"]),
    ("fc1", []), (None, []),
])
def test_indexed_prefixes(path: str | None, prefixes: list[str]) -> None:
    assert indexed_prefixes(path) == prefixes


def test_split_index() -> None:
    assert split_index("model.layers.11") == ("model.layers", 11)
    assert split_index("encoder.layers.encoder_layer_3") == ("encoder.layers.encoder_layer_", 3)


class _Named:
    def __init__(self, name: str) -> None:
        self.name = name
        self.container, self.index = split_index(name)


def test_block_patterns_do_not_take_layer_1_for_layer_10() -> None:
    blocks = [_Named(f"model.layers.{k}") for k in range(12)]
    assert generalise("model.layers.10.mlp.up_proj", blocks) == ("model.layers.{}.mlp.up_proj", blocks[10])
    assert generalise("lm_head", blocks) is None
    text = "yes, with model.layers.1.mlp.gate_proj; divides model.layers.10.mlp.down_proj, model.layers.1"
    assert mention(text, blocks[1], "{i}") == ("yes, with model.layers.{i}.mlp.gate_proj; divides "
                                               "model.layers.10.mlp.down_proj, model.layers.{i}")
    names = ["model.embed_tokens", *(f"model.layers.{k}.mlp.down_proj" for k in (0, 1, 2, 3, 5)), "model.layers.7.x"]
    assert merge_names(names, blocks) == ["model.embed_tokens", "model.layers.{0..3,5}.mlp.down_proj",
                                          "model.layers.7.x"]


# ----- graphs built by hand ------------------------------------------------------------------------


def _residual_mlp(path: Path, blocks: int, width: int = 4, names: bool = False) -> Path:
    """``x → (x + W2·relu(W1·x + b1)) × blocks → tanh-GELU-like x + 0.5·x³ → y``; weights
    named ``blocks.<k>.fc<j>.weight`` when ``names``."""
    rng = np.random.default_rng(0)
    nodes, weights = [], []
    x = "x"
    for k in range(blocks):
        prefix = f"blocks.{k}." if names else f"w{k}_"
        for j in (1, 2):
            weights.append(helper.make_tensor(f"{prefix}fc{j}.weight", TensorProto.FLOAT, [width, width],
                                              rng.standard_normal(width * width).tolist()))
        nodes += [helper.make_node("MatMul", [x, f"{prefix}fc1.weight"], [f"h{k}"]),
                  helper.make_node("Relu", [f"h{k}"], [f"r{k}"]),
                  helper.make_node("MatMul", [f"r{k}", f"{prefix}fc2.weight"], [f"f{k}"]),
                  helper.make_node("Add", [x, f"f{k}"], [f"s{k}"])]
        x = f"s{k}"
    weights.append(helper.make_tensor("half", TensorProto.FLOAT, [], [0.5]))
    weights.append(helper.make_tensor("three", TensorProto.FLOAT, [], [3.0]))
    nodes += [helper.make_node("Pow", [x, "three"], ["cube"]), helper.make_node("Mul", ["cube", "half"], ["c"]),
              helper.make_node("Add", [x, "c"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, width])], weights)
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return path


@pytest.mark.parametrize("names", [False, True])
def test_residual_mlp_blocks(tmp_path: Path, names: bool) -> None:
    """Every ``x + f(x)`` with a projection in ``f`` is a block; ``x + 0.5·x³`` (no projection) is none."""
    structure = structure_of(_residual_mlp(tmp_path / "mlp.onnx", 3, names=names))
    (stream,) = structure.streams
    assert [b.label for b in stream.blocks] == ([f"blocks.{k}" for k in range(3)] if names
                                                else ["block 0", "block 1", "block 2"])
    assert [b.index for b in stream.blocks] == [0, 1, 2]
    assert [b.kind for b in stream.blocks] == [BlockKind.MLP] * 3
    assert [v.name for v in stream.points] == ["x", "s0", "s1", "s2"]
    assert stream.width == 4
    for k, block in enumerate(stream.blocks):
        (residual,) = block.residuals
        assert residual.kind is F and residual.identity_shortcut
        assert [n.op_type for n in residual.branch] == ["MatMul", "Relu", "MatMul"]
        assert [p.weight.name for p in block.output_projections] == [f"{'blocks.' if names else 'w'}{k}"
                                                                     f"{'.' if names else '_'}fc2.weight"]
        assert block.norm_position is NormPosition.NONE
    assert structure.block("block 1" if not names else "blocks.1") is stream.blocks[1]


def test_a_graph_without_residuals_has_no_stream(tmp_path: Path) -> None:
    structure = structure_of(_residual_mlp(tmp_path / "mlp.onnx", 0))
    assert structure.streams == () and structure.blocks == ()


# ----- the hand-written attention zoo --------------------------------------------------------------


ATTENTION_ZOO = {  # name: (blocks, residual kinds per block, block kind, norm position)
    "bert": (["encoder.layer.0"], (A, F), BlockKind.ENCODER, NormPosition.MIXED),  # its FFN has no LayerNorm
    "gpt2": (["h.0"], (A,), BlockKind.DECODER, NormPosition.PRE),
    "llama": (["layers.0"], (A,), BlockKind.DECODER, NormPosition.PRE),
    "t5": (["block.0", "block.1"], (A,), BlockKind.ENCODER, NormPosition.PRE),
    "vit": (["encoder.layer.0"], (A,), BlockKind.ENCODER, NormPosition.PRE),
    "distilbert": (["transformer.layer.0"], (A,), BlockKind.ENCODER, NormPosition.POST),
}


@pytest.fixture(scope="module")
def attention_export(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from tests.helpers import attention_zoo

    folder = tmp_path_factory.mktemp("structure_attention")
    cache: dict[tuple[str, str], ModelStructure] = {}

    def get(name: str, exporter: str) -> ModelStructure:
        if (name, exporter) not in cache:
            path = attention_zoo.export(name, exporter == "dynamo", folder / f"{name}-{exporter}.onnx")
            cache[name, exporter] = structure_of(path)
        return cache[name, exporter]

    return get


@pytest.mark.torch
@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
@pytest.mark.parametrize("name", list(ATTENTION_ZOO))
def test_attention_zoo_blocks(attention_export, name: str, exporter: str) -> None:  # type: ignore[no-untyped-def]
    from tests.helpers import attention_zoo

    config = attention_zoo.MODELS[name].config
    names, kinds, kind, norm = ATTENTION_ZOO[name]
    structure = attention_export(name, exporter)
    (stream,) = structure.streams
    assert [b.name for b in stream.blocks] == names
    for block in stream.blocks:
        assert tuple(r.kind for r in block.residuals) == kinds
        assert block.kind is kind and block.norm_position is norm
        (attention,) = block.attentions
        assert (attention.heads, attention.kv_heads, attention.head_dim) == (config.heads, config.kv, config.head_dim)
        assert attention.output is not None and attention.output.width == config.hidden
        roles = sorted(str(s.role) for s in attention.splits)
        assert roles == (["qkv"] if name == "gpt2" else ["key", "query", "value"]), roles
        assert block.width == config.hidden
    assert [a.path for a in structure.attentions] == [a.path for b in stream.blocks for a in b.attentions]


# ----- CNNs: the issue-3 zoo and torchvision ResNets -----------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize("variant", ["legacy", "legacy-nofold", "dynamo"])
def test_zoo_resnet_blocks_are_named_by_their_module(tmp_path_factory: pytest.TempPathFactory, variant: str) -> None:
    """TinyResNet's blocks are attributes, not numbered: each is a block named by its path;
    layer2 has a 1x1 conv + BN shortcut."""
    from tests.helpers import torch_zoo as zoo

    structure = structure_of(zoo.export("resnet", variant, zoo.shared_directory(tmp_path_factory.getbasetemp())))
    (stream,) = structure.streams
    assert [b.name for b in stream.blocks] == ["layer1", "layer2"]
    assert [b.container for b in stream.blocks] == [None, None] and [b.index for b in stream.blocks] == [0, 1]
    assert [b.kind for b in stream.blocks] == [BlockKind.CONV] * 2
    layer1, layer2 = stream.blocks
    assert layer1.identity_shortcuts and not layer2.identity_shortcuts
    (shortcut,) = layer2.residuals[0].shortcut_projections
    assert shortcut.name == "layer2.downsample.0"
    assert [p.name for p in layer2.output_projections] == ["layer2.conv2"]
    assert [n.op_type for n in layer2.residuals[0].post] == ["Relu"]
    output_norms = [b.residuals[0].output_norm for b in stream.blocks]
    if variant == "legacy-nofold":
        assert [n.kind if n else None for n in output_norms] == ["batch", "batch"]
        assert [n.name if n else None for n in output_norms] == ["layer1.bn2", "layer2.bn2"]
    else:  # TorchScript's constant folding and the dynamo exporter's optimiser put every BatchNorm into its conv
        assert output_norms == [None, None]


@pytest.mark.torch
@pytest.mark.parametrize("variant", ["legacy", "dynamo"])
def test_zoo_transformers_without_numbered_blocks(tmp_path_factory: pytest.TempPathFactory, variant: str) -> None:
    from tests.helpers import torch_zoo as zoo

    directory = zoo.shared_directory(tmp_path_factory.getbasetemp())
    gpt2 = structure_of(zoo.export("gpt2", variant, directory))
    assert [(b.name, [r.kind for r in b.residuals]) for b in gpt2.blocks] == [("attn", [A]), ("mlp", [F])]
    assert [b.norm_position for b in gpt2.blocks] == [NormPosition.PRE] * 2
    if variant == "dynamo":
        (attention,) = gpt2.blocks[0].attentions
        assert (attention.heads, attention.head_dim, attention.fused_qkv) == (2, 8, True)
    else:  # TorchScript computes the head size ``d // heads`` from Shape at run time: no head split to read
        assert gpt2.blocks[0].attentions == () and gpt2.attentions == ()
    assert gpt2.blocks[1].ffns[0].output.name == "mlp.c_proj"
    bert = structure_of(zoo.export("bert", variant, directory))
    assert [[r.kind for r in b.residuals] for b in bert.blocks] == [[A], [F]]
    assert [b.norm_position for b in bert.blocks] == [NormPosition.POST] * 2
    assert [b.residuals[0].post_norm.name if b.residuals[0].post_norm else None
            for b in bert.blocks] == ["attn_norm", "out_norm"]


TORCHVISION_CASES = [("resnet18", v) for v in ("legacy", "legacy-nofold", "dynamo")] + [
    ("resnet50", v) for v in ("legacy", "dynamo")]


@pytest.mark.torch
@pytest.mark.parametrize(("name", "variant"), TORCHVISION_CASES)
def test_torchvision_resnet_blocks(tmp_path_factory: pytest.TempPathFactory, name: str, variant: str) -> None:
    """Every BasicBlock/Bottleneck of the torch module is a block of that name; those with a
    ``downsample`` have it as their projection shortcut; the block's convolutions are its
    projections; its last conv writes the stream, through its last BatchNorm when kept."""
    pytest.importorskip("torchvision")
    import torch

    from tests.helpers import vision_zoo

    path = vision_zoo.export(name, variant, vision_zoo.vision_directory(tmp_path_factory.getbasetemp()))
    structure = structure_of(path)
    module = vision_zoo.build(name)
    expected = {path: m for path, m in module.named_modules() if type(m).__name__ in ("BasicBlock", "Bottleneck")}
    (stream,) = structure.streams
    assert [b.name for b in stream.blocks] == list(expected)
    assert stream.containers == ("layer1", "layer2", "layer3", "layer4") and stream.width is None
    for block in stream.blocks:
        torch_block = expected[block.name]
        last = "conv3" if type(torch_block).__name__ == "Bottleneck" else "conv2"
        (residual,) = block.residuals
        assert block.kind is BlockKind.CONV and residual.kind is C
        assert block.index == int(block.name.split(".")[1])
        convs = sorted(f"{block.name}.{sub}" for sub, m in torch_block.named_modules()
                       if isinstance(m, torch.nn.Conv2d))
        assert sorted(p.name for p in block.projections) == convs
        assert [p.name for p in block.output_projections] == [f"{block.name}.{last}"]
        assert block.width == getattr(torch_block, last).out_channels
        assert [p.name for p in residual.shortcut_projections] == (
            [] if torch_block.downsample is None else [f"{block.name}.downsample.0"])
        assert [n.op_type for n in residual.post] == ["Relu"] and block.norm_position is NormPosition.NONE
        norm = residual.output_norm
        if variant == "legacy-nofold":
            assert norm is not None and norm.kind == "batch" and norm.name == f"{block.name}.bn{last[-1]}"
        else:  # folded into the conv by both exporters' optimisers
            assert norm is None
