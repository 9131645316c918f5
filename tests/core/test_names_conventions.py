"""Naming conventions of the converters whose graphs carry no framework module names:
Flax models through jax2tf + tf2onnx, Caffe2's ``gpu_0/`` blobs, IR-3 graphs whose only
names are the weight blobs', and Paddle's parameter names.

The graphs repeat the exact node and tensor names the converters write (jax 0.4.30 with
flax 0.8.5, jax2tf ``enable_xla=False``, tf2onnx 1.17; the Caffe2 model zoo's blob names),
with small random weights. Every layer's display name must be its own, and typing it must
widen that layer (``onnxgrow widen --node <display name>``, checked by onnxruntime).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxgrow
from onnxgrow.inspect import inspect_model
from onnxgrow.names import caffe2_layer, flax_module_path, keras_layer_path, names_of, resolve
from onnxgrow.widening.layers import find_layer, find_layers
from tests.helpers.cli import run

RNG = np.random.default_rng(0)


def _w(*shape: int) -> np.ndarray:
    return (0.3 * RNG.standard_normal(shape)).astype(np.float32)


def _model(nodes: list[onnx.NodeProto], inputs: dict[str, list[int | str]], output: str,
           weights: dict[str, np.ndarray], *, ir: int = 8, opset: int = 15,
           weights_as_inputs: bool = False) -> onnx.ModelProto:
    values = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n, shape in inputs.items()]
    if weights_as_inputs:  # IR 3: every initializer is also a graph input
        values += [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(a.shape)) for n, a in weights.items()]
    graph = helper.make_graph(nodes, "g", values, [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(a, n) for n, a in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir
    return model


# ----- Flax through jax2tf -----------------------------------------------------------------


def _dense(scope: str, x: str, weight: str, fan_in: int, units: int, *, einsum: bool,
           weights: dict[str, np.ndarray]) -> tuple[list[onnx.NodeProto], str]:
    """A Flax ``Dense`` as jax2tf + tf2onnx write it: the kernel under a generated ``Const_N:0``
    name, a MatMul named after ``dot_general``'s TensorFlow op (``einsum/Einsum`` on 3-D
    inputs), the bias reshaped to a named constant and added under ``pjit_add_``."""
    matmul = f"{scope}/einsum/Einsum" if einsum else f"{scope}/MatMul"
    bias = f"{scope}/Reshape:0"
    weights[weight] = _w(fan_in, units)
    weights[bias] = _w(*([1, 1, units] if einsum else [1, units]))
    nodes = [helper.make_node("MatMul", [x, weight], [f"{matmul}:0"], name=matmul),
             helper.make_node("Add", [f"{matmul}:0", bias], [f"{scope}/pjit_add_/AddV2:0"],
                              name=f"{scope}/pjit_add_/AddV2")]
    return nodes, f"{scope}/pjit_add_/AddV2:0"


def flax_mlp(*, einsum: bool) -> onnx.ModelProto:
    """``MLP``: Dense_0 (16) → relu → Dense_1 (12) → relu → Dense_2 (3), converted from
    ``lambda x: model.apply(params, x)``; ``einsum``: on [batch, 4, 5] inputs."""
    weights: dict[str, np.ndarray] = {"jax2tf__lambda__/MLP/Const:0": np.array(0, np.float32)}
    nodes: list[onnx.NodeProto] = []
    x, fan_in = "x", 5
    for k, units in enumerate((16, 12, 3)):
        dense, x = _dense(f"jax2tf__lambda__/MLP/Dense_{k}", x, f"Const_{2 * k + 1}:0", fan_in, units,
                          einsum=einsum, weights=weights)
        nodes += dense
        fan_in = units
        if k < 2:
            relu = "jax2tf__lambda__/MLP/pjit_relu_/Maximum" + (f"_{k}" if k else "")
            nodes.append(helper.make_node("Max", [x, "jax2tf__lambda__/MLP/Const:0"], [f"{relu}:0"], name=relu))
            x = f"{relu}:0"
    nodes[-1].output[0] = "Identity_1:0"
    return _model(nodes, {"x": ["unk__8", 4, 5] if einsum else ["unk__8", 5]}, "Identity_1:0", weights)


def flax_nested() -> onnx.ModelProto:
    """``Net``: Dense ``embed`` → two ``Block``\\ s (Dense_0 → relu → Dense_1, a residual add)
    → Dense ``head``; so ``Dense_0`` and ``Dense_1`` exist twice."""
    weights: dict[str, np.ndarray] = {"Const_11:0": np.array(0, np.float32)}
    nodes, x = _dense("jax2tf_predict_/Net/embed", "x", "Const_1:0", 5, 6, einsum=False, weights=weights)
    const = 3
    for block in (0, 1):
        scope = f"jax2tf_predict_/Net/Block_{block}"
        first, h = _dense(f"{scope}/Dense_0", x, f"Const_{const}:0", 6, 8, einsum=False, weights=weights)
        relu = helper.make_node("Max", [h, "Const_11:0"], [f"{scope}/pjit_relu_/Maximum:0"],
                                name=f"{scope}/pjit_relu_/Maximum")
        second, y = _dense(f"{scope}/Dense_1", f"{scope}/pjit_relu_/Maximum:0", f"Const_{const + 2}:0", 8, 6,
                           einsum=False, weights=weights)
        residual = helper.make_node("Add", [x, y], [f"{scope}/pjit_add_/AddV2:0"], name=f"{scope}/pjit_add_/AddV2")
        nodes += [*first, relu, *second, residual]
        x, const = f"{scope}/pjit_add_/AddV2:0", const + 4
    head, out = _dense("jax2tf_predict_/Net/head", x, "Const_15:0", 6, 3, einsum=False, weights=weights)
    return _model(nodes + head, {"x": ["unk__1", 5]}, out, weights)


def flax_cnn() -> onnx.ModelProto:
    """``CNN``: Conv_0 (8, 3×3 same) → relu → Conv_1 (8) → relu → global mean → Dense_0 (3);
    tf2onnx makes the NHWC input NCHW and names each kernel after its ``transpose``."""
    weights = {"new_shape__64": np.array([-1, 1, 6, 6], np.int64),
               "const_fold_opt__75": np.zeros((1, 1, 1, 1), np.float32)}
    nodes = [helper.make_node("Reshape", ["x", "new_shape__64"], ["jax2tf__lambda__/CNN/Conv_0/Conv2D__26:0"],
                              name="jax2tf__lambda__/CNN/Conv_0/Conv2D__26")]
    x, channels = "jax2tf__lambda__/CNN/Conv_0/Conv2D__26:0", 1
    for k in (0, 1):
        scope = f"jax2tf__lambda__/CNN/Conv_{k}"
        kernel, bias = f"{scope}/transpose_3:0", f"const_fold_opt__{70 + 4 * k}"
        weights[kernel], weights[bias] = _w(8, channels, 3, 3), _w(1, 8, 1, 1)
        relu = "jax2tf__lambda__/CNN/pjit_relu_/Maximum" + (f"_{k}" if k else "")
        nodes += [helper.make_node("Conv", [x, kernel], [f"{scope}/Conv2D:0"], name=f"{scope}/Conv2D",
                                   pads=[1, 1, 1, 1]),
                  helper.make_node("Add", [f"{scope}/Conv2D:0", bias], [f"{scope}/pjit_add_/AddV2:0"],
                                   name=f"{scope}/pjit_add_/AddV2"),
                  helper.make_node("Max", [f"{scope}/pjit_add_/AddV2:0", "const_fold_opt__75"], [f"{relu}:0"],
                                   name=relu)]
        x, channels = f"{relu}:0", 8
    nodes.append(helper.make_node("ReduceMean", [x], ["jax2tf__lambda__/CNN/Mean:0"], name="jax2tf__lambda__/CNN/Mean",
                                  axes=[2, 3], keepdims=0))
    dense, out = _dense("jax2tf__lambda__/CNN/Dense_0", "jax2tf__lambda__/CNN/Mean:0", "Const_6:0", 8, 3,
                        einsum=False, weights=weights)
    return _model(nodes + dense, {"x": ["unk__73", 6, 6, 1]}, out, weights, opset=15)


@pytest.mark.parametrize(("name", "path"), [
    ("jax2tf__lambda__/MLP/Dense_0/einsum/Einsum", "Dense_0"),
    ("jax2tf__lambda__/MLP/Dense_0/pjit_add_/AddV2", "Dense_0"),
    ("jax2tf__lambda__/MLP/Dense_0/add", "Dense_0"),
    ("jax2tf_predict_/Net/Block_1/Dense_0/MatMul", "Block_1/Dense_0"),
    ("StatefulPartitionedCall/jax2tf_predict_/Net/head/MatMul", "head"),
    ("jax2tf_predict_/Net/LayerNorm_0/BroadcastTo_1/shape_Concat__28", "LayerNorm_0"),
    ("jax2tf__lambda__/CNN/Conv_0/Conv2D", "Conv_0"),
    ("jax2tf__lambda__/MLP/pjit_relu_/Maximum", None),
    ("jax2tf__lambda__/CNN/avg_pool", None),
    ("sequential/dense_1/MatMul", None),
])
def test_flax_module_path(name: str, path: str | None) -> None:
    assert flax_module_path(name) == path


FLAX_CASES = {
    "mlp": (lambda: flax_mlp(einsum=False), ["Dense_0", "Dense_1", "Dense_2"]),
    "mlp-on-sequences": (lambda: flax_mlp(einsum=True), ["Dense_0", "Dense_1", "Dense_2"]),
    "nested": (flax_nested, ["embed", "Block_0/Dense_0", "Block_0/Dense_1", "Block_1/Dense_0", "Block_1/Dense_1",
                             "head"]),
    "cnn": (flax_cnn, ["Conv_0", "Conv_1", "Dense_0"]),
}


@pytest.mark.parametrize("case", sorted(FLAX_CASES))
def test_flax_layers_display_and_resolve_as_flax_prints_them(case: str, tmp_path: Path) -> None:
    make, expected = FLAX_CASES[case]
    path = tmp_path / f"{case}.onnx"
    onnx.save(make(), path)
    model = onnxgrow.load_model(path)
    layers, _ = find_layers(model)
    assert [layer.display for layer in layers] == expected
    assert all("einsum" not in layer.display for layer in layers)
    for layer in layers:
        assert find_layer(model, layer.display).node is layer.node


@pytest.mark.parametrize(("case", "layer"), [("mlp-on-sequences", "Dense_0"), ("nested", "Block_1/Dense_0"),
                                             ("cnn", "Conv_0"), ("mlp", "Dense_1")])
def test_widening_a_flax_layer_by_its_flax_name(case: str, layer: str, tmp_path: Path) -> None:
    src, out = tmp_path / f"{case}.onnx", tmp_path / "wide.onnx"
    onnx.save(FLAX_CASES[case][0](), src)
    code, stdout, stderr = run("widen", str(src), "--node", layer, "--to", "20", "-o", str(out))
    assert code == 0, stderr
    grown = [item for item in onnxgrow.inspect_model(out).layers if item.name == layer]
    assert len(grown) == 1 and grown[0].width == 20


# ----- Caffe2 and IR-3 -----------------------------------------------------------------------


def caffe2_shufflenet(device: str, ir: int, numbered: bool = False) -> onnx.ModelProto:
    """A Caffe2-style net as the ONNX model zoo ships it: nameless nodes (``numbered``: named
    ``n0``, ``n1``... in graph order), every tensor a blob (``gpu_0/conv1_1``, weights
    ``gpu_0/conv1_w_0``), grouped convs between plain ones (ShuffleNet's), a BatchNorm after
    the stem, the classifier ``pred``. IR 3 lists the weights as graph inputs too."""
    weights: dict[str, np.ndarray] = {}
    nodes: list[onnx.NodeProto] = []
    x, channels = f"{device}data_0", 3
    layers = [("conv1", 8, 1), ("gconv2", 8, 2), ("conv3", 8, 1), ("gconv4", 8, 4), ("conv5", 12, 1)]
    for name, out, group in layers:
        blob = f"{device}{name}"
        weights[f"{blob}_w_0"], weights[f"{blob}_b_0"] = _w(out, channels // group, 3, 3), _w(out)
        nodes.append(helper.make_node("Conv", [x, f"{blob}_w_0", f"{blob}_b_0"], [f"{blob}_1"], pads=[1, 1, 1, 1],
                                      group=group))
        x = f"{blob}_1"
        if name == "conv1":
            bn = f"{device}conv1_bn"
            weights.update({f"{bn}_s_0": _w(out) + 1, f"{bn}_b_0": _w(out), f"{bn}_rm_0": _w(out),
                            f"{bn}_riv_0": np.abs(_w(out)) + 1})
            nodes.append(helper.make_node("BatchNormalization", [x, f"{bn}_s_0", f"{bn}_b_0", f"{bn}_rm_0",
                                                                 f"{bn}_riv_0"], [f"{bn}_1"]))
            x = f"{bn}_1"
        nodes.append(helper.make_node("Relu", [x], [f"{blob}_2"]))
        x, channels = f"{blob}_2", out
    weights[f"{device}pred_w_0"], weights[f"{device}pred_b_0"] = _w(5, channels), _w(5)
    nodes += [helper.make_node("GlobalAveragePool", [x], [f"{device}pool_1"]),
              helper.make_node("Flatten", [f"{device}pool_1"], [f"{device}pool_2"]),
              helper.make_node("Gemm", [f"{device}pool_2", f"{device}pred_w_0", f"{device}pred_b_0"],
                               [f"{device}pred_1"], transB=1)]
    for k, node in enumerate(nodes if numbered else []):
        node.name = f"n{k}"
    return _model(nodes, {f"{device}data_0": [1, 3, 8, 8]}, f"{device}pred_1", weights, ir=ir, opset=9,
                  weights_as_inputs=ir < 4)


CAFFE2_LAYERS = ["conv1", "gconv2", "conv3", "gconv4", "conv5", "pred"]


@pytest.mark.parametrize(("name", "layer"), [
    ("gpu_0/conv1_w_0", ("conv1", "gpu_0/conv1")), ("conv1_b_0", ("conv1", "conv1")),
    ("gpu_0/res_conv1_bn_riv_0", ("res_conv1_bn", "gpu_0/res_conv1_bn")),
    ("gpu_0/res2_0_branch2a_w_0", ("res2_0_branch2a", "gpu_0/res2_0_branch2a")),
    ("gpu_0/conv1_1", None), ("conv2d_405.w_0", None), ("fc1.weight", None),
])
def test_caffe2_layer(name: str, layer: tuple[str, str] | None) -> None:
    assert caffe2_layer(name) == layer


def test_a_caffe2_device_scope_is_no_keras_layer() -> None:
    assert keras_layer_path("gpu_0/conv1_w_0", False) is None
    assert keras_layer_path("sequential/dense_1/MatMul/ReadVariableOp:0", False) == "sequential/dense_1"


@pytest.mark.parametrize(("device", "ir", "numbered"), [("gpu_0/", 4, False), ("gpu_0/", 3, False), ("", 3, False),
                                                   ("", 3, True)])
def test_caffe2_layers_display_their_blob_names(device: str, ir: int, numbered: bool, tmp_path: Path) -> None:
    """Each layer, growable or not, shows its own blob name (never the shared ``gpu_0``, nor
    a node name ``n7``), also in IR 3 where the weights are graph inputs; and the name finds it."""
    path = tmp_path / "caffe2.onnx"
    onnx.save(caffe2_shufflenet(device, ir, numbered), path)
    summary = inspect_model(path)
    shown = {item.name: item.op for item in [*summary.layers, *summary.not_growable]}
    assert shown == {**dict.fromkeys(CAFFE2_LAYERS[:-1], "Conv"), "pred": "Gemm"}
    model = onnxgrow.load_model(path)
    candidates = [names_of(node) for node in model.graph if node.op_type in ("Conv", "Gemm")]
    for layer in CAFFE2_LAYERS:
        assert resolve(layer, candidates).display == layer
        if device:
            assert resolve(f"{device}{layer}", candidates).display == layer


def test_growing_a_caffe2_layer_by_its_blob_name(tmp_path: Path) -> None:
    """conv5 (before the classifier) widens; conv1 feeds a grouped conv, so it deepens."""
    src, out = tmp_path / "caffe2.onnx", tmp_path / "grown.onnx"
    onnx.save(caffe2_shufflenet("gpu_0/", 4), src)
    for args in (["widen", "--node", "conv5", "--to", "16"], ["widen", "--node", "gpu_0/conv5", "--to", "14"],
                 ["deepen", "--after", "conv1"]):
        code, stdout, stderr = run(args[0], str(src), *args[1:], "-o", str(out))
        assert code == 0, stderr
        out.unlink()


# ----- Paddle --------------------------------------------------------------------------------


def test_paddle_parameter_names_stay_the_display(tmp_path: Path) -> None:
    """paddle2onnx keeps Paddle's parameter names (``conv2d_405.w_0``): the best name there is."""
    weights = {"conv2d_405.w_0": _w(4, 3, 3, 3), "conv2d_405.b_0": _w(4), "linear_0.w_0": _w(4, 2),
               "linear_0.b_0": _w(2), "shape": np.array([-1, 4], np.int64)}
    nodes = [helper.make_node("Conv", ["x", "conv2d_405.w_0", "conv2d_405.b_0"], ["conv2d_0.tmp_0"], name="p2o.Conv.0",
                              pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv2d_0.tmp_0"], ["relu_0.tmp_0"], name="p2o.Relu.0"),
             helper.make_node("GlobalAveragePool", ["relu_0.tmp_0"], ["pool2d_0.tmp_0"],
                              name="p2o.GlobalAveragePool.0"),
             helper.make_node("Reshape", ["pool2d_0.tmp_0", "shape"], ["flatten_0.tmp_0"], name="p2o.Reshape.0"),
             helper.make_node("MatMul", ["flatten_0.tmp_0", "linear_0.w_0"], ["linear_0.tmp_0"], name="p2o.MatMul.0"),
             helper.make_node("Add", ["linear_0.tmp_0", "linear_0.b_0"], ["linear_0.tmp_1"], name="p2o.Add.0")]
    src, out = tmp_path / "paddle.onnx", tmp_path / "wide.onnx"
    onnx.save(_model(nodes, {"x": [1, 3, 6, 6]}, "linear_0.tmp_1", weights, opset=11), src)
    model = onnxgrow.load_model(src)
    assert [layer.display for layer in find_layers(model)[0]] == ["conv2d_405.w_0", "linear_0.w_0"]
    code, stdout, stderr = run("widen", str(src), "--node", "conv2d_405.w_0", "--to", "6", "-o", str(out))
    assert code == 0, stderr


# ----- a name many nodes share ---------------------------------------------------------------


def test_nodes_sharing_their_first_name_show_distinct_ones(tmp_path: Path) -> None:
    """Two GRUs (not growable) whose scopes end alike (``enc/gru``, ``dec/gru``) both answer
    first to ``gru``: each shows the first of its names that is its own, and typing that name
    names its node."""
    weights = {f"{scope}/gru/{part}": _w(1, 12, 4) for scope in ("enc", "dec") for part in ("W", "R")}
    nodes = [helper.make_node("GRU", ["x", f"{scope}/gru/W", f"{scope}/gru/R"], [f"{scope}_y"],
                              name=f"{scope}/gru/GRU", hidden_size=4) for scope in ("enc", "dec")]
    src = tmp_path / "recurrent.onnx"
    model = _model(nodes, {"x": [2, 1, 4]}, "enc_y", weights)
    model.graph.output.append(helper.make_tensor_value_info("dec_y", TensorProto.FLOAT, None))
    onnx.save(model, src)
    shown = [item.name for item in inspect_model(src).not_growable]
    assert shown == ["enc/gru", "dec/gru"]
    for name, node in zip(shown, ("enc/gru/GRU", "dec/gru/GRU")):
        code, stdout, stderr = run("widen", str(src), "--node", name, "--to", "6", "-o", str(tmp_path / "w.onnx"))
        assert code == 2 and f"error: {name!r} (GRU node {node!r}) cannot be widened: a recurrent GRU" in stderr, stderr
