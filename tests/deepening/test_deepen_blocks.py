"""``deepen --block`` on hand-written residual stacks (tests/helpers/block_graphs.py): the algebra,
the numbering, the growth map and every refusal. Real exports: test_deepen_blocks_real.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onnxgrow import apply_growth_map, deepen_block, verify
from onnxgrow.deepening.block_op import DeepenBlockOp, config_updates
from onnxgrow.diff import diff_models
from onnxgrow.errors import GrowError, RefusedError
from onnxgrow.inspect import inspect_model
from onnxgrow.lineage import describe, read_history
from onnxgrow.model_io import load_model, save_model
from onnxgrow.parameter_names import parameter_table
from onnxgrow.pipeline import grow
from tests.helpers.block_graphs import stack
from tests.helpers.cli import assert_refused, run
from tests.helpers.graphs import MAX_REL_ERROR

_SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _weights(path: Path) -> dict[str, np.ndarray]:
    return {name: p.array for name, p in parameter_table(load_model(path)).parameters.items()}


@_SETTINGS
@given(blocks=st.integers(2, 5), where=st.sampled_from(["first", "middle", "last", "glob"]), count=st.integers(1, 3),
       after=st.sampled_from([None, "Relu"]))
def test_zero_copies_are_exact_and_numbered_as_the_framework_numbers_blocks(
        tmp_path: Path, blocks: int, where: str, count: int, after: str | None) -> None:
    path = stack(tmp_path / "m.onnx", blocks, after=after, norm="pre" if after is None else "none")
    index = {"first": 0, "middle": blocks // 2, "last": blocks - 1}.get(where)
    request = "blocks.*" if index is None else f"blocks.{index}"
    grown, report = deepen_block(load_model(path), request, count=count)
    out = save_model(grown, tmp_path / "grown.onnx")
    check = verify(path, out)
    assert check.passed and check.max_rel_error <= MAX_REL_ERROR, check.summary()

    copied = list(range(blocks)) if index is None else [index]
    new_index = {k: k + count * sum(1 for s in copied if s < k) for k in range(blocks)}
    old, new = _weights(path), _weights(out)
    assert report.layers == {"blocks": (blocks, blocks + count * len(copied))}
    assert {n.split(".")[1] for n in new if n.startswith("blocks.")} == {
        str(k) for k in range(blocks + count * len(copied))}
    for k in range(blocks):  # every old block under its new number, its weights unchanged
        for name in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", *(("norm.weight",) if after is None else ())):
            np.testing.assert_array_equal(new[f"blocks.{new_index[k]}.{name}"], old[f"blocks.{k}.{name}"])
    for s in copied:
        for t in range(1, count + 1):
            copy = f"blocks.{new_index[s] + t}"
            np.testing.assert_array_equal(new[f"{copy}.fc1.weight"], old[f"blocks.{s}.fc1.weight"])
            assert not new[f"{copy}.fc2.weight"].any() and not new[f"{copy}.fc2.bias"].any()
    assert [b.name for b in report.inserted] == [f"blocks.{new_index[s] + t}" for s in copied
                                                 for t in range(1, count + 1)]


def test_the_lineage_and_diff_name_the_copy_and_its_source(tmp_path: Path) -> None:
    path = stack(tmp_path / "m.onnx", 3)
    grown, _ = deepen_block(load_model(path), "blocks.1")
    out = save_model(grown, tmp_path / "grown.onnx")
    (entry,) = read_history(load_model(out))
    assert entry["inserted"] == {"blocks.2": "blocks.1"} and entry["renumbered"] == {"blocks.2": "blocks.3"}
    assert entry["layers"] == {"blocks": [3, 4]}
    sentence = "inserted block blocks.2 (copy of blocks.1, zero-initialised output projections)"
    assert describe(entry).startswith(sentence)
    assert sentence in diff_models(path, out).to_text()


def test_copies_stack_every_weight_and_are_reported_changed(tmp_path: Path) -> None:
    path = stack(tmp_path / "m.onnx", 3, norm="post")
    code, stdout, stderr = run("deepen", str(path), "--block", "blocks.1", "--init", "copy",
                               "-o", str(tmp_path / "o.onnx"))
    assert code == 0, stderr
    assert "CHANGED" in stdout and "not function-preserving by design" in stdout
    new, old = _weights(tmp_path / "o.onnx"), _weights(path)
    for name in ("fc1.weight", "fc2.weight", "fc2.bias", "norm.weight"):
        np.testing.assert_array_equal(new[f"blocks.2.{name}"], old[f"blocks.1.{name}"])
        np.testing.assert_array_equal(new[f"blocks.3.{name}"], old[f"blocks.2.{name}"])


def test_the_growth_map_moves_optimizer_state_through_the_renumbering(tmp_path: Path) -> None:
    path = stack(tmp_path / "m.onnx", 3)
    grown_model, report = deepen_block(load_model(path), "blocks.1")
    old_names = list(_weights(path))
    new_names = list(_weights(save_model(grown_model, tmp_path / "grown.onnx")))
    rng = np.random.default_rng(0)
    old_params = _weights(path)
    state = {"state": {i: {"step": 7, "exp_avg": rng.standard_normal(old_params[n].shape),
                           "exp_avg_sq": rng.random(old_params[n].shape)} for i, n in enumerate(old_names)},
             "param_groups": [{"lr": 0.1, "params": list(range(len(old_names)))}]}
    mapped = json.loads(json.dumps(report.growth_map.to_json()))  # as --map-out writes it
    grown = apply_growth_map(state, mapped, old_names, new_param_names=new_names)
    assert grown["param_groups"] == [{"lr": 0.1, "params": list(range(len(new_names)))}]
    by_new = {n: grown["state"].get(k) for k, n in enumerate(new_names)}
    by_old = {n: state["state"][k] for k, n in enumerate(old_names)}
    for name in ("norm.weight", "fc1.weight", "fc2.bias"):
        assert by_new[f"blocks.3.{name}"]["exp_avg"] is by_old[f"blocks.2.{name}"]["exp_avg"]  # moved
        np.testing.assert_array_equal(by_new[f"blocks.1.{name}"]["exp_avg"], by_old[f"blocks.1.{name}"]["exp_avg"])
    copied = by_new["blocks.2.fc1.weight"]
    np.testing.assert_array_equal(copied["exp_avg_sq"], by_old["blocks.1.fc1.weight"]["exp_avg_sq"])
    assert copied["exp_avg"] is not by_new["blocks.1.fc1.weight"]["exp_avg"]  # its own copy
    assert by_new["blocks.2.fc2.weight"] is None and by_new["blocks.2.fc2.bias"] is None  # fresh: zero moments
    moments = apply_growth_map({n: by_old[n]["exp_avg"] for n in old_names}, mapped)
    assert set(moments) == set(new_names)
    assert not moments["blocks.2.fc2.weight"].any()
    np.testing.assert_array_equal(moments["blocks.3.fc1.weight"], by_old["blocks.2.fc1.weight"]["exp_avg"])
    with pytest.raises(GrowError, match="new_param_names"):
        apply_growth_map(state, mapped, old_names)


def test_a_hugging_face_config_gets_the_new_count_and_per_block_lists() -> None:
    entry = {"op": "deepen-block", "layers": {"model.layers": [3, 5]},
             "inserted": {"model.layers.2": "model.layers.1", "model.layers.4": "model.layers.2"},
             "renumbered": {"model.layers.2": "model.layers.3"}}
    config = {"num_hidden_layers": 3, "layer_types": ["full", "sliding", "full2"], "hidden_size": 32}
    assert config_updates(config, [entry]) == {
        "num_hidden_layers": 5, "layer_types": ["full", "sliding", "sliding", "full2", "full2"]}
    assert config_updates({"n_layer": 3}, [entry]) == {"n_layer": 5}
    two_stacks = {"encoder_layers": 3, "decoder_layers": 3, "num_hidden_layers": 3}
    entry["layers"] = {"model.decoder.layers": [3, 5]}
    assert config_updates(two_stacks, [entry]) == {"decoder_layers": 5}


@pytest.mark.parametrize(("variant", "request_", "message"), [
    ({"norm": "post"}, "blocks.1", "post-norm, its LayerNormalization"),
    ({"shortcut_at": 1}, "blocks.1", "its shortcut is not the identity (blocks.1.downsample projects it)"),
    ({"after": "Tanh", "norm": "none"}, "blocks.0", "Tanh node '/blocks.0/Tanh'"),
    ({"extra_output_at": 1}, "blocks.1", "writes the model outputs 'blocks.1/fc1'"),
    ({}, "blocks.7", "no block named 'blocks.7' (blocks: blocks.{0..2})"),
    ({}, "layers.*", "no block matches 'layers.*' (blocks: blocks.{0..2})"),
    ({}, "blocks.1.fc1", "no block named 'blocks.1.fc1'"),
])
def test_refusals_are_one_line_and_write_nothing(tmp_path: Path, variant: dict[str, object], request_: str,
                                                 message: str) -> None:
    path = stack(tmp_path / "m.onnx", 3, **variant)  # type: ignore[arg-type]
    out = tmp_path / "o.onnx"
    assert_refused(tmp_path, ["deepen", str(path), "--block", request_, "-o", str(out)], message, out)


@pytest.mark.parametrize(("args", "message"), [
    (["--block", "blocks.1", "--count", "0"], "--count must be a positive integer"),
    (["--block", "blocks.1", "--count", "-2"], "--count must be a positive integer"),
    (["--block", "blocks.1", "--width", "9"], "--width goes with --after, not --block"),
    (["--after", "blocks.1.fc1", "--count", "2"], "--count goes with --block, not --after"),
    ([], "give --after NAME"),
    (["--after", "blocks.1", "--block", "blocks.1"], "give --after NAME"),
    (["--after", "blocks.1"], "blocks.1 is a block: --block blocks.1 inserts copies of it"),
])
def test_bad_options_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    path = stack(tmp_path / "m.onnx", 3)
    out = tmp_path / "o.onnx"
    assert_refused(tmp_path, ["deepen", str(path), *args, "-o", str(out)], message, out)


def test_the_op_checks_its_arguments_before_any_model() -> None:
    for count in (0, -1, 1.5, True):
        with pytest.raises(GrowError, match="--count"):
            DeepenBlockOp("blocks.1", count=count)  # type: ignore[arg-type]
    with pytest.raises(GrowError, match="--init"):
        DeepenBlockOp("blocks.1", init="random")


def test_a_refused_glob_leaves_the_model_as_it_was(tmp_path: Path) -> None:
    path = stack(tmp_path / "m.onnx", 3, shortcut_at=2)
    model = load_model(path)
    with pytest.raises(RefusedError, match="blocks.2.downsample"):
        grow(model, DeepenBlockOp("blocks.*"))
    assert sorted(model.graph.initializers) == sorted(load_model(path).graph.initializers)


def test_inspect_says_which_init_is_exact(tmp_path: Path) -> None:
    pre = inspect_model(stack(tmp_path / "pre.onnx", 3))
    assert {b.name: (b.exact_init, b.init_note) for b in pre.blocks} == {
        f"blocks.{k}": (["zero"], "") for k in range(3)}
    post = inspect_model(stack(tmp_path / "post.onnx", 3, norm="post"))
    assert {(tuple(b.exact_init), b.init_note) for b in post.blocks} == {((), "post-norm")}
    shortcut = inspect_model(stack(tmp_path / "s.onnx", 3, shortcut_at=1))
    assert [b.init_note for b in shortcut.blocks] == ["", "projection shortcut", ""]
    code, stdout, _ = run("inspect", str(tmp_path / "post.onnx"))
    assert code == 0 and "EXACT --init" in stdout and "none (post-norm)" in stdout
