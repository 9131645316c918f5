"""``onnxgrow deepen`` (docs/design.md §5) on the reference fixtures and on ONNX graphs
written here: exactness in every mode where it is exact, --width, names, lineage,
inspect, the activation analysis, refusals through the CLI, and random networks.

Exactness is judged twice: by onnxgrow's own check on the written file, and by
:func:`tests.helpers.deepen.max_rel_error` (onnxruntime, optimisations off, other inputs).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from onnxgrow import deepen, deepen_file, inspect_model, load_model, save_model
from onnxgrow.deepening.activation import ActivationKind, find_insertion_point
from onnxgrow.errors import GrowError, RefusedError
from onnxgrow.lineage import describe, read_history
from onnxgrow.options import GrowOptions, VerifyOptions
from onnxgrow.shapes import infer_shapes
from onnxgrow.widening.layers import find_layer, find_layers
from tests.helpers import deepen as h
from tests.helpers.cli import tree_hashes
from tests.helpers.paths import REFERENCE_MODELS, fixture_path

#: What ``auto`` does after each reference layer: (mode, activation label).
REFERENCE_AUTO = {
    "mlp": {"layer_1": ("identity", "Relu"), "layer_2": ("identity", "Relu"), "layer_3": ("identity", None)},
    "mnist_cnn": {"conv1": ("identity", "Relu"), "conv2": ("identity", "Relu"), "fc1": ("identity", "Relu"),
                  "fc2": ("residual", "Softmax")},
}


def _family(fixture: str) -> str:
    return fixture.rsplit("_", 1)[0]


def _new_op_types(path: Path, report_nodes: list[str]) -> list[str]:
    model = onnx.load(str(path), load_external_data=False)
    by_name = {n.name: n.op_type for n in model.graph.node}
    return [by_name[name] for name in report_nodes]


# ----- reference fixtures: every layer, every exact mode ------------------------------
@pytest.mark.parametrize("fixture", REFERENCE_MODELS)
def test_reference_every_layer_in_every_exact_mode(fixture: str, tmp_path: Path,
                                                   fixture_copy: Callable[[str], Path]) -> None:
    source = fixture_copy(fixture)
    expected = REFERENCE_AUTO[_family(fixture)]
    assert [layer.display for layer in find_layers(load_model(source))[0]] == list(expected)
    for layer, (auto_mode, activation) in expected.items():
        modes = ["auto", "residual"] + (["identity"] if auto_mode == "identity" else [])
        for mode in modes:
            out = tmp_path / f"{layer}_{mode}.onnx"
            report = deepen_file(source, out, layer, mode=mode)
            assert report.mode == (auto_mode if mode == "auto" else mode)
            assert report.activation == activation
            assert report.verification is not None and report.verification.passed
            assert h.max_rel_error(source, out) <= h.RTOL, (layer, mode)
            grown = load_model(out)
            new = find_layer(grown, f"{layer}_deep")
            assert new.width == report.layer_width == find_layer(grown, layer).width
            layer_op = new.op_type
            copied = [activation] if activation else []
            expected_ops = [layer_op, *copied]
            if report.mode == "residual":
                expected_ops += [layer_op, "Add"]
            assert _new_op_types(out, report.new_nodes) == expected_ops


def test_identity_conv_keeps_kernel_and_is_the_identity(tmp_path: Path,
                                                        fixture_copy: Callable[[str], Path]) -> None:
    source = fixture_copy("mnist_cnn_legacy")
    out = tmp_path / "out.onnx"
    deepen_file(source, out, "conv2", mode="identity")
    model = onnx.load(str(out))
    conv = next(n for n in model.graph.node if n.name == "conv2_deep/Conv")
    attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
    assert attrs == {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [1, 1], "dilations": [1, 1],
                     "group": 1}
    weights = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    w = weights["conv2_deep.weight"]
    assert w.shape == (64, 64, 3, 3)
    expected = np.zeros_like(w)
    expected[np.arange(64), np.arange(64), 1, 1] = 1.0
    np.testing.assert_array_equal(w, expected)
    np.testing.assert_array_equal(weights["conv2_deep.bias"], np.zeros(64, np.float32))


def test_residual_branch_starts_at_zero_and_identity(tmp_path: Path,
                                                     fixture_copy: Callable[[str], Path]) -> None:
    source = fixture_copy("mlp_legacy")
    out = tmp_path / "out.onnx"
    report = deepen_file(source, out, "layer_1", mode="residual")
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer}
    np.testing.assert_array_equal(weights["layer_1_deep.weight"], np.eye(4, dtype=np.float32))
    assert not weights["layer_1_deep_out.weight"].any() and not weights["layer_1_deep_out.bias"].any()
    assert report.new_nodes == ["layer_1_deep/Gemm", "layer_1_deep/Relu", "layer_1_deep_out/Gemm",
                                "layer_1_deep/residual_add"]


# ----- every kind of layer deepened after ----------------------------------------------
#: layer op type with a deepening kind -> a network whose ``layer_0`` has that op.
KIND_CASES = {
    "Gemm": h.NetSpec("gemm", 2, 3, [4, 5, 2], ["relu", "tanh"], [False, False]),
    "MatMul": h.NetSpec("matmul", 3, 3, [4, 5, 2], ["relu", "sigmoid"], [False, False]),
    "Conv": h.NetSpec("conv", 2, 2, [4, 3, 2], ["relu", "none"], [True, False], kernels=[3, 1], strides=[1, 2]),
}


@pytest.mark.parametrize("op", sorted(KIND_CASES))
@pytest.mark.parametrize("mode", ["identity", "residual"])
def test_every_layer_kind_deepens_exactly(op: str, mode: str, tmp_path: Path) -> None:
    source = tmp_path / "net.onnx"
    onnx.save(h.build_net(KIND_CASES[op], seed=1), source)
    assert find_layer(load_model(source, infer_shapes=True), "layer_0").op_type == op
    out = tmp_path / "out.onnx"
    report = deepen_file(source, out, "layer_0", mode=mode)
    assert report.mode == mode and report.verification is not None and report.verification.passed
    assert h.max_rel_error(source, out) <= h.RTOL
    assert find_layer(load_model(out, infer_shapes=True), "layer_0_deep").op_type == op


# ----- --width ------------------------------------------------------------------------
@pytest.mark.parametrize("fixture", ["mlp_legacy", "mlp_dynamo"])
def test_width_turns_4_5_2_into_4_5_7_2(fixture: str, tmp_path: Path,
                                        fixture_copy: Callable[[str], Path]) -> None:
    source = fixture_copy(fixture)
    out = tmp_path / "out.onnx"
    result = h.run_cli("deepen", source, "--after", "layer_2", "--width", "7", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert "widened layer_2_deep: 5 → 7" in result.stdout and "PASSED" in result.stdout
    grown = load_model(out)
    assert [(layer.display, layer.width) for layer in find_layers(grown)[0]] == [
        ("layer_1", 4), ("layer_2", 5), ("layer_2_deep", 7), ("layer_3", 2)]
    shapes = {name: v.const_value.shape.numpy() for name, v in grown.graph.initializers.items()}
    assert shapes["layer_2_deep.weight"] == (7, 5) and shapes["layer_3.weight"] == (2, 7)
    assert h.max_rel_error(source, out) <= h.RTOL
    history = read_history(grown)
    assert [e["op"] for e in history] == ["deepen", "widen"]
    assert history[0]["new_nodes"] == ["layer_2_deep"] and history[1]["node"] == "layer_2_deep"
    assert all(e["max_rel_error"] <= h.RTOL for e in history)


@pytest.mark.parametrize(("fixture", "after", "mode", "width"), [
    ("mnist_cnn_dynamo", "conv1", "auto", 80),  # identity conv + Relu, external data
    ("mnist_cnn_legacy", "fc1", "residual", 100),
    ("mlp_legacy", "layer_3", "residual", 6),  # after the last layer: the branch ends in width 2
])
def test_width_is_exact(fixture: str, after: str, mode: str, width: int, tmp_path: Path,
                        fixture_copy: Callable[[str], Path]) -> None:
    source = fixture_copy(fixture)
    out = tmp_path / "out.onnx"
    report = deepen_file(source, out, after, mode=mode, width=width)
    assert report.widened is not None and report.width == width
    assert find_layer(load_model(out), f"{after}_deep").width == width
    assert h.max_rel_error(source, out) <= h.RTOL


def test_width_refused_by_widening_leaves_the_model_unchanged() -> None:
    model = load_model(fixture_path("mnist_cnn_legacy"))
    before = ir.serde.serialize_model(model).SerializeToString()
    with pytest.raises(RefusedError, match="cannot deepen after 'fc2' with --width 20: cannot widen 'fc2_deep' "
                                           "at Softmax node 'fc2_deep/Softmax'"):
        deepen(model, "fc2", mode="residual", width=20)
    assert ir.serde.serialize_model(model).SerializeToString() == before


# ----- names, lineage, interface, inspect --------------------------------------------
def test_new_layers_get_readable_unique_names(tmp_path: Path) -> None:
    model = load_model(fixture_path("mnist_cnn_dynamo"))
    deepen(model, "fc1")
    deepen(model, "fc1", mode="residual")
    deepen(model, "fc1_deep")
    names = [layer.display for layer in find_layers(model)[0]]
    assert names == ["conv1", "conv2", "fc1", "fc1_deep_2", "fc1_deep_2_out", "fc1_deep", "fc1_deep_deep", "fc2"]
    assert {"fc1_deep.weight", "fc1_deep_2_out.bias", "fc1_deep_deep.weight"} <= set(model.graph.initializers)
    out = tmp_path / "out.onnx"
    save_model(model, out)
    assert h.max_rel_error(fixture_path("mnist_cnn_dynamo"), out) <= h.RTOL


@pytest.mark.parametrize(("fixture", "after"), [("mlp_legacy", "layer_3"), ("mlp_dynamo", "layer_3"),
                                                ("mnist_cnn_legacy", "fc2")])
def test_after_the_last_layer_keeps_the_output_names(fixture: str, after: str, tmp_path: Path,
                                                     fixture_copy: Callable[[str], Path]) -> None:
    source = fixture_copy(fixture)
    out = tmp_path / "out.onnx"
    deepen_file(source, out, after)
    original, grown = onnx.load(str(source)), onnx.load(str(out))
    assert [o.name for o in grown.graph.output] == [o.name for o in original.graph.output]
    assert f"{after}_deep_input" in {v for n in grown.graph.node for v in n.output}
    assert h.max_rel_error(source, out) <= h.RTOL


def test_lineage_records_the_insertion(tmp_path: Path, fixture_copy: Callable[[str], Path]) -> None:
    source = fixture_copy("mnist_cnn_dynamo")
    out = tmp_path / "out.onnx"
    deepen_file(source, out, "fc2", seed=3)
    (entry,) = read_history(load_model(out))
    assert {k: entry[k] for k in ("op", "after", "mode", "activation", "width", "new_nodes", "seed")} == {
        "op": "deepen", "after": "fc2", "mode": "residual", "activation": "Softmax", "width": 10,
        "new_nodes": ["fc2_deep", "fc2_deep_out"], "seed": 3}
    assert entry["max_rel_error"] <= h.RTOL and entry["verified_with"] == "CPUExecutionProvider"
    assert describe(entry).startswith("layer inserted after fc2 (residual, width 10), seed 3")


def test_no_verify_writes_without_measuring(tmp_path: Path, fixture_copy: Callable[[str], Path]) -> None:
    source = fixture_copy("mlp_legacy")
    out = tmp_path / "out.onnx"
    result = h.run_cli("deepen", source, "--after", "layer_1", "--no-verify", "-o", out)
    assert result.exit_code == 0 and "verification skipped (--no-verify)" in result.stdout
    (entry,) = read_history(load_model(out))
    assert "max_rel_error" not in entry
    assert h.max_rel_error(source, out) <= h.RTOL


def test_inspect_lists_the_deepen_mode() -> None:
    for fixture in REFERENCE_MODELS:
        summary = inspect_model(fixture_path(fixture))
        expected = {
            layer: (f"identity+{act}" if act else "identity") if mode == "identity" else f"residual ({act})"
            for layer, (mode, act) in REFERENCE_AUTO[_family(fixture)].items()
        }
        assert {info.name: info.deepen for info in summary.layers} == expected
    result = h.run_cli("inspect", fixture_path("mnist_cnn_legacy"))
    assert "DEEPEN" in result.stdout and "residual (Softmax)" in result.stdout
    data = json.loads(h.run_cli("inspect", fixture_path("mlp_dynamo"), "--json", "-").stdout)
    assert [layer["deepen"] for layer in data["layers"]] == ["identity+Relu", "identity+Relu", "identity"]


# ----- the activation analysis --------------------------------------------------------
@pytest.mark.parametrize(("act", "kind", "label"), [
    ("none", ActivationKind.NONE, None),
    ("relu", ActivationKind.IDEMPOTENT, "Relu"),
    ("relu6", ActivationKind.IDEMPOTENT, "Clip"),
    ("hardtanh", ActivationKind.IDEMPOTENT, "Clip"),
    ("max_min", ActivationKind.IDEMPOTENT, "2-op Max/Min"),
    ("leaky_relu", ActivationKind.OTHER, "LeakyRelu"),
    ("sigmoid", ActivationKind.OTHER, "Sigmoid"),
    ("softplus", ActivationKind.OTHER, "Softplus"),
    ("gelu_erf", ActivationKind.OTHER, "5-op Div/Erf/Add/Mul"),
    ("silu", ActivationKind.OTHER, "2-op Sigmoid/Mul"),
])
@pytest.mark.parametrize("batch_norm", [False, True])
def test_activation_kinds(act: str, kind: ActivationKind, label: str | None, batch_norm: bool) -> None:
    spec = h.NetSpec("matmul", 2, 3, [4, 2], [act], [batch_norm])
    model = ir.serde.deserialize_model(h.build_net(spec))
    infer_shapes(model)  # as deepen and inspect do: constants are matched against the value's shape
    layer = find_layer(model, "layer_0")
    point = find_insertion_point(layer.node)
    assert (point.kind, point.label) == (kind, label)
    start_op = "BatchNormalization" if batch_norm else "Add"  # over the bias Add, then the BatchNorm
    assert point.start.producer().op_type == start_op
    (consumer,) = point.tensor.consumers()
    assert consumer.op_type == "MatMul" and consumer.name.startswith("layer_1/")


def _hand_model(nodes: list[onnx.NodeProto], outputs: list[str], inits: list[onnx.TensorProto]) -> ir.Model:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return ir.serde.deserialize_model(proto)


def _gemm_inits(rng: np.random.Generator) -> list[onnx.TensorProto]:
    return [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n)
            for n, s in (("fc1.weight", (4, 3)), ("fc1.bias", (4,)), ("fc2.weight", (2, 4)), ("fc2.bias", (2,)))]


def test_training_dropout_and_scaled_relu_are_not_idempotent() -> None:
    rng = np.random.default_rng(0)
    inits = _gemm_inits(rng) + [numpy_helper.from_array(np.array(True), "train"),
                                numpy_helper.from_array(rng.uniform(1, 2, 4).astype(np.float32), "scale")]
    for tail in (helper.make_node("Dropout", ["r", "", "train"], ["a"], name="drop"),
                 helper.make_node("Mul", ["r", "scale"], ["a"], name="scale_mul")):
        model = _hand_model([
            helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["h"], name="fc1", transB=1),
            helper.make_node("Relu", ["h"], ["r"], name="relu"), tail,
            helper.make_node("Gemm", ["a", "fc2.weight", "fc2.bias"], ["y"], name="fc2", transB=1),
        ], ["y"], inits)
        infer_shapes(model)
        point = find_insertion_point(find_layer(model, "fc1").node)
        assert point.kind is ActivationKind.OTHER and point.label == f"2-op Relu/{tail.op_type}"


def test_a_pre_activation_model_output_ends_the_search(tmp_path: Path) -> None:
    """``h`` is both a model output and the Relu's input: the layer goes right after ``fc1``."""
    model = _hand_model([
        helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("Gemm", ["r", "fc2.weight", "fc2.bias"], ["y"], name="fc2", transB=1),
    ], ["h", "y"], _gemm_inits(np.random.default_rng(1)))
    source = tmp_path / "two_outputs.onnx"
    save_model(model, source)
    out = tmp_path / "out.onnx"
    report = deepen_file(source, out, "fc1")
    assert (report.mode, report.activation, report.tensor) == ("identity", None, "h")
    assert [o.name for o in onnx.load(str(out)).graph.output] == ["h", "y"]
    assert h.max_rel_error(source, out) <= h.RTOL


