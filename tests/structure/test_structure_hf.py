"""The structure module on real ``transformers`` exports (tests/helpers/hf_zoo.py).

For every model × exporter, the blocks found must be the torch module's own blocks, named
as the framework numbers them, with the kind, norm position, attention head counts and FFN
widths of the config the model was built from, and every linear layer of each block found
as one of its projections. The expectations are read from the config and the torch module
(the export's sidecar), so a wrong block, name, count or projection fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from onnxgrow.errors import GrowError
from onnxgrow.model_io import load_model
from onnxgrow.shapes import infer_shapes
from onnxgrow.structure import BlockKind, ModelStructure, NormPosition, ResidualKind, find_structure
from tests.helpers.hf_zoo import CASES, ExportFailed, export, hf_directory, skip_without_other_environment

pytestmark = [pytest.mark.torch, pytest.mark.transformers]
pytest.importorskip("transformers")

#: Exports known to fail upstream: the test expects the failure (and runs fully once it is fixed).
KNOWN_EXPORT_FAILURES = {("t5", "dynamo"): "Cannot view a tensor"}

A, X, F = ResidualKind.ATTENTION, ResidualKind.CROSS_ATTENTION, ResidualKind.FFN


@dataclass(frozen=True)
class Architecture:
    """What a model family's blocks are, and where its config keeps the numbers."""

    kind: BlockKind
    norm: NormPosition
    residuals: tuple[ResidualKind, ...]
    attention_output: tuple[str, ...]  # the attention's output projection ends with one of these
    ffn_output: tuple[str, ...]
    fused_qkv: bool = False
    gate: str | None = None  # the FFN's gate projection ends with this


_LLAMA = Architecture(BlockKind.DECODER, NormPosition.PRE, (A, F), ("self_attn.o_proj",), ("mlp.down_proj",),
                      gate="mlp.gate_proj")
ARCHITECTURES = {
    "llama": _LLAMA, "llama-eager": _LLAMA, "llama-tied": _LLAMA, "qwen2": _LLAMA,
    "gpt2": Architecture(BlockKind.DECODER, NormPosition.PRE, (A, F), ("attn.c_proj",), ("mlp.c_proj",),
                         fused_qkv=True),
    "bert": Architecture(BlockKind.ENCODER, NormPosition.POST, (A, F), ("attention.output.dense",), ("output.dense",)),
    "vit": Architecture(BlockKind.ENCODER, NormPosition.PRE, (A, F), ("attention.output.dense", "attention.o_proj"),
                        ("output.dense", "mlp.fc2")),
}
ENCODER_DECODER = {
    "t5": (Architecture(BlockKind.ENCODER, NormPosition.PRE, (A, F), ("SelfAttention.o",), ("DenseReluDense.wo",)),
           Architecture(BlockKind.DECODER, NormPosition.PRE, (A, X, F), ("SelfAttention.o", "EncDecAttention.o"),
                        ("DenseReluDense.wo",))),
    "bart": (Architecture(BlockKind.ENCODER, NormPosition.POST, (A, F), ("self_attn.out_proj",), ("fc2",)),
             Architecture(BlockKind.DECODER, NormPosition.POST, (A, X, F),
                          ("self_attn.out_proj", "encoder_attn.out_proj"), ("fc2",))),
}


@dataclass(frozen=True)
class Numbers:
    """A stream's numbers, from the config."""

    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int


