"""inspect grouped by block: a layer repeated in every block of a residual stream is one row
(``model.layers.{0..11}.mlp.up_proj``), the stream's channel group is listed once under the
stream, and ``--json`` keeps every layer with its full group."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from onnxgrow.cli.inspect_cmd import render
from onnxgrow.inspect import BlockInfo, LayerInfo, ModelSummary, StreamGroupInfo, StreamInfo
from tests.helpers.cli import run

N = 12
STREAM = [f"model.layers.{k}.mlp.down_proj" for k in range(N)]
READERS = [f"model.layers.{k}.mlp.up_proj" for k in range(N)]


def _summary() -> ModelSummary:
    """Twelve blocks of an up/down FFN on a stream written by the embedding; block 5's up_proj
    has another activation, so its row is not like the others."""
    layers = [LayerInfo("model.embed_tokens", "node_embedding", "Gather", 8, None, True,
                        ["model.embed_tokens", *STREAM], READERS, "", ["node_embedding"], stream="model.layers")]
    for k in range(N):
        up, down = READERS[k], STREAM[k]
        layers.append(LayerInfo(up, f"node_linear_{2 * k}", "MatMul", 16, "Gelu" if k != 5 else "Relu", True, [up],
                                [down], "", [f"node_linear_{2 * k}", f"{up}.weight"], "identity",
                                block=f"model.layers.{k}"))
        layers.append(LayerInfo(down, f"node_linear_{2 * k + 1}", "MatMul", 8, None, True,
                                ["model.embed_tokens", *STREAM], READERS, "", [f"node_linear_{2 * k + 1}"], "identity",
                                block=f"model.layers.{k}", stream="model.layers"))
    blocks = [BlockInfo(f"model.layers.{k}", "model.layers", "model.layers", k, "decoder", "pre-norm", ["ffn"], [],
                        [STREAM[k]], [], 8, f"x{k}", f"x{k + 1}", [], 9) for k in range(N)]
    stream = StreamInfo("model.layers", [b.name for b in blocks], 8, [f"x{k}" for k in range(N + 1)],
                        [StreamGroupInfo(8, True, ["model.embed_tokens", *STREAM], READERS, "")])
    return ModelSummary("m.onnx", 10, {"": 18}, "test", 0, False, [], [], layers, [], streams=[stream],
                        blocks=blocks)


def test_rows_repeated_in_every_block_are_one_pattern_row() -> None:
    text = render(_summary())
    lines = text.split("layers (names to type", 1)[1].split("also known as:", 1)[0].splitlines()
    up_rows = [ln for ln in lines if ln.strip().startswith("model.layers.{") and ln.split()[0].endswith(".up_proj")]
    assert [ln.split()[:2] for ln in up_rows] == [["model.layers.{0..4,6..11}.mlp.up_proj", "×11"]]
    assert "yes; divides model.layers.{i}.mlp.down_proj" in up_rows[0]
    (odd,) = [ln for ln in lines if ln.strip().startswith("model.layers.5.mlp.up_proj ")]
    assert "Relu" in odd and "divides model.layers.5.mlp.down_proj" in odd
    (down,) = [ln for ln in lines if ln.strip().startswith("model.layers.{0..11}.mlp.down_proj ×12 ")]
    assert "yes, with the residual stream model.layers (width 8)" in down
    assert not any(ln.strip().startswith("model.layers.3.") for ln in lines)


def test_the_stream_is_listed_once() -> None:
    text = render(_summary())
    assert "  model.layers: 12 blocks (model.layers.{0..11})" in text
    assert "    width 8, written by model.embed_tokens, model.layers.{0..11}.mlp.down_proj" in text
    assert "      read by model.layers.{0..11}.mlp.up_proj" in text
    assert text.count("model.layers.{0..11}.mlp.down_proj") == 2  # the stream's writers and the layer row
    table = text.split("blocks:\n", 1)[1].split("layers (", 1)[0]
    (row,) = [ln for ln in table.splitlines() if ln.startswith("  model.layers.")]
    assert row.split() == ["model.layers.{0..11}", "×12", "decoder", "pre-norm", "ffn", "identity", "8", "none"]


def test_aliases_of_repeated_rows_keep_what_names_them_through_the_block() -> None:
    """Node names differ from block to block: the grouped line keeps the aliases that name the
    layer through its block (all twelve alike here, block 5's other activation aside)."""
    text = render(_summary()).split("also known as:\n", 1)[1]
    assert text.splitlines() == [  # down_proj's only aliases are its node names: no line
        "  model.embed_tokens: node_embedding",
        "  model.layers.{0..11}.mlp.up_proj ×12: model.layers.{i}.mlp.up_proj.weight (and node names, listed by "
        "--json)",
    ]


def test_a_model_without_blocks_is_listed_as_before() -> None:
    summary = _summary()
    summary.streams, summary.blocks = [], []
    text = render(summary)
    assert "residual streams:" not in text
    assert sum(ln.strip().startswith("model.layers.") for ln in text.splitlines()) >= 2 * N


# ----- real exports ------------------------------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.transformers
def test_inspect_groups_a_real_llama_by_block(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from tests.helpers.hf_zoo import export, hf_directory

    path, info = export("llama", "dynamo", hf_directory(tmp_path_factory.getbasetemp()))
    code, stdout, stderr = run("inspect", str(path), "--json", str(tmp_path / "summary.json"))
    assert code == 0, stderr
    text = stdout  # the report; the JSON went to its file
    data = json.loads((tmp_path / "summary.json").read_text())
    blocks = info["blocks"]["model.layers"]
    assert [b["name"] for b in data["blocks"]] == blocks
    assert "model.layers: 2 blocks (model.layers.{0,1})" in text
    for name in ("self_attn.q_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
        rows = [ln for ln in text.splitlines() if ln.strip().startswith(f"model.layers.{{0,1}}.{name} ×2 ")]
        assert len(rows) == 1, name
        assert not any(ln.strip().startswith(f"{block}.{name} ") for block in blocks for ln in text.splitlines())
    layers = {layer["name"]: layer for layer in data["layers"]}
    writers = ["model.embed_tokens"] + [f"{b}.{n}" for b in blocks for n in ("self_attn.o_proj", "mlp.down_proj")]
    (stream,) = data["streams"]
    (group,) = stream["groups"]
    assert sorted(group["group"]) == sorted(writers) and group["width"] == info["config"]["hidden_size"]
    for writer in writers:
        assert layers[writer]["stream"] == "model.layers" and sorted(layers[writer]["group"]) == sorted(writers)
    for block in blocks:
        assert layers[f"{block}.mlp.up_proj"]["block"] == block
        assert layers[f"{block}.mlp.up_proj"]["group"] == [f"{block}.mlp.gate_proj", f"{block}.mlp.up_proj"]
    assert layers["lm_head"]["block"] is None and layers["lm_head"]["stream"] is None


def test_writers_refused_for_one_reason_are_listed_together(tmp_path: Path) -> None:
    """A stream none of whose writers widens (BART: the stream reaches a model output) is one
    line of writers and the reason, not one line per writer."""
    from onnxgrow.inspect import _stream_info

    class _Projection:
        def __init__(self, name: str) -> None:
            self.node = name

    class _Block:
        def __init__(self, k: int) -> None:
            self.output_projections = [_Projection(f"l.{k}.out"), _Projection(f"l.{k}.fc2")]
            self.label = f"l.{k}"

    class _Stream:
        name, width, points = "l", 8, []
        blocks = [_Block(0), _Block(1)]

    def refused(name: str, node: str = "norm_4") -> LayerInfo:
        return LayerInfo(name, name, "MatMul", 8, None, False, [], [], f"cannot widen {name!r} at LayerNormalization "
                         f"node {node!r}: the widened channels reach model output 'y'", [])

    infos = {i.name: i for i in [refused("l.0.out"), refused("l.0.fc2"), refused("l.1.out"), refused("l.1.fc2", "x")]}
    displays = {id(p.node): p.node for b in _Stream.blocks for p in b.output_projections}
    info = _stream_info(_Stream(), infos, displays)  # type: ignore[arg-type]
    assert [(g.group, g.widenable) for g in info.groups] == [(["l.0.out", "l.0.fc2", "l.1.out"], False),
                                                             (["l.1.fc2"], False)]
