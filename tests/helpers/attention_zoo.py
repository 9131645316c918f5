"""Tiny Hugging Face-style attention models for head growth, built from a config.

Each follows the attention code of its Hugging Face model (module names, reshapes and
permutes as written there), with ``head_dim`` an explicit config entry so that a model
with more heads keeps its head size (what head growth produces):

- ``bert``: separate query/key/value, ``transpose_for_scores``, additive padding mask,
  ``attention.output.dense`` + LayerNorm (path ``encoder.layer.0.attention.self``);
- ``gpt2``: fused ``c_attn`` Conv1D (addmm) split into q, k, v, causal mask sliced from a
  buffer to the sequence length, ``c_proj`` (path ``h.0.attn``);
- ``llama``: grouped-query attention (``num_key_value_heads`` < ``num_heads``),
  rotary embeddings with ``rotate_half``, ``repeat_kv`` (path ``layers.0.self_attn``);
- ``t5``: no 1/sqrt(d) scaling, a relative position bias from the first layer shared by
  the second (path ``block.0.layer.0.SelfAttention``);
- ``vit``: patch Conv, CLS token, ViT self-attention (path ``encoder.layer.0.attention.attention``);
- ``distilbert``: ``q_lin``/``k_lin``/``v_lin``/``out_lin``, q scaled before the product
  (path ``transformer.layer.0.attention``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from tests.helpers.torch_zoo import Conv1D


@dataclass(frozen=True)
class Config:
    hidden: int = 16
    heads: int = 2
    kv_heads: int | None = None
    head_dim: int = 8
    vocab: int = 20
    seq: int = 6
    ffn: int = 24

    @property
    def kv(self) -> int:
        return self.kv_heads or self.heads


class Stack(nn.Module):
    """``encoder.layer`` / ``transformer.layer``: layers called in turn with the same extras."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.layer = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, *extra)
        return x


# ----- BERT -----------------------------------------------------------------------------------


class BertSelfAttention(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.num_attention_heads, self.attention_head_size = c.heads, c.head_dim
        self.all_head_size = c.heads * c.head_dim
        self.query = nn.Linear(c.hidden, self.all_head_size)
        self.key = nn.Linear(c.hidden, self.all_head_size)
        self.value = nn.Linear(c.hidden, self.all_head_size)

    def transpose_for_scores(self, x: torch.Tensor) -> torch.Tensor:
        new_x_shape = x.size()[:-1] + (self.num_attention_heads, self.attention_head_size)
        return x.view(new_x_shape).permute(0, 2, 1, 3)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q = self.transpose_for_scores(self.query(hidden))
        k = self.transpose_for_scores(self.key(hidden))
        v = self.transpose_for_scores(self.value(hidden))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.attention_head_size)
        probs = nn.functional.softmax(scores + mask, dim=-1)
        context = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
        return context.view(context.size()[:-2] + (self.all_head_size,))


