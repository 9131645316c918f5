"""inspect: layers, widths, names to type, groups and refusal reasons."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from conftest import fixture_path

from onnxgrow.cli import main


@pytest.mark.parametrize("model_name", ["mnist_cnn_legacy", "mnist_cnn_dynamo"])
def test_inspect_text(model_name: str) -> None:
    result = CliRunner().invoke(main, ["inspect", str(fixture_path(model_name))])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for name in ("conv1", "conv2", "fc1", "fc2"):
        assert f"\n  {name} " in out
    assert "yes; divides conv2" in out
    assert "Softmax over the widened axis" in out
    assert "x  float  [batch, 1, 28, 28]" in out


def test_inspect_json() -> None:
    result = CliRunner().invoke(main, ["inspect", str(fixture_path("mlp_dynamo")), "--json", "-"])
    data = json.loads(result.stdout)
    layers = {layer["name"]: layer for layer in data["layers"]}
    assert layers["layer_2"]["width"] == 5 and layers["layer_2"]["widenable"]
    assert layers["layer_2"]["touches"] == ["layer_3"]
    assert layers["layer_2"]["activation"] == "Relu"
    assert not layers["layer_3"]["widenable"] and "model output" in layers["layer_3"]["reason"]
    assert "node_linear_1" in layers["layer_2"]["aliases"]


def test_inspect_bad_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "x.onnx"
    bad.write_text("nope")
    result = CliRunner().invoke(main, ["inspect", str(bad)])
    assert result.exit_code == 2 and "not" in result.stderr
