"""torchvision ResNets (random weights, seeded, BatchNorm statistics randomised) and their exports.

Real ``torchvision.models.resnet18``/``resnet50`` with 10 classes, exported on 32x32 images:

- ``legacy``: the TorchScript exporter with constant folding (BatchNorm folded into the convs);
- ``legacy-nofold``: constant folding off (every BatchNorm kept);
- ``dynamo``: ``torch.onnx.export(..., dynamo=True)``, dynamic batch.

Each is written once per test session (shared by xdist workers).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from tests.helpers.export_cache import shared_directory, write_once
from tests.helpers.torch_zoo import randomise_batchnorm

VARIANTS = ("legacy", "legacy-nofold", "dynamo")


def build(name: str) -> torch.nn.Module:
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None, num_classes=10)
    randomise_batchnorm(model, torch.Generator().manual_seed(1))
    return model.eval()


def export_model(name: str, variant: str, path: Path) -> None:
    model = build(name)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if variant == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=64)
            program = torch.onnx.export(model, (x,), dynamo=True, input_names=["x"], output_names=["y"],
                                        dynamic_shapes=({0: batch},), verbose=False)
            assert program is not None
            program.save(str(path), external_data=False)
        else:
            torch.onnx.export(model, (x,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
                              do_constant_folding=variant == "legacy")


def export(name: str, variant: str, directory: Path) -> Path:
    return write_once(directory / f"{name}-{variant}.onnx", lambda tmp: export_model(name, variant, tmp))


def vision_directory(base: Path) -> Path:
    return shared_directory(base, "vision_zoo")
