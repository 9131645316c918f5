"""Models nobody here made: weights listed as graph inputs, and per-channel constants reshaped at run time.

- IR version 3 (the Caffe2-era model zoo) lists every initializer as a graph input; onnxruntime
  treats them as constants (it lists only the data input and refuses a feed for a weight), so
  onnxgrow does too, and a grown model lists every initializer again, grown and new ones
  included (docs/design.md §10). From IR 4 on a listed weight is an input callers may override:
  refused unless ``--weights-as-constants``.
- Caffe2's BatchNorm as ``Mul``/``Add`` over ``Unsqueeze(constant)`` and paddle2onnx's conv bias
  ``Reshape(Constant, Identity(Constant))``: the chain's root is rewritten and its target shape
  follows, so the grown graph keeps the exporter's nodes.

Every layer of every graph is widened and compared with the original on onnxruntime
(``onnxgrow.verify`` and, independently, :func:`robust_helpers.assert_equivalent`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxgrow
from onnxgrow import GrowOptions, load_model
from onnxgrow.constants import find_constant
from tests.helpers import zoo_patterns
from tests.helpers.robustness import assert_checker_passes, assert_clean, assert_equivalent, run_cli, untouched

MAX_REL = 1e-5
BUILDERS: dict[str, Callable[[Path], Path]] = {
    "resnet-caffe2": zoo_patterns.resnet_like,
    "resnet-caffe2-affine-bn": lambda path: zoo_patterns.resnet_like(path, bn="affine"),
    "inception-v2-caffe2": lambda path: zoo_patterns.inception_like(path, bn="affine"),
    "inception-v1-caffe2": zoo_patterns.inception_like,
    "densenet-caffe2": zoo_patterns.densenet_like,
    "paddle2onnx": zoo_patterns.paddle_conv_net,
}


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # IR >= 4 models with listed weights warn once per weight
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _op_counts(path: Path) -> Counter[str]:
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node if node.op_type != "Constant")


def test_onnxruntime_treats_ir3_listed_weights_as_constants(tmp_path: Path) -> None:
    """The fact the IR-3 decision rests on: no weight is an input, none can be fed."""
    src = zoo_patterns.resnet_like(tmp_path / "r.onnx")
    session = _session(src)
    assert [i.name for i in session.get_inputs()] == ["gpu_0/data_0"]
    assert session.get_overridable_initializers() == []
    feeds = {"gpu_0/data_0": np.zeros(zoo_patterns.IMAGE, np.float32),
             "gpu_0/conv1_w_0": np.zeros((8, 3, 3, 3), np.float32)}
    with pytest.raises(Exception, match="Invalid input name"):
        session.run(None, feeds)
    newer = zoo_patterns.resnet_like(tmp_path / "r8.onnx", ir_version=8)
    assert "gpu_0/conv1_w_0" in {i.name for i in _session(newer).get_overridable_initializers()}


@pytest.mark.parametrize("kind", sorted(BUILDERS))
def test_every_layer_grows_exactly_keeping_the_exporters_graph(kind: str, tmp_path: Path) -> None:
    src = BUILDERS[kind](tmp_path / f"{kind}.onnx")
    source = onnx.load(str(src))
    summary = onnxgrow.inspect_model(src)
    last = [info.name for info in summary.layers if not info.widenable]
    assert len(last) == 1 and summary.layers[-1].name == last[0] and summary.layers[-1].new_outputs, \
        [(info.name, info.reason) for info in summary.layers if not info.widenable]
    for k, info in enumerate(summary.layers[:-1]):
        out = tmp_path / f"{k}.onnx"
        width = info.width * 2 if k % 2 else info.width + 3
        with untouched(src):
            report = onnxgrow.widen_file(src, out, {info.name: width})
        assert report.verification is not None and report.verification.passed
        assert report.verification.max_rel_error <= MAX_REL, (info.name, report.verification.summary())
        assert assert_equivalent(src, out, {"gpu_0/data_0" if source.ir_version == 3 else "x": zoo_patterns.IMAGE},
                                 TensorProto.FLOAT) <= MAX_REL
        grown = onnx.load(str(out))
        assert_checker_passes(out)
        assert grown.ir_version == source.ir_version
        assert _op_counts(out) == _op_counts(src), f"{info.name}: the exporter's nodes changed"
        if source.ir_version < 4:  # every initializer listed, with its grown shape
            listed = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in grown.graph.input}
            stored = {t.name: list(t.dims) for t in grown.graph.initializer}
            assert {name: listed.get(name) for name in stored} == stored
            assert [i.name for i in _session(out).get_inputs()] == ["gpu_0/data_0"]
        widened = next(layer for layer in onnxgrow.inspect_model(out).layers if layer.name == info.name)
        assert widened.width == width


def test_caffe2_batchnorm_scale_is_rewritten_behind_its_unsqueeze(tmp_path: Path) -> None:
    src = zoo_patterns.resnet_like(tmp_path / "r.onnx", bn="affine")
    out = tmp_path / "w.onnx"
    onnxgrow.widen_file(src, out, {"gpu_0/conv1_w_0": 11})
    model = load_model(out)
    scale = model.graph.initializers["gpu_0/conv1_bn_s_0"]
    assert scale.const_value is not None and scale.const_value.shape.numpy() == (11,)
    unsqueeze = next(use.node for use in scale.uses())
    assert unsqueeze.op_type == "Unsqueeze" and list(unsqueeze.attributes.get_ints("axes", ())) == [1, 2]
    ref = find_constant(unsqueeze.outputs[0])
    assert ref is not None and ref.array().shape == (11, 1, 1) and ref.root is scale


def test_paddle_bias_keeps_its_reshape_and_its_target(tmp_path: Path) -> None:
    """The bias Constant becomes an initializer of its name; the Reshape and its -1 target stay."""
    src = zoo_patterns.paddle_conv_net(tmp_path / "p.onnx")
    out = tmp_path / "w.onnx"
    onnxgrow.widen_file(src, out, {"conv2d_0.w_0": 9})
    grown = load_model(out)
    reshape = next(node for node in grown.graph if node.name == "Reshape.0")
    bias = reshape.inputs[0]
    assert bias is not None and bias.name == "conv2d_0.b_0" and bias.const_value is not None
    assert bias.const_value.shape.numpy() == (9,)
    target = find_constant(reshape.inputs[1])
    assert target is not None and target.array().tolist() == [1, -1, 1, 1]


# ----- IR >= 4 weights that are real inputs -------------------------------------------------
def test_listed_weights_of_ir4_and_later_are_refused_without_the_flag(tmp_path: Path) -> None:
    src = zoo_patterns.resnet_like(tmp_path / "r8.onnx", ir_version=8)
    out = tmp_path / "w.onnx"
    with untouched(tmp_path):
        result = run_cli("widen", src, "--node", "Conv_1", "--to", 7, "-o", out)
    assert_clean(result, (2,))
    assert "'Conv_1' (Conv node 'Conv_1') cannot be widened: its filter tensor 'gpu_0/res2_0_branch2a_w_0' is a " \
           "model input (callers may replace it at run time)" in result.stderr
    assert "--weights-as-constants" in result.stderr
    inspected = run_cli("inspect", src)
    assert "every weight is a model input" in inspected.stdout + inspected.stderr


def test_listed_weights_of_ir4_and_later_grow_with_the_flag(tmp_path: Path) -> None:
    src = zoo_patterns.resnet_like(tmp_path / "r8.onnx", ir_version=8)
    out = tmp_path / "w.onnx"
    with untouched(src):
        result = run_cli("widen", src, "--node", "Conv_1", "--to", 7, "--weights-as-constants", "-o", out)
    assert_clean(result, (0,))
    assert assert_equivalent(src, out, {"gpu_0/data_0": zoo_patterns.IMAGE}, TensorProto.FLOAT) <= MAX_REL
    assert_checker_passes(out)
    overridable = {i.name: i.shape for i in _session(out).get_overridable_initializers()}
    assert overridable["gpu_0/res2_0_branch2a_w_0"] == [7, 8, 1, 1]  # still an input, with its grown shape
    assert len(overridable) == len(onnx.load(str(out)).graph.initializer)
    assert onnxgrow.inspect_model(src, weights_as_constants=True).layers[1].widenable


def test_new_initializers_of_an_ir3_model_are_listed(tmp_path: Path) -> None:
    """A deepened layer's new weights are initializers too: IR 3 wants them listed."""
    src = zoo_patterns.resnet_like(tmp_path / "r.onnx")
    out = tmp_path / "deep.onnx"
    report = onnxgrow.deepen_file(src, out, "Conv_1")
    assert report.verification is not None and report.verification.passed
    grown = onnx.load(str(out))
    assert grown.ir_version == 3
    assert {t.name for t in grown.graph.initializer} <= {i.name for i in grown.graph.input}
    assert len(grown.graph.initializer) > len(onnx.load(str(src)).graph.initializer)
    assert_checker_passes(out)


