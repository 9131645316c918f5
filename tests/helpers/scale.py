"""Scale helpers: large synthetic models, and a command's wall time and peak memory.

Used by ``scripts/bench.py`` and the scale tests. The models are built directly with
onnx-ir and written with external data. Weights are
:class:`onnx_ir.LazyTensor` objects that draw their (seeded, scaled normal) values only
when ``ir.save`` writes them, one tensor at a time, so building a 3 GB model needs
memory for its largest tensor, not for the model. Node and weight names follow the
legacy PyTorch exporter (``/fc1/Gemm``, ``fc1.weight``), so the module paths
(``fc1``, ``blocks.3.ffn.up``) work after ``--node``.

- :func:`vgg_like`: five 3×3 conv blocks (64-128-256-512-512, ReLU, 2×2 max pools)
  on a 3×112×112 image, then a VGG classifier ``25088 → 4096 → 4096 → 1000``
  (about 510 MB, 80 % of it in ``fc1``).
- :func:`transformer`: token embedding, ``layers`` pre-norm blocks (multi-head
  attention, GELU feed-forward, residual adds), final LayerNorm and LM head. With
  the defaults (width 1024, FFN 4096, vocabulary 32000) every block holds 50.3 MB
  and the embedding and head 262 MB: 54 blocks are about 3 GB, over the 2 GiB
  protobuf limit from 38 blocks on.
- :func:`llama`: a LLaMA/Qwen2-shaped decoder as the legacy exporter writes it: RMSNorms
  as arithmetic on framework-named weights, grouped-query attention with rotary position
  embeddings, a SiLU-gated FFN, and every linear weight a generated ``onnx::MatMul_N``
  initializer in ONNX layout ``[in, out]`` (so the framework layout ``[out, in]`` is its
  transpose), optional q/k/v biases and tied embeddings. :data:`LLAMA_SHAPES` holds the
  shapes the benchmark and the tests use (``qwen2-0.5b``: about 2 GB in float32).
- :func:`keras_convnet`: 3×3 convolutions and Dense layers named as tf2onnx names a
  Keras model's (``model/conv_1/Conv2D``, ``model/conv_1/kernel``), for the Keras exports.

:func:`measure` runs a command in a small launcher interpreter and reports the
command's own wall time and peak RSS (a child forked from a large process, such as
pytest or the benchmark, would inherit that process's RSS high-water mark) and, when
asked, the sampled peaks of its anonymous and file-backed resident memory.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir

OPSET = 20
FLOAT = ir.DataType.FLOAT


@dataclass(frozen=True)
class BuiltModel:
    """A model written to disk and what the benchmark widens in it."""

    path: Path
    weight_bytes: int
    small_layer: str
    small_width: int
    large_layer: str | None = None
    large_width: int | None = None


class _Builder:
    """Nodes and lazily generated initializers of one graph."""

    def __init__(self, seed: int, dtype: ir.DataType = FLOAT) -> None:
        self.seed = seed
        self.dtype = dtype
        self.nodes: list[ir.Node] = []
        self.initializers: list[ir.Value] = []

    def weight(self, name: str, shape: Sequence[int], std: float, mean: float = 0.0) -> ir.Value:
        """An initializer of the builder's float type drawn from N(mean, std²) when it is written."""
        shape = tuple(int(d) for d in shape)
        seed = zlib.crc32(name.encode()) ^ self.seed

        def make() -> ir.Tensor:
            rng = np.random.default_rng(seed)
            array = rng.standard_normal(shape, dtype=np.float32)
            array *= np.float32(std)
            array += np.float32(mean)
            return ir.Tensor(array.astype(self.dtype.numpy(), copy=False), name=name)

        tensor = ir.LazyTensor(make, dtype=self.dtype, shape=ir.Shape(shape), name=name)
        value = ir.val(name, self.dtype, shape, const_value=tensor)
        self.initializers.append(value)
        return value

    def constant(self, name: str, array: np.ndarray) -> ir.Value:
        """A small initializer given by value (shapes, scales)."""
        value = ir.val(name, ir.DataType.from_numpy(array.dtype), array.shape,
                       const_value=ir.Tensor(array, name=name))
        self.initializers.append(value)
        return value

    def op(self, op_type: str, inputs: Sequence[ir.Value], name: str, **attributes: object) -> ir.Value:
        """Append ``op_type`` named ``name`` (legacy style ``/scope/Op``); return its output."""
        node = ir.node(op_type, list(inputs), attributes or None, name=name)
        node.outputs[0].name = name[1:].replace("/", "_") + "_output_0"
        self.nodes.append(node)
        return node.outputs[0]

    def model(self, inputs: list[ir.Value], outputs: list[ir.Value], graph_name: str) -> ir.Model:
        graph = ir.Graph(inputs, outputs, nodes=self.nodes, initializers=self.initializers,
                         opset_imports={"": OPSET}, name=graph_name)
        return ir.Model(graph, ir_version=10, producer_name="onnxgrow-synthetic")


