"""Block maps (docs/design.md §1): grouped convolutions and channel shuffles.

A grouped convolution's copies must stay in their unit's group, and a grouped layer reading
the channels divides within each group, so the channels widen in equal blocks, each alike;
a new width the block count does not divide is refused, one line naming the node.

Graphs: PyTorch's two exporters (``nn.Conv2d(groups=...)``, a ShuffleNet-v1 unit with its
channel shuffle ``Reshape → Transpose → Reshape``, ``nn.ConvTranspose2d``), the Caffe2-era
AlexNet of the model zoo rebuilt to its pattern with ``onnx.helper`` (opset 9: grouped conv2,
conv4 and conv5, LRN after conv1 and conv2, a Reshape to ``[1, features]`` before fc6), and
hypothesis-chosen grouped pairs. Every widening is compared with the original in onnxruntime
(max relative error ≤ 1e-5) on a model whose outputs depend on the widened layer.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from onnxgrow import RefusedError, load_model, verify, widen
from onnxgrow.widening import WidenReport, find_layer
from tests.helpers.cli import assert_refused
from tests.helpers.graphs import assert_widens_exactly, save_graph, weights

pytest.importorskip("torch")

import torch
from torch import nn

from tests.helpers.export import export_onnx, seeded

EXPORTERS = ["dynamo", "legacy"]


def widens_exactly(path: Path, layer: str, q: int) -> WidenReport:
    """:func:`assert_widens_exactly`, on a model whose outputs do depend on ``layer``: the same
    widening with ``random-pad`` (new units read with random weights) is seen to change them."""
    report = assert_widens_exactly(path, layer, q)
    grown, _ = widen(load_model(path), {layer: q}, init="random-pad")
    assert not verify(path, grown).passed, f"the outputs do not depend on {layer}"
    return report


def refused(path: Path, layer: str, q: int) -> str:
    """The refusal's message for widening ``layer`` to ``q`` (the test fails if it widens)."""
    with pytest.raises(RefusedError) as caught:
        widen(load_model(path), {layer: q})
    return str(caught.value)


# ----- hypothesis: a grouped producer read by a grouped contractor ----------------------


