"""Real Hugging Face ``transformers`` models from tiny configs (random weights, nothing
downloaded), exported with ``torch.onnx.export(dynamo=True)``.

A stopgap for the segmented-check tests until ``tests/hf_zoo.py`` lands; its models should
replace these. Each model has ``layers`` blocks, so that a check can be cut between them.

- ``llama``: ``LlamaForCausalLM`` (grouped-query attention, rotary tables, SwiGLU MLP);
- ``gpt2``: ``GPT2LMHeadModel`` (fused ``c_attn`` Conv1D, learned positions, tied head);
- ``bert``: ``BertForSequenceClassification`` (post-norm blocks, padding mask, pooler).

Every model takes ``input_ids`` ``[batch, seq]`` and returns ``logits``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

NAMES = ("llama", "gpt2", "bert")
VOCAB = 64


class _Logits(nn.Module):
    """``model(input_ids=...).logits``, without a cache."""

    def __init__(self, model: nn.Module, cache: bool) -> None:
        super().__init__()
        self.model, self.cache = model, cache

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        extra = {"use_cache": False} if self.cache else {}
        return self.model(input_ids=input_ids, **extra).logits


def build(name: str, layers: int = 3) -> nn.Module:
    """The seeded model ``name`` (see the module docstring) in eval mode."""
    import transformers

    torch.manual_seed(0)
    if name == "llama":
        config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64,
                                          num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                          max_position_embeddings=64)
        return _Logits(transformers.LlamaForCausalLM(config).eval(), cache=True)
    if name == "gpt2":
        config = transformers.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=layers, n_head=4, n_positions=64,
                                         bos_token_id=0, eos_token_id=0)
        return _Logits(transformers.GPT2LMHeadModel(config).eval(), cache=True)
    if name == "bert":
        config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=layers,
                                         num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
                                         num_labels=3)
        return _Logits(transformers.BertForSequenceClassification(config).eval(), cache=False)
    raise KeyError(name)


def export(name: str, path: Path, layers: int = 3) -> Path:
    """Export ``name`` to ``path`` (weights inside the file), batch and sequence dynamic."""
    model = build(name, layers)
    ids = torch.randint(0, VOCAB, (2, 6))
    axes = {0: torch.export.Dim("batch", min=1, max=16), 1: torch.export.Dim("seq", min=2, max=32)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (ids,), dynamo=True, input_names=["input_ids"], output_names=["logits"],
                                    dynamic_shapes={"input_ids": axes}, verbose=False)
    assert program is not None
    program.save(str(path), external_data=False)
    return path
