"""Scale behaviour at small size: streaming saves, memory that does not follow the model's
size, sharding, progress bars, shape inference at load, and the benchmark's models.

The > 2 GiB path itself is in ``test_large_models.py`` (opt-in).
"""

from __future__ import annotations

import io
import re
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import onnx_ir as ir
import pytest
from click.testing import CliRunner
from onnx_ir.passes.common import ShapeInferencePass

from onnxgrow import data_files, grown_tensors
from onnxgrow.cli import main
from onnxgrow.cli._options import parse_size
from onnxgrow.cli._progress import ProgressBars
from onnxgrow.errors import GrowError
from onnxgrow.model_io import SHAPES_INFERRED_KEY, load_model, save_model, weight_bytes
from onnxgrow.options import GrowOptions
from onnxgrow.shapes import infer_shapes
from onnxgrow.verification import input_specs, random_inputs
from onnxgrow.verification.runtime import Steps, run_model
from onnxgrow.widening.functions import widen_file
from tests.helpers import scale
from tests.helpers.cli import tree_hashes
from tests.helpers.paths import fixture_path

SMALL_CNN = dict(channels=(8, 16, 16, 16, 16), hidden=64, classes=10, image=32)
SMALL_TRANSFORMER = dict(width=64, ffn=256, heads=4, vocab=100, sequence=8)


@pytest.fixture(scope="module")
def small_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, scale.BuiltModel]:
    folder = tmp_path_factory.mktemp("scale")
    return {
        "cnn": scale.vgg_like(folder / "cnn" / "cnn.onnx", **SMALL_CNN),
        "transformer": scale.transformer(folder / "t" / "t.onnx", layers=3, **SMALL_TRANSFORMER),
    }


def data_paths(model: Path) -> list[Path]:
    return sorted(p for p in model.parent.iterdir() if p.name.endswith(".data"))


# --- the benchmark's models are valid and grow exactly ---------------------------------------


@pytest.mark.parametrize("kind", ["cnn", "transformer"])
def test_benchmark_models_widen_exactly(small_models, tmp_path: Path, kind: str) -> None:  # type: ignore[no-untyped-def]
    built = small_models[kind]
    layers = [(built.small_layer, built.small_width)]
    if built.large_layer:
        layers.append((built.large_layer, built.large_width))
    for name, width in layers:
        report = widen_file(built.path, tmp_path / f"{name}.onnx", {name: width})
        assert report.verification is not None and report.verification.passed
        assert report.verification.max_rel_error <= 1e-5
        assert report.groups[0].new_width == width


@pytest.mark.parametrize("sample_s", [0.0, 0.002])
def test_measure_reports_the_commands_peak_memory(sample_s: float) -> None:
    """The launcher reports the command's peak RSS and, with a sampling period, the peaks of
    its anonymous and file-backed memory (the child holds 200 MB long enough to be seen);
    without one, none."""
    child = "import time; b = bytearray(b'x') * 200_000_000; time.sleep(0.3)"
    done = scale.measure([sys.executable, "-c", child], sample_s=sample_s)
    assert done.returncode == 0 and done.peak_rss >= 200_000_000
    if sample_s:
        assert 200_000_000 <= done.peak_anon <= done.peak_rss and 0 < done.peak_file < done.peak_rss
    else:
        assert done.peak_anon == done.peak_file == 0


# --- saving streams unchanged weights ----------------------------------------------------


