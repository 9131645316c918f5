"""The growth map: it reproduces the grown weights, and grows optimizer state so training goes on."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

import onnxgrow
from onnxgrow.errors import GrowError
from onnxgrow.growth_map import GrowthMap, apply_growth_map
from onnxgrow.widening.channel_map import Init, build_channel_map
from onnxgrow.widening.layers import find_layers
from tests.helpers.paths import REFERENCE_MODELS, fixture_path

if TYPE_CHECKING:
    import torch

HIDDEN = {"mlp": ["layer_1", "layer_2"], "mnist_cnn": ["conv1", "conv2", "fc1"]}
CASES = [(m, layer) for m in REFERENCE_MODELS for layer in HIDDEN[m.rsplit("_", 1)[0]]]


def assert_map_describes_the_growth(growth_map: GrowthMap, before: dict[str, np.ndarray],
                                    after: dict[str, np.ndarray]) -> None:
    """The map names exactly the weights whose shape changed, each with its old and new shape;
    each grown axis gives every new position an old index (-1: fresh) and a scale."""
    assert {w.name for w in growth_map.weights} == {n for n in after if after[n].shape != before[n].shape}
    for weight in growth_map.weights:
        assert (weight.old_shape, weight.new_shape) == (before[weight.name].shape, after[weight.name].shape)
        for axis in weight.axes:
            assert len(axis.src) == len(axis.scale) == weight.new_shape[axis.axis], weight.name
            assert -1 <= axis.src.min() and axis.src.max() < weight.old_shape[axis.axis], weight.name


def assert_map_follows_the_channel_map(growth_map: GrowthMap,
                                       rules: dict[str, list[tuple[int, np.ndarray, np.ndarray]]]) -> None:
    """The map grows exactly the weights of ``rules`` (name → [(axis, src, scale)]) and takes
    each position from the old index the channel map gives it."""
    weights = growth_map.by_name()
    assert set(weights) == set(rules)
    for name, axes in rules.items():
        assert [(a.axis, a.src.tolist()) for a in weights[name].axes] == [(axis, src.tolist()) for axis, src, _ in axes]


def _torch_state(path: Path | object) -> dict[str, torch.Tensor]:
    import torch

    return {k: torch.from_numpy(np.array(v)) for k, v in onnxgrow.state_dict(path).tensors.items()}  # type: ignore[arg-type]


@pytest.mark.parametrize(("model_name", "layer"), CASES)
def test_map_reproduces_the_grown_weights(model_name: str, layer: str) -> None:
    """Applying the map to the original state dict gives the grown model's weights (every layout:
    Gemm, MatMul [K, N], conv filters, a conv feeding fc1 through Flatten)."""
    path = fixture_path(model_name)
    width = {lay.display: lay.width for lay in find_layers(onnxgrow.load_model(path))[0]}[layer]
    grown, report = onnxgrow.widen(path, {layer: width + 3}, noise=0.1, seed=2)
    before, after = onnxgrow.state_dict(path).tensors, onnxgrow.state_dict(grown).tensors
    assert_map_describes_the_growth(report.growth_map, before, after)
    mapped = apply_growth_map(before, report.growth_map)
    changed = {w.name for w in report.growth_map.weights}
    assert f"{layer}.weight" in changed
    for name in after:
        np.testing.assert_allclose(mapped[name], after[name], rtol=1e-6, atol=1e-7, err_msg=name)
        if name not in changed:
            assert mapped[name] is before[name]


def test_map_survives_json(tmp_path: Path) -> None:
    _, report = onnxgrow.widen(fixture_path("mlp_dynamo"), {"layer_2": 8}, seed=1)
    # layer_2 (5 units on 4 inputs) grows to 8 units; layer_3 contracts them
    assert {w.name: (w.old_shape, w.new_shape) for w in report.growth_map.weights} == {
        "layer_2.weight": ((5, 4), (8, 4)), "layer_2.bias": ((5,), (8,)), "layer_3.weight": ((2, 5), (2, 8))}
    report.growth_map.save(tmp_path / "map.json")
    again = GrowthMap.from_json(json.loads((tmp_path / "map.json").read_text()))
    assert again.to_json() == report.growth_map.to_json()
    with pytest.raises(GrowError, match="not an onnxgrow growth map"):
        GrowthMap.from_json({"weights": []})


def _train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int, seed: int,
           make_batch: object) -> None:
    import torch

    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, loss_of = make_batch(gen)  # type: ignore[operator]
        optimizer.zero_grad()
        loss_of(model(x)).backward()
        optimizer.step()


def _mlp_batch(gen: torch.Generator) -> tuple[torch.Tensor, object]:
    import torch

    x, y = torch.randn(8, 3, generator=gen), torch.randn(8, 2, generator=gen)
    return x, lambda out: ((out - y) ** 2).mean()


def _cnn_batch(gen: torch.Generator) -> tuple[torch.Tensor, object]:
    import torch

    x, y = torch.randn(4, 1, 28, 28, generator=gen), torch.randint(0, 10, (4,), generator=gen)
    return x, lambda out: torch.nn.functional.nll_loss(torch.log(out + 1e-9), y)


def _by_hand(state: dict, names: list[str], rules: dict[str, list[tuple[int, np.ndarray, np.ndarray]]]) -> dict:
    """The optimizer state rebuilt directly from the channel map: each listed parameter's tensors
    gathered along their axis; first moments times the share, second moments times its square."""
    import torch

    grown = {}
    for index, entry in state["state"].items():
        name = names[index]
        new = {}
        for key, value in entry.items():
            if name not in rules or key == "step":
                new[key] = value
                continue
            power = 2 if key == "exp_avg_sq" else 1
            for axis, src, coef in rules[name]:
                shape = [1] * value.dim()
                shape[axis] = -1
                factor = torch.from_numpy(coef ** power).reshape(shape)
                value = (value.index_select(axis, torch.from_numpy(src)).double() * factor).float()
            new[key] = value
        grown[index] = new
    return {"state": grown, "param_groups": state["param_groups"]}


@pytest.mark.torch
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("noise", [0.0, 0.2])
def test_training_goes_on_mlp(optimizer: str, noise: float, tmp_path: Path) -> None:
    """Train, grow layer_1 4 → 7 through ONNX, grow the optimizer state with the map, train on:
    the same parameters, bit for bit, as with the state rebuilt by hand from the channel map."""
    torch = pytest.importorskip("torch")
    from tests.helpers.export import MLP

    torch.manual_seed(0)
    model = MLP()
    make = (lambda ps: torch.optim.Adam(ps, lr=1e-2)) if optimizer == "adam" else \
        (lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9))
    opt = make(model.parameters())
    _train(model, opt, 3, 0, _mlp_batch)
    path = tmp_path / "mlp.onnx"
    torch.onnx.export(model, (torch.randn(2, 3),), str(path), dynamo=False, input_names=["x"], output_names=["y"])
    grown, report = onnxgrow.widen(path, {"layer_1": 7}, noise=noise, seed=5)
    names = [n for n, _ in model.named_parameters()]
    cmap = build_channel_map(4, 7, Init.NET2WIDER, noise, 5)
    rules = {"layer_1.weight": [(0, cmap.src, np.ones(7))], "layer_1.bias": [(0, cmap.src, np.ones(7))],
             "layer_2.weight": [(1, cmap.src, cmap.coef)]}
    assert_map_follows_the_channel_map(report.growth_map, rules)
    runs = []
    # deep copies: the grown state shares the tensors the map leaves alone, and training updates them in place
    for state in (apply_growth_map(copy.deepcopy(opt.state_dict()), report.growth_map, names),
                  _by_hand(copy.deepcopy(opt.state_dict()), names, rules)):
        wider = MLP(width_1=7)
        wider.load_state_dict(_torch_state(grown), strict=True)
        x = torch.randn(5, 3)
        with torch.no_grad():
            torch.testing.assert_close(wider(x), model(x), rtol=1e-5, atol=1e-6)
        wider_opt = make(wider.parameters())
        wider_opt.load_state_dict(state)
        _train(wider, wider_opt, 4, 1, _mlp_batch)
        runs.append(wider)
    for (name, a), (_, b) in zip(runs[0].named_parameters(), runs[1].named_parameters()):
        assert torch.equal(a, b), name
    # and the map did something: without growing the state the run differs
    plain = MLP(width_1=7)
    plain.load_state_dict(_torch_state(grown))
    _train(plain, make(plain.parameters()), 4, 1, _mlp_batch)
    assert not torch.equal(plain.layer_2.weight, runs[0].layer_2.weight)


@pytest.mark.torch
def test_training_goes_on_cnn_fc1(tmp_path: Path) -> None:
    """MNIST CNN: fc1 64 → 80 (net2wider) with SGD momentum, and the second moments of Adam."""
    torch = pytest.importorskip("torch")
    from tests.helpers.export import MnistCNN

    torch.manual_seed(0)
    model = MnistCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    _train(model, opt, 2, 0, _cnn_batch)
    path = tmp_path / "cnn.onnx"
    model.eval()  # no dropout or batch norm: the mode changes nothing but the exporter's warning
    torch.onnx.export(model, (torch.randn(1, 1, 28, 28),), str(path), dynamo=True, input_names=["x"],
                      output_names=["y"]).save(str(path), external_data=False)  # type: ignore[union-attr]
    grown, report = onnxgrow.widen(path, {"fc1": 80}, seed=3)
    names = [n for n, _ in model.named_parameters()]
    cmap = build_channel_map(64, 80, Init.NET2WIDER, 0.0, 3)
    rules = {"fc1.weight": [(0, cmap.src, np.ones(80))], "fc1.bias": [(0, cmap.src, np.ones(80))],
             "fc2.weight": [(1, cmap.src, cmap.coef)]}
    assert_map_follows_the_channel_map(report.growth_map, rules)
    runs = []
    # deep copies: the grown state shares the tensors the map leaves alone, and training updates them in place
    for state in (apply_growth_map(copy.deepcopy(opt.state_dict()), report.growth_map, names),
                  _by_hand(copy.deepcopy(opt.state_dict()), names, rules)):
        wider = MnistCNN(fc1=80)
        wider.load_state_dict(_torch_state(grown), strict=True)
        wider_opt = torch.optim.Adam(wider.parameters(), lr=1e-3)
        wider_opt.load_state_dict(state)
        _train(wider, wider_opt, 2, 1, _cnn_batch)
        runs.append(wider)
    for (name, a), (_, b) in zip(runs[0].named_parameters(), runs[1].named_parameters()):
        assert torch.equal(a, b), name


@pytest.mark.torch
def test_fresh_units_start_with_zero_state() -> None:
    """zero-pad: new units are fresh (src -1), so their optimizer state starts at zero."""
    torch = pytest.importorskip("torch")
    path = fixture_path("mlp_legacy")
    _, report = onnxgrow.widen(path, {"layer_1": 6}, init="zero-pad")
    # layer_1 (4 units on 3 inputs) grows to 6 units; layer_2 contracts them
    assert {w.name: (w.old_shape, w.new_shape) for w in report.growth_map.weights} == {
        "layer_1.weight": ((4, 3), (6, 3)), "layer_1.bias": ((4,), (6,)), "layer_2.weight": ((5, 4), (5, 6))}
    weights = report.growth_map.by_name()
    assert list(weights["layer_1.weight"].axes[0].src) == [0, 1, 2, 3, -1, -1]
    names = ["layer_1.weight", "layer_1.bias", "layer_2.weight", "layer_2.bias", "layer_3.weight", "layer_3.bias"]
    state = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(4, 3), "exp_avg_sq": torch.ones(4, 3)},
                       2: {"step": torch.tensor(3.0), "exp_avg": torch.ones(5, 4), "exp_avg_sq": torch.ones(5, 4)}},
             "param_groups": [{"params": list(range(6))}]}
    grown = apply_growth_map(state, report.growth_map, names)
    assert torch.equal(grown["state"][0]["exp_avg"][4:], torch.zeros(2, 3))
    assert torch.equal(grown["state"][2]["exp_avg_sq"][:, 4:], torch.zeros(5, 2))
    assert torch.equal(grown["state"][0]["step"], torch.tensor(3.0))
    with pytest.raises(GrowError, match="needs param_names"):
        apply_growth_map(state, report.growth_map)
    with pytest.raises(GrowError, match="has shape"):
        apply_growth_map({"layer_1.weight": torch.ones(2, 2)}, report.growth_map)
