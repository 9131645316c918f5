"""Helpers for the deepen tests: an independent onnxruntime comparison, CLI runs, and
random MLP/CNN graphs written directly in ONNX. The reference fixtures come from
:mod:`tests.helpers.paths`, file hashes from :mod:`tests.helpers.cli`.

The comparison does not use :mod:`onnxgrow.verification`: it runs both models with graph
optimisations off on its own seeded inputs (batch 3, values spread over [-4, 4] so
clamps at 0, ±1 and 6 are all reached) and returns ``max|a - b| / max|a|`` over all
outputs, after checking that the two models have the same interface.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from onnxgrow.cli import main
from tests.helpers.cli import tree_hashes

RTOL = 1e-5


# ----- onnxruntime ---------------------------------------------------------------------
def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _feeds(session: ort.InferenceSession, rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
    feeds = {}
    for arg in session.get_inputs():
        shape = [d if isinstance(d, int) else batch for d in arg.shape]
        assert arg.type == "tensor(float)", f"unexpected input type {arg.type}"
        feeds[arg.name] = rng.uniform(-4.0, 4.0, size=shape).astype(np.float32)
    return feeds


def max_rel_error(reference: Path, candidate: Path, *, batch: int = 3, samples: int = 2, seed: int = 0) -> float:
    """``max|a - b| / max|a|`` of every output over ``samples`` random inputs; asserts equal interfaces."""
    ref, cand = _session(reference), _session(candidate)
    assert [(i.name, i.shape) for i in ref.get_inputs()] == [(i.name, i.shape) for i in cand.get_inputs()]
    assert [o.name for o in ref.get_outputs()] == [o.name for o in cand.get_outputs()]
    rng = np.random.default_rng(seed)
    worst = 0.0
    for _ in range(samples):
        feeds = _feeds(ref, rng, batch)
        for a, b in zip(ref.run(None, feeds), cand.run(None, feeds)):
            assert a.shape == b.shape
            scale = float(np.max(np.abs(a))) or 1.0
            worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b))) / scale)
    return worst


# ----- CLI -----------------------------------------------------------------------------
@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def run_cli(*args: str) -> CliResult:
    """Run ``onnxgrow ARGS`` in-process."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return CliResult(result.exit_code, result.stdout, result.stderr)


def assert_refused(source: Path, *args: str, message: str) -> CliResult:
    """``onnxgrow deepen SOURCE ARGS -o OUT`` exits 2 with one ``error:`` line containing
    ``message``, writes nothing and leaves the input folder byte for byte as it was."""
    folder = source.parent
    before = tree_hashes(folder)
    out = folder / "out.onnx"
    result = run_cli("deepen", source, *args, "-o", out)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert message in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    assert not out.exists()
    assert tree_hashes(folder) == before
    return result


# ----- random graphs -------------------------------------------------------------------
#: Activations of the random graphs, by whether a(a(v)) = a(v).
IDEMPOTENT_ACTS = ("relu", "relu6", "hardtanh", "max_min")
OTHER_ACTS = ("leaky_relu", "sigmoid", "tanh", "softplus", "gelu_erf", "silu")


@dataclass
class NetSpec:
    """A random network: ``kind`` dense (Gemm, or MatMul+Add on rank-2/3 input) or conv (1-D/2-D)."""

    kind: str  # "gemm", "matmul", "conv"
    rank: int  # matmul: input rank (2, 3); conv: spatial rank (1, 2)
    in_features: int
    widths: list[int]  # every layer's width; the last layer is the output layer
    acts: list[str]  # per hidden layer: "none" or an activation name
    batch_norm: list[bool]  # per hidden layer (BatchNormalization normalises axis 1: not on rank-3 MatMul nets)
    kernels: list[int] = field(default_factory=list)  # conv layers
    strides: list[int] = field(default_factory=list)  # conv layers

    @property
    def layer_names(self) -> list[str]:
        return [f"layer_{i}" for i in range(len(self.widths))]