@settings(max_examples=15, deadline=None)
@given(g1=st.sampled_from([1, 2, 3]), g2=st.sampled_from([1, 2, 3]), per=st.integers(1, 2),
       extra=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_grouped_producer_and_contractor(g1: int, g2: int, per: int, extra: int, seed: int) -> None:
    """``conv (group g1) → Relu → conv (group g2)``: exact when the new width is a multiple of
    ``lcm(g1, g2)`` (the blocks both need), else refused naming the grouped node that needs them."""
    rng = np.random.default_rng(seed)
    blocks = math.lcm(g1, g2)
    m = 2 * blocks * per  # channels of the widened layer (two or more per group: no depthwise reader)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], name="grouped", group=g1, pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="reader", group=g2)]
    inits = {"w1": weights(rng, m, 6 // g1, 3, 3), "b1": weights(rng, m), "w2": weights(rng, 6, m // g2, 1, 1)}
    q = m + extra
    with tempfile.TemporaryDirectory(prefix="onnxgrow-blocks-") as tmp:
        path = save_graph(Path(tmp) / "grouped.onnx", nodes, {"x": [2, 6, 4, 4]}, ["y"], inits)
        if q % blocks == 0:
            assert_widens_exactly(path, "grouped", q)
            return
        message = refused(path, "grouped", q)
    needs = "grouped" if g1 == blocks else "reader"
    assert f"at Conv node '{needs}': grouped convolution" in message, message
    assert f"the new width must be a multiple of {blocks}" in message and f"{q} is not" in message, message


# ----- the Caffe2-era AlexNet, rebuilt to the model zoo's pattern ----------------------------

ALEXNET_LAYERS = {"conv1": (8, 3, 5, 1), "conv2": (12, 8, 3, 2), "conv3": (16, 12, 3, 1), "conv4": (16, 16, 3, 2),
                  "conv5": (12, 16, 3, 2)}  # name: (filters, input channels, kernel, group)


def caffe2_alexnet(path: Path, size: int = 49) -> Path:
    """AlexNet as the model zoo's Caffe2 export writes it (``bvlc_alexnet``, opset 9), small:
    ``data_0 → conv1 → Relu → LRN → MaxPool → conv2 (group 2) → Relu → LRN → MaxPool → conv3 →
    Relu → conv4 (group 2) → Relu → conv5 (group 2) → Relu → MaxPool → Reshape [1, F] → fc6 →
    Relu → Dropout → fc7 → Relu → Dropout → fc8 → Softmax``, weights ``convN_w_0``/``convN_b_0``,
    values ``convN_1``; IR version 4 (initializers not listed as graph inputs)."""
    rng = np.random.default_rng(0)
    nodes, inits, current, spatial = [], {}, "data_0", size
    for k, (name, (filters, channels, kernel, group)) in enumerate(ALEXNET_LAYERS.items(), start=1):
        stride = 2 if name == "conv1" else 1
        pad = 0 if name == "conv1" else kernel // 2
        inits[f"{name}_w_0"] = (rng.standard_normal((filters, channels // group, kernel, kernel))
                                / math.sqrt(channels // group * kernel**2) * 1.5).astype(np.float32)
        inits[f"{name}_b_0"] = (0.1 * rng.standard_normal(filters)).astype(np.float32)
        nodes += [helper.make_node("Conv", [current, f"{name}_w_0", f"{name}_b_0"], [f"{name}_1"], group=group,
                                   kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4),
                  helper.make_node("Relu", [f"{name}_1"], [f"{name}_2"])]
        spatial, current = (spatial - kernel) // stride + 1 if name == "conv1" else spatial, f"{name}_2"
        if name in ("conv1", "conv2"):
            nodes.append(helper.make_node("LRN", [current], [f"norm{k}_1"], size=5, alpha=1e-4, beta=0.75, bias=1.0))
            current = f"norm{k}_1"
        if name in ("conv1", "conv2", "conv5"):
            nodes.append(helper.make_node("MaxPool", [current], [f"pool{k}_1"], kernel_shape=[3, 3], strides=[2, 2]))
            current, spatial = f"pool{k}_1", (spatial - 3) // 2 + 1
    features = ALEXNET_LAYERS["conv5"][0] * spatial * spatial
    inits["OC2_DUMMY_1"] = np.array([1, features], np.int64)
    nodes.append(helper.make_node("Reshape", [current, "OC2_DUMMY_1"], ["OC2_DUMMY_0"]))
    current, width = "OC2_DUMMY_0", features
    for name, out in (("fc6", 20), ("fc7", 20), ("fc8", 10)):
        inits[f"{name}_w_0"] = (rng.standard_normal((out, width)) / math.sqrt(width) * 1.5).astype(np.float32)
        inits[f"{name}_b_0"] = (0.1 * rng.standard_normal(out)).astype(np.float32)
        nodes.append(helper.make_node("Gemm", [current, f"{name}_w_0", f"{name}_b_0"], [f"{name}_1"], transB=1))
        current, width = f"{name}_1", out
        if name != "fc8":
            nodes += [helper.make_node("Relu", [current], [f"{name}_2"]),
                      helper.make_node("Dropout", [f"{name}_2"], [f"{name}_3", f"_{name}_mask_1"], ratio=0.5)]
            current = f"{name}_3"
    nodes.append(helper.make_node("Softmax", [current], ["prob_1"]))
    graph = helper.make_graph(nodes, "alexnet", [helper.make_tensor_value_info("data_0", TensorProto.FLOAT,
                                                                               [1, 3, size, size])],
                              [helper.make_tensor_value_info("prob_1", TensorProto.FLOAT, [1, 10])],
                              [numpy_helper.from_array(a, n) for n, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], producer_name="onnx-caffe2")
    model.ir_version = 4
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


LRN_REASON = "LRN divides each channel by the squares of its 5 neighbouring channels"


@pytest.mark.parametrize(("layer", "lrn"), [("conv1", "LRN_0"), ("conv2", "LRN_1")])
def test_caffe2_alexnet_layers_before_lrn_are_refused(layer: str, lrn: str, tmp_path: Path) -> None:
    """The zoo's Caffe2 graphs name no node: refusals name them as ``inspect`` lists them."""
    message = refused(caffe2_alexnet(tmp_path / "alexnet.onnx"), f"{layer}_w_0", 2 * ALEXNET_LAYERS[layer][0])
    assert f"at unnamed LRN node '{lrn}'" in message and LRN_REASON in message, message


@pytest.mark.parametrize(("layer", "width", "needs"), [
    ("conv3", 32, "Conv_3"),  # group 1, read by grouped conv4 (the fourth Conv): two blocks of 8
    ("conv4", 24, "Conv_3"),  # grouped producer, read by grouped conv5
    ("conv5", 18, "Conv_4"),  # grouped producer, flattened into fc6
])
def test_caffe2_alexnet_grouped_layers_widen_in_blocks(layer: str, width: int, needs: str, tmp_path: Path) -> None:
    path = caffe2_alexnet(tmp_path / "alexnet.onnx")
    widens_exactly(path, f"{layer}_w_0", width)
    message = refused(path, f"{layer}_w_0", width + 1)
    assert f"at unnamed Conv node '{needs}': grouped convolution (group=2)" in message, message
    assert f"the new width must be a multiple of 2 (copies stay in their block); {width + 1} is not" in message


@pytest.mark.parametrize("layer", ["fc6", "fc7"])
def test_caffe2_alexnet_dense_layers_widen(layer: str, tmp_path: Path) -> None:
    widens_exactly(caffe2_alexnet(tmp_path / "alexnet.onnx"), f"{layer}_w_0", 27)


def test_a_group_count_that_does_not_divide_the_width_is_one_line_and_exit_2(tmp_path: Path) -> None:
    path = caffe2_alexnet(tmp_path / "alexnet.onnx")
    out = tmp_path / "wide.onnx"
    message = assert_refused(tmp_path, ["widen", str(path), "--node", "conv4_w_0", "--to", "25", "-o", str(out)],
                             "grouped convolution (group=2) writes its output in 2 groups of 8 channels", out)
    assert "unnamed Conv node 'Conv_3'" in message and "multiple of 2 (copies stay in their block); 25 is not" \
        in message, message


# ----- PyTorch: grouped convs, ShuffleNet-v1 units, transposed convs ------------------------


class GroupedNet(nn.Module):
    """AlexNet's grouped middle: conv3 (group 1) → conv4 (group 2) → conv5 (group 2) → pool → fc."""

    def __init__(self) -> None:
        super().__init__()
        self.conv3 = nn.Conv2d(3, 12, 3, padding=1)
        self.conv4 = nn.Conv2d(12, 12, 3, padding=1, groups=2)
        self.conv5 = nn.Conv2d(12, 8, 3, padding=1, groups=2)
        self.fc = nn.Linear(8 * 2 * 2, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv4(torch.relu(self.conv3(x))))
        x = nn.functional.max_pool2d(torch.relu(self.conv5(x)), 2)
        return self.fc(x.flatten(1))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's shuffle: ``[N, g, C/g, H, W] → transpose → [N, C, H, W]``."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """A ShuffleNet-v1 unit with stride 1: grouped 1x1 → BN → ReLU → shuffle → depthwise 3x3 → BN →
    grouped 1x1 → BN, added to the input, ReLU."""

    def __init__(self, channels: int, mid: int, groups: int) -> None:
        super().__init__()
        self.groups = groups
        self.gconv1 = nn.Conv2d(channels, mid, 1, groups=groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.dwconv = nn.Conv2d(mid, mid, 3, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.gconv2 = nn.Conv2d(mid, channels, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = channel_shuffle(torch.relu(self.bn1(self.gconv1(x))), self.groups)
        y = self.bn3(self.gconv2(self.bn2(self.dwconv(y))))
        return torch.relu(x + y)


class ShuffleDownUnit(ShuffleUnit):
    """A ShuffleNet-v1 unit with stride 2: the depthwise conv strided, the input average-pooled
    and concatenated before the branch's channels, ReLU."""

    def __init__(self, channels: int, out: int, mid: int, groups: int) -> None:
        super().__init__(channels, mid, groups)
        self.dwconv = nn.Conv2d(mid, mid, 3, stride=2, padding=1, groups=mid, bias=False)
        self.gconv2 = nn.Conv2d(mid, out - channels, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out - channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = channel_shuffle(torch.relu(self.bn1(self.gconv1(x))), self.groups)
        y = self.bn3(self.gconv2(self.bn2(self.dwconv(y))))
        return torch.relu(torch.cat((nn.functional.avg_pool2d(x, 3, 2, 1), y), 1))


class ShuffleStage(nn.Module):
    """stem conv (4) → a stride-2 unit (to 12) → a stride-1 unit → global pool → fc."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.down = ShuffleDownUnit(4, 12, 8, 2)
        self.unit = ShuffleUnit(12, 8, 2)
        self.fc = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.unit(self.down(torch.relu(self.stem(x)))).mean((2, 3)))


class TinyShuffleNet(nn.Module):
    """stem conv → two ShuffleNet-v1 units → global pool → fc."""

    def __init__(self, channels: int = 12, mid: int = 8, groups: int = 2) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.unit1 = ShuffleUnit(channels, mid, groups)
        self.unit2 = ShuffleUnit(channels, mid, groups)
        self.fc = nn.Linear(channels, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.unit2(self.unit1(torch.relu(self.stem(x))))
        return self.fc(x.mean((2, 3)))


class UpsamplingNet(nn.Module):
    """conv → ConvTranspose (stride 2) → grouped ConvTranspose → 1x1 conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.up = nn.ConvTranspose2d(6, 8, 4, stride=2, padding=1)
        self.up_grouped = nn.ConvTranspose2d(8, 6, 3, padding=1, groups=2)
        self.head = nn.Conv2d(6, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.up(torch.relu(self.conv(x))))
        return self.head(torch.relu(self.up_grouped(x)))


def exported(tmp_path: Path, factory: type[nn.Module], exporter: str, **kwargs: int) -> Path:
    return export_onnx(seeded(factory, **kwargs), [torch.randn(2, 3, 4, 4)], tmp_path / f"{exporter}.onnx",
                       dynamo=exporter == "dynamo")


@pytest.mark.torch
@pytest.mark.parametrize("exporter", EXPORTERS)
def test_pytorch_grouped_convs(exporter: str, tmp_path: Path) -> None:
    path = exported(tmp_path, GroupedNet, exporter)
    widens_exactly(path, "conv3", 20)
    widens_exactly(path, "conv4", 16)
    widens_exactly(path, "conv5", 10)
    assert "must be a multiple of 2" in refused(path, "conv4", 15)


@pytest.mark.torch
@pytest.mark.parametrize("exporter", EXPORTERS)
def test_shufflenet_units_widen_in_blocks_of_their_groups(exporter: str, tmp_path: Path) -> None:
    """groups=2, 8 channels in the middle: each group's 4 are shuffled into 2 of the next
    grouped conv's groups, so ``gconv1`` widens in 4 blocks; the stream (stem, ``gconv2``s) in 2."""
    path = exported(tmp_path, TinyShuffleNet, exporter)
    report = widens_exactly(path, "unit1.gconv1", 16)
    assert report.groups[0].layers == ["unit1.gconv1"]
    assert "the new width must be a multiple of 4" in refused(path, "unit1.gconv1", 14)
    report = widens_exactly(path, "stem", 18)
    assert set(report.groups[0].layers) == {"stem", "unit1.gconv2", "unit2.gconv2"}
    widens_exactly(path, "unit2.gconv2", 24)


@pytest.mark.torch
@pytest.mark.parametrize("exporter", EXPORTERS)
def test_shufflenet_shuffle_that_parts_a_unit_across_groups_is_refused(exporter: str, tmp_path: Path) -> None:
    """groups=3 with 6 middle channels (2 per group, ShuffleNet's usual non-multiple): after the
    shuffle, the next grouped conv's group boundary falls inside one unit's 3 positions."""
    path = exported(tmp_path, TinyShuffleNet, exporter, channels=12, mid=6, groups=3)
    message = refused(path, "unit1.gconv1", 12)
    assert "grouped convolution (group=3) reads its input in 3 groups of 2 channels" in message, message
    assert "a cut would part the 3 positions of one widened channel" in message, message


@pytest.mark.torch
@pytest.mark.parametrize("exporter", EXPORTERS)
def test_pytorch_transposed_convs(exporter: str, tmp_path: Path) -> None:
    path = exported(tmp_path, UpsamplingNet, exporter)
    assert find_layer(load_model(path), "up").op_type == "ConvTranspose"
    widens_exactly(path, "conv", 11)  # contracted by ConvTranspose ``up``
    widens_exactly(path, "up", 12)  # a ConvTranspose layer, read by a grouped ConvTranspose
    widens_exactly(path, "up_grouped", 10)  # grouped ConvTranspose producer
    assert "multiple of 2" in refused(path, "up", 13)


@pytest.mark.torch
@pytest.mark.parametrize("exporter", EXPORTERS)
def test_shufflenet_stage_stream_widens_through_its_concat(exporter: str, tmp_path: Path) -> None:
    """The stage's stream is the stride-2 unit's ``Concat(avg_pool(x), branch)`` (4 + 8 channels),
    traced backward: its 12 channels widen as 6 blocks of 2 units (the 4 pooled ones are the
    stem's, the next grouped conv reads 2 groups of 6), so the stem, the stride-2 unit's
    ``gconv2`` and the next unit's ``gconv2`` grow together."""
    path = exported(tmp_path, ShuffleStage, exporter)
    report = widens_exactly(path, "unit.gconv2", 24)
    assert set(report.groups[0].layers) == {"stem", "down.gconv2", "unit.gconv2"}
    assert "the new width must be a multiple of 6" in refused(path, "unit.gconv2", 20)
    message = refused(path, "stem", 8)  # its 4 channels alone would grow the next unit's first group only
    assert "grouped convolution (group=2) reads its input in 2 groups of 6 channels" in message, message
    assert "would make its groups unequal" in message, message