# ----- chains of reshaping ops in front of a per-channel constant ----------------------------
C = 4


def _chain(kind: str) -> tuple[list[onnx.NodeProto], dict[str, np.ndarray], int]:
    """Nodes computing ``k`` (seen by ``Mul(h, k)``, ``h`` [N, C, H, W]) from a stored constant; the opset."""
    rng = np.random.default_rng(7)
    per_channel = rng.uniform(0.5, 2.0, C).astype(np.float32)
    ints = np.array  # shapes and axes
    if kind == "Unsqueeze attribute (opset 9)":
        return [helper.make_node("Unsqueeze", ["s"], ["k"], axes=[1, 2])], {"s": per_channel}, 9
    if kind == "Unsqueeze input (opset 13)":
        return [helper.make_node("Unsqueeze", ["s", "axes"], ["k"])], {"s": per_channel, "axes": ints([0, 2, 3])}, 13
    if kind == "Reshape to [1, C, 1, 1]":
        return [helper.make_node("Reshape", ["s", "to"], ["k"])], {"s": per_channel, "to": ints([1, C, 1, 1])}, 13
    if kind == "Reshape to [1, -1, 1, 1] through Identity":
        return [helper.make_node("Identity", ["to"], ["to_id"]), helper.make_node("Reshape", ["s", "to_id"], ["k"])], \
            {"s": per_channel, "to": ints([1, -1, 1, 1])}, 13
    if kind == "Cast float16":
        return [helper.make_node("Cast", ["s"], ["k"], to=TensorProto.FLOAT)], \
            {"s": per_channel.astype(np.float16).reshape(C, 1, 1)}, 13
    if kind == "Squeeze":
        return [helper.make_node("Squeeze", ["s", "axes"], ["k"])], \
            {"s": per_channel.reshape(1, C, 1, 1), "axes": ints([0])}, 13
    if kind == "Expand":
        return [helper.make_node("Expand", ["s", "to"], ["k"])], \
            {"s": per_channel.reshape(C, 1, 1), "to": ints([1, C, 1, 1])}, 13
    if kind == "Expand of a broadcast value":
        return [helper.make_node("Expand", ["s", "to"], ["k"])], \
            {"s": np.array([[[1.5]]], np.float32), "to": ints([C, 1, 1])}, 13
    assert kind == "Unsqueeze then Cast"
    return [helper.make_node("Unsqueeze", ["s"], ["u"], axes=[1, 2]),
            helper.make_node("Cast", ["u"], ["k"], to=TensorProto.FLOAT)], \
        {"s": per_channel.astype(np.float16)}, 9


