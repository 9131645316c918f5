"""The PyTorch test-model zoo: small PyTorch versions of real architectures, and their exports.

Models (all small, eval mode, seeded; BatchNorm statistics and affine parameters
randomised so no BatchNorm is an identity):

- ``resnet``: stem conv+BN+ReLU, a basic block without downsample (residual group with
  the stem), a basic block with a 1x1 conv+BN downsample shortcut, global pooling, fc.
- ``mobilenet``: stem, an inverted residual with its residual connection (expand 1x1 →
  depthwise 3x3 → project 1x1, ReLU6), one without (stride 2), head conv, pooling, fc.
- ``squeezenet``: stem conv, max-pool, two fire modules (squeeze 1x1 → expand 1x1 ‖
  expand 3x3 → Concat), final 1x1 conv classifier, global pooling.
- ``vgg``: conv stack with max-pools → AdaptiveAvgPool((2, 2)) → flatten → classifier
  (Linear-ReLU-Dropout-Linear). conv1's and conv2's biases are zero, so exporters that
  deduplicate identical initializers make them share one.
- ``gpt2``: an input projection, one pre-norm GPT-2 block (LayerNorm, causal
  self-attention with a fused qkv Linear and split, tanh-GELU FFN, residuals), final
  LayerNorm and head.
- ``bert``: token + position embeddings (``nn.Embedding`` on int64 ids), LayerNorm, one
  post-norm block (separate q/k/v, attention, exact-erf GELU FFN), pooler on CLS.

Export variants (:data:`VARIANTS`) cover both ``torch.onnx.export`` exporters: the
TorchScript one with constant folding on (BatchNorm folded into Conv, dynamic batch)
and off (BatchNorm kept, static shapes baked into Reshape constants), an old opset
(GELU and LayerNorm decomposed into primitive ops), and the dynamo one with and
without its optimizer. :func:`export` writes each model × variant once per directory.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from tests.helpers.export_cache import shared_directory as _shared
from tests.helpers.export_cache import write_once

# ----- CNNs ------------------------------------------------------------------------------


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv (no bias) followed by BatchNorm, as torchvision builds them."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    )


class BasicBlock(nn.Module):
    """ResNet basic block: conv-BN-ReLU-conv-BN + shortcut, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + identity)


class TinyResNet(nn.Module):
    def __init__(self, width: int = 8, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = BasicBlock(width, width)
        self.layer2 = BasicBlock(width, 2 * width, stride=2)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: expand 1x1 → depthwise 3x3 → project 1x1, ReLU6, optional residual."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            conv_bn(cin, hidden, 1), nn.ReLU6(),
            conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6(),
            conv_bn(hidden, cout, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class TinyMobileNet(nn.Module):
    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 8, 3), nn.ReLU6())
        self.block1 = InvertedResidual(8, 8, 1, 3)
        self.block2 = InvertedResidual(8, 12, 2, 2)
        self.head = nn.Sequential(conv_bn(12, 16, 1), nn.ReLU6())
        self.classifier = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.block2(self.block1(self.stem(x))))
        x = x.mean((2, 3))
        return self.classifier(x)


