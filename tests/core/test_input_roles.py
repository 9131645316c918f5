"""Random inputs drawn by role (onnxgrow/verification/roles.py, inputs.py; docs/design.md §6).

Hand-built look-alikes of the graphs exporters write, each of which fails in onnxruntime
unless its inputs fit together: a decoder step with a key/value cache (the mask's length
must be past + new, the positions must index a small table), the same graph with every input
renamed (roles found from what the graph does), and a ViT patch embedding (the channel count
and image size must be the Conv's and the position table's). The real exporters' graphs are
in tests/commands/test_verify_roles.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

import onnxgrow
from onnxgrow.errors import GrowError
from onnxgrow.options import VerifyOptions
from onnxgrow.verification.inputs import DimSizes, input_specs, random_inputs, sample_feeds
from onnxgrow.verification.roles import find_roles
from tests.helpers.graphs import save

VOCAB, POSITIONS, WIDTH, HEADS = 16, 8, 4, 2

CONVENTIONAL = {"ids": "input_ids", "positions": "position_ids", "past": "past_key_values.0.key",
                "mask": "attention_mask", "types": "token_type_ids"}
RENAMED = {"ids": "tokens", "positions": "where", "past": "memory", "mask": "keep", "types": "kind"}


def decoder_step(path: Path, names: dict[str, str], mask_length: str = "past + new") -> Path:
    """One decoder step: ids and positions (and token types) embedded, the new keys
    concatenated after the cache along its past axis, every key scored and masked. onnxruntime
    fails when the mask's length is not past + new or a position or id is out of its table."""
    rng = np.random.default_rng(0)
    n = names
    nodes = [
        helper.make_node("Gather", ["embed", n["ids"]], ["tok"]),
        helper.make_node("Gather", ["wpe", n["positions"]], ["pos"]),
        helper.make_node("Gather", ["wte", n["types"]], ["typ"]),
        helper.make_node("Sum", ["tok", "pos", "typ"], ["h"]),
        helper.make_node("Unsqueeze", ["h", "one"], ["h1"]),
        helper.make_node("Expand", ["h1", "heads_shape"], ["new_keys"]),
        helper.make_node("Concat", [n["past"], "new_keys"], ["present"], axis=2),
        helper.make_node("ReduceSum", ["present", "last"], ["scores"], keepdims=0),
        helper.make_node("Cast", [n["mask"]], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f", "one"], ["mask_b"]),
        helper.make_node("Mul", ["scores", "mask_b"], ["masked"]),
    ]
    inputs = [
        helper.make_tensor_value_info(n["ids"], TensorProto.INT64, ["batch", "new"]),
        helper.make_tensor_value_info(n["positions"], TensorProto.INT64, ["batch", "new"]),
        helper.make_tensor_value_info(n["types"], TensorProto.INT64, ["batch", "new"]),
        helper.make_tensor_value_info(n["past"], TensorProto.FLOAT, ["batch", HEADS, "past", WIDTH]),
        helper.make_tensor_value_info(n["mask"], TensorProto.INT64, ["batch", mask_length]),
    ]
    outputs = [helper.make_tensor_value_info("masked", TensorProto.FLOAT, [None] * 3),
               helper.make_tensor_value_info("present", TensorProto.FLOAT, [None] * 4)]
    initializers = {
        "embed": rng.standard_normal((VOCAB, WIDTH)).astype(np.float32),
        "wpe": rng.standard_normal((POSITIONS, WIDTH)).astype(np.float32),
        "wte": rng.standard_normal((2, WIDTH)).astype(np.float32),
        "one": np.array([1], np.int64), "last": np.array([3], np.int64),
        "heads_shape": np.array([1, HEADS, 1, 1], np.int64),
    }
    return save(nodes, inputs, outputs, initializers, path)


def patch_embedding(path: Path) -> Path:
    """A ViT's embedding with every pixel dimension dynamic: a 4×4 patch Conv on 3 channels,
    the patches as tokens after a class token, plus a position table of 5 tokens: only
    [B, 3, 8, 8] images run."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["pixel_values", "w", "b"], ["patches"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Reshape", ["patches", "flat"], ["rows"]),
        helper.make_node("Transpose", ["rows"], ["tokens"], perm=[0, 2, 1]),
        helper.make_node("Shape", ["pixel_values"], ["batch"], start=0, end=1),
        helper.make_node("Concat", ["batch", "one_width"], ["cls_shape"], axis=0),
        helper.make_node("Expand", ["cls", "cls_shape"], ["cls_tokens"]),
        helper.make_node("Concat", ["cls_tokens", "tokens"], ["sequence"], axis=1),
        helper.make_node("Add", ["sequence", "positions"], ["embedded"]),
    ]
    inputs = [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT,
                                            ["batch_size", "num_channels", "height", "width"])]
    outputs = [helper.make_tensor_value_info("embedded", TensorProto.FLOAT, [None] * 3)]
    initializers = {
        "w": rng.standard_normal((6, 3, 4, 4)).astype(np.float32), "b": np.zeros(6, np.float32),
        "flat": np.array([0, 6, -1], np.int64), "one_width": np.array([1, 6], np.int64),
        "cls": rng.standard_normal((1, 1, 6)).astype(np.float32),
        "positions": rng.standard_normal((1, 5, 6)).astype(np.float32),
    }
    return save(nodes, inputs, outputs, initializers, path)


def test_a_cache_model_verifies_on_inputs_that_fit_together(tmp_path: Path) -> None:
    path = decoder_step(tmp_path / "step.onnx", CONVENTIONAL)
    report = onnxgrow.verify(path, path)
    assert report.passed, report.summary()
    assert report.inputs["attention_mask"]["shape"] == [2, 5]
    assert report.inputs["past_key_values.0.key"]["shape"] == [2, HEADS, 3, WIDTH]
    assert report.drawn == [f"input_ids ids in [0, {VOCAB})", "position_ids 3..4", "token_type_ids zeros",
                            "attention_mask ones over past 3 + new 2", "1 key/value cache of past length 3"]
    assert "drawn by role: input_ids ids in [0, 16)" in report.summary()
    assert any(line.startswith("drawn:    by role: ") for line in report.lines())
    feeds = sample_feeds(onnxgrow.load_model(path), VerifyOptions()).feeds[0]
    np.testing.assert_array_equal(feeds["attention_mask"], np.ones((2, 5)))
    np.testing.assert_array_equal(feeds["position_ids"], [[3, 4], [3, 4]])
    np.testing.assert_array_equal(feeds["token_type_ids"], np.zeros((2, 2)))
    assert feeds["input_ids"].max() < VOCAB


def test_without_roles_the_same_sizes_break_the_model(tmp_path: Path) -> None:
    """The test above can fail: every dynamic dimension at 2 (the old draw) breaks the graph."""
    path = decoder_step(tmp_path / "step.onnx", CONVENTIONAL)
    shapes = {name: [2] * len(spec.shape) if name != "past_key_values.0.key" else [2, HEADS, 2, WIDTH]
              for name, spec in input_specs(onnxgrow.load_model(path)).items()}
    with pytest.raises(GrowError, match="the reference model fails on these inputs") as failed:
        onnxgrow.verify(path, path, VerifyOptions(input_shapes=shapes))
    # the error says what was drawn and what to give instead
    assert str(failed.value).endswith("(random inputs, drawn by role: input_ids ids in [0, 16), position_ids 2..3, "
                                      "token_type_ids zeros, attention_mask ones, 1 key/value cache of past length 2; "
                                      "give a real sample with --inputs, or sizes with --input-shapes)"), failed.value
    sample = sample_feeds(onnxgrow.load_model(path), VerifyOptions(input_shapes=shapes)).feeds
    with pytest.raises(GrowError, match="fails on these inputs") as given:
        onnxgrow.verify(path, path, VerifyOptions(inputs=sample))
    assert "random inputs" not in str(given.value)  # the user's own sample: nothing to say about draws


@pytest.mark.parametrize("mask_length", ["past + new", "total", "past_sequence_length + new"])
def test_renamed_inputs_get_their_roles_from_the_graph(mask_length: str, tmp_path: Path) -> None:
    """No conventional name: ids by the table they index, the cache by the Concat along its
    past axis, the mask as the one integer input of a length of its own (or an expression)."""
    path = decoder_step(tmp_path / "renamed.onnx", RENAMED, mask_length.replace("past_sequence_length", "past"))
    roles = find_roles(onnxgrow.load_model(path))
    assert roles["tokens"].kind == "ids" and roles["tokens"].high == VOCAB
    assert roles["where"].kind == "ids" and roles["where"].high == POSITIONS
    assert roles["kind"].kind == "ids" and roles["kind"].high == 2
    assert roles["memory"].kind == "cache" and roles["memory"].axis == 2
    assert roles["keep"].kind == "mask"
    report = onnxgrow.verify(path, path)
    assert report.passed, report.summary()
    assert report.inputs["keep"]["shape"] == [2, 5]


@settings(max_examples=15, deadline=None)
@given(batch=st.integers(1, 3), new=st.integers(1, 4), past=st.integers(1, 4),
       user_gives=st.sampled_from(["ids", "past", "both"]))
def test_user_shapes_size_every_input_that_shares_their_dimensions(batch: int, new: int, past: int,
                                                                   user_gives: str, tmp_path_factory) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("step") / "step.onnx"
    decoder_step(path, CONVENTIONAL)
    shapes: dict[str, list[int]] = {}
    if user_gives in ("ids", "both"):
        shapes["input_ids"] = [batch, new]
    if user_gives in ("past", "both"):
        shapes["past_key_values.0.key"] = [batch, HEADS, past, WIDTH]
    specs = input_specs(onnxgrow.load_model(path), shapes)
    want_batch = batch
    want_new = new if "input_ids" in shapes else 2
    want_past = past if "past_key_values.0.key" in shapes else 3
    assert specs["attention_mask"].shape == (want_batch, want_past + want_new)
    assert specs["position_ids"].shape == (want_batch, want_new)
    feeds = random_inputs(specs, 0)
    np.testing.assert_array_equal(feeds["position_ids"][0], np.arange(want_past, want_past + want_new))
    if want_past + want_new <= POSITIONS:
        assert onnxgrow.verify(path, path, VerifyOptions(input_shapes=shapes)).passed


def test_a_vit_patch_embedding_gets_channels_and_image_size_from_its_conv(tmp_path: Path) -> None:
    path = patch_embedding(tmp_path / "vit.onnx")
    role = find_roles(onnxgrow.load_model(path))["pixel_values"]
    assert role.kind == "pixels" and role.fixed == {1: 3, 2: 8, 3: 8}
    report = onnxgrow.verify(path, path)
    assert report.passed, report.summary()
    assert report.inputs["pixel_values"]["shape"] == [2, 3, 8, 8]
    # the user's shapes still win (and must then fit)
    with pytest.raises(GrowError, match="fails on these inputs"):
        onnxgrow.verify(path, path, VerifyOptions(input_shapes={"pixel_values": [2, 3, 16, 16]}))


def test_a_plain_conv_takes_at_least_its_kernel(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["image", "w"], ["y"], kernel_shape=[5, 3])]
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", "c", "h", "w"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * 4)]
    path = save(nodes, inputs, outputs, {"w": rng.standard_normal((4, 6, 5, 3)).astype(np.float32)},
                tmp_path / "conv.onnx")
    assert input_specs(onnxgrow.load_model(path))["image"].shape == (2, 6, 5, 3)
    assert onnxgrow.verify(path, path).passed


@pytest.mark.parametrize(("text", "size"), [("a + b", 5), ("2*a", 4), ("Max(1, a - 2)", 1), ("(a + b) // 2", 2),
                                            ("a +", None), ("a ** b", None)])
def test_dimension_expressions_are_computed_from_their_symbols(text: str, size: int | None) -> None:
    import onnx_ir as ir

    sizes = DimSizes()
    sizes.bind(ir.SymbolicDim("a"), 2)
    sizes.bind(ir.SymbolicDim("b"), 3)
    sizes.bind(ir.SymbolicDim("a + b"), 99)  # an expression is never bound
    assert sizes.size(ir.SymbolicDim(text)) == (size if size is not None else 2)


def test_given_inputs_are_not_redrawn(tmp_path: Path) -> None:
    path = decoder_step(tmp_path / "step.onnx", CONVENTIONAL)
    feeds = sample_feeds(onnxgrow.load_model(path), VerifyOptions()).feeds[0]
    feeds["attention_mask"] = feeds["attention_mask"].copy()
    feeds["attention_mask"][:, 0] = 0
    report = onnxgrow.verify(path, path, VerifyOptions(inputs=[feeds]))
    assert report.passed and report.drawn == [] and report.input_source == "given"
    assert onnx.load(str(path)).graph.input[0].name == "input_ids"  # the file is left alone