class _Graph:
    def __init__(self, rng: np.random.Generator) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = rng
        self._count = 0

    def const(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(array, dtype=np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], scope: str, **attrs: object) -> str:
        self._count += 1
        out = f"{scope}/{op}_{self._count}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"{scope}/{op}_{self._count}", **attrs))
        return out

    def weights(self, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        return self.rng.normal(0.0, 1.0 / np.sqrt(fan_in), size=shape)


def _activation(g: _Graph, act: str, x: str, scope: str) -> str:
    if act == "none":
        return x
    if act == "relu":
        return g.node("Relu", [x], scope)
    if act in ("relu6", "hardtanh"):
        low, high = (0.0, 6.0) if act == "relu6" else (-1.0, 1.0)
        return g.node("Clip", [x, g.const(f"{scope}.min", low), g.const(f"{scope}.max", high)], scope)
    if act == "max_min":
        y = g.node("Max", [x, g.const(f"{scope}.low", 0.0)], scope)
        return g.node("Min", [g.const(f"{scope}.high", 6.0), y], scope)
    if act == "leaky_relu":
        return g.node("LeakyRelu", [x], scope, alpha=0.1)
    if act in ("sigmoid", "tanh", "softplus"):
        return g.node({"sigmoid": "Sigmoid", "tanh": "Tanh", "softplus": "Softplus"}[act], [x], scope)
    if act == "gelu_erf":
        d = g.node("Div", [x, g.const(f"{scope}.sqrt2", np.sqrt(2.0))], scope)
        e = g.node("Add", [g.node("Erf", [d], scope), g.const(f"{scope}.one", 1.0)], scope)
        return g.node("Mul", [g.node("Mul", [x, e], scope), g.const(f"{scope}.half", 0.5)], scope)
    if act == "silu":
        return g.node("Mul", [x, g.node("Sigmoid", [x], scope)], scope)
    raise ValueError(act)


def _batch_norm(g: _Graph, x: str, width: int, scope: str) -> str:
    params = [g.const(f"{scope}_bn.{p}", v) for p, v in (
        ("scale", g.rng.uniform(0.5, 1.5, width)), ("bias", g.rng.uniform(-0.5, 0.5, width)),
        ("mean", g.rng.uniform(-0.5, 0.5, width)), ("var", g.rng.uniform(0.5, 2.0, width)))]
    return g.node("BatchNormalization", [x, *params], f"{scope}_bn")


def _dense(g: _Graph, kind: str, x: str, fan_in: int, width: int, scope: str) -> str:
    """``x @ W + b`` as one Gemm (kind "gemm") or MatMul then Add (the bias first, as torch writes it)."""
    w = g.weights((fan_in, width), fan_in)
    bias = g.const(f"{scope}.bias", g.rng.normal(0.0, 0.1, width))
    if kind == "gemm":
        return g.node("Gemm", [x, g.const(f"{scope}.weight", w.T), bias], scope, transB=1)
    y = g.node("MatMul", [x, g.const(f"{scope}.weight", w)], scope)
    return g.node("Add", [bias, y], scope)


def build_net(spec: NetSpec, seed: int = 0) -> onnx.ModelProto:
    """The ONNX model of ``spec`` (opset 17, dynamic batch), weights drawn with ``seed``."""
    assert not (spec.kind == "matmul" and spec.rank == 3 and any(spec.batch_norm)), "BatchNorm normalises axis 1"
    g = _Graph(np.random.default_rng(seed))
    if spec.kind == "conv":
        size = 7 if spec.rank == 2 else 9
        in_shape: list[int | str] = ["batch", spec.in_features, *([size] * spec.rank)]
    else:
        in_shape = ["batch", *([5] * (spec.rank - 2)), spec.in_features]
    x, fan_in = "x", spec.in_features
    names = spec.layer_names
    for i, width in enumerate(spec.widths[:-1]):
        if spec.kind == "conv":
            k, stride = spec.kernels[i], spec.strides[i]
            w = g.weights((width, fan_in, *([k] * spec.rank)), fan_in * k**spec.rank)
            bias = g.const(f"{names[i]}.bias", g.rng.normal(0, 0.1, width))
            inputs = [x, g.const(f"{names[i]}.weight", w), bias]
            x = g.node("Conv", inputs, names[i], kernel_shape=[k] * spec.rank, pads=[k // 2] * (2 * spec.rank),
                       strides=[stride] * spec.rank)
        else:
            x = _dense(g, spec.kind, x, fan_in, width, names[i])
        if spec.batch_norm[i]:
            x = _batch_norm(g, x, width, names[i])
        x = _activation(g, spec.acts[i], x, f"{names[i]}_act")
        fan_in = width
    if spec.kind == "conv":
        x = g.node("Flatten", [g.node("GlobalAveragePool", [x], "pool")], "pool")
    y = _dense(g, "matmul" if spec.kind == "matmul" else "gemm", x, fan_in, spec.widths[-1], names[-1])
    out_shape = ["batch", spec.widths[-1]] if spec.kind in ("conv", "gemm") else [*in_shape[:-1], spec.widths[-1]]
    graph = helper.make_graph(
        g.nodes, "random_net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, out_shape)],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="deepen-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