def test_the_check_catches_an_inexact_insertion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forcing ``identity`` after a Sigmoid (sigmoid∘sigmoid ≠ sigmoid) must fail both checks."""
    from onnxgrow.deepening import api

    source = tmp_path / "sigmoid.onnx"
    onnx.save(h.build_net(h.NetSpec("gemm", 2, 3, [6, 2], ["sigmoid"], [False])), source)
    monkeypatch.setattr(api, "_choose_mode", lambda mode, point, after: api.Mode.IDENTITY)
    out = tmp_path / "out.onnx"
    result = h.run_cli("deepen", source, "--after", "layer_0", "-o", out)
    assert result.exit_code == 1 and "not equivalent" in result.stderr and not out.exists()
    deepen_file(source, out, "layer_0", options=GrowOptions(verify=None))
    assert h.max_rel_error(source, out) > 1e-3


# ----- refusals through the CLI -------------------------------------------------------
def test_refuses_an_unknown_name(fixture_copy: Callable[[str], Path]) -> None:
    h.assert_refused(fixture_copy("mlp_dynamo"), "--after", "layer_9", message="no layer named 'layer_9'")


@pytest.mark.parametrize("width", ["5", "3"])
def test_refuses_a_width_not_larger_than_the_layer(width: str, fixture_copy: Callable[[str], Path]) -> None:
    h.assert_refused(fixture_copy("mlp_legacy"), "--after", "layer_2", "--width", width,
                     message=f"--width {width} must be larger than the width of 'layer_2' (5)")


def test_refuses_identity_after_a_non_idempotent_activation(fixture_copy: Callable[[str], Path]) -> None:
    h.assert_refused(fixture_copy("mnist_cnn_dynamo"), "--after", "fc2", "--mode", "identity",
                     message="--mode identity after 'fc2' is not exact: its activation Softmax (from Softmax node "
                             "'node_softmax') is not idempotent")


@pytest.mark.parametrize(("fixture", "mode"), [("mlp_dynamo", "auto"), ("mlp_legacy", "identity")])
def test_refuses_width_after_the_last_layer(fixture: str, mode: str,
                                            fixture_copy: Callable[[str], Path]) -> None:
    h.assert_refused(fixture_copy(fixture), "--after", "layer_3", "--width", "7", "--mode", mode,
                     message="--width after 'layer_3', the model's last layer, would change the shape of "
                             "model output")


def test_refuses_a_width_the_widening_cannot_honour(fixture_copy: Callable[[str], Path]) -> None:
    h.assert_refused(fixture_copy("mnist_cnn_dynamo"), "--after", "fc2", "--width", "20",
                     message="cannot widen 'fc2_deep' at Softmax node 'fc2_deep/Softmax'")


def test_refuses_to_overwrite_the_input(tmp_path: Path, fixture_copy: Callable[[str], Path]) -> None:
    source = fixture_copy("mlp_legacy")
    before = tree_hashes(tmp_path)
    result = h.run_cli("deepen", source, "--after", "layer_1", "-o", source)
    assert result.exit_code == 2 and "refusing to overwrite the input" in result.stderr
    assert tree_hashes(tmp_path) == before


@pytest.mark.parametrize(("args", "message"), [
    (["--mode", "bogus"], "Invalid value for '--mode'"),
    (["--width", "wide"], "Invalid value for '--width'"),
    ([], "give --after NAME (insert a layer after a layer) or --block NAME"),
])
def test_usage_errors_exit_2_and_write_nothing(args: list[str], message: str, tmp_path: Path,
                                               fixture_copy: Callable[[str], Path]) -> None:
    source = fixture_copy("mlp_legacy")
    before = tree_hashes(tmp_path)
    after = [] if not args else ["--after", "layer_1"]
    result = h.run_cli("deepen", source, *after, *args, "-o", tmp_path / "out.onnx")
    assert result.exit_code == 2 and message in result.stderr
    assert tree_hashes(tmp_path) == before


def test_api_rejects_bad_arguments() -> None:
    model = load_model(fixture_path("mlp_legacy"))
    with pytest.raises(GrowError, match="unknown --mode 'deep'"):
        deepen(model, "layer_1", mode="deep")
    with pytest.raises(GrowError, match="--width must be an integer"):
        deepen(model, "layer_1", width=6.0)  # type: ignore[arg-type]


# ----- random networks ----------------------------------------------------------------
@st.composite
def net_specs(draw: st.DrawFn) -> h.NetSpec:
    kind = draw(st.sampled_from(["gemm", "matmul", "conv"]))
    hidden = draw(st.integers(1, 3))
    widths = draw(st.lists(st.integers(2, 7), min_size=hidden + 1, max_size=hidden + 1))
    acts = draw(st.lists(st.sampled_from(("none", *h.IDEMPOTENT_ACTS, *h.OTHER_ACTS)),
                         min_size=hidden, max_size=hidden))
    rank = draw(st.sampled_from([2, 3] if kind == "matmul" else [1, 2])) if kind != "gemm" else 2
    no_bn = kind == "matmul" and rank == 3
    batch_norm = [False] * hidden if no_bn else draw(st.lists(st.booleans(), min_size=hidden, max_size=hidden))
    kernels = draw(st.lists(st.integers(1, 4), min_size=hidden, max_size=hidden)) if kind == "conv" else []
    strides = draw(st.lists(st.integers(1, 2), min_size=hidden, max_size=hidden)) if kind == "conv" else []
    return h.NetSpec(kind, rank, draw(st.integers(1, 4)), widths, acts, batch_norm, kernels, strides)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=net_specs(), data=st.data())
def test_random_networks(spec: h.NetSpec, data: st.DataObject,
                         tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("random")
    source = folder / "net.onnx"
    onnx.save(h.build_net(spec, seed=data.draw(st.integers(0, 1000), "weights seed")), source)
    index = data.draw(st.integers(0, len(spec.widths) - 1), "layer")
    act = spec.acts[index] if index < len(spec.acts) else "none"
    exact_modes = ["auto", "residual"] + ([] if act in h.OTHER_ACTS else ["identity"])
    mode = data.draw(st.sampled_from(exact_modes), "mode")
    width = data.draw(st.one_of(st.none(), st.integers(1, 3).map(lambda d: spec.widths[index] + d)), "width")
    resolved = "residual" if mode == "residual" or act in h.OTHER_ACTS else "identity"
    event(f"{spec.kind}, {resolved}, {'--width' if width else 'no width'}")
    out = folder / "out.onnx"
    if width is not None and resolved == "identity" and index == len(spec.widths) - 1:
        with pytest.raises(RefusedError, match="the model's last layer"):
            deepen_file(source, out, f"layer_{index}", mode=mode, width=width)
        assert not out.exists()
        return
    check = VerifyOptions(samples=2, seed=data.draw(st.integers(0, 99), "check seed"))
    report = deepen_file(source, out, f"layer_{index}", mode=mode, width=width, options=GrowOptions(check))
    assert report.mode == resolved
    assert h.max_rel_error(source, out) <= h.RTOL
    assert find_layer(load_model(out), f"layer_{index}_deep").width == (width or spec.widths[index])
    if act in h.OTHER_ACTS:
        with pytest.raises(RefusedError, match="is not idempotent"):
            deepen(load_model(source), f"layer_{index}", mode="identity")
