"""Growing TensorFlow-made models by their Keras (and scikit-learn) names, through every
route TensorFlow offers (:mod:`tf_zoo`): tf2onnx ``from_keras``, SavedModel and
``from_function``, Keras 3's ``model.export(format="onnx")``, tf.keras 2 via tf-keras, and
skl2onnx with and without ZipMap.

For every model and route: ``inspect`` lists the Keras names; each name, and the
converter's own forms, resolve to the layer; every hidden layer widens to n+1 and 2n and
deepens, and onnxruntime finds the grown model equal (max rel ≤ 1e-5). Recurrent layers
and ``tf.cond`` on the growth path are refused naming the op and the Keras layer.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onnxgrow import deepen, inspect_model, load_model, verify, widen
from onnxgrow.options import VerifyOptions
from onnxgrow.verification.compare import maps_as_array
from onnxgrow.widening.layers import find_layer, find_layers
from tests.helpers import tf_zoo
from tests.helpers.cli import assert_refused, run
from tests.helpers.export_cache import shared_directory

pytestmark = [pytest.mark.tf, pytest.mark.skipif(not tf_zoo.available(), reason=tf_zoo.MISSING_REASON)]

MAX_REL_ERROR = 1e-5
KERAS = [(model, route) for model in tf_zoo.KERAS_MODELS for route in tf_zoo.KERAS_ROUTES]
SKLEARN = [("mlp_classifier", route) for route in tf_zoo.SKLEARN_ROUTES]
BAD = [("td_mlp", "from_keras"), ("lstm", "from_keras"), ("gru", "from_keras"), ("cond", "from_function")]
MOBILENET_LAYERS = ("Conv1", "expanded_conv_project",
                    *(f"block_{i}_{part}" for i in range(1, 17) for part in ("expand", "project")), "Conv_1")
#: Every growable layer of each model by Keras name, in graph order; the last is the output layer.
LAYERS: dict[str, tuple[str, ...]] = {
    "seed_mlp": ("layer_1", "layer_2", "layer_3"),
    "mnist_cnn": ("conv1", "conv2", "fc1", "fc2"),
    "bn_resnet": ("stem", "conv1", "conv2", "fc"),
    "mobilenet_v2": (*MOBILENET_LAYERS, "predictions"),
    "mlp_classifier": ("coefs_[0]", "coefs_[1]", "coefs_[2]"),
}
Exports = Callable[[str, str], Path]


@pytest.fixture(scope="session")
def export(tmp_path_factory: pytest.TempPathFactory) -> Exports:
    """``export(model, route)``: the session's export (all converted once, in one process)."""
    directory = shared_directory(tmp_path_factory.getbasetemp(), "tf_zoo")

    def get(model: str, route: str) -> Path:
        return tf_zoo.export_all(directory, [*KERAS, *SKLEARN, *BAD])[model, route]

    return get


def hidden(model: str) -> tuple[str, ...]:
    return LAYERS[model][:-1]


def assert_exact(source: Path, grown: object) -> float:
    check = verify(source, grown, VerifyOptions(samples=2))  # type: ignore[arg-type]
    assert check.passed and check.max_rel_error <= MAX_REL_ERROR, check.summary()
    return check.max_rel_error


def _id(case: tuple[str, str]) -> str:
    return "-".join(case)


# ----- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", KERAS + SKLEARN, ids=_id)
def test_inspect_lists_the_keras_names(case: tuple[str, str], export: Exports) -> None:
    summary = inspect_model(export(*case))
    assert [layer.name for layer in summary.layers] == list(LAYERS[case[0]])


@pytest.mark.parametrize("case", [("mnist_cnn", route) for route in tf_zoo.KERAS_ROUTES], ids=_id)
def test_cli_inspect_prints_the_keras_name_in_the_name_column(case: tuple[str, str], export: Exports) -> None:
    code, out, _ = run("inspect", str(export(*case)))
    assert code == 0
    rows = out.split("layers (names to type after --node / --after):")[1].splitlines()[2:6]
    assert [row.split()[0] for row in rows] == ["conv1", "conv2", "fc1", "fc2"]


@pytest.mark.parametrize("case", KERAS + SKLEARN, ids=_id)
def test_every_name_form_resolves_to_its_layer(case: tuple[str, str], export: Exports) -> None:
    """The Keras name, the node's own name, and the converter's weight name all find the layer."""
    model = load_model(export(*case))
    layers, refused = find_layers(model)
    by_name = {layer.display: layer for layer in layers}
    for name in LAYERS[case[0]]:
        layer = by_name[name]
        for alias in (name, layer.node.name, *layer.names.full):
            if alias:
                assert find_layer(model, alias, layers, refused).node is layer.node, alias


