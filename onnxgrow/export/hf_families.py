"""The ``transformers`` families ``onnxgrow export --to hf`` writes a config.json for: where
each size of the config is read from.

A :class:`Family` (one or more ``model_type`` values) says, for every size its config
holds that a growth can change, which weights give it (:class:`Read`: a name pattern, an
axis of the weight in the framework layout of :mod:`onnxgrow.parameter_names`, and a
divisor), and which growths of the model's history record it (:class:`Recorded`).
Patterns are framework names in which ``{base}`` stands for the base model's prefix
(``model.`` in ``LlamaForCausalLM``, nothing in ``LlamaModel``) and ``*`` for a layer
index. A size is read from every weight its patterns match, and all of them must agree:
a config has one ``intermediate_size`` for every layer. A pattern no weight matches is
skipped, so one family lists the layouts of several ``transformers`` releases (ViT's
``vit.encoder.layer.*.attention.attention.query`` up to 4.x, ``vit.layers.*.attention.q_proj``
from 5.0).

Attention (:class:`Heads`): the query weight's width is heads × head size, the key's
key/value heads × head size. The head size is the config's own key where the family has
one (``head_dim``, T5's ``d_kv``); elsewhere it is hidden size / heads, which ties the
head count to the hidden size (BERT, GPT-2, ViT).

Layers (:class:`Layers`): the number of blocks is the count of layer indices under the
blocks' prefix, which must run 0..n-1; a growth that inserts a block names its weights
with the next indices and the count follows.

Ties (:class:`Tie`): the weight ``save_pretrained`` leaves out of a tied model (the LM
head) and the one it writes (the input embedding).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from onnxgrow.errors import GrowError


@dataclass(frozen=True)
class Read:
    """A size is ``weight.shape[axis] // per`` of every weight matching ``pattern``."""

    pattern: str
    axis: int = 0
    per: int = 1


@dataclass(frozen=True)
class Recorded:
    """Growths of the history that change a size: entries with ``op`` whose node (or a node
    grown together with it, or its attention module) matches one of ``modules``, and
    ``old``, the entry's key holding the size before the growth."""

    op: str
    modules: tuple[str, ...]
    old: str


@dataclass(frozen=True)
class Size:
    """One size of the config: its ``key``, the weights it is read from (the first is the
    layer a refusal says to grow), the growths that record it, and ``default``, the value an
    absent or null key stands for (GPT-2's ``n_inner``)."""

    key: str
    reads: tuple[Read, ...]
    recorded: tuple[Recorded, ...] = ()
    default: Callable[[Mapping[str, Any]], int] | None = None


@dataclass(frozen=True)
class Heads:
    """Attention heads: ``heads_key`` (and ``kv_key``) counted from the query (and key)
    widths; ``head_dim_key`` is the family's own head-size key, or None when the head size
    is hidden size / heads. The attention module (``--node`` with ``--heads``, and the
    history's head growths) is the module above the query's."""

    heads_key: str
    query: tuple[Read, ...]
    kv_key: str | None = None
    key: tuple[Read, ...] = ()
    head_dim_key: str | None = None

    @property
    def modules(self) -> tuple[str, ...]:
        """The attention modules' patterns (``model.layers.*.self_attn``)."""
        return tuple(read.pattern.rsplit(".", 2)[0] for read in self.query)

    @property
    def recorded(self) -> Recorded:
        """The history's head growths: ``widen-heads`` entries of these modules."""
        return Recorded("widen-heads", self.modules, "old_heads")


@dataclass(frozen=True)
class Layers:
    """The config's layer count ``key``: the blocks are the weights under ``prefix`` + index."""

    key: str
    prefixes: tuple[str, ...]


@dataclass(frozen=True)
class Tie:
    """Weights one tensor holds in a tied model: ``save_pretrained`` writes ``source`` and
    leaves ``copy`` out. Tied when the config's ``tie_word_embeddings`` says so, or
    ``always``."""

    copy: str
    source: str
    always: bool = False


@dataclass(frozen=True)
class Family:
    """How the config of one family of models reads from its weights (module docstring).

    ``hidden_key`` names the size the implicit head size divides; ``labels`` are the
    classifier weights whose rows are ``num_labels``; ``lm_heads`` the output embeddings whose
    rows must be ``vocab_size``; ``tie_default`` is ``tie_word_embeddings`` when the config
    does not say."""

    model_types: tuple[str, ...]
    base: str
    hidden_key: str
    sizes: tuple[Size, ...]
    heads: Heads | None
    layers: tuple[Layers, ...]
    ties: tuple[Tie, ...] = ()
    tie_default: bool = True
    labels: tuple[str, ...] = ()
    lm_heads: tuple[str, ...] = ()

    def size(self, key: str) -> Size:
        return next(s for s in self.sizes if s.key == key)


