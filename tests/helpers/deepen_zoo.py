"""Small PyTorch models for the deepen tests, and their ONNX exports.

Each model is a miniature of a real architecture's growable part:

- ``resnet_block``: ResNet basic block (conv-BN-ReLU-conv-BN, identity skip, ReLU);
- ``mobilenet_v2``: MobileNetV2 stem and inverted residual (1×1 expand, depthwise 3×3,
  1×1 project, BatchNorm, ReLU6, skip);
- ``vgg``: VGG features and classifier (Linear-ReLU-Dropout ×2, Linear);
- ``bert_ffn``: BERT feed-forward on [batch, tokens, hidden] (Linear, exact erf GELU,
  Linear, skip, LayerNorm);
- ``gpt2_ffn``: GPT-2 MLP with the tanh GELU (``nn.GELU(approximate="tanh")``);
- ``gpt2_gelu_new``: the same with HF's ``gelu_new`` written out in tensor ops;
- ``conv1d`` / ``conv3d``: 1-D and 3-D conv stacks (even kernel, BatchNorm, activations);
- ``act_mlp_<name>``: an MLP per activation (LeakyReLU, Sigmoid, Tanh, Softplus,
  Hardtanh, PReLU, ELU, SiLU, Hardswish), the idempotent and the other kinds.

:func:`export` writes one model with one exporter: ``legacy`` (``dynamo=False``, constant
folding on, opset 17: GELU decomposed into Erf/Tanh ops), ``legacy_nofold`` (constant
folding off: weights behind Transpose/Identity nodes) or ``dynamo``.
"""

from __future__ import annotations

import atexit
import functools
import math
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

EXPORTERS = ("legacy", "legacy_nofold", "dynamo")


class ResNetBlock(nn.Module):
    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn0(self.stem(x)))
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        y = torch.relu(y + x)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


class MobileNetV2Block(nn.Module):
    def __init__(self, channels: int = 8, expand: int = 4) -> None:
        super().__init__()
        hidden = channels * expand
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU6())
        self.expand = nn.Sequential(nn.Conv2d(channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6())
        self.depthwise = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False),
                                       nn.BatchNorm2d(hidden), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(hidden, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return x + self.project(self.depthwise(self.expand(x)))


class VGG(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Linear(8 * 2 * 2, 16), nn.ReLU(), nn.Dropout(),
                                        nn.Linear(16, 16), nn.ReLU(), nn.Dropout(), nn.Linear(16, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class BertFFN(nn.Module):
    def __init__(self, hidden: int = 16, inner: int = 32) -> None:
        super().__init__()
        self.intermediate = nn.Linear(hidden, inner)
        self.output = nn.Linear(inner, hidden)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.output(nn.functional.gelu(self.intermediate(x))))


def gelu_new(x: torch.Tensor) -> torch.Tensor:
    """HF GPT-2's ``gelu_new``, written out (exports as Mul/Pow/Add/Tanh ops)."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class GPT2FFN(nn.Module):
    def __init__(self, hidden: int = 16, inner: int = 32, written_out: bool = False) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(hidden)
        self.c_fc = nn.Linear(hidden, inner)
        self.c_proj = nn.Linear(inner, hidden)
        self.act: Callable[[torch.Tensor], torch.Tensor] = (
            gelu_new if written_out else nn.GELU(approximate="tanh"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.c_proj(self.act(self.c_fc(self.ln(x))))


class Conv1dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(2, 6, 5, padding=2)
        self.conv2 = nn.Conv1d(6, 6, 4)  # even kernel
        self.bn2 = nn.BatchNorm1d(6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.leaky_relu(self.conv1(x), 0.1)
        x = torch.sigmoid(self.bn2(self.conv2(x)))
        return self.fc(x.mean(dim=2))


class Conv3dNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv3d(4, 4, (1, 3, 3), padding=(0, 1, 1))
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.hardtanh(self.conv1(x))
        x = torch.tanh(self.conv2(x))
        return self.fc(x.mean(dim=(2, 3, 4)))


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "hardtanh": nn.Hardtanh,
    "prelu": lambda: nn.PReLU(6),
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "hardswish": nn.Hardswish,
}


class ActMLP(nn.Module):
    def __init__(self, act: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(5, 6)
        self.act = ACTIVATIONS[act]()
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


#: name -> (constructor, example input shape)
MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "resnet_block": (ResNetBlock, (2, 3, 6, 6)),
    "mobilenet_v2": (MobileNetV2Block, (2, 3, 8, 8)),
    "vgg": (VGG, (2, 3, 8, 8)),
    "bert_ffn": (BertFFN, (2, 5, 16)),
    "gpt2_ffn": (GPT2FFN, (2, 5, 16)),
    "gpt2_gelu_new": (functools.partial(GPT2FFN, written_out=True), (2, 5, 16)),
    "conv1d": (Conv1dNet, (2, 2, 12)),
    "conv3d": (Conv3dNet, (2, 1, 4, 5, 5)),
    **{f"act_mlp_{name}": (functools.partial(ActMLP, name), (2, 5)) for name in ACTIVATIONS},
}


def build(name: str) -> nn.Module:
    """The model ``name`` with seeded weights and non-trivial BatchNorm statistics, in eval mode."""
    make, _ = MODELS[name]
    torch.manual_seed(0)
    model = make()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


@functools.cache
def _export_dir() -> Path:
    """A temporary folder made on the first export of this process, removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix="onnxgrow-deepen-models-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@functools.cache
def export(name: str, exporter: str) -> Path:
    """Export model ``name`` once per process; returns the .onnx path (in a temp folder)."""
    model = build(name)
    example = torch.randn(*MODELS[name][1])
    path = _export_dir() / f"{name}_{exporter}.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=64)
            program = torch.onnx.export(model, (example,), dynamo=True, verbose=False,
                                        dynamic_shapes={"x": {0: batch}})
            program.save(str(path))
        else:
            torch.onnx.export(model, (example,), str(path), dynamo=False, opset_version=17,
                              do_constant_folding=exporter == "legacy", input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return path
