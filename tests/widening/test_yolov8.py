"""An ultralytics YOLOv8n detector, widened layer by layer.

YOLOv8n is built from ultralytics' own ``yolov8n.yaml`` (no weights are downloaded: the
build and the export run with ``YOLO_OFFLINE`` set, and touch no network), its parameters
drawn at random so that the detections depend on every layer (the yaml build's detection
head starts from biases that make its outputs nearly constant), then exported twice: by
ultralytics' own ONNX exporter (``YOLO.export(format="onnx")``, what its users run) and by
``torch.onnx.export(dynamo=True)`` on the ``nn.Module``.

The patterns once found blocked: the C2f block's ``cv1`` split into halves (each half
widened alike: a block map), the bottleneck's ``cv2`` reached backwards through that Split
(a residual joins one half), SPPF's concatenation of a tensor with three poolings of it, and
the FPN's nearest-neighbour Resize. Every layer is either widened exactly (max relative error
≤ 1e-5 in onnxruntime, on outputs shown to depend on the layer) or refused for a reason of
the math, listed in :data:`REFUSED`.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from onnxgrow import GrowError, RefusedError, load_model, verify, widen
from onnxgrow.inspect import inspect_model
from onnxgrow.widening import find_layers
from tests.helpers.export_cache import shared_directory, write_once
from tests.helpers.graphs import assert_widens_exactly

# Before ultralytics is imported: no online check, no settings file in the home folder.
os.environ["YOLO_OFFLINE"] = "1"
os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir()) / "onnxgrow-tests-ultralytics"))
ultralytics = pytest.importorskip("ultralytics", reason="the ultralytics package (test extra) is not installed")
torch = pytest.importorskip("torch")

pytestmark = pytest.mark.torch

EXPORTERS = ["ultralytics", "dynamo"]

#: Layers once found blocked, and what blocked them.
BLOCKED = {
    "model.2.cv1.conv": "C2f: Split into halves",
    "model.4.cv1.conv": "C2f with two bottlenecks: Split into halves",
    "model.2.m.0.cv2.conv": "C2f: Split traced backwards from the bottleneck's residual",
    "model.4.m.1.cv2.conv": "C2f: Split traced backwards through two residuals",
    "model.12.cv1.conv": "C2f without shortcut: Split into halves, one half fixed",
    "model.9.cv1.conv": "SPPF: Concat of a tensor and three poolings of it",
    "model.9.cv2.conv": "FPN: Resize (nearest, scale 2)",
    "model.12.cv2.conv": "FPN: Resize (nearest, scale 2)",
}

#: Layers refused for a reason of the math: (op of the node named, part of the reason).
REFUSED = {
    # the DFL head reshapes the 64 box channels into 4 sides x 16 bins, softmaxes over the bins
    # and reads them with fixed weights 0..15
    **{f"model.22.cv2.{i}.2": ("Reshape", "splits the widened axis (64) into several axes [4, 16]") for i in range(3)},
    # the class scores are the model's output
    **{f"model.22.cv3.{i}.2": ("Concat", "reach model output") for i in range(3)},
}
DFL_CONV = "model.22.dfl.conv"  # one channel, cut into the 4 box sides by the box decoding


def _build_yolov8n(path: Path, exporter: str) -> None:
    from ultralytics import YOLO

    torch.manual_seed(0)
    yolo = YOLO("yolov8n.yaml")
    with torch.no_grad():
        for module in yolo.model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.normal_(0, 1.6 / math.sqrt(module.weight[0].numel()))
                if module.bias is not None:
                    module.bias.normal_(0, 0.5)
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0, 0.2)
                module.running_mean.normal_(0, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    if exporter == "ultralytics":
        here = Path.cwd()
        os.chdir(path.parent)
        try:
            written = os.path.abspath(yolo.export(format="onnx", imgsz=64, simplify=False))
        finally:
            os.chdir(here)
        os.replace(written, path)
        return
    net = yolo.model.eval()
    for module in net.modules():
        if hasattr(module, "export"):
            module.export = True  # the Detect head's export mode, as ultralytics' exporter sets it
    program = torch.onnx.export(net, (torch.randn(1, 3, 64, 64),), dynamo=True, input_names=["images"],
                                verbose=False)
    program.save(str(path), external_data=False)


@pytest.fixture(scope="session")
def yolov8n(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    folder = shared_directory(tmp_path_factory.getbasetemp(), "yolov8")
    return lambda exporter: write_once(folder / f"yolov8n-{exporter}.onnx",
                                       lambda tmp: _build_yolov8n(tmp, exporter))


def widens_exactly(path: Path, layer: str, q: int) -> list[str]:
    """Widen ``layer`` exactly; the same widening with random new units is seen to change
    the detections (so the check can fail). Returns the channel group's layers."""
    report = assert_widens_exactly(path, layer, q)
    grown, _ = widen(load_model(path), {layer: q}, init="random-pad")
    assert not verify(path, grown).passed, f"the detections do not depend on {layer}"
    return report.groups[0].layers


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("layer", sorted(BLOCKED))
def test_layers_once_blocked_widen_exactly(yolov8n: Callable[[str], Path], exporter: str,
                                                     layer: str) -> None:
    path = yolov8n(exporter)
    n = next(found.width for found in find_layers(load_model(path))[0] if found.display == layer)
    group = widens_exactly(path, layer, 2 * n)
    if ".m." in layer:
        assert f"model.{layer.split('.')[1]}.cv1.conv" in group, group  # the Split's producer joins


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_halves_widen_alike_so_an_odd_width_is_refused(yolov8n: Callable[[str], Path], exporter: str) -> None:
    path = yolov8n(exporter)
    with pytest.raises(RefusedError, match=r"at Split node '[^']+': it splits the channels into parts \[16, 16\], "
                                           r"each widened alike, so the new width must be a multiple of 2 .*; "
                                           "33 is not"):
        widen(load_model(path), {"model.2.cv1.conv": 33})


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_a_bottleneck_reached_through_the_split_takes_any_width(yolov8n: Callable[[str], Path],
                                                               exporter: str) -> None:
    """The bottleneck's 16 channels are one half of ``cv1``'s 32: that half grows to 21."""
    widens_exactly(yolov8n(exporter), "model.2.m.0.cv2.conv", 21)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_every_layer_is_exact_or_refused_for_the_math(yolov8n: Callable[[str], Path], exporter: str) -> None:
    """Every layer widened to ``2n``: exact, or refused with the reason :data:`REFUSED` gives."""
    path = yolov8n(exporter)
    layers, refused = find_layers(load_model(path))
    assert not refused
    for layer in layers:
        name = layer.display
        if name in REFUSED or name == DFL_CONV:
            with pytest.raises(GrowError) as caught:
                widen(load_model(path), {name: 2 * layer.width})
            if name in REFUSED:
                op, reason = REFUSED[name]
                assert f"at {op} node" in str(caught.value) and reason in str(caught.value), str(caught.value)
            continue
        assert_widens_exactly(path, name, 2 * layer.width)


def test_inspect_tells_which_layers_widen_in_blocks(yolov8n: Callable[[str], Path]) -> None:
    layers = {info.name: info for info in inspect_model(yolov8n("ultralytics")).layers}
    split = layers["model.2.cv1.conv"]
    assert split.widenable and "only to multiples of 2" in split.reason and "Split node" in split.reason
    bottleneck = layers["model.2.m.0.cv2.conv"]
    assert bottleneck.widenable and not bottleneck.reason and "model.2.cv1.conv" in bottleneck.group
    assert layers["model.9.cv2.conv"].widenable and layers["model.9.cv1.conv"].widenable
