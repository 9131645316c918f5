"""Widen every layer of real PyTorch exports, or refuse it naming the blocking node.

The matrix: every zoo model (``torch_zoo.MODELS``) × export variant (``torch_zoo.VARIANTS``) × growable
layer (``onnxgrow.widening.find_layers``). Each layer's expected outcome is written out in
:data:`EXPECTED` (with per-variant exceptions): widened exactly to ``2n+1`` (or to
``2n`` when a LayerNormalization over the channels demands a multiple of ``n``, after
checking that ``2n+1`` is refused with that reason), with onnxruntime showing a max
relative error ≤ 1e-5, and the channel group listed; or refused, with the blocking op
and the reason in the message. A second test checks that ``find_layers`` finds exactly
the layers listed, so no layer escapes the matrix.

Further tests look inside the grown graphs: a residual group named by any member, the
depthwise conv of a MobileNet expansion, fire-module contractors, rewritten Reshape
constants, shared (deduplicated) initializers, both GELU forms, and ``inspect``.

Exports are written once per test session (shared by its xdist workers) in a temporary folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest

from onnxgrow import GrowError, RefusedError, load_model, verify, widen
from onnxgrow.constants import find_constant
from onnxgrow.inspect import inspect_model
from onnxgrow.shapes import infer_shapes
from onnxgrow.widening.layers import Layer, find_layer, find_layers

pytest.importorskip("torch")

from tests.helpers import torch_zoo

pytestmark = pytest.mark.torch

MAX_REL_ERROR = 1e-5


@dataclass(frozen=True)
class Widens:
    """Widened exactly; ``together``: the other layers of its channel group."""

    together: frozenset[str] = frozenset()
    multiple_of_width: str | None = None  # the op demanding q = k·n, named in the refusal of 2n+1


@dataclass(frozen=True)
class Refused:
    """Refused at a node of op ``op``; ``reason`` is part of the message."""

    op: str
    reason: str


Outcome = Widens | Refused


def group(*names: str, ln: bool = False) -> Widens:
    return Widens(frozenset(names), "LayerNormalization" if ln else None)


OUTPUT = "reach model output"
HEADS = "splits the widened axis (16) into several axes [2, 8]"
RUNTIME_COUNT = "reads the channel count at run time"
LEGACY_DYNAMIC = ("legacy", "legacy-opset16")  # dynamic batch: attention reads d_model with Shape

EXPECTED: dict[str, dict[str, Outcome]] = {
    "resnet": {
        "conv1": group("layer1.conv2"),
        "layer1.conv1": group(),
        "layer1.conv2": group("conv1"),
        "layer2.conv1": group(),
        "layer2.conv2": group("layer2.downsample.0"),
        "layer2.downsample.0": group("layer2.conv2"),
        "fc": Refused("Gemm", OUTPUT),
    },
    "mobilenet": {
        "stem.0.0": group("block1.conv.4.0"),
        "block1.conv.0.0": group(),  # expansion, carried through the depthwise conv
        "block1.conv.4.0": group("stem.0.0"),
        "block2.conv.0.0": group(),
        "block2.conv.4.0": group(),
        "head.0.0": group(),
        "classifier": Refused("Gemm", OUTPUT),
    },
    "squeezenet": {
        "conv1": group(),
        "fire2.squeeze": group(),
        "fire2.expand1x1": group(),
        "fire2.expand3x3": group(),
        "fire3.squeeze": group(),
        "fire3.expand1x1": group(),
        "fire3.expand3x3": group(),
        "classifier": Refused("Flatten", OUTPUT),
    },
    "vgg": {
        "features.0": group(),
        "features.2": group(),
        "features.5": group(),  # through AveragePool and the flattening Reshape into classifier.0
        "classifier.0": group(),
        "classifier.3": Refused("Gemm", OUTPUT),
    },
    "gpt2": {
        "wpe": group("attn.c_proj", "mlp.c_proj", ln=True),
        # q, k and v widen alike through the Split (a block map); each then splits into heads
        "attn.c_attn": Refused("Reshape", HEADS),
        "attn.c_proj": group("wpe", "mlp.c_proj", ln=True),
        "mlp.c_fc": group(),
        "mlp.c_proj": group("wpe", "attn.c_proj", ln=True),
        "head": Refused("Add", OUTPUT),
    },
    "bert": {
        "word_embeddings": group("position_embeddings", "attention.dense", "output", ln=True),
        "position_embeddings": group("word_embeddings", "attention.dense", "output", ln=True),
        "attention.query": Refused("Reshape", HEADS),
        "attention.key": Refused("Reshape", HEADS),
        "attention.value": Refused("Reshape", HEADS),
        "attention.dense": group("word_embeddings", "position_embeddings", "output", ln=True),
        "intermediate": group(),
        "output": group("word_embeddings", "position_embeddings", "attention.dense", ln=True),
        "pooler": Refused("Tanh", OUTPUT),
    },
}

#: (model, variant) → layer → outcome, where a variant differs from EXPECTED.
EXCEPTIONS: dict[tuple[str, str], dict[str, Outcome | None]] = {
    **{("squeezenet", v): {"classifier": Refused("Reshape", OUTPUT)} for v in ("dynamo", "dynamo-noopt")},
    **{("gpt2", v): {
        "wpe": Refused("Shape", RUNTIME_COUNT),
        "attn.c_proj": Refused("Shape", RUNTIME_COUNT),
        "mlp.c_proj": Refused("Shape", RUNTIME_COUNT),
    } for v in LEGACY_DYNAMIC},
    ("gpt2", "dynamo-noopt"): {
        "attn.c_attn": Refused("SplitToSequence", "no widening rule for op SplitToSequence"),
    },
    **{("bert", v): {
        "word_embeddings": Refused("Shape", RUNTIME_COUNT),
        "position_embeddings": Refused("Shape", RUNTIME_COUNT),
        "attention.dense": Refused("Shape", RUNTIME_COUNT),
        "output": Refused("Shape", RUNTIME_COUNT),
    } for v in LEGACY_DYNAMIC},
    ("bert", "dynamo"): {  # the optimizer folds the position lookup (constant positions) into a constant
        "position_embeddings": None,
        "word_embeddings": group("attention.dense", "output", ln=True),
        "attention.dense": group("word_embeddings", "output", ln=True),
        "output": group("word_embeddings", "attention.dense", ln=True),
    },
}

#: Nodes of layer op types that are not layers, and why: model → [(op, reason)].
NOT_GROWABLE: dict[str, list[tuple[str, str]]] = {
    "mobilenet": [("Conv", "depthwise convolution (group=24)"), ("Conv", "depthwise convolution (group=16)")],
    "gpt2": [("MatMul", "both operands are computed at run time")] * 2,
    "bert": [("MatMul", "both operands are computed at run time")] * 2,
}


def expected_layers(model: str, variant: str) -> dict[str, Outcome]:
    layers = dict(EXPECTED[model])
    for name, outcome in EXCEPTIONS.get((model, variant), {}).items():
        if outcome is None:
            del layers[name]
        else:
            layers[name] = outcome
    return layers


def matrix() -> Iterator[object]:
    for model in torch_zoo.MODELS:
        for variant in torch_zoo.VARIANTS:
            for layer in expected_layers(model, variant):
                yield pytest.param(model, variant, layer, id=f"{model}-{variant}-{layer}")


@pytest.fixture(scope="session")
def zoo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return torch_zoo.shared_directory(tmp_path_factory.getbasetemp())


def exported(zoo_dir: Path, model: str, variant: str) -> Path:
    return torch_zoo.export(model, variant, zoo_dir)


def layer_of(model: ir.Model, name: str) -> Layer:
    infer_shapes(model)
    return find_layer(model, name)


def widen_and_verify(path: Path, name: str, q: int) -> tuple[ir.Model, object]:
    """Widen ``name`` to ``q`` and check the grown model against the file with onnxruntime."""
    grown, report = widen(load_model(path), {name: q})
    check = verify(path, grown)
    assert check.passed, check.summary()
    assert check.max_rel_error <= MAX_REL_ERROR, check.summary()
    assert layer_of(grown, name).width == q
    return grown, report


@pytest.mark.parametrize(("model", "variant", "name"), list(matrix()))
def test_widen_every_layer(zoo_dir: Path, model: str, variant: str, name: str) -> None:
    path = exported(zoo_dir, model, variant)
    outcome = expected_layers(model, variant)[name]
    n = layer_of(load_model(path), name).width
    if isinstance(outcome, Refused):
        with pytest.raises(RefusedError) as refused:
            widen(load_model(path), {name: 2 * n + 1})
        message = str(refused.value)
        assert f"cannot widen {name!r} at {outcome.op} node" in message, message
        assert outcome.reason in message, message
        assert refused.value.node, "the refusal names no node"
        return
    q = 2 * n + 1
    if outcome.multiple_of_width:
        with pytest.raises(RefusedError) as refused:
            widen(load_model(path), {name: q})
        message = str(refused.value)
        assert outcome.multiple_of_width in message and f"multiple of {n}" in message, message
        q = 2 * n
    _, report = widen_and_verify(path, name, q)
    assert set(report.groups[0].layers) == {name, *outcome.together}


@pytest.mark.parametrize("variant", list(torch_zoo.VARIANTS))
@pytest.mark.parametrize("model", list(torch_zoo.MODELS))
def test_matrix_covers_every_layer(zoo_dir: Path, model: str, variant: str) -> None:
    graph = load_model(exported(zoo_dir, model, variant))
    infer_shapes(graph)
    layers, refused = find_layers(graph)
    assert {layer.display for layer in layers} == set(expected_layers(model, variant))
    found = sorted((item.node.op_type, item.reason) for item in refused)
    wanted = sorted(NOT_GROWABLE.get(model, []))
    assert len(found) == len(wanted), found
    for (op, reason), (want_op, want_reason) in zip(found, wanted):
        assert op == want_op and want_reason in reason, (op, reason)


# ----- inside the grown graphs -------------------------------------------------------------


def node_named(model: ir.Model, name: str) -> ir.Node:
    return find_layer(model, name).node


def constant_of(node: ir.Node, index: int) -> np.ndarray:
    ref = find_constant(node.inputs[index])
    assert ref is not None
    return ref.array()


@pytest.mark.parametrize("variant", ["legacy", "dynamo-noopt"])
def test_residual_group_named_by_any_member(zoo_dir: Path, variant: str) -> None:
    path = exported(zoo_dir, "resnet", variant)
    grown, report = widen_and_verify(path, "layer1.conv2", 20)
    assert report.groups[0].layers == ["layer1.conv2", "conv1"]
    assert set(report.groups[0].contractors) == {"layer1.conv1", "layer2.conv1", "layer2.downsample.0"}
    infer_shapes(grown)
    assert find_layer(grown, "conv1").width == 20


@pytest.mark.parametrize("variant", list(torch_zoo.VARIANTS))
def test_depthwise_expansion(zoo_dir: Path, variant: str) -> None:
    path = exported(zoo_dir, "mobilenet", variant)
    grown, _ = widen_and_verify(path, "block1.conv.0.0", 50)
    infer_shapes(grown)
    depthwise = next(item.node for item in find_layers(grown)[1] if "group=50" in item.reason)
    assert depthwise.attributes.get_int("group") == 50
    assert constant_of(depthwise, 1).shape == (50, 1, 3, 3)
    assert constant_of(node_named(grown, "block1.conv.4.0"), 1).shape == (8, 50, 1, 1)


@pytest.mark.parametrize("variant", ["legacy", "dynamo"])
def test_fire_squeeze_divides_both_expands(zoo_dir: Path, variant: str) -> None:
    path = exported(zoo_dir, "squeezenet", variant)
    _, report = widen_and_verify(path, "fire2.squeeze", 9)
    assert set(report.groups[0].contractors) == {"fire2.expand1x1", "fire2.expand3x3"}
    grown, report = widen_and_verify(path, "fire2.expand3x3", 13)
    assert report.groups[0].contractors == ["fire3.squeeze"]
    assert constant_of(node_named(grown, "fire3.squeeze"), 1).shape == (5, 6 + 13, 1, 1)


def test_flatten_reshape_constant_rewritten(zoo_dir: Path) -> None:
    grown, report = widen_and_verify(exported(zoo_dir, "vgg", "dynamo"), "features.5", 33)
    reshape = next(node for node in grown.graph if node.op_type == "Reshape")
    assert constant_of(reshape, 1).tolist() == [-1, 33 * 2 * 2]
    assert any(change.old_shape == (2,) and change.node == reshape.name for change in report.groups[0].changes)
    assert constant_of(node_named(grown, "classifier.0"), 1).shape == (32, 132)


def test_concat_built_reshape_shape_rewritten(zoo_dir: Path) -> None:
    """dynamo without optimizer bakes ``[2, 16]`` as Concat([2], [16]); the [16] is rewritten."""
    grown, _ = widen_and_verify(exported(zoo_dir, "resnet", "dynamo-noopt"), "layer2.conv2", 40)
    reshape = next(node for node in grown.graph if node.op_type == "Reshape" and node.name == "node_view")
    parts = reshape.inputs[1].producer()
    assert parts is not None and parts.op_type == "Concat"
    assert [constant_of(parts, i).tolist() for i in range(2)] == [[2], [40]]


def vgg_bias_roots(model: ir.Model) -> list[ir.Value | None]:
    """The initializers behind the biases of features.0 and features.2 (None: no bias)."""
    infer_shapes(model)
    roots = []
    for name in ("features.0", "features.2"):
        node = node_named(model, name)
        ref = find_constant(node.inputs[2]) if len(node.inputs) > 2 else None
        roots.append(ref.root if ref is not None else None)
    return roots


@pytest.mark.parametrize("variant", list(torch_zoo.VARIANTS))
def test_shared_initializer_left_alone_for_the_other_node(zoo_dir: Path, variant: str) -> None:
    """features.0 and features.2 have identical zero biases, which exporters deduplicate into one
    initializer (the dynamo optimizer drops them instead): widening features.0 must not
    change what features.2 sees."""
    path = exported(zoo_dir, "vgg", variant)
    first, second = vgg_bias_roots(load_model(path))
    grown, _ = widen_and_verify(path, "features.0", 17)
    grown_first, grown_second = vgg_bias_roots(grown)
    if first is None:
        assert second is None and grown_first is None and grown_second is None
        return
    assert grown_first is not None and grown_first.const_value.shape == ir.Shape([17])  # type: ignore[union-attr]
    assert grown_second is not None and grown_second.const_value.shape == ir.Shape([8])  # type: ignore[union-attr]
    if first is second:
        assert grown_second.name == second.name and grown_first is not grown_second  # type: ignore[union-attr]


def test_some_export_shares_an_initializer(zoo_dir: Path) -> None:
    """The test above must meet the case it guards against in at least one export."""
    shared = [variant for variant in torch_zoo.VARIANTS
              if len({id(r) for r in vgg_bias_roots(load_model(exported(zoo_dir, "vgg", variant))) if r}) == 1]
    assert shared


@pytest.mark.parametrize(("model", "variant", "ops"), [
    ("gpt2", "legacy-nofold", {"Gelu"}),
    ("gpt2", "legacy-opset16", {"Tanh", "Pow"}),
    ("bert", "dynamo", {"Gelu"}),
    ("bert", "legacy-opset16", {"Erf"}),
])
def test_ffn_inner_layer_through_both_gelu_forms(zoo_dir: Path, model: str, variant: str, ops: set[str]) -> None:
    path = exported(zoo_dir, model, variant)
    graph_ops = {node.op_type for node in load_model(path).graph}
    assert ops <= graph_ops
    assert ("Gelu" in graph_ops) == ("Gelu" in ops)
    inner = "mlp.c_fc" if model == "gpt2" else "intermediate"
    n = layer_of(load_model(path), inner).width
    _, report = widen_and_verify(path, inner, 2 * n + 3)
    assert report.groups[0].layers == [inner]


def test_initializers_as_graph_inputs_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "vgg-inputs.onnx"
    torch_zoo.export_model("vgg", "legacy", path, keep_initializers_as_inputs=True)
    model = load_model(path)
    infer_shapes(model)
    layers, refused = find_layers(model)
    assert not layers
    assert all("is a model input" in item.reason for item in refused)
    with pytest.raises(GrowError, match="features.0.weight' is a model input"):
        widen(model, {"features.0": 9})


def test_inspect_reports_groups_and_refusals(zoo_dir: Path) -> None:
    summary = inspect_model(exported(zoo_dir, "gpt2", "dynamo"))
    layers = {info.name: info for info in summary.layers}
    assert layers["wpe"].widenable and set(layers["wpe"].group) == {"wpe", "attn.c_proj", "mlp.c_proj"}
    assert "multiples of 16" in layers["wpe"].reason and "LayerNormalization" in layers["wpe"].reason
    assert not layers["attn.c_attn"].widenable
    assert "at Reshape node" in layers["attn.c_attn"].reason and "attention heads" in layers["attn.c_attn"].reason
    assert {info.node for info in summary.not_growable} == {"node_matmul", "node_matmul_1"}
    resnet = {info.name: info for info in inspect_model(exported(zoo_dir, "resnet", "legacy")).layers}
    assert set(resnet["layer2.conv2"].group) == {"layer2.conv2", "layer2.downsample.0"}
    bert = {info.name: info for info in inspect_model(exported(zoo_dir, "bert", "legacy")).layers}
    assert bert["word_embeddings"].op == "Gather" and bert["word_embeddings"].deepen == "-"
    assert "at Shape node '/attention/Shape_2'" in bert["word_embeddings"].reason
    assert "into the target shape of Reshape node '/attention/Reshape" in bert["word_embeddings"].reason


@pytest.mark.parametrize(("model", "variant", "widths"), [
    ("squeezenet", "dynamo", {"fire2.squeeze": 9, "fire2.expand1x1": 13, "fire3.expand3x3": 10}),
    ("vgg", "legacy", {"features.5": 33, "classifier.0": 40}),
    ("gpt2", "dynamo", {"wpe": 32, "mlp.c_fc": 100}),
])
def test_several_groups_in_one_call(zoo_dir: Path, model: str, variant: str, widths: dict[str, int]) -> None:
    path = exported(zoo_dir, model, variant)
    grown, report = widen(load_model(path), widths)
    check = verify(path, grown)
    assert check.passed and check.max_rel_error <= MAX_REL_ERROR, check.summary()
    infer_shapes(grown)
    assert {name: find_layer(grown, name).width for name in widths} == widths
    assert len(report.groups) == len(widths)


@pytest.mark.parametrize(("model", "variant", "name", "q", "init", "noise"), [
    ("mobilenet", "dynamo", "block1.conv.0.0", 40, "zero-pad", 0.0),
    ("resnet", "legacy-nofold", "conv1", 13, "zero-pad", 0.0),
    ("bert", "legacy-nofold", "output", 32, "net2wider", 0.1),
    ("squeezenet", "legacy", "fire3.expand1x1", 11, "net2wider", 0.3),
])
def test_exact_inits_other_than_the_even_split(zoo_dir: Path, model: str, variant: str, name: str, q: int,
                                               init: str, noise: float) -> None:
    path = exported(zoo_dir, model, variant)
    grown, _ = widen(load_model(path), {name: q}, init=init, noise=noise, seed=3)
    check = verify(path, grown)
    assert check.passed and check.max_rel_error <= MAX_REL_ERROR, check.summary()


def test_zero_pad_refused_under_layer_norm(zoo_dir: Path) -> None:
    """Fresh units change a LayerNorm's statistics: only net2wider to a multiple of n is exact."""
    with pytest.raises(RefusedError, match="LayerNormalization.*net2wider to a multiple of 16"):
        widen(load_model(exported(zoo_dir, "gpt2", "dynamo")), {"wpe": 32}, init="zero-pad")