def _llama_like(*model_types: str) -> Family:
    """LLaMA and the families that copy its layout (Qwen2: biases on q, k, v only)."""
    embed, mlp = "{base}embed_tokens", "{base}layers.*.mlp"
    return Family(
        model_types, base="model", hidden_key="hidden_size",
        sizes=(
            Size("hidden_size", (Read(f"{embed}.weight", 1),),
                 (Recorded("widen", (embed, "{base}layers.*.self_attn.o_proj", f"{mlp}.down_proj"), "old_width"),)),
            Size("vocab_size", (Read(f"{embed}.weight", 0),), (Recorded("vocabulary", (embed,), "old_rows"),)),
            Size("intermediate_size",
                 (Read(f"{mlp}.up_proj.weight", 0), Read(f"{mlp}.gate_proj.weight", 0),
                  Read(f"{mlp}.down_proj.weight", 1)),
                 (Recorded("widen", (f"{mlp}.up_proj", f"{mlp}.gate_proj"), "old_width"),)),
        ),
        heads=Heads("num_attention_heads", (Read("{base}layers.*.self_attn.q_proj.weight", 0),),
                    kv_key="num_key_value_heads",
                    key=(Read("{base}layers.*.self_attn.k_proj.weight", 0),
                         Read("{base}layers.*.self_attn.v_proj.weight", 0)),
                    head_dim_key="head_dim"),
        layers=(Layers("num_hidden_layers", ("{base}layers.",)),),
        ties=(Tie("lm_head.weight", f"{embed}.weight"),), tie_default=False,
        labels=("score.weight",), lm_heads=("lm_head.weight",),
    )


def _gpt2_inner(config: Mapping[str, Any]) -> int:
    """GPT-2's ``n_inner: null`` is 4 × ``n_embd``."""
    return 4 * int(config["n_embd"])


_GPT2_BLOCK = "{base}h.*"
GPT2 = Family(
    ("gpt2",), base="transformer", hidden_key="n_embd",
    sizes=(
        Size("n_embd", (Read("{base}wte.weight", 1), Read("{base}wpe.weight", 1)),
             (Recorded("widen", ("{base}wte", "{base}wpe", f"{_GPT2_BLOCK}.attn.c_proj", f"{_GPT2_BLOCK}.mlp.c_proj"),
                       "old_width"),)),
        Size("vocab_size", (Read("{base}wte.weight", 0),), (Recorded("vocabulary", ("{base}wte",), "old_rows"),)),
        Size("n_positions", (Read("{base}wpe.weight", 0),)),
        # GPT-2's Conv1D stores its weight [in, out]
        Size("n_inner", (Read(f"{_GPT2_BLOCK}.mlp.c_fc.weight", 1), Read(f"{_GPT2_BLOCK}.mlp.c_proj.weight", 0)),
             (Recorded("widen", (f"{_GPT2_BLOCK}.mlp.c_fc",), "old_width"),),
             default=_gpt2_inner),
    ),
    heads=Heads("n_head", (Read(f"{_GPT2_BLOCK}.attn.c_attn.weight", 1, per=3),)),
    layers=(Layers("n_layer", ("{base}h.",)),),
    ties=(Tie("lm_head.weight", "{base}wte.weight"),), tie_default=True,
    labels=("score.weight",), lm_heads=("lm_head.weight",),
)

_BERT_LAYER = "{base}encoder.layer.*"
BERT = Family(
    ("bert",), base="bert", hidden_key="hidden_size",
    sizes=(
        Size("hidden_size", (Read("{base}embeddings.word_embeddings.weight", 1),),
             (Recorded("widen", ("{base}embeddings.word_embeddings", "{base}embeddings.position_embeddings",
                                 "{base}embeddings.token_type_embeddings", f"{_BERT_LAYER}.attention.output.dense",
                                 f"{_BERT_LAYER}.output.dense"), "old_width"),)),
        Size("vocab_size", (Read("{base}embeddings.word_embeddings.weight", 0),),
             (Recorded("vocabulary", ("{base}embeddings.word_embeddings",), "old_rows"),)),
        Size("max_position_embeddings", (Read("{base}embeddings.position_embeddings.weight", 0),)),
        Size("type_vocab_size", (Read("{base}embeddings.token_type_embeddings.weight", 0),)),
        Size("intermediate_size",
             (Read(f"{_BERT_LAYER}.intermediate.dense.weight", 0), Read(f"{_BERT_LAYER}.output.dense.weight", 1)),
             (Recorded("widen", (f"{_BERT_LAYER}.intermediate.dense",), "old_width"),)),
    ),
    heads=Heads("num_attention_heads", (Read(f"{_BERT_LAYER}.attention.self.query.weight", 0),)),
    layers=(Layers("num_hidden_layers", ("{base}encoder.layer.",)),),
    ties=(Tie("cls.predictions.decoder.weight", "{base}embeddings.word_embeddings.weight"),), tie_default=True,
    labels=("classifier.weight",), lm_heads=("cls.predictions.decoder.weight",),
)

