"""Tiny language models shaped like Hugging Face's GPT-2 and LLaMA (transformers is not
needed), for vocabulary growth; and their exports with both ``torch.onnx.export`` exporters.

- ``TinyGPT2LM``: ``transformer.wte`` (token) + ``transformer.wpe`` (position) embeddings,
  one pre-norm block (fused qkv ``Conv1D``, tanh-GELU MLP), ``transformer.ln_f``, and
  ``lm_head`` (no bias), tied to ``wte`` by default as in GPT-2.
- ``TinyLlamaLM``: ``model.embed_tokens``, one block (RMSNorm, q/k/v/o projections without
  bias, causal attention, SwiGLU MLP), ``model.norm``, ``lm_head``; untied by default as in
  LLaMA.

Both take ``input_ids`` ``[batch, seq]`` (int64) and return ``logits`` ``[batch, seq, vocab]``.
``vocab`` is a parameter, so a test can build the grown class and load exported weights into it.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from tests.helpers.torch_zoo import GPT2MLP, CausalSelfAttention


class GPT2Block(nn.Module):
    def __init__(self, d_model: int, heads: int, seq: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, heads, seq)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = GPT2MLP(d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2Body(nn.Module):
    def __init__(self, vocab: int, d_model: int, heads: int, seq: int) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, d_model)
        self.wpe = nn.Embedding(seq, d_model)
        self.h = nn.ModuleList([GPT2Block(d_model, heads, seq)])
        self.ln_f = nn.LayerNorm(d_model)


class TinyGPT2LM(nn.Module):
    def __init__(self, vocab: int = 50, d_model: int = 16, heads: int = 2, seq: int = 6, tied: bool = True) -> None:
        super().__init__()
        self.transformer = GPT2Body(vocab, d_model, heads, seq)
        self.lm_head = nn.Linear(d_model, vocab, bias=False)
        if tied:
            self.lm_head.weight = self.transformer.wte.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        t = self.transformer
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = t.wte(input_ids) + t.wpe(positions)
        for block in t.h:
            x = block(x)
        return self.lm_head(t.ln_f(x))


class RMSNorm(nn.Module):
    def __init__(self, d_model: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(1.0 + 0.1 * torch.randn(d_model))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class LlamaAttention(nn.Module):
    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (p(x).view(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        att = q @ k.transpose(-1, -2) / math.sqrt(d // self.heads)
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        return self.o_proj((att @ v).transpose(1, 2).reshape(b, t, d))


class LlamaMLP(nn.Module):
    def __init__(self, d_model: int, ffn: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d_model, ffn, bias=False)
        self.up_proj = nn.Linear(d_model, ffn, bias=False)
        self.down_proj = nn.Linear(ffn, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaLayer(nn.Module):
    def __init__(self, d_model: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(d_model)
        self.self_attn = LlamaAttention(d_model, heads)
        self.post_attention_layernorm = RMSNorm(d_model)
        self.mlp = LlamaMLP(d_model, ffn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaBody(nn.Module):
    def __init__(self, vocab: int, d_model: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, d_model)
        self.layers = nn.ModuleList([LlamaLayer(d_model, heads, ffn)])
        self.norm = RMSNorm(d_model)


class TinyLlamaLM(nn.Module):
    def __init__(self, vocab: int = 50, d_model: int = 16, heads: int = 2, ffn: int = 24, tied: bool = False) -> None:
        super().__init__()
        self.model = LlamaBody(vocab, d_model, heads, ffn)
        self.lm_head = nn.Linear(d_model, vocab, bias=False)
        if tied:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.model.embed_tokens(input_ids)
        for layer in self.model.layers:
            x = layer(x)
        return self.lm_head(self.model.norm(x))


def build_lm(kind: str, vocab: int = 50, tied: bool | None = None) -> nn.Module:
    """A seeded ``gpt2`` or ``llama`` model in eval mode (``tied`` defaults to the real model's choice)."""
    torch.manual_seed(0)
    cls = TinyGPT2LM if kind == "gpt2" else TinyLlamaLM
    model = cls(vocab=vocab) if tied is None else cls(vocab=vocab, tied=tied)
    return model.eval()


def export_lm(model: nn.Module, path: Path, dynamo: bool, seq: int = 6, dynamic_seq: bool = True) -> Path:
    """Export ``model`` to ``path`` with dynamic batch and (``dynamic_seq``, dynamo only:
    the TorchScript exporter's is always dynamic) sequence length, as LM exports are made.
    A static sequence lets the dynamo optimiser fold GPT-2's position lookup into a constant."""
    ids = torch.randint(0, 10, (2, seq))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            axes = {0: torch.export.Dim("batch", min=1, max=64)}
            if dynamic_seq:
                axes[1] = torch.export.Dim("seq", min=2, max=seq)
            program = torch.onnx.export(model, (ids,), dynamo=True, input_names=["input_ids"],
                                        output_names=["logits"], dynamic_shapes={"input_ids": axes},
                                        verbose=False)
            assert program is not None
            program.save(str(path), external_data=False)
        else:
            torch.onnx.export(model, (ids,), str(path), dynamo=False, input_names=["input_ids"],
                              output_names=["logits"], dynamic_axes={"input_ids": {0: "batch"}, "logits": {0: "batch"}})
    return path