def test_sklearn_hidden_layers_answer_to_hidden_i(export: Exports) -> None:
    model = load_model(export("mlp_classifier", "no_zipmap"))
    layers, refused = find_layers(model)
    for index in range(len(tf_zoo.SKLEARN_HIDDEN)):
        assert find_layer(model, f"hidden_{index}", layers, refused).display == f"coefs_[{index}]"
    with pytest.raises(Exception, match="no layer named 'hidden_2'"):
        find_layer(model, "hidden_2", layers, refused)


# ----- widen and deepen every hidden layer --------------------------------------------------------


@pytest.mark.parametrize("case", KERAS + SKLEARN, ids=_id)
def test_the_exports_depend_on_their_input(case: tuple[str, str], export: Exports) -> None:
    """So that the equivalence checks below can fail: random weights that saturate the
    network would give every input the same output."""
    session = ort.InferenceSession(str(export(*case)), providers=["CPUExecutionProvider"])
    arg = session.get_inputs()[0]
    shape = [2 if not isinstance(d, int) else d for d in arg.shape]
    rng = np.random.default_rng(0)
    a, b = (maps_as_array(session.run(None, {arg.name: rng.standard_normal(shape).astype(np.float32)})[-1])
            for _ in range(2))
    assert np.abs(a - b).max() > 1e-3 * np.abs(a).max()


@pytest.mark.parametrize("grow", ["n+1", "2n"])
@pytest.mark.parametrize("case", KERAS + SKLEARN, ids=_id)
def test_widen_every_hidden_layer(case: tuple[str, str], grow: str, export: Exports,
                                  record_property: Callable[[str, object], None]) -> None:
    """Each hidden layer alone, by its Keras name (MobileNetV2: 35 layers)."""
    source = export(*case)
    widths = {layer.display: layer.width for layer in find_layers(load_model(source))[0]}
    new = {name: widths[name] + 1 if grow == "n+1" else 2 * widths[name] for name in hidden(case[0])}
    errors = []
    for request in ({name: width} for name, width in new.items()):
        grown, _ = widen(load_model(source, infer_shapes=True), request)
        errors.append(assert_exact(source, grown))
        layers = {layer.display: layer.width for layer in find_layers(grown)[0]}
        assert all(layers[name] == width for name, width in request.items())
    record_property("max_rel_error", max(errors))


@pytest.mark.parametrize("case", KERAS + SKLEARN, ids=_id)
def test_deepen_after_every_hidden_layer(case: tuple[str, str], export: Exports,
                                         record_property: Callable[[str, object], None]) -> None:
    """One new layer after each hidden layer, in turn on the same model; then onnxruntime.
    Each insertion is exact alone, so the whole chain must be."""
    source = export(*case)
    model = load_model(source)
    modes = {}
    for name in hidden(case[0]):
        model, report = deepen(model, name)
        modes[name] = report.mode
    record_property("max_rel_error", assert_exact(source, model))
    assert all(mode != "residual" for mode in modes.values()), modes  # every hidden layer: ReLU/ReLU6 or none


@pytest.mark.parametrize("route", tf_zoo.KERAS_ROUTES)
def test_cli_widen_and_deepen_by_keras_name(route: str, export: Exports, tmp_path: Path) -> None:
    source = export("mnist_cnn", route)
    for args in (["widen", str(source), "--node", "fc1", "--to", "128"],
                 ["widen", str(source), "--node", "conv2", "--to", "65"],
                 ["deepen", str(source), "--after", "conv1"]):
        out = tmp_path / f"{args[0]}-{args[3]}.onnx"
        code, stdout, stderr = run(*args, "-o", str(out))
        assert code == 0 and "PASSED" in stdout, stderr
        assert out.exists()


@settings(max_examples=8, deadline=None)
@given(layer=st.sampled_from(["layer_1", "layer_2"]), extra=st.integers(1, 40),
       route=st.sampled_from(tf_zoo.KERAS_ROUTES))
def test_seed_mlp_widens_to_any_width(layer: str, extra: int, route: str, export: Exports) -> None:
    source = export("seed_mlp", route)
    width = {"layer_1": 4, "layer_2": 5}[layer] + extra
    grown, _ = widen(load_model(source, infer_shapes=True), {layer: width})
    assert_exact(source, grown)


# ----- placement on tf2onnx's Dense over 3-D input and Keras 3 BatchNorm ---------------------------


def test_dense_over_3d_input_deepens_after_bias_and_relu(export: Exports) -> None:
    source = export("td_mlp", "from_keras")
    summary = inspect_model(source)
    assert [(layer.name, layer.activation) for layer in summary.layers] == [("td_fc1", "Relu"), ("td_fc2", None)]
    grown, report = deepen(load_model(source), "td_fc1")
    assert report.mode == "identity" and report.activation == "Relu"
    assert report.tensor.endswith("td_fc1_1/Relu:0")
    assert_exact(source, grown)