CHAINS = ["Unsqueeze attribute (opset 9)", "Unsqueeze input (opset 13)", "Reshape to [1, C, 1, 1]",
          "Reshape to [1, -1, 1, 1] through Identity", "Cast float16", "Squeeze", "Expand",
          "Expand of a broadcast value", "Unsqueeze then Cast"]


def _chain_model(path: Path, kind: str, shared: bool = False) -> Path:
    """``conv (C) → Mul(h, k) → Relu → conv out``; ``shared``: a second Mul outside the group reads ``k`` too."""
    rng = np.random.default_rng(3)
    chain, constants, opset = _chain(kind)
    inits = {"w1": rng.standard_normal((C, 3, 3, 3)).astype(np.float32),
             "w2": rng.standard_normal((2, C, 1, 1)).astype(np.float32), **constants}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["h"], name="conv", pads=[1, 1, 1, 1]), *chain,
             helper.make_node("Mul", ["h", "k"], ["m"], name="scale"), helper.make_node("Relu", ["m"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="out")]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 5, 5])]
    if shared:
        nodes.append(helper.make_node("Mul", ["z", "k"], ["side"], name="side"))
        outputs.append(helper.make_tensor_value_info("side", TensorProto.FLOAT, [1, C, 5, 5]))
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 5])]
    if shared:
        inputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, C, 5, 5]))
    graph = helper.make_graph(nodes, "chain", inputs, outputs,
                              [numpy_helper.from_array(a, n) for n, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("kind", CHAINS)
def test_per_channel_constant_behind_a_chain_is_gathered_in_place(kind: str, tmp_path: Path) -> None:
    src = _chain_model(tmp_path / "c.onnx", kind)
    out = tmp_path / "w.onnx"
    report = onnxgrow.widen_file(src, out, {"conv": 7})
    assert report.verification is not None and report.verification.max_rel_error <= MAX_REL
    assert assert_equivalent(src, out, {"x": [1, 3, 5, 5]}, TensorProto.FLOAT) <= MAX_REL
    assert _op_counts(out) == _op_counts(src)
    grown = load_model(out)
    mul = next(node for node in grown.graph if node.name == "scale")
    ref = find_constant(mul.inputs[1])
    assert ref is not None and ref.chain, "the chain was folded instead of kept"
    assert ref.root.name == "s" and ref.array().shape[-3:] == (7, 1, 1)
    assert set(grown.graph.initializers) == set(load_model(src).graph.initializers)


@pytest.mark.parametrize("kind", ["Unsqueeze attribute (opset 9)", "Reshape to [1, C, 1, 1]"])
def test_chain_shared_with_a_node_outside_the_group_is_left_to_it(kind: str, tmp_path: Path) -> None:
    src = _chain_model(tmp_path / "c.onnx", kind, shared=True)
    out = tmp_path / "w.onnx"
    report = onnxgrow.widen_file(src, out, {"conv": 7})
    assert report.verification is not None and report.verification.max_rel_error <= MAX_REL
    grown = load_model(out)
    side = next(node for node in grown.graph if node.name == "side")
    kept = find_constant(side.inputs[1])
    assert kept is not None and kept.array().shape[-3] == C and kept.root.name == "s"
    mul = next(node for node in grown.graph if node.name == "scale")
    own = find_constant(mul.inputs[1])
    assert own is not None and own.array().shape[-3] == 7 and own.root is not kept.root


def test_ir3_with_the_flag_or_without_is_the_same(tmp_path: Path) -> None:
    """The flag changes nothing before IR 4: the listed weights are constants either way."""
    src = zoo_patterns.resnet_like(tmp_path / "r.onnx")
    plain = onnxgrow.widen_file(src, tmp_path / "a.onnx", {"Conv_1": 6})
    flagged = onnxgrow.widen_file(src, tmp_path / "b.onnx", {"Conv_1": 6},
                                  options=GrowOptions(weights_as_constants=True))
    assert plain.verification is not None and flagged.verification is not None
    assert plain.verification.max_rel_error == flagged.verification.max_rel_error
    assert onnx.load(str(tmp_path / "a.onnx")).graph == onnx.load(str(tmp_path / "b.onnx")).graph


# ----- a real exporter: torch's legacy exporter with keep_initializers_as_inputs=True ---------
@pytest.mark.torch
def test_torch_legacy_export_with_weights_as_inputs(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
                              torch.nn.Conv2d(6, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 8 * 8, 3)).eval()
    src = tmp_path / "legacy.onnx"
    torch.onnx.export(net, (torch.randn(1, 3, 8, 8),), str(src), dynamo=False, keep_initializers_as_inputs=True,
                      input_names=["x"], opset_version=11)
    proto = onnx.load(str(src))
    assert proto.ir_version >= 4 and {t.name for t in proto.graph.initializer} <= {i.name for i in proto.graph.input}
    out = tmp_path / "w.onnx"
    with untouched(tmp_path):
        refused = run_cli("widen", src, "--node", "0", "--to", 9, "-o", out)
    assert_clean(refused, (2,))
    assert "is a model input (callers may replace it at run time)" in refused.stderr
    for name, width in (("0", 9), ("3", 8)):
        grown = tmp_path / f"{name}.onnx"
        result = run_cli("widen", src, "--node", name, "--to", width, "--weights-as-constants", "-o", grown)
        assert_clean(result, (0,))
        assert assert_equivalent(src, grown, {"x": [1, 3, 8, 8]}, TensorProto.FLOAT) <= MAX_REL
        assert {t.name for t in onnx.load(str(grown)).graph.initializer} <= \
            {i.name for i in onnx.load(str(grown)).graph.input}