def _save(model: ir.Model, path: Path) -> int:
    """Write ``model`` with every weight in ``<name>.data``; return the weight bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ir.save(model, path, external_data=path.name + ".data", size_threshold_bytes=1024)
    return sum(v.const_value.nbytes for v in model.graph.initializers.values()
               if v.const_value is not None)


def vgg_like(
    path: str | os.PathLike[str],
    *,
    channels: Sequence[int] = (64, 128, 256, 512, 512),
    hidden: int = 4096,
    classes: int = 1000,
    image: int = 112,
    seed: int = 0,
) -> BuiltModel:
    """The VGG-like CNN (see the module docstring), written to ``path``.

    Every conv block but the last halves the image, so ``image`` must be a multiple of
    ``2 ** (len(channels) - 1)``.
    """
    path = Path(path)
    b = _Builder(seed)
    image_in = ir.val("image", FLOAT, [1, 3, image, image])
    x = image_in
    sizes = [3, *channels]
    for i in range(1, len(sizes)):
        c_in, c_out = sizes[i - 1], sizes[i]
        w = b.weight(f"conv{i}.weight", [c_out, c_in, 3, 3], std=float(np.sqrt(2.0 / (c_in * 9))))
        bias = b.weight(f"conv{i}.bias", [c_out], std=0.01)
        x = b.op("Conv", [x, w, bias], f"/conv{i}/Conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        x = b.op("Relu", [x], f"/relu{i}/Relu")
        if i < len(sizes) - 1:
            x = b.op("MaxPool", [x], f"/pool{i}/MaxPool", kernel_shape=[2, 2], strides=[2, 2])
    x = b.op("Flatten", [x], "/flatten/Flatten", axis=1)
    side = image // 2 ** (len(channels) - 1)
    widths = [channels[-1] * side * side, hidden, hidden, classes]
    for i in range(1, len(widths)):
        k, n = widths[i - 1], widths[i]
        w = b.weight(f"fc{i}.weight", [n, k], std=float(np.sqrt(2.0 / k)))
        bias = b.weight(f"fc{i}.bias", [n], std=0.01)
        x = b.op("Gemm", [x, w, bias], f"/fc{i}/Gemm", transB=1)
        if i < len(widths) - 1:
            x = b.op("Relu", [x], f"/fc_relu{i}/Relu")
    x.name = "logits"
    x.dtype, x.shape = FLOAT, ir.Shape([1, classes])
    nbytes = _save(b.model([image_in], [x], "vgg_like"), path)
    return BuiltModel(path, nbytes, small_layer="conv1", small_width=channels[0] + channels[0] // 2,
                      large_layer="fc1", large_width=hidden + hidden // 2)


def transformer(
    path: str | os.PathLike[str],
    *,
    layers: int = 54,
    width: int = 1024,
    ffn: int = 4096,
    heads: int = 16,
    vocab: int = 32000,
    sequence: int = 16,
    seed: int = 0,
) -> BuiltModel:
    """The transformer stack (see the module docstring), written to ``path``."""
    path = Path(path)
    b = _Builder(seed)
    head_dim = width // heads
    ids = ir.val("input_ids", ir.DataType.INT64, [1, sequence])
    split_heads = b.constant("split_heads_shape", np.array([0, 0, heads, head_dim], np.int64))
    merge_heads = b.constant("merge_heads_shape", np.array([0, 0, width], np.int64))
    scale = b.constant("attention_scale", np.array(1.0 / np.sqrt(head_dim), np.float32))
    std = float(np.sqrt(1.0 / width))

    def norm(x: ir.Value, scope: str) -> ir.Value:
        gamma = b.weight(f"{scope[1:].replace('/', '.')}.weight", [width], std=0.02, mean=1.0)
        beta = b.weight(f"{scope[1:].replace('/', '.')}.bias", [width], std=0.02)
        return b.op("LayerNormalization", [x, gamma, beta], f"{scope}/LayerNormalization", axis=-1)

    def linear(x: ir.Value, scope: str, k: int, n: int) -> ir.Value:
        module = scope[1:].replace("/", ".")
        w = b.weight(f"{module}.weight", [k, n], std=float(np.sqrt(1.0 / k)))
        bias = b.weight(f"{module}.bias", [n], std=0.02)
        y = b.op("MatMul", [x, w], f"{scope}/MatMul")
        return b.op("Add", [y, bias], f"{scope}/Add")

    embedding = b.weight("embed.weight", [vocab, width], std=1.0)
    x = b.op("Gather", [embedding, ids], "/embed/Gather", axis=0)
    for i in range(layers):
        block = f"/blocks.{i}"
        h = norm(x, f"{block}/ln1")
        q = linear(h, f"{block}/attn/q", width, width)
        k = linear(h, f"{block}/attn/k", width, width)
        v = linear(h, f"{block}/attn/v", width, width)
        q = b.op("Transpose", [b.op("Reshape", [q, split_heads], f"{block}/attn/Reshape")],
                 f"{block}/attn/Transpose", perm=[0, 2, 1, 3])
        k = b.op("Transpose", [b.op("Reshape", [k, split_heads], f"{block}/attn/Reshape_1")],
                 f"{block}/attn/Transpose_1", perm=[0, 2, 3, 1])
        v = b.op("Transpose", [b.op("Reshape", [v, split_heads], f"{block}/attn/Reshape_2")],
                 f"{block}/attn/Transpose_2", perm=[0, 2, 1, 3])
        scores = b.op("Mul", [b.op("MatMul", [q, k], f"{block}/attn/MatMul"), scale], f"{block}/attn/Mul")
        probs = b.op("Softmax", [scores], f"{block}/attn/Softmax", axis=-1)
        context = b.op("MatMul", [probs, v], f"{block}/attn/MatMul_1")
        context = b.op("Transpose", [context], f"{block}/attn/Transpose_3", perm=[0, 2, 1, 3])
        context = b.op("Reshape", [context, merge_heads], f"{block}/attn/Reshape_3")
        x = b.op("Add", [x, linear(context, f"{block}/attn/o", width, width)], f"{block}/Add")
        h = norm(x, f"{block}/ln2")
        up = b.op("Gelu", [linear(h, f"{block}/ffn/up", width, ffn)], f"{block}/ffn/Gelu")
        x = b.op("Add", [x, linear(up, f"{block}/ffn/down", ffn, width)], f"{block}/Add_1")
    x = norm(x, "/ln_f")
    head = b.weight("lm_head.weight", [width, vocab], std=std)
    logits = b.op("MatMul", [x, head], "/lm_head/MatMul")
    logits.name = "logits"
    logits.dtype, logits.shape = FLOAT, ir.Shape([1, sequence, vocab])
    nbytes = _save(b.model([ids], [logits], "transformer"), path)
    return BuiltModel(path, nbytes, small_layer=f"blocks.{layers // 2}.ffn.up", small_width=ffn + ffn // 8)


@dataclass(frozen=True)
class Measured:
    """A finished command: wall time, peak resident memory, exit status, end of stderr, and
    (when sampled) the peaks of its anonymous and file-backed resident memory."""

    wall_s: float
    peak_rss: int
    returncode: int
    stderr: str
    peak_anon: int = 0
    peak_file: int = 0


#: Run ``argv[3:]``; write wall, ``ru_maxrss``, exit code and, with a sampling period
#: (``argv[2]``, seconds; 0: none), the peaks of ``RssAnon``/``RssFile`` in /proc/PID/status.
_LAUNCHER = """
import os, sys, time
period = float(sys.argv[2])
start = time.perf_counter()
pid = os.posix_spawnp(sys.argv[3], sys.argv[3:], os.environ)
peaks = {"RssAnon": 0, "RssFile": 0}
while True:
    done, status, usage = os.wait4(pid, os.WNOHANG if period else 0)
    if done:
        break
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key = line.split(":")[0]
                if key in peaks:
                    peaks[key] = max(peaks[key], int(line.split()[1]) * 1024)
    except OSError:
        pass
    time.sleep(period)
