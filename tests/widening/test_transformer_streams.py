"""Transformer residual streams that carry a class token or read their width at run time.

- ViT (torchvision's ``VisionTransformer``): the class token is ``class_token.expand(n, -1, -1)``
  concatenated before the patches, then the position embedding is added. Both are constants
  spanning the hidden channels: widening the stream gathers them with the map. The dynamo
  exporter writes a plain ``Expand``; the TorchScript exporter builds the ``-1`` entries as
  ``Where(Equal(c, -1), 1, c)``, with ``n`` read at run time when the batch is dynamic. There
  ``nn.MultiheadAttention`` also reads the stream's width at run time and views its attention
  output to it (a tensor the widening does not change): refused, naming that read.
- GPT-2 as Hugging Face writes it (and optimum exports it with the TorchScript exporter, batch
  and sequence dynamic): ``output_shape = input_shape + (hidden_states.size(-1),)`` is read
  from the embeddings' sum before the blocks and applied after the final LayerNorm,
  ``hidden_states.view(output_shape)``: the width read at run time lands in a Reshape of the
  same stream, so it follows the widening (``transformer.wte``, once a refused residual
  stream).

Every widening is compared with the original in onnxruntime (max relative error ≤ 1e-5).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onnxgrow import RefusedError, load_model, widen
from tests.helpers.graphs import assert_widens_exactly

pytest.importorskip("torch")

import torch
from torch import nn
from torch.nn import functional as F

from tests.helpers.export import export_onnx
from tests.helpers.torch_zoo import Conv1D

pytestmark = pytest.mark.torch

EXPORTERS = ["dynamo", "legacy"]
HIDDEN = 8


# ----- ViT ------------------------------------------------------------------------------------


def vit(tmp_path: Path, exporter: str) -> Path:
    """A one-layer torchvision ViT, every parameter drawn at random (its head starts at zero),
    exported with a dynamic batch, or (``legacy-static``) by the TorchScript exporter with a fixed one."""
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(image_size=16, patch_size=8, num_layers=1, num_heads=2, hidden_dim=HIDDEN,
                              mlp_dim=16, num_classes=3).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.5)
    path, images = tmp_path / f"vit-{exporter}.onnx", torch.randn(2, 3, 16, 16)
    if exporter != "legacy-static":
        return export_onnx(model, [images], path, dynamo=exporter == "dynamo")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (images,), str(path), dynamo=False, input_names=["x"])
    return path


def run(model: onnx.ModelProto, image: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: image})[0]


@pytest.mark.parametrize("exporter", ["dynamo", "legacy-static"])
def test_vit_class_token_and_position_embedding_widen_with_the_stream(exporter: str, tmp_path: Path) -> None:
    path = vit(tmp_path, exporter)
    original = onnx.load(str(path))
    image = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    token = next(t for t in original.graph.initializer if t.name == "class_token")
    zeroed = onnx.ModelProto()
    zeroed.CopyFrom(original)
    next(t for t in zeroed.graph.initializer if t.name == "class_token").CopyFrom(
        onnx.numpy_helper.from_array(np.zeros(list(token.dims), np.float32), "class_token"))
    assert not np.allclose(run(original, image), run(zeroed, image)), "the logits do not depend on the class token"

    report = assert_widens_exactly(path, "conv_proj", 2 * HIDDEN)
    assert {"conv_proj", "encoder.layers.encoder_layer_0.mlp.3"} <= set(report.groups[0].layers)
    grown = {name: change.new_shape for change in report.groups[0].changes for name in [change.name]}
    assert grown["class_token"] == (1, 1, 2 * HIDDEN)
    assert grown["encoder.pos_embedding"] == (1, 5, 2 * HIDDEN)


def test_vit_attention_reading_the_width_at_run_time_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RefusedError, match="at Shape node '/encoder/layers/encoder_layer_0/self_attention/Shape_3': "
                                           "the model reads the channel count at run time"):
        widen(load_model(vit(tmp_path, "legacy")), {"conv_proj": 2 * HIDDEN})


# ----- GPT-2 as Hugging Face writes it ---------------------------------------------------------


class HFAttention(nn.Module):
    """GPT-2 attention as ``transformers`` writes it: fused ``c_attn``, each of q, k, v viewed
    as ``(*input_shape, -1, head_dim)``, causal mask, merged back with ``reshape(*input_shape, -1)``."""

    def __init__(self, d_model: int, heads: int, seq: int) -> None:
        super().__init__()
        self.d_model, self.head_dim = d_model, d_model // heads
        self.c_attn = Conv1D(d_model, 3 * d_model)
        self.c_proj = Conv1D(d_model, d_model)
        self.register_buffer("bias", torch.tril(torch.ones(seq, seq, dtype=torch.bool)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[:-1]
        t = x.shape[-2]
        q, k, v = (z.view(*shape, -1, self.head_dim).transpose(1, 2)
                   for z in self.c_attn(x).split(self.d_model, dim=2))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(~self.bias[:t, :t], torch.finfo(scores.dtype).min)
        y = (F.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(*shape, -1)
        return self.c_proj(y)


class HFBlock(nn.Module):
    def __init__(self, d_model: int, heads: int, seq: int) -> None:
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attn = HFAttention(d_model, heads, seq)
        self.mlp = nn.ModuleDict({"c_fc": Conv1D(d_model, 4 * d_model), "c_proj": Conv1D(4 * d_model, d_model)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp["c_proj"](F.gelu(self.mlp["c_fc"](self.ln_2(x)), approximate="tanh"))


class HFTransformer(nn.Module):
    def __init__(self, vocab: int, d_model: int, heads: int, seq: int) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d_model), nn.Embedding(seq, d_model)
        self.h = nn.ModuleList([HFBlock(d_model, heads, seq)])
        self.ln_f = nn.LayerNorm(d_model)


class HFGPT2LM(nn.Module):
    """``GPT2LMHeadModel.forward`` reduced to what the export sees: the output shape read from
    the stream before the blocks, the stream viewed to it after ``ln_f``, a tied ``lm_head``."""

    def __init__(self, vocab: int = 30, d_model: int = 16, heads: int = 2, seq: int = 8) -> None:
        super().__init__()
        self.transformer = HFTransformer(vocab, d_model, heads, seq)
        self.lm_head = nn.Linear(d_model, vocab, bias=False)
        self.lm_head.weight = self.transformer.wte.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        t = self.transformer
        input_shape = input_ids.size()
        position_ids = torch.arange(input_shape[-1], device=input_ids.device).unsqueeze(0)
        hidden = t.wte(input_ids) + t.wpe(position_ids)
        output_shape = input_shape + (hidden.size(-1),)
        for block in t.h:
            hidden = block(hidden)
        return self.lm_head(t.ln_f(hidden).view(output_shape))


def hf_gpt2(tmp_path: Path, exporter: str) -> Path:
    """Exported as optimum does (the TorchScript exporter, batch and sequence dynamic), or by dynamo."""
    torch.manual_seed(0)
    model = HFGPT2LM().eval()
    ids = torch.randint(0, 30, (2, 5))
    path = tmp_path / f"gpt2-{exporter}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            dims = {0: torch.export.Dim("batch", min=1, max=8), 1: torch.export.Dim("sequence", min=2, max=8)}
            program = torch.onnx.export(model, (ids,), dynamo=True, input_names=["input_ids"],
                                        dynamic_shapes={"input_ids": dims}, verbose=False)
            program.save(str(path), external_data=False)
        else:
            axes = {0: "batch_size", 1: "sequence_length"}
            torch.onnx.export(model, (ids,), str(path), dynamo=False, input_names=["input_ids"],
                              output_names=["logits"], dynamic_axes={"input_ids": axes, "logits": axes},
                              opset_version=14)
    return path


STREAM = {"transformer.wte", "transformer.wpe", "transformer.h.0.attn.c_proj", "transformer.h.0.mlp.c_proj"}


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_gpt2_stream_whose_width_is_read_at_run_time_widens(exporter: str, tmp_path: Path) -> None:
    path = hf_gpt2(tmp_path, exporter)
    report = assert_widens_exactly(path, "transformer.wte", 32)
    assert set(report.groups[0].layers) == STREAM
    with pytest.raises(RefusedError, match="over the widened axis at .* is exact only when every unit is copied "
                                           "equally often"):  # a LayerNorm, decomposed by the TorchScript exporter
        widen(load_model(path), {"transformer.wte": 33})