# ViT as transformers 5 names it (vit.layers.*.attention.q_proj, mlp.fc1) and as 4.x did
# (vit.encoder.layer.*.attention.attention.query, intermediate.dense); 5.x loads both.
_VIT_LAYERS = ("{base}layers.*", "{base}encoder.layer.*")
VIT = Family(
    ("vit",), base="vit", hidden_key="hidden_size",
    sizes=(
        Size("hidden_size", (Read("{base}embeddings.cls_token", 2),
                             Read("{base}embeddings.patch_embeddings.projection.weight", 0)),
             (Recorded("widen", ("{base}embeddings.patch_embeddings.projection",
                                 *(f"{layer}.{part}" for layer in _VIT_LAYERS
                                   for part in ("attention.o_proj", "attention.output.dense", "mlp.fc2",
                                                "output.dense"))), "old_width"),)),
        Size("intermediate_size",
             (Read("{base}layers.*.mlp.fc1.weight", 0), Read("{base}layers.*.mlp.fc2.weight", 1),
              Read("{base}encoder.layer.*.intermediate.dense.weight", 0),
              Read("{base}encoder.layer.*.output.dense.weight", 1)),
             (Recorded("widen", ("{base}layers.*.mlp.fc1", "{base}encoder.layer.*.intermediate.dense"), "old_width"),)),
    ),
    heads=Heads("num_attention_heads",
                (Read("{base}layers.*.attention.q_proj.weight", 0),
                 Read("{base}encoder.layer.*.attention.attention.query.weight", 0))),
    layers=(Layers("num_hidden_layers", ("{base}layers.", "{base}encoder.layer.")),),
    labels=("classifier.weight",),
)

# T5: one embedding (``shared``) that the encoder and the decoder read, saved once; the FFN
# is one projection (``wi``) or two gated ones (v1.1: ``wi_0``, ``wi_1``); the head size is the
# config's own ``d_kv``. Exporters name the stacks' copies of ``shared`` ``encoder.embed_tokens``
# (transformers) or ``encoder.shared`` (optimum's graphs).
_T5_FFN = ("encoder.block.*.layer.1.DenseReluDense", "decoder.block.*.layer.2.DenseReluDense")
_T5_ATTENTION = ("encoder.block.*.layer.0.SelfAttention", "decoder.block.*.layer.0.SelfAttention",
                 "decoder.block.*.layer.1.EncDecAttention")
_T5_EMBEDDINGS = ("shared", "encoder.embed_tokens", "decoder.embed_tokens", "encoder.shared", "decoder.shared")
T5 = Family(
    ("t5",), base="", hidden_key="d_model",
    sizes=(
        Size("d_model", (Read("shared.weight", 1),),
             (Recorded("widen", (*_T5_EMBEDDINGS, *(f"{a}.o" for a in _T5_ATTENTION),
                                 *(f"{f}.wo" for f in _T5_FFN)), "old_width"),)),
        Size("vocab_size", (Read("shared.weight", 0),), (Recorded("vocabulary", _T5_EMBEDDINGS, "old_rows"),)),
        Size("d_ff", tuple(Read(f"{f}.{w}.weight", 0) for f in _T5_FFN for w in ("wi", "wi_0", "wi_1"))
             + tuple(Read(f"{f}.wo.weight", 1) for f in _T5_FFN),
             (Recorded("widen", tuple(f"{f}.{w}" for f in _T5_FFN for w in ("wi", "wi_0", "wi_1")), "old_width"),)),
    ),
    heads=Heads("num_heads", tuple(Read(f"{a}.q.weight", 0) for a in _T5_ATTENTION), head_dim_key="d_kv"),
    layers=(Layers("num_layers", ("encoder.block.",)), Layers("num_decoder_layers", ("decoder.block.",))),
    ties=tuple(Tie(f"{e}.weight", "shared.weight", always=True) for e in _T5_EMBEDDINGS[1:]),
    lm_heads=("lm_head.weight",),
)

LLAMA = _llama_like("llama", "qwen2")

#: Every family ``--to hf`` knows.
FAMILIES: tuple[Family, ...] = (LLAMA, GPT2, BERT, VIT, T5)


def family_of(config: Mapping[str, Any]) -> Family:
    """The family of a config.json, by its ``model_type``; a GrowError naming the known ones."""
    model_type = config.get("model_type")
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    known = ", ".join(t for f in FAMILIES for t in f.model_types)
    if not isinstance(model_type, str) or not model_type:
        raise GrowError(f"the config has no \"model_type\" saying the model's family (one of {known}); "
                        "give the original model's config.json, as save_pretrained wrote it")
    raise GrowError(f"--to hf writes the config.json of the model types {known}; "
                    f"this config's model_type is {model_type!r}")
