"""The config.json of a grown model (onnxgrow.export.hf_config.grown_config), from weight
shapes alone: the sizes read per family, heads with the head size kept, the refusals that
name what to grow as well, and the history check. The shapes are those a
``transformers`` model of the config has (PyTorch layout); the real models go through
tests/export/test_export_hf.py."""

from __future__ import annotations

from typing import Any

import pytest

from onnxgrow.errors import GrowError
from onnxgrow.export.hf_config import grown_config

LLAMA = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 64, "hidden_size": 32,
         "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "tie_word_embeddings": False}
GPT2 = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 64, "n_embd": 32, "n_head": 4,
        "n_layer": 2, "n_positions": 64, "n_inner": None}
BERT = {"model_type": "bert", "architectures": ["BertForSequenceClassification"], "vocab_size": 64,
        "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
        "max_position_embeddings": 64, "type_vocab_size": 2, "id2label": {"0": "NEG", "1": "POS"},
        "label2id": {"NEG": 0, "POS": 1}}


def llama_shapes(hidden: int = 32, ffn: int = 48, heads: int = 4, kv_heads: int = 2, head_dim: int = 8,
                 vocab: int = 64, layers: int = 2) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden),
                                          "lm_head.weight": (vocab, hidden), "model.norm.weight": (hidden,)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({p + "self_attn.q_proj.weight": (heads * head_dim, hidden),
                       p + "self_attn.k_proj.weight": (kv_heads * head_dim, hidden),
                       p + "self_attn.v_proj.weight": (kv_heads * head_dim, hidden),
                       p + "self_attn.o_proj.weight": (hidden, heads * head_dim),
                       p + "mlp.gate_proj.weight": (ffn, hidden), p + "mlp.up_proj.weight": (ffn, hidden),
                       p + "mlp.down_proj.weight": (hidden, ffn)})
    return shapes


def gpt2_shapes(hidden: int = 32, attention: int = 32, inner: int = 128, vocab: int = 64,
                layers: int = 2) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {"transformer.wte.weight": (vocab, hidden),
                                          "transformer.wpe.weight": (64, hidden)}
    for i in range(layers):
        p = f"transformer.h.{i}."
        shapes.update({p + "attn.c_attn.weight": (hidden, 3 * attention), p + "attn.c_proj.weight": (attention, hidden),
                       p + "mlp.c_fc.weight": (hidden, inner), p + "mlp.c_proj.weight": (inner, hidden)})
    return shapes


def bert_shapes(hidden: int = 32, attention: int = 32, ffn: int = 48, labels: int = 2,
                layers: int = 2) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {"bert.embeddings.word_embeddings.weight": (64, hidden),
                                          "bert.embeddings.position_embeddings.weight": (64, hidden),
                                          "bert.embeddings.token_type_embeddings.weight": (2, hidden),
                                          "classifier.weight": (labels, hidden)}
    for i in range(layers):
        p = f"bert.encoder.layer.{i}."
        shapes.update({p + "attention.self.query.weight": (attention, hidden),
                       p + "attention.output.dense.weight": (hidden, attention),
                       p + "intermediate.dense.weight": (ffn, hidden), p + "output.dense.weight": (hidden, ffn)})
    return shapes


def changed(original: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in new.items() if original.get(k) != v}


def test_ungrown_config_is_unchanged() -> None:
    for original, shapes in ((LLAMA, llama_shapes()), (GPT2, gpt2_shapes()), (BERT, bert_shapes())):
        grown = grown_config(original, shapes)
        assert grown.config == original and not grown.changes


def test_llama_heads_keep_the_head_size_and_write_head_dim() -> None:
    history = [{"op": "widen-heads", "attention": f"model.layers.{i}.self_attn", "old_heads": 4, "new_heads": 8,
                "old_kv_heads": 2, "new_kv_heads": 4, "head_dim": 8} for i in range(2)]
    grown = grown_config(LLAMA, llama_shapes(heads=8, kv_heads=4), history)
    # 8 heads of 8 no longer give hidden / heads: the head size is written
    assert changed(LLAMA, grown.config) == {"num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 8}
    assert all(c.recorded for c in grown.changes)


def test_llama_hidden_and_heads_together_need_no_head_dim() -> None:
    grown = grown_config(LLAMA, llama_shapes(hidden=64, heads=8, kv_heads=4))
    assert changed(LLAMA, grown.config) == {"hidden_size": 64, "num_attention_heads": 8, "num_key_value_heads": 4}
    assert not any(c.recorded for c in grown.changes)
    assert "(the model's history records no growth of it)" in grown.changes[0].describe()


def test_gpt2_inner_stays_null_until_it_changes() -> None:
    assert grown_config(GPT2, gpt2_shapes(inner=128)).config["n_inner"] is None
    assert changed(GPT2, grown_config(GPT2, gpt2_shapes(inner=256)).config) == {"n_inner": 256}


def test_bert_hidden_with_heads_and_one_label_more() -> None:
    grown = grown_config(BERT, bert_shapes(hidden=64, attention=64, labels=3))
    assert changed(BERT, grown.config) == {
        "hidden_size": 64, "num_attention_heads": 8,
        "id2label": {"0": "NEG", "1": "POS", "2": "LABEL_2"}, "label2id": {"NEG": 0, "POS": 1, "LABEL_2": 2}}


@pytest.mark.parametrize(("original", "shapes", "message"), [
    (GPT2, gpt2_shapes(hidden=64, attention=32, inner=256),
     "n_embd 64 with 4 heads of 8 cannot be written: grow the heads to 8 as well "
     "(--node 'transformer.h.*.attn' --heads 8)"),
    (BERT, bert_shapes(hidden=48, attention=32),
     "hidden_size 48 with 4 heads of 8 cannot be written: grow the heads to 6 as well"),
    (LLAMA, {**llama_shapes(), "model.layers.1.self_attn.q_proj.weight": (64, 32),
             "model.layers.1.self_attn.o_proj.weight": (32, 64)},
     "model.layers.0.self_attn.q_proj.weight gives 32 and model.layers.1.self_attn.q_proj.weight 64: grow the heads "
     "of model.layers.*.self_attn alike in every layer"),
    (LLAMA, {**llama_shapes(), "lm_head.weight": (72, 32)},
     "lm_head.weight has 72 rows but a LlamaForCausalLM has one vocab_size (64, the rows of "
     "model.embed_tokens.weight): grow the vocabulary (--node model.embed_tokens --rows 72)"),
    (LLAMA, {k: v for k, v in llama_shapes().items() if not k.startswith("model.embed_tokens")},
     "the model has none of the weights a LlamaForCausalLM config.json is read from (model.embed_tokens.weight)"),
    (LLAMA, {k.replace("layers.2", "layers.3"): v for k, v in llama_shapes(layers=3).items()},
     "the blocks model.layers.N are numbered 0, 1, 3; a LlamaForCausalLM config counts them 0..n-1"),
])
def test_refusals_name_what_to_grow(original: dict[str, Any], shapes: dict[str, tuple[int, ...]],
                                    message: str) -> None:
    with pytest.raises(GrowError) as refused:
        grown_config(original, shapes)
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_config_the_history_did_not_start_from_is_refused() -> None:
    history = [{"op": "widen", "node": f"model.layers.{i}.mlp.up_proj", "old_width": 40, "new_width": 96}
               for i in range(2)]
    with pytest.raises(GrowError, match="its intermediate_size is 48, but the model's history grew "
                                        "model.layers.0.mlp.up_proj from 40"):
        grown_config(LLAMA, llama_shapes(ffn=96), history)