class BertSelfOutput(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.dense = nn.Linear(c.heads * c.head_dim, c.hidden)
        self.LayerNorm = nn.LayerNorm(c.hidden)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class BertAttention(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.self = BertSelfAttention(c)
        self.output = BertSelfOutput(c)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class BertLayer(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.attention = BertAttention(c)
        self.intermediate = nn.Linear(c.hidden, c.ffn)
        self.output = nn.Linear(c.ffn, c.hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, mask)
        return x + self.output(nn.functional.gelu(self.intermediate(x)))


class BertEncoder(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(c)])

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            x = layer(x, mask)
        return x


class Bert(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab, c.hidden)
        self.encoder = BertEncoder(c)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = (1.0 - (input_ids != 0).to(torch.float32))[:, None, None, :] * -10000.0
        return self.encoder(self.word_embeddings(input_ids), mask)


# ----- GPT-2 ----------------------------------------------------------------------------------


class GPT2Attention(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.num_heads, self.head_dim = c.heads, c.head_dim
        self.split_size = c.heads * c.head_dim
        self.c_attn = Conv1D(c.hidden, 3 * self.split_size)
        self.c_proj = Conv1D(self.split_size, c.hidden)
        self.register_buffer("bias", torch.tril(torch.ones(c.seq, c.seq, dtype=torch.bool)).view(1, 1, c.seq, c.seq),
                             persistent=False)

    def _split_heads(self, tensor: torch.Tensor) -> torch.Tensor:
        new_shape = tensor.size()[:-1] + (self.num_heads, self.head_dim)
        return tensor.view(new_shape).permute(0, 2, 1, 3)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        query, key, value = self.c_attn(hidden).split(self.split_size, dim=2)
        query, key, value = (self._split_heads(t) for t in (query, key, value))
        w = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(self.head_dim)
        t = query.size(-2)
        w = w.masked_fill(~self.bias[:, :, :t, :t], torch.finfo(w.dtype).min)
        out = torch.matmul(nn.functional.softmax(w, dim=-1), value).permute(0, 2, 1, 3).contiguous()
        out = out.view(out.size()[:-2] + (self.num_heads * self.head_dim,))
        return self.c_proj(out)


class GPT2Block(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(c.hidden)
        self.attn = GPT2Attention(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attn(self.ln_1(x))


class GPT2(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.wte = nn.Embedding(c.vocab, c.hidden)
        self.h = nn.ModuleList([GPT2Block(c)])
        self.ln_f = nn.LayerNorm(c.hidden)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.wte(input_ids)
        for block in self.h:
            x = block(x)
        return self.ln_f(x)


# ----- LLaMA ----------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """``LlamaRMSNorm``/``T5LayerNorm``: x · rsqrt(mean(x²) + eps) · weight."""

    def __init__(self, hidden: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(1.0 + 0.1 * torch.randn(hidden))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.variance_epsilon))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


class LlamaAttention(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.head_dim, self.num_key_value_groups = c.head_dim, c.heads // c.kv
        self.scaling = c.head_dim ** -0.5
        self.q_proj = nn.Linear(c.hidden, c.heads * c.head_dim, bias=False)
        self.k_proj = nn.Linear(c.hidden, c.kv * c.head_dim, bias=False)
        self.v_proj = nn.Linear(c.hidden, c.kv * c.head_dim, bias=False)
        self.o_proj = nn.Linear(c.heads * c.head_dim, c.hidden, bias=False)

    def forward(self, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        input_shape = hidden.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        q = self.q_proj(hidden).view(hidden_shape).transpose(1, 2)
        k = self.k_proj(hidden).view(hidden_shape).transpose(1, 2)
        v = self.v_proj(hidden).view(hidden_shape).transpose(1, 2)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q = (q * cos) + (rotate_half(q) * sin)
        k = (k * cos) + (rotate_half(k) * sin)
        k = repeat_kv(k, self.num_key_value_groups)
        v = repeat_kv(v, self.num_key_value_groups)
        w = torch.matmul(q, k.transpose(2, 3)) * self.scaling + mask
        w = nn.functional.softmax(w, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.matmul(w, v).transpose(1, 2).contiguous()
        return self.o_proj(out.reshape(*input_shape, -1).contiguous())


class LlamaDecoderLayer(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(c)
        self.input_layernorm = RMSNorm(c.hidden)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x + self.self_attn(self.input_layernorm(x), cos, sin, mask)


class Llama(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab, c.hidden)
        self.layers = nn.ModuleList([LlamaDecoderLayer(c)])
        inv_freq = 1.0 / (10000 ** (torch.arange(0, c.head_dim, 2, dtype=torch.float32) / c.head_dim))
        self.register_buffer("inv_freq", inv_freq)  # persistent: exports keep it under its own name

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        positions = torch.arange(t, dtype=torch.float32)
        freqs = positions[:, None] * self.inv_freq
        emb = torch.cat((freqs, freqs), dim=-1)[None]
        cos, sin = emb.cos(), emb.sin()
        mask = torch.triu(torch.full((t, t), -1e9), diagonal=1)[None, None]
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return x


# ----- T5 -------------------------------------------------------------------------------------


class T5Attention(nn.Module):
    def __init__(self, c: Config, has_relative_attention_bias: bool) -> None:
        super().__init__()
        self.n_heads, self.key_value_proj_dim = c.heads, c.head_dim
        self.inner_dim = c.heads * c.head_dim
        self.num_buckets = 8
        self.q = nn.Linear(c.hidden, self.inner_dim, bias=False)
        self.k = nn.Linear(c.hidden, self.inner_dim, bias=False)
        self.v = nn.Linear(c.hidden, self.inner_dim, bias=False)
        self.o = nn.Linear(self.inner_dim, c.hidden, bias=False)
        self.relative_attention_bias = nn.Embedding(self.num_buckets, c.heads) if has_relative_attention_bias else None

    def compute_bias(self, length: int) -> torch.Tensor:
        position = torch.arange(length, dtype=torch.long)
        relative = position[None, :] - position[:, None]
        buckets = torch.clamp(relative + self.num_buckets // 2, 0, self.num_buckets - 1)
        assert self.relative_attention_bias is not None
        values = self.relative_attention_bias(buckets)  # [T, T, H]
        return values.permute([2, 0, 1]).unsqueeze(0)  # [1, H, T, T]

    def forward(self, hidden: torch.Tensor, position_bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        batch, length = hidden.shape[:2]

        def shape(states: torch.Tensor) -> torch.Tensor:
            return states.view(batch, -1, self.n_heads, self.key_value_proj_dim).transpose(1, 2)

        q, k, v = shape(self.q(hidden)), shape(self.k(hidden)), shape(self.v(hidden))
        scores = torch.matmul(q, k.transpose(3, 2))
        if position_bias is None:
            position_bias = self.compute_bias(length)
        weights = nn.functional.softmax(scores + position_bias, dim=-1)
        out = torch.matmul(weights, v).transpose(1, 2).contiguous().view(batch, -1, self.inner_dim)
        return self.o(out), position_bias


class T5LayerSelfAttention(nn.Module):
    def __init__(self, c: Config, has_bias: bool) -> None:
        super().__init__()
        self.SelfAttention = T5Attention(c, has_bias)
        self.layer_norm = RMSNorm(c.hidden)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        out, bias = self.SelfAttention(self.layer_norm(x), bias)
        return x + out, bias


class T5Block(nn.Module):
    def __init__(self, c: Config, has_bias: bool) -> None:
        super().__init__()
        self.layer = nn.ModuleList([T5LayerSelfAttention(c, has_bias)])

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.layer[0](x, bias)


class T5(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.shared = nn.Embedding(c.vocab, c.hidden)
        self.block = nn.ModuleList([T5Block(c, i == 0) for i in range(2)])

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x, bias = self.shared(input_ids), None
        for block in self.block:
            x, bias = block(x, bias)
        return x


# ----- ViT ------------------------------------------------------------------------------------


class ViTSelfOutput(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.dense = nn.Linear(c.heads * c.head_dim, c.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(x)


class ViTAttention(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.attention = BertSelfAttention(c)
        self.output = ViTSelfOutput(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.attention(x, torch.zeros(())))


class ViTLayer(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.layernorm_before = nn.LayerNorm(c.hidden)
        self.attention = ViTAttention(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attention(self.layernorm_before(x))


class ViT(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.projection = nn.Conv2d(3, c.hidden, 4, 4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, c.hidden))
        self.position_embeddings = nn.Parameter(torch.randn(1, 5, c.hidden))
        self.encoder = Stack(ViTLayer(c))
        self.layernorm = nn.LayerNorm(c.hidden)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.projection(pixel_values).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.position_embeddings
        return self.layernorm(self.encoder(x))[:, 0]


# ----- DistilBERT -----------------------------------------------------------------------------


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.n_heads, self.dim_per_head = c.heads, c.head_dim
        inner = c.heads * c.head_dim
        self.q_lin = nn.Linear(c.hidden, inner)
        self.k_lin = nn.Linear(c.hidden, inner)
        self.v_lin = nn.Linear(c.hidden, inner)
        self.out_lin = nn.Linear(inner, c.hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        bs = x.size(0)

        def shape(t: torch.Tensor) -> torch.Tensor:
            return t.view(bs, -1, self.n_heads, self.dim_per_head).transpose(1, 2)

        def unshape(t: torch.Tensor) -> torch.Tensor:
            return t.transpose(1, 2).contiguous().view(bs, -1, self.n_heads * self.dim_per_head)

        q = shape(self.q_lin(x)) / math.sqrt(self.dim_per_head)
        k, v = shape(self.k_lin(x)), shape(self.v_lin(x))
        scores = torch.matmul(q, k.transpose(2, 3))
        scores = scores.masked_fill(mask[:, None, None, :], torch.tensor(torch.finfo(scores.dtype).min))
        weights = nn.functional.softmax(scores, dim=-1)
        return self.out_lin(unshape(torch.matmul(weights, v)))


class TransformerBlock(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.attention = MultiHeadSelfAttention(c)
        self.sa_layer_norm = nn.LayerNorm(c.hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.sa_layer_norm(x + self.attention(x, mask))


class DistilBert(nn.Module):
    def __init__(self, c: Config) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab, c.hidden)
        self.transformer = Stack(TransformerBlock(c))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = input_ids == 0
        return self.transformer(self.word_embeddings(input_ids), mask)


# ----- the table ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttentionModel:
    """A model class, its attention module path, config, and an example input."""

    cls: Callable[[Config], nn.Module]
    attention: str
    config: Config
    example: Callable[[Config], torch.Tensor]
    input_name: str = "input_ids"
    dynamic_seq: bool = False  # dynamo: the sequence axis dynamic too (rotary tables computed, not folded)


def _ids(c: Config) -> torch.Tensor:
    ids = torch.randint(1, c.vocab, (2, c.seq))
    ids[1, -2:] = 0  # padding, so masks matter
    return ids


MODELS: dict[str, AttentionModel] = {
    "bert": AttentionModel(Bert, "encoder.layer.0.attention.self", Config(), _ids),
    "gpt2": AttentionModel(GPT2, "h.0.attn", Config(), _ids, dynamic_seq=True),
    "llama": AttentionModel(Llama, "layers.0.self_attn", Config(heads=4, kv_heads=2, head_dim=4), _ids,
                            dynamic_seq=True),
    "t5": AttentionModel(T5, "block.0.layer.0.SelfAttention", Config(), _ids, dynamic_seq=True),
    "vit": AttentionModel(ViT, "encoder.layer.0.attention.attention", Config(),
                          lambda c: torch.randn(2, 3, 8, 8), "pixel_values"),
    "distilbert": AttentionModel(DistilBert, "transformer.layer.0.attention", Config(), _ids),
}


def build(name: str, **changes: int) -> nn.Module:
    """The seeded model ``name`` in eval mode, its config changed by ``changes``."""
    entry = MODELS[name]
    torch.manual_seed(0)
    return entry.cls(replace(entry.config, **changes)).eval()  # type: ignore[arg-type]


def export(name: str, dynamo: bool, path: Path, **changes: int) -> Path:
    """Export ``name`` (config changed by ``changes``) with the dynamo or the TorchScript exporter."""
    entry = MODELS[name]
    model = build(name, **changes)
    torch.manual_seed(1)
    example = entry.example(replace(entry.config, **changes))  # type: ignore[arg-type]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            axes = {0: torch.export.Dim("batch", min=1, max=64)}
            if entry.dynamic_seq:
                axes[1] = torch.export.Dim("seq", min=2, max=64)
            program = torch.onnx.export(model, (example,), dynamo=True, input_names=[entry.input_name],
                                        output_names=["y"], verbose=False, dynamic_shapes={entry.input_name: axes})
            assert program is not None
            program.save(str(path), external_data=False)
        else:
            torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=[entry.input_name],
                              output_names=["y"], dynamic_axes={entry.input_name: {0: "batch"}, "y": {0: "batch"}})
    return path