wall = time.perf_counter() - start
with open(sys.argv[1], "w") as f:
    f.write(f"{wall} {usage.ru_maxrss * 1024} {os.waitstatus_to_exitcode(status)} "
            f"{peaks['RssAnon']} {peaks['RssFile']}")
"""


LLAMA_SHAPES: dict[str, dict[str, object]] = {
    # 12 blocks of hidden 768 (the 612 MB benchmark model; largest tensor 98 MB): 612 MB
    "llama-0.6gb": dict(layers=12, hidden=768, ffn=3072, heads=12, kv_heads=4, vocab=32000),
    # 2 blocks of 177 MB and 2 x 65.5 MB of embedding and head (largest tensor 45 MB): 486 MB
    "test": dict(layers=2, hidden=2048, ffn=5504, heads=16, kv_heads=4, vocab=8000),
    # TinyLlama-1.1B's shape with 4 of its 22 blocks (largest tensor 262 MB): 1.23 GB
    "tinyllama-4": dict(layers=4, hidden=2048, ffn=5632, heads=32, kv_heads=4, vocab=32000),
    # Qwen2-0.5B's shape (q/k/v biases, tied embeddings): about 2 GB
    "qwen2-0.5b": dict(layers=24, hidden=896, ffn=4864, heads=14, kv_heads=2, vocab=151936, qkv_bias=True,
                       tied=True),
    # LLaMA-7B's shape with 13 of its 32 blocks (largest tensor 524 MB): about 10.3 GB
    "llama-10gb": dict(layers=13, hidden=4096, ffn=11008, heads=32, kv_heads=8, vocab=32000),
}


def hf_config(shape: Mapping[str, object], sequence: int = 16) -> dict[str, object]:
    """The Hugging Face ``config.json`` of a :func:`llama` model of ``shape`` (a
    :data:`LLAMA_SHAPES` entry): ``qwen2`` with q/k/v biases, else ``llama``; RMSNorm epsilon
    1e-6 and rotary base 10000, as :func:`llama` computes them. ``export --to hf`` writes
    the grown sizes into it."""
    qwen = bool(shape.get("qkv_bias"))
    config: dict[str, object] = {
        "architectures": ["Qwen2ForCausalLM" if qwen else "LlamaForCausalLM"],
        "model_type": "qwen2" if qwen else "llama",
        "hidden_size": shape["hidden"], "intermediate_size": shape["ffn"],
        "num_attention_heads": shape["heads"], "num_key_value_heads": shape["kv_heads"],
        "num_hidden_layers": shape["layers"], "vocab_size": shape["vocab"],
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "hidden_act": "silu",
        "tie_word_embeddings": bool(shape.get("tied")), "max_position_embeddings": max(2048, sequence),
        "torch_dtype": "float32",
    }
    if not qwen:
        config.update(attention_bias=False, mlp_bias=False)
    return config


def llama(
    path: str | os.PathLike[str],
    *,
    layers: int = 2,
    hidden: int = 256,
    ffn: int = 688,
    heads: int = 8,
    kv_heads: int = 2,
    vocab: int = 1000,
    sequence: int = 16,
    qkv_bias: bool = False,
    tied: bool = False,
    dtype: ir.DataType = FLOAT,
    seed: int = 0,
) -> BuiltModel:
    """The LLaMA-shaped decoder (see the module docstring), written to ``path``. Its
    constants (rotary tables, mask, shapes) have generated names (``onnx::rope_cos``), so
    that only the weights have framework names."""
    path = Path(path)
    b = _Builder(seed, dtype)
    head_dim = hidden // heads
    numpy_dtype = dtype.numpy()
    ids = ir.val("input_ids", ir.DataType.INT64, [1, sequence])
    counter = iter(range(100, 10**9))
    rope = 10000.0 ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angles = np.arange(sequence, dtype=np.float64)[:, None] * rope[None, :]
    angles = np.concatenate([angles, angles], axis=-1)
    cos = b.constant("onnx::rope_cos", np.cos(angles).astype(numpy_dtype))
    sin = b.constant("onnx::rope_sin", np.sin(angles).astype(numpy_dtype))
    mask = b.constant("onnx::causal_mask", np.triu(np.full((sequence, sequence), -1e4), 1).astype(numpy_dtype))
    scale = b.constant("onnx::attention_scale", np.array(1.0 / np.sqrt(head_dim), numpy_dtype))
    two = b.constant("onnx::two", np.array(2.0, numpy_dtype))
    eps = b.constant("onnx::rms_eps", np.array(1e-6, numpy_dtype))
    last_axis = b.constant("onnx::last_axis", np.array([-1], np.int64))
    half = b.constant("onnx::half_split", np.array([head_dim // 2, head_dim // 2], np.int64))
    group = b.constant("onnx::kv_group", np.array([1, kv_heads, heads // kv_heads, sequence, head_dim], np.int64))
    q_shape = b.constant("onnx::q_shape", np.array([0, 0, heads, head_dim], np.int64))
    kv_shape = b.constant("onnx::kv_shape", np.array([0, 0, kv_heads, head_dim], np.int64))
    grouped = b.constant("onnx::grouped_shape", np.array([1, heads, sequence, head_dim], np.int64))
    merged = b.constant("onnx::merged_shape", np.array([0, 0, hidden], np.int64))
    unsqueeze_2 = b.constant("onnx::unsqueeze_axis_2", np.array([2], np.int64))

    def norm(x: ir.Value, scope: str) -> ir.Value:
        weight = b.weight(f"{scope[1:].replace('/', '.')}.weight", [hidden], std=0.02, mean=1.0)
        square = b.op("Pow", [x, two], f"{scope}/Pow")
        mean = b.op("ReduceMean", [square, last_axis], f"{scope}/ReduceMean", keepdims=1)
        root = b.op("Sqrt", [b.op("Add", [mean, eps], f"{scope}/Add")], f"{scope}/Sqrt")
        scaled = b.op("Mul", [x, b.op("Reciprocal", [root], f"{scope}/Reciprocal")], f"{scope}/Mul")
        return b.op("Mul", [weight, scaled], f"{scope}/Mul_1")

    def linear(x: ir.Value, scope: str, k: int, n: int, bias: bool = False) -> ir.Value:
        w = b.weight(f"onnx::MatMul_{next(counter)}", [k, n], std=float(np.sqrt(1.0 / k)))
        y = b.op("MatMul", [x, w], f"{scope}/MatMul")
        if bias:
            y = b.op("Add", [b.weight(f"{scope[1:].replace('/', '.')}.bias", [n], std=0.02), y], f"{scope}/Add")
        return y

    def rotary(x: ir.Value, scope: str) -> ir.Value:
        split = ir.node("Split", [x, half], {"axis": -1}, num_outputs=2, name=f"{scope}/Split")
        split.outputs[0].name, split.outputs[1].name = f"{scope}_half_0", f"{scope}_half_1"
        b.nodes.append(split)
        rotated = b.op("Concat", [b.op("Neg", [split.outputs[1]], f"{scope}/Neg"), split.outputs[0]],
                       f"{scope}/Concat", axis=-1)
        return b.op("Add", [b.op("Mul", [x, cos], f"{scope}/Mul"), b.op("Mul", [rotated, sin], f"{scope}/Mul_1")],
                    f"{scope}/Add")

    def heads_of(x: ir.Value, shape: ir.Value, scope: str) -> ir.Value:
        return b.op("Transpose", [b.op("Reshape", [x, shape], f"{scope}/Reshape")], f"{scope}/Transpose",
                    perm=[0, 2, 1, 3])

    def repeat_kv(x: ir.Value, scope: str) -> ir.Value:
        expanded = b.op("Expand", [b.op("Unsqueeze", [x, unsqueeze_2], f"{scope}/Unsqueeze"), group],
                        f"{scope}/Expand")
        return b.op("Reshape", [expanded, grouped], f"{scope}/Reshape_1")

    embedding = b.weight("model.embed_tokens.weight", [vocab, hidden], std=1.0)
    x = b.op("Gather", [embedding, ids], "/model/embed_tokens/Gather", axis=0)
    kv_width = kv_heads * head_dim
    for i in range(layers):
        block = f"/model/layers.{i}"
        attn = f"{block}/self_attn"
        h = norm(x, f"{block}/input_layernorm")
        q = rotary(heads_of(linear(h, f"{attn}/q_proj", hidden, hidden, qkv_bias), q_shape, f"{attn}/q"),
                   f"{attn}/q_rotary")
        k = rotary(heads_of(linear(h, f"{attn}/k_proj", hidden, kv_width, qkv_bias), kv_shape, f"{attn}/k"),
                   f"{attn}/k_rotary")
        v = heads_of(linear(h, f"{attn}/v_proj", hidden, kv_width, qkv_bias), kv_shape, f"{attn}/v")
        k_t = b.op("Transpose", [repeat_kv(k, f"{attn}/k_repeat")], f"{attn}/Transpose", perm=[0, 1, 3, 2])
        scores = b.op("Mul", [b.op("MatMul", [q, k_t], f"{attn}/MatMul"), scale], f"{attn}/Mul")
        probs = b.op("Softmax", [b.op("Add", [scores, mask], f"{attn}/Add")], f"{attn}/Softmax", axis=-1)
        context = b.op("MatMul", [probs, repeat_kv(v, f"{attn}/v_repeat")], f"{attn}/MatMul_1")
        context = b.op("Reshape", [b.op("Transpose", [context], f"{attn}/Transpose_1", perm=[0, 2, 1, 3]), merged],
                       f"{attn}/Reshape")
        x = b.op("Add", [x, linear(context, f"{attn}/o_proj", hidden, hidden)], f"{block}/Add")
        h = norm(x, f"{block}/post_attention_layernorm")
        mlp = f"{block}/mlp"
        gate = linear(h, f"{mlp}/gate_proj", hidden, ffn)
        silu = b.op("Mul", [gate, b.op("Sigmoid", [gate], f"{mlp}/act_fn/Sigmoid")], f"{mlp}/act_fn/Mul")
        up = b.op("Mul", [silu, linear(h, f"{mlp}/up_proj", hidden, ffn)], f"{mlp}/Mul")
        x = b.op("Add", [x, linear(up, f"{mlp}/down_proj", ffn, hidden)], f"{block}/Add_1")
    x = norm(x, "/model/norm")
    if tied:
        head = b.op("Transpose", [embedding], "/lm_head/Transpose", perm=[1, 0])
        logits = b.op("MatMul", [x, head], "/lm_head/MatMul")
    else:
        logits = linear(x, "/lm_head", hidden, vocab)
    logits.name = "logits"
    logits.dtype, logits.shape = dtype, ir.Shape([1, sequence, vocab])
    nbytes = _save(b.model([ids], [logits], "llama"), path)
    return BuiltModel(path, nbytes, small_layer=f"model.layers.{layers // 2}.mlp.up_proj", small_width=ffn + ffn // 8)


def keras_convnet(
    path: str | os.PathLike[str],
    *,
    convs: Sequence[int] = (64, 64),
    dense: Sequence[int] = (256, 10),
    channels: int = 3,
    image: int = 8,
    seed: int = 0,
) -> BuiltModel:
    """3×3 convolutions of ``convs`` filters, a global average pool, then Dense layers of
    ``dense`` units, named as tf2onnx names a Keras model's layers, written to ``path``."""
    path = Path(path)
    b = _Builder(seed)
    image_in = ir.val("input", FLOAT, [1, channels, image, image])
    x = image_in
    sizes = [channels, *convs]
    for i in range(1, len(sizes)):
        scope = f"model/conv_{i}"
        w = b.weight(f"{scope}/kernel", [sizes[i], sizes[i - 1], 3, 3], std=float(np.sqrt(2.0 / (sizes[i - 1] * 9))))
        bias = b.weight(f"{scope}/bias", [sizes[i]], std=0.01)
        x = b.op("Relu", [b.op("Conv", [x, w, bias], f"{scope}/Conv2D", kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
                 f"{scope}/Relu")
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x], "model/pool/Mean")], "model/flatten/Reshape", axis=1)
    widths = [sizes[-1], *dense]
    for i in range(1, len(widths)):
        scope = f"model/dense_{i}"
        w = b.weight(f"{scope}/kernel", [widths[i - 1], widths[i]], std=float(np.sqrt(1.0 / widths[i - 1])))
        bias = b.weight(f"{scope}/bias", [widths[i]], std=0.01)
        x = b.op("Add", [b.op("MatMul", [x, w], f"{scope}/MatMul"), bias], f"{scope}/BiasAdd")
    x.name = "output"
    x.dtype, x.shape = FLOAT, ir.Shape([1, widths[-1]])
    nbytes = _save(b.model([image_in], [x], "keras_convnet"), path)
    return BuiltModel(path, nbytes, small_layer="conv_1", small_width=sizes[1] + 1)


