"""The config.json of a grown model: the original's, with every size the growths changed.

:func:`grown_config` reads each size of the model's family (:mod:`onnxgrow.export.hf_families`)
from the weights' shapes and writes it over the original config, leaving every other key
as it was. The rules:

- **Uniform sizes.** A size read from several weights (every layer's FFN) must be the same
  in all of them; otherwise the config cannot say it, and the refusal names two weights
  that differ and the layer to grow alike in every block (``model.layers.N.mlp.up_proj``).
- **Heads.** The head size stays the original's (growing heads keeps it): the family's
  head-size key, else hidden / heads of the original config. Heads = query width / head
  size, key/value heads = key width / head size. A family without a head-size key of its own
  (BERT, GPT-2, ViT) computes it as hidden / heads, so heads × head size must equal the new
  hidden size, or the refusal names the head count to grow to. A family with one
  (LLaMA, Qwen2: ``head_dim``) writes the key when the original has it or when hidden /
  heads would no longer give it.
- **Labels.** A classifier's rows are ``num_labels``: ``id2label`` and ``label2id`` gain
  ``LABEL_k`` for each new row (the names of the old ones are kept).
- **LM heads** must have ``vocab_size`` rows: an output embedding grown alone cannot be
  written (the vocabulary grows the embedding and its head together).
- **Layers** are counted from the blocks' indices, which must run 0..n-1.
- **History.** The model's lineage (:mod:`onnxgrow.lineage`) records the size each growth
  started from; the first growth of each layer must start from the config's value, or
  the config is not the original's and the export is refused. A size that changed with no
  growth recorded is reported (a model grown by something else, or history removed).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from onnxgrow.errors import GrowError
from onnxgrow.export.hf_families import Family, Heads, Read, Recorded, Size, family_of


@dataclass(frozen=True)
class Change:
    """A config key the growths changed; ``recorded``: a growth of the history says so."""

    key: str
    old: Any
    new: Any
    recorded: bool
    #: why a key no growth changed is written (GPT-2's null ``n_inner`` after ``n_embd`` grew)
    why: str = ""

    def describe(self) -> str:
        text = f"{self.key} {self.old} → {self.new}"
        if self.why:
            return f"{text} ({self.why})"
        return text if self.recorded else text + " (the model's history records no growth of it)"


@dataclass
class GrownConfig:
    """The new config.json, what changed, the family and the base model's prefix
    (``model.``, or empty for a base model class)."""

    config: dict[str, Any]
    family: Family
    base: str
    changes: list[Change] = field(default_factory=list)

    def changed(self, key: str) -> Change | None:
        return next((c for c in self.changes if c.key == key), None)


def pattern_regex(pattern: str, base: str) -> re.Pattern[str]:
    """A weight or module pattern (``{base}layers.*.mlp.up_proj``) as a regex; ``*`` captures a layer index."""
    return re.compile(re.escape(pattern.replace("{base}", base)).replace(r"\*", r"(\d+)") + r"\Z")


def shown(pattern: str, base: str) -> str:
    """A pattern as a user types it after ``--node`` (``model.layers.*.mlp.up_proj``)."""
    return pattern.replace("{base}", base)


def per_layer(pattern: str, base: str) -> str:
    """A pattern as a refusal names a layer of every block, a glob ``--node`` takes as it is
    (``model.layers.*.mlp.up_proj``)."""
    return shown(pattern, base)


def architecture(config: Mapping[str, Any]) -> str:
    """The model class the config names (``LlamaForCausalLM``), else its model type."""
    names = config.get("architectures")
    if isinstance(names, list) and names and isinstance(names[0], str):
        return names[0]
    return f"{config.get('model_type')} model"


class _Weights:
    """The weights' shapes by framework name, read through the family's patterns."""

    def __init__(self, shapes: Mapping[str, Sequence[int]], base: str, what: str) -> None:
        self.shapes = shapes
        self.base = base
        self.what = what  # the model class, for messages

    def read(self, read: Read) -> list[tuple[str, int]]:
        """(name, size) of every weight ``read`` matches."""
        regex = pattern_regex(read.pattern, self.base)
        found = []
        for name, shape in self.shapes.items():
            if regex.match(name):
                dim = shape[read.axis] if -len(shape) <= read.axis < len(shape) else None
                if dim is None or dim % read.per:
                    raise GrowError(f"{name} has shape {list(shape)}, which a {self.what} cannot have "
                                    f"(axis {read.axis} must hold {read.per} equal parts)")
                found.append((name, dim // read.per))
        return found

    def uniform(self, key: str, reads: Sequence[Read], advice: str) -> int | None:
        """The one size every weight ``reads`` match gives (None when none matches); a
        GrowError naming two that differ, and ``advice`` (``{node}``: the first read's module)."""
        found = [hit for read in reads for hit in self.read(read)]
        if not found:
            return None
        first_name, first = found[0]
        other = next(((name, size) for name, size in found if size != first), None)
        if other is None:
            return first
        node = next((per_layer(r.pattern, self.base).rsplit(".", 1)[0] for r in reads if self.read(r)), "")
        raise GrowError(f"a {self.what} config has one {key} for every layer, but {first_name} gives {first} "
                        f"and {other[0]} {other[1]}: " + advice.format(node=node, first=first, other=other[1]))


def _base_prefix(family: Family, shapes: Mapping[str, Sequence[int]], what: str) -> str:
    """``base.`` when the weights are under the base model's prefix (``LlamaForCausalLM``), ``""`` when
    they are not (``LlamaModel``); a GrowError when the family's hidden size is read from no weight."""
    hidden = family.size(family.hidden_key)
    for base in (family.base + ".", ""):
        if any(pattern_regex(read.pattern, base).match(name) for read in hidden.reads for name in shapes):
            return base
    wanted = ", ".join(shown(read.pattern, family.base + ".") for read in hidden.reads)
    raise GrowError(f"the model has none of the weights a {what} config.json is read from ({wanted}); "
                    "is the config the config of this model?")


def _effective(config: Mapping[str, Any], size: Size) -> Any:
    """The size the config means: its value, or the family's default for an absent or null key."""
    value = config.get(size.key)
    return size.default(config) if value is None and size.default is not None else value


def _integer(config: Mapping[str, Any], key: str) -> int:
    """A positive integer the config must hold; a GrowError when it does not."""
    value = config.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise GrowError(f"the config's {key} is {value!r}, not a positive integer")
    return value


class _History:
    """The sizes the model's growths started from (the lineage entries' ``old_*`` keys)."""

    def __init__(self, history: Sequence[Mapping[str, Any]], base: str) -> None:
        self.history = history
        self.base = base

    def first(self, recorded: Recorded, old: str | None = None) -> list[tuple[str, int, Mapping[str, Any]]]:
        """(node, size before, entry) of the first growth of each node ``recorded`` names."""
        regexes = [pattern_regex(m, self.base) for m in recorded.modules]
        seen: dict[str, tuple[str, int, Mapping[str, Any]]] = {}
        for entry in self.history:
            if entry.get("op") != recorded.op:
                continue
            names = [entry.get("attention"), entry.get("node"), *(entry.get("together") or [])]
            if not any(isinstance(n, str) and any(r.match(n) for r in regexes) for n in names):
                continue
            value = entry.get(old or recorded.old)
            node = str(entry.get("attention") or entry.get("node"))
            if isinstance(value, int) and node not in seen:
                seen[node] = (node, value, entry)
        return list(seen.values())

    def check(self, recorded: Recorded, key: str, expected: Any, old: str | None = None) -> bool:
        """Whether a growth is recorded; a GrowError when the first one did not start from ``expected``."""
        firsts = self.first(recorded, old)
        for node, value, _ in firsts:
            if expected is not None and value != expected:
                raise GrowError(f"the config is not the one the model was grown from: its {key} is {expected}, but "
                                f"the model's history grew {node} from {value}; give the original's config.json "
                                "with --config")
        return bool(firsts)


class _Builder:
    """Reads every size of one model and writes the new config."""

    def __init__(self, original: Mapping[str, Any], shapes: Mapping[str, Sequence[int]],
                 history: Sequence[Mapping[str, Any]]) -> None:
        self.original = original
        self.family = family_of(original)
        self.what = architecture(original)
        self.base = _base_prefix(self.family, shapes, self.what)
        self.weights = _Weights(shapes, self.base, self.what)
        self.history = _History(history, self.base)
        self.config = copy.deepcopy(dict(original))
        self.changes: list[Change] = []

    def set(self, key: str, old: Any, new: Any, recorded: bool, *, write: bool = True, why: str = "") -> None:
        """Record ``key`` old → new and write it (unless ``write`` is False: the config's
        absent or null key already means ``new``)."""
        if old == new:
            return
        self.changes.append(Change(key, old, new, recorded, why))
        if write:
            self.config[key] = new

    def sizes(self) -> None:
        for size in self.family.sizes:
            new = self.weights.uniform(size.key, size.reads,
                                       "grow {node} to the same width in every layer (--node '{node}' --to W)")
            if new is None:
                continue
            old = _effective(self.original, size)
            recorded = any(self.history.check(r, size.key, old) for r in size.recorded)
            implied = size.default(self.config) if size.default and self.original.get(size.key) is None else None
            if implied is not None and new == implied:  # sizes before it are set: the null still means it
                self.set(size.key, old, new, recorded, write=False)
            elif implied is not None and new == old:  # a size it derives from grew: null would mean another
                self.set(size.key, None, new, recorded, why=f"kept, written out: null would now mean {implied}")
            else:
                self.set(size.key, old, new, recorded)

    def heads(self, heads: Heads) -> None:
        original = self.original
        hidden_key = self.family.hidden_key
        old_heads = _integer(original, heads.heads_key)
        own = original.get(heads.head_dim_key) if heads.head_dim_key else None
        head_size = own if isinstance(own, int) and own > 0 else _integer(original, hidden_key) // old_heads
        modules = next((per_layer(m, self.base) for m in heads.modules
                        if any(self.weights.read(r) for r in heads.query if r.pattern.startswith(m))), "")
        width = self.weights.uniform(heads.heads_key, heads.query,
                                     f"grow the heads of {modules} alike in every layer "
                                     f"(--node '{modules}' --heads H)")
        if width is None:
            return
        for _, _, entry in self.history.first(heads.recorded):
            if entry.get("head_dim") not in (None, head_size):
                raise GrowError(f"the config's head size is {head_size}, but the model's history grew heads of "
                                f"{entry.get('head_dim')}; give the original's config.json with --config")
        if width % head_size:
            raise GrowError(f"the attention is {width} wide, not a multiple of the config's head size {head_size}")
        new_heads = width // head_size
        recorded = self.history.check(heads.recorded, heads.heads_key, old_heads)
        self.set(heads.heads_key, old_heads, new_heads, recorded)
        if heads.kv_key is not None:
            self.kv_heads(heads, head_size, recorded, modules)
        hidden = _integer(self.config, hidden_key)
        if heads.head_dim_key is None:
            if new_heads * head_size != hidden:
                self.refuse_implied_head_size(heads, modules, new_heads, head_size, hidden)
        elif heads.head_dim_key in original or hidden != new_heads * head_size:
            # written where hidden / heads no longer gives it
            self.set(heads.head_dim_key, original.get(heads.head_dim_key), head_size, True)

    def kv_heads(self, heads: Heads, head_size: int, recorded: bool, modules: str) -> None:
        assert heads.kv_key is not None
        kv_width = self.weights.uniform(heads.kv_key, heads.key,
                                        f"grow the heads of {modules} alike in every layer "
                                        f"(--node '{modules}' --heads H --kv-heads K)")
        if kv_width is None:
            return
        if kv_width % head_size:
            raise GrowError(f"the key/value attention is {kv_width} wide, not a multiple of the head size {head_size}")
        old = self.original.get(heads.kv_key) or self.original.get(heads.heads_key)
        if recorded:
            self.history.check(heads.recorded, heads.kv_key, old, "old_kv_heads")
        self.set(heads.kv_key, old, kv_width // head_size, recorded)

    def refuse_implied_head_size(self, heads: Heads, modules: str, new_heads: int, head_size: int,
                                 hidden: int) -> None:
        """Refuse attention the family's config cannot describe: its head size is hidden / heads."""
        hidden_key = self.family.hidden_key
        text = (f"a {self.what} config has no head size of its own ({hidden_key} / {heads.heads_key}), so "
                f"{hidden_key} {hidden} with {new_heads} heads of {head_size} cannot be written: ")
        if new_heads * head_size > hidden:
            stream = next((r.modules[0] for r in self.family.size(hidden_key).recorded), None)
            where = f" (--node '{per_layer(stream, self.base)}' --to {new_heads * head_size})" if stream else ""
            text += (f"grow {hidden_key} to {new_heads * head_size} in the same command{where}, "
                     f"or keep {hidden // head_size} heads")
        elif hidden % head_size == 0:
            count = hidden // head_size
            text += f"grow the heads to {count} as well (--node '{modules}' --heads {count})"
        else:
            text += f"grow {hidden_key} to a multiple of the head size {head_size}"
        raise GrowError(text)

    def labels(self) -> None:
        rows = self.weights.uniform("num_labels", [Read(p, 0) for p in self.family.labels],
                                    "one classifier gives the labels")
        if rows is None:
            return
        id2label = self.original.get("id2label")
        old_names = {int(k): str(v) for k, v in id2label.items()} if isinstance(id2label, dict) else {}
        old = len(old_names) if old_names else int(self.original.get("num_labels", 2))
        if rows == old:
            return
        recorded = self.history.check(Recorded("widen", tuple(p.rsplit(".", 1)[0] for p in self.family.labels),
                                               "old_width"), "num_labels", old)
        names = {k: old_names.get(k, f"LABEL_{k}") for k in range(rows)}
        self.set("num_labels", old, rows, recorded, write="num_labels" in self.original)
        self.config["id2label"] = {str(k): v for k, v in names.items()}
        self.config["label2id"] = {v: k for k, v in names.items()}

    def lm_heads(self) -> None:
        vocab = self.config.get("vocab_size")
        for pattern in self.family.lm_heads:
            for name, rows in self.weights.read(Read(pattern, 0)):
                if rows != vocab:
                    embedding = next((r.pattern for r in self.family.size("vocab_size").reads), "")
                    table, head = shown(embedding, self.base).rsplit(".", 1)[0], name.rsplit(".", 1)[0]
                    fix = (f"grow the untied head with the vocabulary (--node {table} --rows {vocab} --head {head})"
                           if isinstance(vocab, int) and rows < vocab else
                           f"grow the vocabulary (--node {table} --rows {rows}), which grows its head with it")
                    raise GrowError(f"{name} has {rows} rows but a {self.what} has one vocab_size ({vocab}, the rows "
                                    f"of {shown(embedding, self.base)}): {fix}")

    def layers(self) -> None:
        for layers in self.family.layers:
            indices: set[int] = set()
            prefix = ""
            for candidate in layers.prefixes:
                regex = re.compile(re.escape(shown(candidate, self.base)) + r"(\d+)\.")
                found = {int(m.group(1)) for name in self.weights.shapes if (m := regex.match(name))}
                if found:
                    indices, prefix = found, shown(candidate, self.base)
                    break
            if not indices:
                continue
            if indices != set(range(len(indices))):
                raise GrowError(f"the blocks {prefix}N are numbered {', '.join(map(str, sorted(indices)))}; a "
                                f"{self.what} config counts them 0..n-1 ({layers.key})")
            deepened = any(str(entry.get("op", "")).startswith("deepen") for entry in self.history.history)
            self.set(layers.key, self.original.get(layers.key), len(indices), deepened)


def grown_config(original: Mapping[str, Any], shapes: Mapping[str, Sequence[int]],
                 history: Sequence[Mapping[str, Any]] = ()) -> GrownConfig:
    """The config.json of a model whose weights (framework name → shape, the layout of
    :mod:`onnxgrow.parameter_names`) are ``shapes``, grown from the model ``original``
    describes with the growths of ``history`` (module docstring); a GrowError, naming
    what to grow as well, when the family's config cannot describe the weights."""
    builder = _Builder(original, shapes, history)
    builder.sizes()
    if builder.family.heads is not None:
        builder.heads(builder.family.heads)
    builder.labels()
    builder.lm_heads()
    builder.layers()
    return GrownConfig(builder.config, builder.family, builder.base, builder.changes)
