"""Fuzz: random graphs (MLP, CNN, residual, transformer FFN; fp32/fp16/bf16/fp64; opsets 13 to
the newest onnxruntime loads; dynamic dims) grown by random valid and invalid requests.

Properties, for every case:
- an invalid request (unknown name, width not larger or absurd, not an integer, bad init or
  noise, a node that is not a layer, nothing asked) raises GrowError, writes nothing;
- a valid request on a layer known to be growable is written, passes ``onnx.checker``'s full
  check, and onnxruntime (run here directly, not through onnxgrow.verify) finds the grown
  model equal to the original within the dtype's tolerance (random-pad excepted);
- a valid request on a layer known to be blocked (model output or input reached, LayerNorm
  over the channels with a non-multiple width) raises GrowError;
- nothing else: never another exception type; the input file is never modified; no
  temporary file is left beside the output.

Example counts are small by default; ``ONNXGROW_FUZZ_LONG=1`` multiplies them (see
:data:`LONG`). Failing examples are printed by hypothesis and stored in its database.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from onnx import TensorProto

import onnxgrow
from onnxgrow.options import GrowOptions, VerifyOptions
from tests.helpers.fuzz_graphs import FuzzModel, LayerSpec, fuzz_models
from tests.helpers.robustness import (
    assert_checker_passes,
    assert_clean,
    assert_equivalent,
    listing,
    model_files,
    run_cli,
    untouched,
)

LONG = os.environ.get("ONNXGROW_FUZZ_LONG") == "1"


def fuzz_settings(examples: int) -> settings:
    """``examples`` cases by default, 25 times as many with ONNXGROW_FUZZ_LONG=1."""
    return settings(max_examples=examples * 25 if LONG else examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                    print_blob=True)


@dataclass
class Request:
    """One call of ``widen`` (or ``deepen``, with ``after``/``width``/``mode``): what is asked
    and what must happen."""

    kind: str
    widths: dict[Any, Any]
    init: Any = "net2wider"
    noise: Any = 0.0
    seed: Any = 0
    expect: str = "refuse"  # grow | refuse | either
    layers: tuple[LayerSpec, ...] = ()
    op: str = "widen"
    after: Any = None
    width: Any = None
    mode: Any = "auto"

    def run(self, src: Path, out: Path, options: GrowOptions) -> object:
        if self.op == "deepen":
            return onnxgrow.deepen_file(src, out, self.after, width=self.width, mode=self.mode,
                                        seed=self.seed, options=options)
        return onnxgrow.widen_file(src, out, self.widths, init=self.init, noise=self.noise,
                                   seed=self.seed, options=options)


ABSURD_WIDTHS = [10**12, 10**15, 2**63, 10**30]
NOT_INTEGERS = [7.5, "eight", "8.5", True, None, float("nan")]  # "8" is a size: the API takes "8", "2x", "+8"
BAD_INITS = ["net2deeper", "", "NET2WIDER", "zero_pad"]
BAD_NOISE = [-0.1, float("nan"), float("inf"), -float("inf")]
BAD_SEEDS = [-1, -(2**70), 1.5, "0"]


@st.composite
def valid_request(draw: st.DrawFn, model: FuzzModel) -> Request:
    """One or two layers widened, by any name they answer to, with any init."""
    count = draw(st.integers(1, min(2, len(model.layers))))
    layers = draw(st.lists(st.sampled_from(model.layers), min_size=count, max_size=count,
                           unique_by=lambda spec: spec.names[0]))
    init = draw(st.sampled_from(["net2wider", "net2wider", "zero-pad", "random-pad"]))
    noise = draw(st.sampled_from([0.0, 0.05])) if init == "net2wider" else 0.0
    widths: dict[str, int] = {}
    expects = []
    for spec in layers:
        if spec.multiple_of and draw(st.booleans()):
            width = spec.width * draw(st.integers(2, 3))
        else:
            width = spec.width + draw(st.integers(1, 12))
        widths[draw(st.sampled_from(spec.names))] = width
        expects.append(spec.expectation(width, init))
    if "refuse" in expects:
        expect = "refuse"
    elif "either" in expects or len(layers) > 1:
        expect = "either"  # two layers may share one channel group with different widths
    else:
        expect = "grow"
    return Request("valid", widths, init, noise, draw(st.integers(0, 2**31)), expect, tuple(layers))


@st.composite
def invalid_request(draw: st.DrawFn, model: FuzzModel) -> Request:
    """A request that must be refused whatever the graph."""
    spec = draw(st.sampled_from(model.layers))
    name = draw(st.sampled_from(spec.names))
    kinds = ["unknown name", "not wider", "absurd width", "not an integer", "bad init", "bad noise",
             "noise without net2wider", "bad seed", "nothing asked"]
    if model.other_node_names:
        kinds.append("not a layer")
    kind = draw(st.sampled_from(kinds))
    request = Request(kind, {name: spec.width + 1})
    if kind == "unknown name":
        text = draw(st.text(min_size=0, max_size=12))
        request.widths = {f"zz{text}": spec.width + 1} if draw(st.booleans()) else {"": spec.width + 1}
    elif kind == "not wider":
        request.widths = {name: spec.width - draw(st.integers(0, spec.width + 3))}
    elif kind == "absurd width":
        request.widths = {name: draw(st.sampled_from(ABSURD_WIDTHS))}
    elif kind == "not an integer":
        request.widths = {name: draw(st.sampled_from(NOT_INTEGERS))}
    elif kind == "bad init":
        request.init = draw(st.sampled_from(BAD_INITS))
    elif kind == "bad noise":
        request.noise = draw(st.sampled_from(BAD_NOISE))
    elif kind == "noise without net2wider":
        request.init, request.noise = draw(st.sampled_from(["zero-pad", "random-pad"])), 0.1
    elif kind == "bad seed":
        request.seed = draw(st.sampled_from(BAD_SEEDS))
    elif kind == "nothing asked":
        request.widths = {}
    elif kind == "not a layer":
        request.widths = {draw(st.sampled_from(model.other_node_names)): 4}
    return request


@st.composite
def deepen_request(draw: st.DrawFn, model: FuzzModel) -> Request:
    """Insert a layer after a random layer: exact or refused; or an invalid deepen request."""
    spec = draw(st.sampled_from(model.layers))
    request = Request("deepen", {}, op="deepen", after=draw(st.sampled_from(spec.names)),
                      mode=draw(st.sampled_from(["auto", "identity", "residual"])),
                      width=draw(st.sampled_from([None, spec.width + draw(st.integers(1, 6))])),
                      seed=draw(st.integers(0, 2**31)), expect="either")
    invalid = draw(st.sampled_from([None, None, "unknown name", "not wider", "bad mode", "bad seed"]))
    if invalid is not None:
        request.kind, request.expect = f"deepen: {invalid}", "refuse"
        if invalid == "unknown name":
            request.after = "zz" + draw(st.text(max_size=8))
        elif invalid == "not wider":
            request.width = spec.width - draw(st.integers(0, spec.width + 2))
        elif invalid == "bad mode":
            request.mode = draw(st.sampled_from(["", "Identity", "sideways"]))
        else:
            request.seed = draw(st.sampled_from(BAD_SEEDS))
    return request


@st.composite
def fuzz_cases(draw: st.DrawFn, dtypes: list[int] | None = None) -> tuple[FuzzModel, Request]:
    model = draw(fuzz_models(dtypes))
    request = draw(st.one_of(valid_request(model), valid_request(model), invalid_request(model),
                             deepen_request(model)))
    return model, request


def check_case(model: FuzzModel, request: Request, folder: Path) -> str:
    """Run one request through ``widen_file`` and check the properties; returns the outcome."""
    src = folder / "model.onnx"
    onnx.save(model.proto, str(src))
    out = folder / "grown.onnx"
    # onnxruntime's CPU provider has no bfloat16 kernels: bf16 is checked here on float32 copies.
    options = GrowOptions(verify=VerifyOptions(input_shapes=model.input_shapes)
                          if model.dtype != TensorProto.BFLOAT16 else None)
    before = listing(folder)
    with untouched(src):
        onnxgrow.inspect_model(src)  # inspect plans every layer's group: it must never fail
        try:
            request.run(src, out, options)
        except onnxgrow.GrowError as exc:
            assert str(exc) and "\n" not in str(exc).strip(), repr(exc)
            assert request.expect != "grow", f"refused a growable request: {exc}"
            assert listing(folder) == before, "files left behind by a refused request"
            event(f"refused: {request.kind}: {type(exc).__name__}")
            return "refused"
    assert request.expect != "refuse", f"{request.kind} request {request} was not refused"
    assert listing(folder) - before == {p.name for p in model_files(out)}, listing(folder) - before
    assert_checker_passes(out)
    if request.init != "random-pad":
        assert_equivalent(src, out, model.input_shapes, model.dtype)
    event(f"grown: {request.op} {model.fragment}")
    return "grown"


@fuzz_settings(300)
@given(fuzz_cases())
def test_random_graphs_and_requests(case: tuple[FuzzModel, Request]) -> None:
    model, request = case
    with tempfile.TemporaryDirectory() as tmp:
        check_case(model, request, Path(tmp))


@fuzz_settings(100)
@given(fuzz_cases(dtypes=[TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16]))
def test_low_and_high_precision_graphs(case: tuple[FuzzModel, Request]) -> None:
    """fp16/bf16/fp64 cases on their own, so every run draws some of each."""
    model, request = case
    with tempfile.TemporaryDirectory() as tmp:
        check_case(model, request, Path(tmp))


def _cli_args(request: Request) -> list[str] | None:
    """The request as ``onnxgrow widen`` options; None when the CLI cannot express it."""
    if request.op != "widen":
        return None
    args: list[str] = []
    for name, width in request.widths.items():
        if not isinstance(width, int) or isinstance(width, bool):
            return None
        args += ["--node", name, "--to", str(width)]
    if not args or not isinstance(request.seed, int) or not isinstance(request.init, str):
        return None
    return args + ["--init", request.init, "--noise", repr(float(request.noise)), "--seed", str(request.seed)]


@fuzz_settings(100)
@given(fuzz_cases(dtypes=[TensorProto.FLOAT, TensorProto.FLOAT16]))
def test_random_requests_through_the_cli(case: tuple[FuzzModel, Request]) -> None:
    """The same requests through ``onnxgrow widen``: exit 0 or 2, one error line, no traceback."""
    model, request = case
    args = _cli_args(request)
    if args is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        src, out = folder / "model.onnx", folder / "grown.onnx"
        onnx.save(model.proto, str(src))
        shapes = [f"{k}:{v}".replace(" ", "") for k, v in model.input_shapes.items()]
        with untouched(src):
            result = run_cli("widen", src, *args, "-o", out, *sum((["--input-shapes", s] for s in shapes), []))
        assert_clean(result, (0, 2))
        if request.expect == "grow" or (request.expect == "either" and result.code == 0):
            assert result.code == 0, result.stderr
            assert_checker_passes(out)
        elif request.expect == "refuse":
            assert result.code == 2 and not out.exists()