def measure(argv: Sequence[str], *, cwd: str | os.PathLike[str] | None = None,
            env: Mapping[str, str] | None = None, sample_s: float = 0.0) -> Measured:
    """Run ``argv`` (stdout discarded) and measure it from a small launcher process; with
    ``sample_s``, also sample its anonymous and file-backed resident memory that often
    (a peak shorter than the period may be missed)."""
    with tempfile.TemporaryDirectory() as tmp:
        result, err = Path(tmp) / "result", Path(tmp) / "stderr"
        with err.open("wb") as stderr:
            subprocess.run([sys.executable, "-c", _LAUNCHER, str(result), str(sample_s), *argv], cwd=cwd,
                           env=dict(env) if env is not None else None,
                           stdout=subprocess.DEVNULL, stderr=stderr, check=True)
        wall, rss, code, anon, file = result.read_text().split()
        return Measured(float(wall), int(rss), int(code), err.read_text(errors="replace")[-4000:],
                        int(anon), int(file))


def chain(path: str | os.PathLike[str], *, nodes: int = 20_000, width: int = 8, seed: int = 0) -> BuiltModel:
    """A plain chain of ``nodes // 2`` layers ``Gemm → Relu`` of ``width`` features each.

    The graph-size axis of the benchmark: every layer is growable, so ``inspect`` and a
    widening's planning see ``nodes // 2`` layers; the weights are a few bytes each.
    """
    path = Path(path)
    b = _Builder(seed)
    x_in = ir.val("x", FLOAT, [1, width])
    x = x_in
    std = float(np.sqrt(2.0 / width))
    for i in range(nodes // 2):
        w = b.weight(f"layers.{i}.weight", [width, width], std=std)
        bias = b.weight(f"layers.{i}.bias", [width], std=0.01)
        x = b.op("Gemm", [x, w, bias], f"/layers.{i}/Gemm", transB=1)
        x = b.op("Relu", [x], f"/layers.{i}/act/Relu")
    x.name = "y"
    x.dtype, x.shape = FLOAT, ir.Shape([1, width])
    nbytes = _save(b.model([x_in], [x], "chain"), path)
    middle = nodes // 4
    return BuiltModel(path, nbytes, small_layer=f"layers.{middle}", small_width=width + width // 2)
