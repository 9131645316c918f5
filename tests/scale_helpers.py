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

:func:`measure` runs a command in a small launcher interpreter and reports the
command's own wall time and peak RSS (a child forked from a large process, such as
pytest or the benchmark, would inherit that process's RSS high-water mark).
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

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.nodes: list[ir.Node] = []
        self.initializers: list[ir.Value] = []

    def weight(self, name: str, shape: Sequence[int], std: float, mean: float = 0.0) -> ir.Value:
        """A float initializer drawn from N(mean, std²) when it is written."""
        shape = tuple(int(d) for d in shape)
        seed = zlib.crc32(name.encode()) ^ self.seed

        def make() -> ir.Tensor:
            rng = np.random.default_rng(seed)
            array = rng.standard_normal(shape, dtype=np.float32)
            array *= np.float32(std)
            array += np.float32(mean)
            return ir.Tensor(array, name=name)

        tensor = ir.LazyTensor(make, dtype=FLOAT, shape=ir.Shape(shape), name=name)
        value = ir.val(name, FLOAT, shape, const_value=tensor)
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
    """A finished command: wall time, peak resident memory, exit status, end of stderr."""

    wall_s: float
    peak_rss: int
    returncode: int
    stderr: str


_LAUNCHER = """
import os, sys, time
start = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - start
with open(sys.argv[1], "w") as f:
    f.write(f"{wall} {usage.ru_maxrss * 1024} {os.waitstatus_to_exitcode(status)}")
"""


def measure(argv: Sequence[str], *, cwd: str | os.PathLike[str] | None = None,
            env: Mapping[str, str] | None = None) -> Measured:
    """Run ``argv`` (stdout discarded) and measure it from a small launcher process."""
    with tempfile.TemporaryDirectory() as tmp:
        result, err = Path(tmp) / "result", Path(tmp) / "stderr"
        with err.open("wb") as stderr:
            subprocess.run([sys.executable, "-c", _LAUNCHER, str(result), *argv], cwd=cwd,
                           env=dict(env) if env is not None else None,
                           stdout=subprocess.DEVNULL, stderr=stderr, check=True)
        wall, rss, code = result.read_text().split()
        return Measured(float(wall), int(rss), int(code), err.read_text(errors="replace")[-4000:])


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