@pytest.mark.parametrize("route", ["from_keras", "saved_model", "keras_onnx"])
def test_keras3_batchnorm_left_as_mul_add_gets_identity_and_relu(route: str, export: Exports) -> None:
    source = export("bn_resnet", route)
    ops = [node.op_type for node in load_model(source).graph]
    assert "BatchNormalization" not in ops and "Mul" in ops  # tf2onnx left the BatchNorms as Mul/Add
    for layer in ("stem", "conv1"):
        grown, report = deepen(load_model(source), layer)
        assert (report.mode, report.activation) == ("identity", "Relu"), layer
        assert_exact(source, grown)


# ----- skl2onnx's default ZipMap output ------------------------------------------------------------


def test_zipmap_model_grows_and_keeps_its_map_output(export: Exports, tmp_path: Path) -> None:
    source = export("mlp_classifier", "zipmap")
    out = tmp_path / "wide.onnx"
    code, stdout, stderr = run("widen", str(source), "--node", "hidden_0", "--to", "40", "-o", str(out))
    assert code == 0 and "PASSED" in stdout, stderr
    saved = onnx.load(out)
    onnx.checker.check_model(saved, full_check=True)
    assert saved.graph.output[1].type.sequence_type.elem_type.HasField("map_type")
    x = np.random.default_rng(0).random((3, 64), dtype=np.float32)
    before, after = (ort.InferenceSession(str(p)).run(None, {"x": x})[1] for p in (source, out))
    assert isinstance(after, list) and [sorted(d) for d in after] == [list(range(10))] * 3
    np.testing.assert_allclose([[d[k] for k in range(10)] for d in after],
                               [[d[k] for k in range(10)] for d in before], rtol=1e-5, atol=1e-7)


def test_verify_compares_the_map_values(export: Exports) -> None:
    """A change that only shows in the ZipMap probabilities fails the check."""
    source = export("mlp_classifier", "zipmap")
    model = load_model(source)
    bias = model.graph.initializers["intercepts2"]
    assert bias.const_value is not None
    changed = bias.const_value.numpy().copy()
    changed[..., 3] += 0.5
    bias.const_value = ir.tensor(changed, name=bias.name)
    check = verify(source, model)
    failed = [o.name for o in check.outputs if not o.passed]
    assert not check.passed and "output_probability" in failed


# ----- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "args", "message"), [
    (("lstm", "from_keras"), ["widen", "--node", "proj", "--to", "9"], "at LSTM node 'LSTM__"),
    (("lstm", "from_keras"), ["widen", "--node", "rnn", "--to", "9"], "'rnn' (LSTM node 'LSTM__"),
    (("lstm", "from_keras"), ["deepen", "--after", "rnn"], "cannot deepen after 'rnn': LSTM node 'LSTM__"),
    (("gru", "from_keras"), ["widen", "--node", "proj", "--to", "9"],
     "is a loop-carried value of Loop node 'gru_1/rnn_1/while_loop' (Keras layer 'rnn'), not a constant"),
    (("gru", "from_keras"), ["widen", "--node", "rnn", "--to", "9"], "'rnn' (Loop node 'gru_1/rnn_1/while_loop')"),
], ids=lambda v: "-".join(v) if isinstance(v, tuple) else None)
def test_tf_control_flow_on_the_growth_path_is_refused(case: tuple[str, str], args: list[str], message: str,
                                                      export: Exports, tmp_path: Path) -> None:
    source = tmp_path / "model.onnx"
    source.write_bytes(export(*case).read_bytes())
    out = tmp_path / "out.onnx"
    stderr = assert_refused(tmp_path, [args[0], str(source), *args[1:], "-o", str(out)], message, out)
    if case[0] in ("lstm", "gru"):  # the op and the Keras layer
        assert "(Keras layer 'rnn')" in stderr or "'rnn' (" in stderr, stderr
        assert "recurrent LSTM" in stderr or "no widening rule for op LSTM" in stderr or "Loop" in stderr, stderr


def test_tf_cond_on_the_growth_path_grows_through_both_branches(export: Exports, tmp_path: Path) -> None:
    """``fc1 → tf.cond(sum(x) > 0, h * 2, h - 1) → fc2``: both branches carry fc1's channels."""
    source = export("cond", "from_function")
    grown = tmp_path / "cond_grown.onnx"
    assert run("widen", str(source), "--node", "fc1", "--to", "9", "-o", str(grown))[0] == 0
    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (source, grown)]
    name = sessions[0].get_inputs()[0].name
    x = np.abs(np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32))
    for sample in (x, -x):  # the sum of the input decides the branch
        before, after = (session.run(None, {name: sample})[0] for session in sessions)
        np.testing.assert_allclose(after, before, rtol=MAX_REL_ERROR, atol=1e-6)


def test_lstm_is_listed_with_its_reason_under_its_keras_name(export: Exports) -> None:
    summary = inspect_model(export("lstm", "from_keras"))
    (lstm,) = [item for item in summary.not_growable if item.op == "LSTM"]
    assert lstm.name == "rnn" and re.search("recurrent LSTM has no widening or deepening rule", lstm.reason or "")