def numbers(name: str, config: dict[str, Any], part: str = "encoder") -> Numbers:
    """The config's numbers for ``name`` (``part``: the encoder or decoder of an encoder-decoder)."""
    family = name.split("-")[0]
    if family in ("llama", "qwen2"):
        heads = config["num_attention_heads"]
        head_dim = config.get("head_dim") or config["hidden_size"] // heads
        return Numbers(config["hidden_size"], heads, config["num_key_value_heads"], head_dim,
                       config["intermediate_size"])
    if family == "gpt2":
        return Numbers(config["n_embd"], config["n_head"], config["n_head"], config["n_embd"] // config["n_head"],
                       config.get("n_inner") or 4 * config["n_embd"])
    if family in ("bert", "vit"):
        heads = config["num_attention_heads"]
        return Numbers(config["hidden_size"], heads, heads, config["hidden_size"] // heads, config["intermediate_size"])
    if family == "t5":
        return Numbers(config["d_model"], config["num_heads"], config["num_heads"], config["d_kv"], config["d_ff"])
    assert family == "bart"
    heads = config[f"{part}_attention_heads"]
    return Numbers(config["d_model"], heads, heads, config["d_model"] // heads, config[f"{part}_ffn_dim"])


@pytest.fixture(scope="session")
def hf_export(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """``(name, exporter) -> (structure, path, sidecar)``; optimum cases skip without optimum."""
    directory = hf_directory(tmp_path_factory.getbasetemp())
    found: dict[tuple[str, str], tuple[ModelStructure, Path, dict[str, Any]]] = {}

    def get(name: str, exporter: str) -> tuple[ModelStructure, Path, dict[str, Any]]:
        skip_without_other_environment(exporter)
        if (name, exporter) not in found:
            try:
                path, info = export(name, exporter, directory)
            except ExportFailed as failed:
                known = KNOWN_EXPORT_FAILURES.get((name, exporter))
                if known is not None and known in str(failed):
                    pytest.xfail(str(failed))
                raise
            model = load_model(path, infer_shapes=True)
            infer_shapes(model)
            found[name, exporter] = (find_structure(model), path, info)
        return found[name, exporter]

    return get


def _architectures(name: str) -> list[tuple[Architecture, str]]:
    if name in ENCODER_DECODER:
        encoder, decoder = ENCODER_DECODER[name]
        return [(encoder, "encoder"), (decoder, "decoder")]
    return [(ARCHITECTURES[name], "encoder")]


@pytest.mark.parametrize(("name", "exporter"), CASES)
def test_blocks_are_the_frameworks_blocks(hf_export, name: str, exporter: str) -> None:  # type: ignore[no-untyped-def]
    structure, _, info = hf_export(name, exporter)
    expected_blocks = info["blocks"]
    found = {stream.containers: [b.name for b in stream.blocks] for stream in structure.streams}
    assert found == {(container,): names for container, names in expected_blocks.items()}, found
    assert [s.containers[0] for s in structure.streams] == list(expected_blocks)  # encoder first
    for stream, (architecture, part) in zip(structure.streams, _architectures(name)):
        expected = numbers(name, info["config"], part)
        assert stream.width == expected.hidden
        assert len(stream.points) == len(stream.blocks) + 1
        for block in stream.blocks:
            assert block.kind is architecture.kind, block.label
            assert block.norm_position is architecture.norm, block.label
            assert tuple(r.kind for r in block.residuals) == architecture.residuals, block.label
            assert block.identity_shortcuts
            assert block.index == int(block.name.rsplit(".", 1)[1])
            assert block.entry is not block.exit and block.exit in {o for n in block.nodes for o in n.outputs}


@pytest.mark.parametrize(("name", "exporter"), CASES)
def test_every_linear_layer_of_a_block_is_one_of_its_projections(hf_export, name: str,  # type: ignore[no-untyped-def]
                                                                 exporter: str) -> None:
    structure, _, info = hf_export(name, exporter)
    for block in structure.blocks:
        assert block.name is not None
        assert sorted(p.name for p in block.projections) == sorted(info["linear"][block.name]), block.name


@pytest.mark.parametrize(("name", "exporter"), CASES)
def test_attention_and_ffn_match_the_config(hf_export, name: str, exporter: str) -> None:  # type: ignore[no-untyped-def]
    structure, _, info = hf_export(name, exporter)
    for stream, (architecture, part) in zip(structure.streams, _architectures(name)):
        expected = numbers(name, info["config"], part)
        for block in stream.blocks:
            crosses = [r.kind is ResidualKind.CROSS_ATTENTION for r in block.residuals if r.attentions]
            assert [a.cross for a in block.attentions] == crosses
            assert len(block.attentions) == sum(k in (A, X) for k in architecture.residuals), block.label
            for attention in block.attentions:
                assert attention.path.startswith(f"{block.name}."), attention.path
                counts = (attention.heads, attention.kv_heads, attention.head_dim)
                assert counts == (expected.heads, expected.kv_heads, expected.head_dim), attention.path
                assert attention.fused_qkv is architecture.fused_qkv
                assert len(attention.splits) == (1 if architecture.fused_qkv else 3)
                roles = sorted(str(s.role) for s in attention.splits)
                assert roles == (["qkv"] if architecture.fused_qkv else ["key", "query", "value"]), roles
                assert attention.query.role in ("query", "qkv")
                assert attention.output is not None and attention.output.name.endswith(architecture.attention_output)
                assert attention.output.width == expected.hidden
            (ffn,) = block.ffns
            assert ffn.width == expected.ffn
            assert ffn.output.name.endswith(architecture.ffn_output) and ffn.output.width == expected.hidden
            assert ffn.output.name.startswith(f"{block.name}.")
            if architecture.gate:
                assert ffn.gate is not None and ffn.gate.name.endswith(architecture.gate)
                assert len(ffn.inputs) == 2
            else:
                assert ffn.gate is None and len(ffn.inputs) == 1
            assert {p.name for p in block.output_projections} == {ffn.output.name} | {
                a.output.name for a in block.attentions if a.output is not None}


@pytest.mark.parametrize(("name", "exporter"), CASES)
def test_norms_sit_where_the_architecture_puts_them(hf_export, name: str, exporter: str) -> None:  # type: ignore[no-untyped-def]
    structure, _, info = hf_export(name, exporter)
    for stream, (architecture, part) in zip(structure.streams, _architectures(name)):
        hidden = numbers(name, info["config"], part).hidden
        for block in stream.blocks:
            for residual in block.residuals:
                norm = residual.pre_norm if architecture.norm is NormPosition.PRE else residual.post_norm
                assert norm is not None, block.label
                assert norm.name is not None and norm.name.startswith(f"{block.name}."), norm.name
                assert norm.scale is not None and norm.scale.shape is not None
                assert norm.scale.shape.dims[-1] == hidden
                if architecture.norm is NormPosition.POST:
                    assert residual.exit is norm.output  # the stream continues after the post-norm
                else:
                    assert norm.input is residual.entry
            kinds = {n.kind for n in block.norms}
            rms = name.split("-")[0] in ("llama", "qwen2", "t5")
            assert kinds == ({"rms"} if rms else {"layer"}), kinds


@pytest.mark.parametrize(("name", "exporter"), CASES)
def test_block_lookup_by_framework_name(hf_export, name: str, exporter: str) -> None:  # type: ignore[no-untyped-def]
    structure, _, info = hf_export(name, exporter)
    for names in info["blocks"].values():
        for block_name in names:
            assert structure.block(block_name).name == block_name
    tails = [names[-1].split(".", 1)[1] for names in info["blocks"].values()]
    if len(tails) == 1:  # ``layers.1`` for ``model.layers.1``
        assert structure.block(tails[0]).name == next(iter(info["blocks"].values()))[-1]
    else:  # ``block.1``: the encoder's or the decoder's
        with pytest.raises(GrowError, match="ambiguous"):
            structure.block(tails[0])
    with pytest.raises(GrowError, match="no block named 'nothing.7'"):
        structure.block("nothing.7")