class Fire(nn.Module):
    """SqueezeNet fire module: squeeze 1x1 → (expand 1x1 ‖ expand 3x3) → Concat."""

    def __init__(self, cin: int, squeeze: int, expand1: int, expand3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1x1 = nn.Conv2d(squeeze, expand1, 1)
        self.expand3x3 = nn.Conv2d(squeeze, expand3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.squeeze(x))
        return torch.cat([torch.relu(self.expand1x1(s)), torch.relu(self.expand3x3(s))], 1)


class TinySqueezeNet(nn.Module):
    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 12, 3, padding=1)
        self.fire2 = Fire(12, 4, 6, 6)
        self.fire3 = Fire(12, 5, 8, 6)
        self.classifier = nn.Conv2d(14, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = self.fire3(self.fire2(x))
        x = torch.relu(self.classifier(x))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


class TinyVGG(nn.Module):
    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        self.classifier = nn.Sequential(
            nn.Linear(16 * 2 * 2, 32), nn.ReLU(), nn.Dropout(), nn.Linear(32, classes),
        )
        with torch.no_grad():  # identical zero biases: exporters may share one initializer
            self.features[0].bias.zero_()
            self.features[2].bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(x.view(x.size(0), -1))


# ----- transformers -------------------------------------------------------------------------


class Conv1D(nn.Module):
    """Hugging Face GPT-2's linear layer: ``addmm`` on the flattened input, weight ``[in, out]``.

    Exports as Reshape → Gemm (transB=0) → Reshape, the shapes baked or computed.
    """

    def __init__(self, nx: int, nf: int) -> None:
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(0.3 * torch.randn(nx, nf))
        self.bias = nn.Parameter(0.1 * torch.randn(nf))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size_out = x.size()[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return x.view(size_out)


class CausalSelfAttention(nn.Module):
    """GPT-2 attention: one fused qkv Conv1D, split, heads, causal mask, output projection."""

    def __init__(self, d_model: int, heads: int, seq: int) -> None:
        super().__init__()
        self.heads = heads
        self.c_attn = Conv1D(d_model, 3 * d_model)
        self.c_proj = Conv1D(d_model, d_model)
        self.register_buffer("mask", torch.tril(torch.ones(seq, seq, dtype=torch.bool)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)
        att = att.masked_fill(~self.mask[:t, :t], float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        return self.c_proj(y)


class GPT2MLP(nn.Module):
    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.c_fc = Conv1D(d_model, 4 * d_model)
        self.c_proj = Conv1D(4 * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))


class TinyGPT2(nn.Module):
    """Input projection → pre-norm block → final LayerNorm → head (float inputs [B, T, 6])."""

    def __init__(self, d_model: int = 16, heads: int = 2, seq: int = 6, features: int = 6, out: int = 7) -> None:
        super().__init__()
        self.wpe = nn.Linear(features, d_model)
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, heads, seq)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = GPT2MLP(d_model)
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.wpe(x)
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return self.head(self.ln_f(x))


class BertSelfAttention(nn.Module):
    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.dense = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (lin(x).view(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for lin in (self.query, self.key, self.value))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // self.heads), dim=-1)
        return self.dense((att @ v).transpose(1, 2).reshape(b, t, d))


class TinyBert(nn.Module):
    """Embeddings + LayerNorm → post-norm encoder block → pooler (Linear+Tanh on token 0)."""

    def __init__(self, vocab: int = 20, seq: int = 6, d_model: int = 16, heads: int = 2, ffn: int = 24) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, d_model)
        self.position_embeddings = nn.Embedding(seq, d_model)
        self.emb_norm = nn.LayerNorm(d_model)
        self.attention = BertSelfAttention(d_model, heads)
        self.attn_norm = nn.LayerNorm(d_model)
        self.intermediate = nn.Linear(d_model, ffn)
        self.output = nn.Linear(ffn, d_model)
        self.out_norm = nn.LayerNorm(d_model)
        self.pooler = nn.Linear(d_model, d_model)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.emb_norm(self.word_embeddings(input_ids) + self.position_embeddings(positions))
        x = self.attn_norm(x + self.attention(x))
        x = self.out_norm(x + self.output(F.gelu(self.intermediate(x))))
        return torch.tanh(self.pooler(x[:, 0]))


# ----- building and exporting ----------------------------------------------------------------


@dataclass(frozen=True)
class ZooModel:
    """A zoo entry: how to build it and an example input."""

    build: Callable[[], nn.Module]
    example: Callable[[], torch.Tensor]
    input_name: str = "x"


def _image(size: int) -> Callable[[], torch.Tensor]:
    return lambda: torch.randn(2, 3, size, size)


MODELS: dict[str, ZooModel] = {
    "resnet": ZooModel(TinyResNet, _image(8)),
    "mobilenet": ZooModel(TinyMobileNet, _image(8)),
    "squeezenet": ZooModel(TinySqueezeNet, _image(8)),
    "vgg": ZooModel(TinyVGG, _image(16)),
    "gpt2": ZooModel(TinyGPT2, lambda: torch.randn(2, 6, 6)),
    "bert": ZooModel(TinyBert, lambda: torch.randint(0, 20, (2, 6)), "input_ids"),
}


@dataclass(frozen=True)
class Variant:
    """One way of calling ``torch.onnx.export``."""

    dynamo: bool
    fold: bool = True  # TorchScript exporter: do_constant_folding
    optimize: bool = True  # dynamo exporter: run its optimizer
    opset: int | None = None
    dynamic_batch: bool = True


VARIANTS: dict[str, Variant] = {
    "legacy": Variant(dynamo=False),
    "legacy-nofold": Variant(dynamo=False, fold=False, dynamic_batch=False),
    "legacy-opset16": Variant(dynamo=False, opset=16),
    "dynamo": Variant(dynamo=True),
    "dynamo-noopt": Variant(dynamo=True, optimize=False, dynamic_batch=False),
}


def randomise_batchnorm(model: nn.Module, generator: torch.Generator) -> None:
    """Give every BatchNorm non-trivial running statistics and affine parameters."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            with torch.no_grad():
                module.running_mean.copy_(0.5 * torch.randn(c, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(c, generator=generator))
                module.weight.copy_(1.0 + 0.3 * torch.randn(c, generator=generator))
                module.bias.copy_(0.3 * torch.randn(c, generator=generator))


def build(name: str) -> nn.Module:
    """The seeded model ``name`` in eval mode."""
    torch.manual_seed(0)
    model = MODELS[name].build()
    randomise_batchnorm(model, torch.Generator().manual_seed(1))
    return model.eval()


def export_model(name: str, variant_name: str, path: Path, **options: object) -> None:
    """Export zoo model ``name`` with variant ``variant_name`` to ``path`` (``options``: more
    ``torch.onnx.export`` arguments)."""
    entry, variant = MODELS[name], VARIANTS[variant_name]
    model = build(name)
    torch.manual_seed(0)
    example = entry.example()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if variant.dynamo:
            batch = torch.export.Dim("batch", min=1, max=64)
            shapes = {entry.input_name: {0: batch}} if variant.dynamic_batch else None
            program = torch.onnx.export(
                model, (example,), dynamo=True, input_names=[entry.input_name], output_names=["y"],
                dynamic_shapes=shapes, optimize=variant.optimize, opset_version=variant.opset,
                verbose=False, **options,
            )
            assert program is not None
            program.save(str(path), external_data=False)
        else:
            axes = {entry.input_name: {0: "batch"}, "y": {0: "batch"}} if variant.dynamic_batch else None
            torch.onnx.export(
                model, (example,), str(path), dynamo=False, input_names=[entry.input_name],
                output_names=["y"], dynamic_axes=axes, do_constant_folding=variant.fold,
                opset_version=variant.opset, **options,
            )


def export(name: str, variant_name: str, directory: Path) -> Path:
    """The exported file of ``name`` × ``variant_name`` under ``directory``, written once even
    when several test processes (pytest-xdist workers) share the directory."""
    return write_once(directory / f"{name}-{variant_name}.onnx",
                      lambda tmp: export_model(name, variant_name, tmp))


def shared_directory(base: Path) -> Path:
    """Where a test session keeps its exports: shared by its xdist workers, new each session."""
    return _shared(base, "zoo")
