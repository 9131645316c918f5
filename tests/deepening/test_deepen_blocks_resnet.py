"""``deepen --block`` on torchvision ResNets (tests/helpers/vision_zoo.py), every exporter.

- ``--init zero`` copies of identity-shortcut blocks are exact in onnxruntime at the first block
  (``layer1.0``), a middle one with two copies (``layer2.1``), the last (``layer4.1``) and a
  glob (``layer1.*``): the copy's last BatchNorm gets zero scale and shift, or, where the
  exporter folded it into the conv, that conv's weight and bias;
- the weights are named as torchvision names a ResNet with the new block counts: with every
  BatchNorm kept, they load strictly into it and its logits are onnxruntime's;
- a downsampling block is refused naming its projection shortcut, and nothing is written.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torchvision")

import onnxruntime as ort
import torch
import torchvision

from onnxgrow import deepen_block, verify
from onnxgrow.export.state_dict_file import state_dict
from onnxgrow.model_io import load_model, save_model
from tests.helpers.cli import assert_refused
from tests.helpers.graphs import MAX_REL_ERROR
from tests.helpers.vision_zoo import VARIANTS, export, vision_directory

pytestmark = pytest.mark.torch

BLOCKS = [2, 2, 2, 2]  # resnet18
_BLOCK = re.compile(r"^layer(\d)\.(\d+)\.(.*)$")


@pytest.fixture(scope="module")
def resnet18(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    directory = vision_directory(tmp_path_factory.getbasetemp())
    return lambda variant: export("resnet18", variant, directory)


def _expected_names(old: set[str], copies: dict[str, str], moved: dict[str, str]) -> set[str]:
    """The old weight names, blocks renumbered, and each copy holding its source's weights."""
    def renamed(name: str) -> str:
        found = _BLOCK.match(name)
        if found is None:
            return name
        block = f"layer{found.group(1)}.{found.group(2)}"
        return f"{moved.get(block, block)}.{found.group(3)}"

    names = {renamed(n) for n in old}
    for copy, source in copies.items():
        names |= {copy + n[len(source):] for n in old if n.startswith(source + ".")}
    return names


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize(("request_", "count"), [("layer1.0", 1), ("layer2.1", 2), ("layer4.1", 1), ("layer1.*", 1)])
def test_zero_copies_of_identity_shortcut_blocks_are_exact_and_named_as_torchvision_names_them(
        resnet18, tmp_path: Path, variant: str, request_: str, count: int) -> None:  # type: ignore[no-untyped-def]
    path = resnet18(variant)
    model, report = deepen_block(load_model(path), request_, count=count)
    out = save_model(model, tmp_path / "deep.onnx")
    check = verify(path, out)
    assert check.passed and check.max_rel_error <= MAX_REL_ERROR, check.summary()

    blocks = list(BLOCKS)
    for container, (before, after) in report.layers.items():
        assert before == BLOCKS[int(container[-1]) - 1]
        blocks[int(container[-1]) - 1] = after
    assert sum(blocks) == sum(BLOCKS) + count * (2 if request_.endswith("*") else 1)
    old, new = state_dict(path).tensors, state_dict(out).tensors
    copies = {b.name: b.source for b in report.inserted}
    assert set(new) == _expected_names(set(old), copies, report.renumbered)
    for copy, source in copies.items():
        zeroed = tuple(f"{z}." for z in next(b.zeroed for b in report.inserted if b.name == copy))
        assert zeroed == ((f"{copy}.bn2.",) if variant == "legacy-nofold" else (f"{copy}.conv2.",))
        for name in (n for n in new if n.startswith(copy + ".")):
            if name.startswith(zeroed) and not name.endswith(("running_mean", "running_var")):
                assert not new[name].any(), name
            else:
                np.testing.assert_array_equal(new[name], old[source + name[len(copy):]])

    if variant == "legacy-nofold":  # every BatchNorm kept: the export is torchvision's module
        module = torchvision.models.resnet.ResNet(torchvision.models.resnet.BasicBlock, blocks, num_classes=10)
        module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in new.items()}, strict=True)
        x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
        with torch.no_grad():
            expected = module.eval()(torch.from_numpy(x)).numpy()
        session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        (found,) = session.run(None, {"x": x})
        assert float(np.abs(expected - found).max() / np.abs(found).max()) <= MAX_REL_ERROR


@pytest.mark.parametrize("request_", ["layer2.0", "layer*.*"])
def test_a_downsampling_block_is_refused_naming_its_shortcut(resnet18, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                             request_: str) -> None:
    out = tmp_path / "deep.onnx"
    assert_refused(tmp_path, ["deepen", str(resnet18("dynamo")), "--block", request_, "-o", str(out)],
                   "cannot copy block 'layer2.0': its shortcut is not the identity (layer2.0.downsample.0 "
                   "projects it)", out)


def test_resnet50_bottleneck_blocks_copy_exactly_and_its_first_block_is_refused(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """Bottleneck blocks end in conv3 (+ bn3); ``layer1.0`` projects 64 to 256 channels."""
    path = export("resnet50", "dynamo", vision_directory(tmp_path_factory.getbasetemp()))
    model, report = deepen_block(load_model(path), "layer3.2")
    out = save_model(model, tmp_path / "deep.onnx")
    check = verify(path, out)
    assert check.passed and check.max_rel_error <= MAX_REL_ERROR, check.summary()
    assert report.layers == {"layer3": (6, 7)} and report.inserted[0].zeroed == ["layer3.3.conv3"]
    assert report.renumbered == {"layer3.3": "layer3.4", "layer3.4": "layer3.5", "layer3.5": "layer3.6"}
    refused = tmp_path / "refused.onnx"
    assert_refused(tmp_path, ["deepen", str(path), "--block", "layer1.*", "-o", str(refused)],
                   "cannot copy block 'layer1.0': its shortcut is not the identity (layer1.0.downsample.0 "
                   "projects it)", refused)
