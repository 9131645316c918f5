"""``--rows`` naming a table several lookups read: an encoder-decoder's shared embedding.

T5 and BART keep one table (``shared``) that the encoder's and the decoder's lookups read.
Exporters name those lookups after their modules (optimum: ``/encoder/shared/Gather`` and
``/decoder/shared/Gather``; TorchScript: ``/encoder/embed_tokens/Gather`` reading the
initializer ``shared.weight``). The name ``shared`` designates the table, which grows once
for every lookup; a name several lookups of different tables answer to stays ambiguous.
The real exports are grown in tests/export/test_export_hf.py (T5, all three exporters).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxgrow.lineage import read_history
from onnxgrow.model_io import load_model
from tests.helpers.cli import assert_refused, run

VOCAB, WIDTH = 10, 4


def _encoder_decoder(path: Path, lookups: tuple[str, str], tables: tuple[str, str]) -> Path:
    """Two id inputs, each looked up (nodes ``/<lookup>/Gather``) in its table; the sum is the output."""
    rng = np.random.default_rng(0)
    initializers = [numpy_helper.from_array(rng.standard_normal((VOCAB, WIDTH)).astype(np.float32), name)
                    for name in dict.fromkeys(tables)]
    nodes = [helper.make_node("Gather", [table, f"ids_{k}"], [f"rows_{k}"], name=f"/{lookup}/Gather")
             for k, (lookup, table) in enumerate(zip(lookups, tables, strict=True))]
    nodes.append(helper.make_node("Add", ["rows_0", "rows_1"], ["out"], name="/Add"))
    graph = helper.make_graph(
        nodes, "encoder_decoder",
        [helper.make_tensor_value_info(f"ids_{k}", TensorProto.INT64, ["batch", "seq"]) for k in range(2)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "seq", WIDTH])], initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def _run(path: Path, ids: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"ids_0": ids, "ids_1": ids[:, ::-1].copy()})[0])


@pytest.mark.parametrize(("lookups", "table"), [
    (("encoder/shared", "decoder/shared"), "shared.weight"),  # optimum: both lookups answer to "shared"
    (("encoder/embed_tokens", "decoder/embed_tokens"), "shared.weight"),  # TorchScript: the table's name
    (("encoder/embed_tokens", "decoder/embed_tokens"), "shared"),
], ids=["lookups-named-shared", "table-named-shared.weight", "table-named-shared"])
def test_the_shared_table_grows_once_for_every_lookup(tmp_path: Path, lookups: tuple[str, str], table: str) -> None:
    source = _encoder_decoder(tmp_path / "m.onnx", lookups, (table, table))
    out = tmp_path / "grown.onnx"
    code, stdout, stderr = run("widen", str(source), "--node", "shared", "--rows", "+4", "-o", str(out))
    assert code == 0, stdout + stderr
    grown = onnx.load(out)
    assert [tuple(t.dims) for t in grown.graph.initializer] == [(VOCAB + 4, WIDTH)]
    ids = np.random.default_rng(1).integers(0, VOCAB, (2, 5))
    np.testing.assert_array_equal(_run(source, ids), _run(out, ids))
    new_ids = np.full((2, 5), VOCAB + 3)
    assert np.isfinite(_run(out, new_ids)).all()
    (entry,) = read_history(load_model(out))
    assert (entry["op"], entry["old_rows"], entry["new_rows"]) == ("vocabulary", VOCAB, VOCAB + 4)


def test_lookups_of_different_tables_stay_ambiguous(tmp_path: Path) -> None:
    source = _encoder_decoder(tmp_path / "m.onnx", ("encoder/shared", "decoder/shared"), ("a.weight", "b.weight"))
    out = tmp_path / "grown.onnx"
    assert_refused(tmp_path, ["widen", str(source), "--node", "shared", "--rows", "+4", "-o", str(out)],
                   "layer name 'shared' is ambiguous; it matches: decoder.shared", out)
