"""Growth inside If branches and Loop/Scan bodies (docs/design.md §1, ``rules/control_flow.py``).

- Networks that an exporter put inside an If (a voice detector's ``if sr == 16000`` choosing
  one of two networks: TorchScript's scripted export, and ``torch.cond`` through the dynamo
  exporter) or a Loop (a scripted ``for`` over a run-time count) are listed by ``inspect``
  under the user's names and grow exactly; every branch and trip count is compared on
  onnxruntime here, not only the one ``onnxgrow.verify``'s random inputs take.
- Channels that flow into a subgraph (captured from the outer scope, a loop-carried value, a
  scanned tensor) and out of it grow with everything they reach.
- An If whose branches disagree on the channels is refused, naming the If.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxgrow
from tests.helpers.control_flow_graphs import captured_path_model
from tests.helpers.robustness import assert_checker_passes, assert_clean, run_cli, untouched

MAX_REL = 1e-5


def _run(path: Path, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, dict(feeds))


def assert_same(src: Path, out: Path, feeds: Iterable[Mapping[str, np.ndarray]]) -> float:
    """Both models agree on every feed (each takes another branch or trip count); the worst rel error."""
    worst = 0.0
    for feed in feeds:
        for a, b in zip(_run(src, feed), _run(out, feed)):
            error = float(np.abs(a.astype(np.float64) - b).max() / max(np.abs(a).max(), 1e-30))
            assert error <= MAX_REL, (out.name, {k: v.tolist() for k, v in feed.items() if v.size == 1}, error)
            worst = max(worst, error)
    return worst


# ----- PyTorch exports ------------------------------------------------------------------------
def _voice_detector(torch: object) -> object:
    import torch.nn as nn

    class Network(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.encoder = nn.Sequential(nn.Conv1d(1, channels, 3, padding=1), nn.ReLU(),
                                         nn.Conv1d(channels, channels, 3, padding=1), nn.ReLU())
            self.decoder = nn.Conv1d(channels, 1, 1)

        def forward(self, x):  # noqa: ANN001, ANN202 (TorchScript reads the annotations)
            return self.decoder(self.encoder(x)).sigmoid()

    class VoiceDetector(nn.Module):
        """The whole network inside ``if sr == 16000``, one per sampling rate."""

        def __init__(self) -> None:
            super().__init__()
            self._model = Network(8)
            self._model_8k = Network(4)

        def forward(self, x, sr: int):  # noqa: ANN001, ANN202
            if sr == 16000:
                out = self._model(x)
            else:
                out = self._model_8k(x)
            return out

    return VoiceDetector().eval()


def _export(kind: str, path: Path) -> Path:
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    x = torch.randn(1, 1, 16)
    if kind == "scripted If":
        torch.onnx.export(torch.jit.script(_voice_detector(torch)), (x, torch.tensor(16000)), str(path),
                          dynamo=False, input_names=["x", "sr"], opset_version=16)
    elif kind == "torch.cond":
        detector = _voice_detector(torch)

        class Cond(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self._model, self._model_8k = detector._model, detector._model_8k

            def forward(self, x, sr):  # noqa: ANN001, ANN202
                return torch.cond(sr == 16000, lambda x: self._model(x), lambda x: self._model_8k(x), (x,))

        torch.onnx.export(Cond().eval(), (x, torch.tensor(16000)), dynamo=True, input_names=["x", "sr"]).save(str(path))
    else:
        import torch.nn.functional as F

        class Looped(torch.nn.Module):
            """A residual block applied ``steps`` times (a Loop whose state carries the stem's channels)."""

            def __init__(self) -> None:
                super().__init__()
                self.stem = torch.nn.Conv1d(1, 6, 3, padding=1)
                self.block_a = torch.nn.Conv1d(6, 5, 3, padding=1)
                self.block_b = torch.nn.Conv1d(5, 6, 3, padding=1)
                self.head = torch.nn.Conv1d(6, 1, 1)

            def forward(self, x, steps: int):  # noqa: ANN001, ANN202
                h = F.relu(self.stem(x))
                for _ in range(steps):
                    h = h + self.block_b(F.relu(self.block_a(h)))
                return self.head(h)

        torch.onnx.export(torch.jit.script(Looped().eval()), (x, torch.tensor(3)), str(path), dynamo=False,
                          input_names=["x", "steps"], opset_version=16)
    return path


def _feeds(kind: str) -> list[dict[str, np.ndarray]]:
    x = np.random.default_rng(5).standard_normal((1, 1, 16)).astype(np.float32)
    if kind == "Loop":
        return [{"x": x, "steps": np.array(steps, np.int64)} for steps in (0, 1, 3)]
    return [{"x": x, "sr": np.array(sr, np.int64)} for sr in (16000, 8000)]


EXPECTED = {
    "scripted If": {"_model.encoder.0": True, "_model.encoder.2": True, "_model.decoder": False,
                    "_model_8k.encoder.0": True, "_model_8k.encoder.2": True, "_model_8k.decoder": False},
    "Loop": {"stem": True, "block_a": True, "block_b": True, "head": False},
}
EXPECTED["torch.cond"] = EXPECTED["scripted If"]


@pytest.mark.torch
@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_layers_inside_a_subgraph_are_listed_and_grow_exactly(kind: str, tmp_path: Path) -> None:
    src = _export(kind, tmp_path / "model.onnx")
    assert any(node.op_type in ("If", "Loop") for node in onnx.load(str(src)).graph.node)
    summary = onnxgrow.inspect_model(src)
    assert {info.name: info.widenable for info in summary.layers} == EXPECTED[kind]
    assert all("model output" in info.reason for info in summary.layers if not info.widenable)
    for k, info in enumerate(info for info in summary.layers if info.widenable):
        out = tmp_path / f"{k}.onnx"
        with untouched(src):
            result = run_cli("widen", src, "--node", info.name, "--to", info.width + 3, "-o", out)
        assert_clean(result, (0,))
        assert_checker_passes(out)
        assert_same(src, out, _feeds(kind))
        assert {i.name: i.width for i in onnxgrow.inspect_model(out).layers}[info.name] == info.width + 3


@pytest.mark.torch
@pytest.mark.parametrize(("kind", "layer", "width"), [("scripted If", "_model.encoder.0", None),
                                                      ("Loop", "block_a", 9)])
def test_deepen_inside_a_subgraph(kind: str, layer: str, width: int | None, tmp_path: Path) -> None:
    src = _export(kind, tmp_path / "model.onnx")
    out = tmp_path / "deep.onnx"
    report = onnxgrow.deepen_file(src, out, layer, width=width)
    assert report.verification is not None and report.verification.passed
    assert_checker_passes(out)
    assert_same(src, out, _feeds(kind))
    names = [info.name for info in onnxgrow.inspect_model(out).layers]
    assert f"{layer}_deep" in names


# ----- channels flowing into a subgraph and out again ------------------------------------------
@pytest.mark.parametrize("holder", ["If", "Loop", "Scan"])
def test_channels_flow_through_a_subgraph(holder: str, tmp_path: Path) -> None:
    """``fc1 → Relu`` reaches ``fc2`` through an If (captured by both branches), a Loop's state
    or a Scan's rows: fc1 widens, fc2 contracts, the subgraph's nodes carry the channels."""
    src = captured_path_model(tmp_path / "cf.onnx", holder)
    out = tmp_path / "wide.onnx"
    with untouched(src):
        report = onnxgrow.widen_file(src, out, {"fc1": 6})
    assert len(report.groups[0].contractors) == 1 and report.groups[0].contractors[0].startswith("fc2")
    assert_checker_passes(out)
    x = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    assert_same(src, out, [{"x": x, "cond": np.array(cond)} for cond in (True, False)])


def test_a_loop_state_that_starts_as_a_constant_is_refused_naming_the_loop(tmp_path: Path) -> None:
    src = captured_path_model(tmp_path / "cf.onnx", "nested If in Loop")
    with pytest.raises(onnxgrow.RefusedError, match="at Loop node 'holder': constant 'zeros' would have to carry"):
        onnxgrow.widen(src, {"fc1": 6})


# ----- bad input: branches that disagree ----------------------------------------------------------
def _disagreeing_if(path: Path, other: str) -> Path:
    """``If(cond)``: the then branch convolves x to 4 channels; the else branch returns 3 convolved
    channels (``other="narrower"``) or a constant of 4 (``other="constant"``); a Conv reads the result."""
    rng = np.random.default_rng(2)
    inits = {"w_then": rng.standard_normal((4, 3, 1, 1)).astype(np.float32),
             "w_else": rng.standard_normal((3, 3, 1, 1)).astype(np.float32),
             "zeros": np.zeros((1, 4, 5, 5), np.float32),
             "w_out": rng.standard_normal((2, 4, 1, 1)).astype(np.float32)}
    value = helper.make_tensor_value_info
    then_branch = helper.make_graph([helper.make_node("Conv", ["x", "w_then"], ["t"], name="conv_then")], "then",
                                    [], [value("t", TensorProto.FLOAT, [1, 4, 5, 5])])
    if other == "narrower":
        else_nodes = [helper.make_node("Conv", ["x", "w_else"], ["e"], name="conv_else")]
        tail = [helper.make_node("ReduceMean", ["b"], ["y"], name="mean", keepdims=0)]
        output = value("y", TensorProto.FLOAT, [])
    else:
        else_nodes = [helper.make_node("Identity", ["zeros"], ["e"], name="zero_branch")]
        tail = [helper.make_node("Conv", ["b", "w_out"], ["y"], name="out")]
        output = value("y", TensorProto.FLOAT, [1, 2, 5, 5])
    else_branch = helper.make_graph(else_nodes, "else", [], [value("e", TensorProto.FLOAT, None)])
    nodes = [helper.make_node("If", ["cond"], ["b"], name="branch", then_branch=then_branch, else_branch=else_branch),
             *tail]
    inputs = [value("x", TensorProto.FLOAT, [1, 3, 5, 5]), value("cond", TensorProto.BOOL, [])]
    graph = helper.make_graph(nodes, "g", inputs, [output], [numpy_helper.from_array(a, n) for n, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(("other", "reason"), [
    ("narrower", "its branches disagree on the channels of output 'b' (axis -3: 4 in then_branch, 3 in else_branch)"),
    ("constant", "its branches disagree on the channels of output 'b': else_branch returns the constant 'e'"),
])
def test_branches_that_disagree_are_refused_naming_the_if(other: str, reason: str, tmp_path: Path) -> None:
    src = _disagreeing_if(tmp_path / "if.onnx", other)
    out = tmp_path / "wide.onnx"
    with untouched(tmp_path):
        result = run_cli("widen", src, "--node", "conv_then", "--to", 6, "-o", out)
    assert_clean(result, (2,))
    assert f"cannot widen 'conv_then' at If node 'branch': {reason}" in result.stderr, result.stderr
    info = next(i for i in onnxgrow.inspect_model(src).layers if i.node == "conv_then")
    assert not info.widenable and reason in info.reason


# ----- names of unnamed layers inside a branch ------------------------------------------------------
def test_unnamed_layers_inside_a_branch_get_names_under_their_if(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    value = helper.make_tensor_value_info
    branch = helper.make_graph([helper.make_node("Gemm", ["x", "w1"], ["h"], transB=1),
                                helper.make_node("Relu", ["h"], ["r"]),
                                helper.make_node("Gemm", ["r", "w2"], ["t"], transB=1)], "then", [],
                               [value("t", TensorProto.FLOAT, [2, 2])])
    other = helper.make_graph([helper.make_node("Neg", ["x2"], ["e"])], "else", [],
                              [value("e", TensorProto.FLOAT, [2, 2])])
    inits = {"w1": rng.standard_normal((5, 3)).astype(np.float32), "w2": rng.standard_normal((2, 5)).astype(np.float32)}
    graph = helper.make_graph([helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=other)], "g",
                              [value("x", TensorProto.FLOAT, [2, 3]), value("x2", TensorProto.FLOAT, [2, 2]),
                               value("cond", TensorProto.BOOL, [])], [value("y", TensorProto.FLOAT, [2, 2])],
                              [numpy_helper.from_array(a, n) for n, a in inits.items()])
    src = tmp_path / "u.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(src))
    layers = onnxgrow.inspect_model(src).layers
    assert [info.node for info in layers] == ["If_0/then_branch/Gemm_0", "If_0/then_branch/Gemm_1"]
    assert "If_0/then_branch/Gemm_0" in [layers[0].name, *layers[0].aliases]
    out = tmp_path / "w.onnx"
    assert_clean(run_cli("widen", src, "--node", "If_0/then_branch/Gemm_0", "--to", 8, "-o", out), (0,))
    feeds = [{"x": np.ones((2, 3), np.float32), "x2": np.ones((2, 2), np.float32), "cond": np.array(c)}
             for c in (True, False)]
    assert_same(src, out, feeds)
    then = next(a.g for a in onnx.load(str(out)).graph.node[0].attribute if a.name == "then_branch")
    branch_nodes = [n.name for n in then.node]
    assert branch_nodes == ["If_0/then_branch/Gemm_0", "", ""]  # only the grown node gets its name written
