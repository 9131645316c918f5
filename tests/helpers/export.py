"""Helpers for the export tests: reference PyTorch models, fresh ONNX exports, runs and errors."""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from tests.helpers.paths import FIXTURES

RTOL = 1e-5


def _load_reference_models() -> ModuleType:
    """``fixtures/models.py`` (MLP, MnistCNN), loaded by path: fixtures/ is not a package."""
    spec = importlib.util.spec_from_file_location("onnxgrow_reference_models", FIXTURES / "models.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


reference_models = _load_reference_models()
MLP = reference_models.MLP
MnistCNN = reference_models.MnistCNN


class DeeperMLP(nn.Module):
    """The MLP after ``deepen --after layer_2 --width W``: ``layer_2_deep`` (ReLU) before ``layer_3``."""

    def __init__(self, width_1: int = 4, width_2: int = 5, width_deep: int = 7) -> None:
        super().__init__()
        self.layer_1 = nn.Linear(3, width_1)
        self.layer_2 = nn.Linear(width_1, width_2)
        self.layer_2_deep = nn.Linear(width_2, width_deep)
        self.layer_3 = nn.Linear(width_deep, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.layer_1(x))
        x = torch.relu(self.layer_2(x))
        x = torch.relu(self.layer_2_deep(x))
        return self.layer_3(x)


class DeeperMnistCNN(nn.Module):
    """The MNIST CNN after ``deepen --after conv2`` and ``--after fc1``: ``conv2_deep`` (3×3,
    ReLU) before the second pool, ``fc1_deep`` (ReLU) before ``fc2``."""

    def __init__(self, conv1: int = 64, conv2: int = 64, fc1: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, conv1, 3, padding=1)
        self.conv2 = nn.Conv2d(conv1, conv2, 3, padding=1)
        self.conv2_deep = nn.Conv2d(conv2, conv2, 3, padding=1)
        self.fc1 = nn.Linear(conv2 * 7 * 7, fc1)
        self.fc1_deep = nn.Linear(fc1, fc1)
        self.fc2 = nn.Linear(fc1, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.relu(self.conv2_deep(torch.relu(self.conv2(x))))
        x = torch.flatten(nn.functional.max_pool2d(x, 2), 1)
        x = torch.relu(self.fc1_deep(torch.relu(self.fc1(x))))
        return torch.softmax(self.fc2(x), dim=-1)


class ResNetish(nn.Module):
    """A stem conv and one residual block with BatchNorms, pooled into a Linear head.

    ``mid`` is the width of the block's inner conv (``conv1``/``bn1``), the layer tests widen.
    """

    def __init__(self, channels: int = 8, mid: int = 8, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, mid, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        y = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(x + self.bn2(self.conv2(y)))
        return self.fc(x.mean((2, 3)))


class TinyEncoder(nn.Module):
    """Embedding + a free position parameter, LayerNorm, and Linears on a 3-D input (MatMul)."""

    def __init__(self, vocab: int = 20, dim: int = 8, hidden: int = 16, length: int = 5) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.randn(1, length, dim))
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, hidden)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.emb(tokens) + self.pos)
        return self.down(nn.functional.gelu(self.up(x)))


class TiedLM(nn.Module):
    """An output projection that shares the embedding table."""

    def __init__(self, vocab: int = 20, dim: int = 8) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.emb(tokens)))


def seeded(factory, seed: int = 0, **kwargs) -> nn.Module:  # type: ignore[no-untyped-def]
    """A model built under ``torch.manual_seed(seed)``, BatchNorms given non-trivial statistics."""
    torch.manual_seed(seed)
    model = factory(**kwargs)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.5, 0.5)
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model.eval()


def export_onnx(model: nn.Module, example: Sequence[torch.Tensor], path: Path, *, dynamo: bool,
                fold: bool = True, input_names: Sequence[str] = ("x",)) -> Path:
    """Export with the legacy (``do_constant_folding=fold``) or dynamo (``optimize=fold``)
    exporter, the first axis of every input dynamic."""
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            batch = torch.export.Dim("batch", min=1, max=64)
            program = torch.onnx.export(model, tuple(example), dynamo=True, optimize=fold, verbose=False,
                                        input_names=list(input_names),
                                        dynamic_shapes=tuple({0: batch} for _ in example))
            program.save(str(path))
        else:
            torch.onnx.export(model, tuple(example), str(path), dynamo=False, do_constant_folding=fold,
                              input_names=list(input_names),
                              dynamic_axes={name: {0: "batch"} for name in input_names})
    return path


def ort_run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def relative_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    """``max|a - b| / max|a|`` (a the reference)."""
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    assert reference.shape == candidate.shape, (reference.shape, candidate.shape)
    scale = float(np.abs(reference).max()) or 1.0
    return float(np.abs(reference - candidate).max()) / scale


def assert_close(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray], rtol: float = RTOL) -> None:
    assert len(reference) == len(candidate)
    for ref, cand in zip(reference, candidate):
        error = relative_error(ref, cand)
        assert error <= rtol, f"relative error {error:.3g} > {rtol}"


def torch_run(module: nn.Module, *inputs: np.ndarray) -> list[np.ndarray]:
    module.eval()
    with torch.no_grad():
        result = module(*(torch.from_numpy(x) for x in inputs))
    results = result if isinstance(result, tuple) else (result,)
    return [r.numpy() for r in results]


def training_step_gradients(module: nn.Module, *inputs: np.ndarray, seed: int = 0) -> dict[str, torch.Tensor]:
    """One SGD step in training mode on a random linear loss; the gradients by parameter name.

    The loss weights the outputs randomly, so a softmax output (whose sum is constant)
    still gives gradients.
    """
    module.train()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)
    optimizer.zero_grad()
    result = module(*(torch.from_numpy(x) for x in inputs))
    results = result if isinstance(result, tuple) else (result,)
    loss = sum((r * torch.randn(r.shape, generator=generator)).sum() for r in results)
    loss.backward()  # type: ignore[union-attr]
    grads = {name: p.grad.detach().clone() for name, p in module.named_parameters() if p.grad is not None}
    optimizer.step()
    module.eval()
    return grads


def assert_every_parameter_learns(module: nn.Module, *inputs: np.ndarray) -> None:
    """Every parameter is a trainable nn.Parameter and gets a non-zero gradient in one step."""
    names = [name for name, _ in module.named_parameters()]
    assert names, "the module has no parameters"
    assert all(p.requires_grad for p in module.parameters())
    grads = training_step_gradients(module, *inputs)
    missing = [n for n in names if n not in grads or not torch.any(grads[n] != 0)]
    assert not missing, f"no gradient for {missing}"


def random_input(shape: Sequence[int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