def test_unchanged_external_tensors_are_never_read(small_models, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    built = small_models["transformer"]
    read: list[str] = []
    real_numpy, real_tobytes = ir.ExternalTensor.numpy, ir.ExternalTensor.tobytes

    def numpy_spy(self):  # type: ignore[no-untyped-def]
        read.append(self.name)
        return real_numpy(self)

    def tobytes_spy(self):  # type: ignore[no-untyped-def]
        read.append(self.name)
        return real_tobytes(self)

    real_take = grown_tensors._Rows.take

    def take_spy(self, rows):  # type: ignore[no-untyped-def]  # grown weights read a block of rows at a time
        read.append(self.tensor.name)
        return real_take(self, rows)

    monkeypatch.setattr(ir.ExternalTensor, "numpy", numpy_spy)
    monkeypatch.setattr(ir.ExternalTensor, "tobytes", tobytes_spy)
    monkeypatch.setattr(grown_tensors._Rows, "take", take_spy)
    out = tmp_path / "wide.onnx"
    widen_file(built.path, out, {built.small_layer: built.small_width}, options=GrowOptions(verify=None))
    monkeypatch.undo()

    group = {f"{built.small_layer}.weight", f"{built.small_layer}.bias",
             built.small_layer.replace(".up", ".down") + ".weight"}
    source, grown = load_model(built.path), load_model(out)
    external = {n for n, v in source.graph.initializers.items() if isinstance(v.const_value, ir.ExternalTensor)}
    assert set(read) == group & external and len(read) >= 2
    unchanged = [n for n in source.graph.initializers if n not in group]
    assert len(unchanged) > 30
    for name in unchanged:
        before = source.graph.initializers[name].const_value
        after = grown.graph.initializers[name].const_value
        assert before.tobytes() == after.tobytes(), name


def test_memory_does_not_follow_model_size(tmp_path: Path) -> None:
    """Peak Python/numpy allocations of a widening: the same for 2 and 8 blocks."""
    peaks, weights = [], []
    for layers in (2, 8):
        built = scale.transformer(tmp_path / f"m{layers}" / "m.onnx", layers=layers, width=128,
                                          ffn=512, heads=4, vocab=100, sequence=4)
        tracemalloc.start()
        widen_file(built.path, tmp_path / f"w{layers}.onnx", {"blocks.0.ffn.up": 640},
                   options=GrowOptions(verify=None))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        weights.append(built.weight_bytes)
    extra_weights = weights[1] - weights[0]
    assert extra_weights > 3_000_000
    assert peaks[1] - peaks[0] < extra_weights / 4, (peaks, weights)


# --- data file layout ----------------------------------------------------------------------


def mixed_tensors(folder: Path) -> list[ir.TensorProtocol]:
    """External tensors back to back in one file, one out of order, and in-memory ones between."""
    rng = np.random.default_rng(0)
    sizes = [3000, 70_000, 5000, 200_000, 9000, 1500, 120_000]
    blob = rng.integers(0, 255, sum(sizes), dtype=np.uint8)
    (folder / "src.data").write_bytes(blob.tobytes())
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    ext = [ir.ExternalTensor("src.data", int(o), n, ir.DataType.UINT8, shape=ir.Shape([n]), name=f"e{i}",
                             base_dir=str(folder)) for i, (o, n) in enumerate(zip(offsets, sizes))]
    mem = [ir.Tensor(rng.integers(0, 255, n, dtype=np.uint8), name=f"m{n}") for n in (4000, 80_000)]
    return [ext[0], ext[1], ext[2], mem[0], ext[3], ext[4], ext[6], ext[5], mem[1]]


@pytest.mark.parametrize("shard", [None, 100_000, 150_000])
def test_data_layout_copies_runs_aligned_and_bytes_survive(tmp_path: Path, monkeypatch, shard) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(data_files, "RUN_ALIGNMENT", 4096)
    monkeypatch.setattr(data_files, "ALIGN_RUNS_FROM", 50_000)
    monkeypatch.setattr(data_files, "COPY_CHUNK_BYTES", 30_000)
    tensors = mixed_tensors(tmp_path)
    files = data_files.plan(tensors, shard)
    placed = [t.name for f in files for r in f.runs for t in r.tensors]
    assert placed == [t.name for t in tensors]
    runs = [r for f in files for r in f.runs]
    if shard is None:
        assert [len(r.tensors) for r in runs] == [3, 1, 2, 1, 1, 1]  # e0-e2 | m | e3 e4 | e6 | e5 | m
    for f in files:
        ends = [r.offset + r.length for r in f.runs]
        assert all(a <= r.offset for a, r in zip([0, *ends], f.runs))  # no overlap
        if shard is not None and sum(len(r.tensors) for r in f.runs) > 1:
            assert f.end <= shard
    for r in runs:
        if r.source is not None and r.length >= 50_000:
            assert (r.offset - r.source_offset) % 4096 == 0
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    progress: list[tuple[int, int]] = []
    written = data_files.write(tensors, out, max_shard_bytes=shard, progress=lambda d, t: progress.append((d, t)))
    assert [t.name for t in written] == [t.name for t in tensors]
    for before, after in zip(tensors, written):
        assert after.tobytes() == before.tobytes(), before.name
    total = sum(t.nbytes for t in tensors)
    assert progress[-1] == (total, total) and len(progress) > len(runs)
    names = sorted(p.name for p in out.parent.iterdir())
    assert names == data_files.data_file_names(out, len(files))
    assert all(data_files.is_data_file_of(out, out.parent / n) for n in names)


# --- sharding -----------------------------------------------------------------------------


def test_sharded_save_verifies_and_reloads(small_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    built = small_models["transformer"]
    out = tmp_path / "wide.onnx"
    shard = 300_000
    report = widen_file(built.path, out, {built.small_layer: built.small_width},
                        options=GrowOptions(max_shard_bytes=shard))
    assert report.verification is not None and report.verification.passed
    shards = data_paths(out)
    assert len(shards) >= 3
    assert all(re.fullmatch(r"wide\.[0-9a-f]{8}-\d{5}-of-\d{5}\.onnx\.data", p.name) for p in shards)
    grown = load_model(out)
    largest = max(v.const_value.nbytes for v in grown.graph.initializers.values())
    assert all(p.stat().st_size <= max(shard, largest) for p in shards)
    assert sum(p.stat().st_size for p in shards) == weight_bytes(grown) - sum(
        v.const_value.nbytes for v in grown.graph.initializers.values()
        if not isinstance(v.const_value, ir.ExternalTensor))

    widen_file(built.path, out, {built.small_layer: built.small_width})  # unsharded over it
    assert [re.fullmatch(r"wide\.[0-9a-f]{8}\.onnx\.data", p.name) is not None for p in data_paths(out)] == [True]
    assert load_model(out) is not None


def test_save_refuses_nonpositive_shard_size(small_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(GrowError, match="positive"):
        save_model(load_model(small_models["cnn"].path), tmp_path / "x.onnx", max_shard_bytes=0)
    assert not list(tmp_path.iterdir())


def test_output_may_not_overwrite_an_input_shard(small_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    built = small_models["transformer"]
    sharded = tmp_path / "m.onnx"
    save_model(load_model(built.path), sharded, max_shard_bytes=300_000)
    before = tree_hashes(tmp_path)
    with pytest.raises(GrowError, match="refusing to overwrite the input"):
        widen_file(sharded, sharded, {built.small_layer: built.small_width})
    assert tree_hashes(tmp_path) == before


@pytest.mark.parametrize("text,expected", [("2GB", 2 * 10**9), ("512MiB", 512 * 2**20), ("1000", 1000),
                                           ("1.5 kb", 1500)])
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text, "--max-shard-size") == expected


def test_cli_rejects_a_bad_shard_size(small_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "w.onnx"
    result = CliRunner().invoke(main, ["widen", str(small_models["cnn"].path), "--node", "conv1", "--to", "12",
                                       "--max-shard-size", "lots", "-o", str(out)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --max-shard-size 'lots'") and result.stderr.count("\n") == 1
    assert not out.exists()


def test_cli_writes_shards(small_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "w.onnx"
    result = CliRunner().invoke(main, ["widen", str(small_models["transformer"].path), "--node",
                                       "blocks.1.ffn.up", "--to", "288", "--max-shard-size", "0.3MB",
                                       "-o", str(out), "--quiet"])
    assert result.exit_code == 0, result.stderr
    assert "PASSED" in result.stdout
    assert len(data_paths(out)) >= 3


# --- progress -----------------------------------------------------------------------------


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_bar_appears_only_after_the_delay_and_ends_its_line() -> None:
    term, clock = FakeTerminal(), FakeClock()
    with ProgressBars(quiet=False, file=term, show_after=1.5, clock=clock) as bars:
        bars("saving", 0, 4_000_000_000)
        clock.now = 1.0
        bars("saving", 1_000_000_000, 4_000_000_000)
        assert term.getvalue() == ""
        clock.now = 2.0
        bars("saving", 2_000_000_000, 4_000_000_000)
        assert "saving" in term.getvalue() and "4.00 GB" in term.getvalue() and "50%" in term.getvalue()
        bars("verifying", 0, 4)  # a new step: the saving bar's line is ended
        assert term.getvalue().endswith("\n")
        clock.now = 4.0
        bars("verifying", 2, 4)
    assert "verifying" in term.getvalue() and term.getvalue().endswith("\n")


def test_quick_steps_print_nothing() -> None:
    term, clock = FakeTerminal(), FakeClock()
    with ProgressBars(quiet=False, file=term, clock=clock) as bars:
        bars("saving", 0, 100)
        clock.now = 0.5
        bars("saving", 100, 100)
    assert term.getvalue() == ""


@pytest.mark.parametrize("quiet,terminal", [(True, True), (False, False)])
def test_no_bar_when_quiet_or_not_a_terminal(quiet: bool, terminal: bool) -> None:
    stream, clock = (FakeTerminal() if terminal else io.StringIO()), FakeClock()
    with ProgressBars(quiet=quiet, file=stream, clock=clock) as bars:
        clock.now = 10.0
        bars("saving", 1, 2)
    assert not bars.enabled and stream.getvalue() == ""


def test_a_step_without_a_total_shows_its_time_and_erases_it() -> None:
    """``loading`` (total 0) has no count: after the delay a thread redraws the elapsed seconds,
    and the line is erased when the next step starts; a quick one prints nothing."""
    term = FakeTerminal()
    with ProgressBars(quiet=False, file=term, show_after=0.2) as bars:
        bars("loading", 0, 0)
        time.sleep(0.1)
        bars("planning", 0, 0)  # the quick load: nothing drawn
        assert term.getvalue() == ""
        time.sleep(0.7)
        drawn = term.getvalue()
        assert "\rplanning " in drawn and drawn.rstrip().endswith(" s")
        bars("saving", 0, 10)
        assert term.getvalue().endswith("\r\x1b[K") and "loading" not in term.getvalue()


def test_inspect_reports_loading_and_every_layer_planned() -> None:
    from onnxgrow.inspect import inspect_model

    calls: list[tuple[str, int, int]] = []
    summary = inspect_model(fixture_path("mnist_cnn_dynamo"), lambda *a: calls.append(a))
    n = len(summary.layers)
    assert calls[0] == ("loading", 0, 0) and calls[-1] == ("planning", n, n)
    assert [d for stage, d, _ in calls if stage == "planning"] == [*range(n), n]


def test_widen_reports_progress_of_save_and_check(small_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    built = small_models["cnn"]
    calls: list[tuple[str, int, int]] = []
    widen_file(built.path, tmp_path / "w.onnx", {"fc1": 96}, options=GrowOptions(progress=lambda *a: calls.append(a)))
    saving = [c for c in calls if c[0] == "saving"]
    verifying = [c for c in calls if c[0] == "verifying"]
    assert saving[-1][1] == saving[-1][2] == weight_bytes(load_model(tmp_path / "w.onnx")) - sum(
        v.const_value.nbytes for v in load_model(tmp_path / "w.onnx").graph.initializers.values()
        if not isinstance(v.const_value, ir.ExternalTensor))
    assert [d for _, d, _ in saving] == sorted(d for _, d, _ in saving)
    assert verifying[0][1:] == (0, 4) and verifying[-1][1:] == (4, 4)
    assert calls.index(saving[-1]) < calls.index(verifying[0])


@pytest.mark.parametrize("command", ["widen", "verify"])
def test_cli_quiet_and_non_terminal_print_no_bar(small_models, tmp_path: Path, command: str) -> None:  # type: ignore[no-untyped-def]
    src = str(small_models["cnn"].path)
    wide = tmp_path / "w.onnx"
    widen_file(src, wide, {"conv1": 12})
    args = (["widen", src, "--node", "conv1", "--to", "12", "-o", str(tmp_path / "x.onnx")]
            if command == "widen" else ["verify", src, str(wide)])
    for extra in ([], ["--quiet"]):
        result = CliRunner().invoke(main, args + extra)
        assert result.exit_code == 0, result.stderr
        assert "%" not in result.stderr and "saving" not in result.stderr


# --- shape inference at load ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["cnn", "transformer"])
def test_shapes_inferred_at_load_match_the_pass(small_models, kind: str) -> None:  # type: ignore[no-untyped-def]
    path = small_models[kind].path
    fast = load_model(path, infer_shapes=True)
    assert fast.meta.get(SHAPES_INFERRED_KEY)
    slow = load_model(path)
    assert SHAPES_INFERRED_KEY not in slow.meta
    ShapeInferencePass(strict_mode=False)(slow)

    def shapes(model: ir.Model) -> dict[str, ir.Shape | None]:
        return {v.name: v.shape for node in model.graph for v in node.outputs}

    assert shapes(fast) == shapes(slow)
    assert all(shape is not None for shape in shapes(fast).values())
    infer_shapes(fast)  # consumes the mark: the next call runs the pass again
    assert SHAPES_INFERRED_KEY not in fast.meta


# --- verification loads one model at a time ------------------------------------------------


def test_verification_runs_one_model_at_a_time(small_models, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    verify_module = sys.modules["onnxgrow.verification.runtime"]
    built = small_models["transformer"]
    wide = tmp_path / "w.onnx"
    widen_file(built.path, wide, {built.small_layer: built.small_width})
    open_now: list[Path] = []
    real_open = verify_module.open_session

    class Tracked:
        def __init__(self, path: Path, session) -> None:  # type: ignore[no-untyped-def]
            self.path, self.inner = path, session
            self.providers = session.providers
            assert not open_now, f"{open_now} still open while {path} loads"
            open_now.append(path)

        def run(self, feeds):  # type: ignore[no-untyped-def]
            return self.inner.run(feeds)

        def __del__(self) -> None:
            open_now.remove(self.path)

    monkeypatch.setattr(verify_module, "open_session", lambda p, prov: Tracked(p, real_open(p, prov)))
    feeds = [random_inputs(input_specs(load_model(built.path)), seed) for seed in range(2)]
    steps: list[tuple[int, int]] = []
    step = Steps(len(feeds), lambda d, t: steps.append((d, t)))
    ref, cand = (run_model(path, ["CPUExecutionProvider"], feeds, step) for path in (built.path, wide))
    assert not ref.error and not cand.error and len(ref.outputs) == len(cand.outputs) == 2
    assert steps == [(k, 6) for k in range(7)]
    for a, b in zip(ref.outputs, cand.outputs):
        assert np.abs(a["logits"] - b["logits"]).max() <= 1e-5 * np.abs(a["logits"]).max()
