"""``inspect`` offers no growth on real ``transformers`` exports that the tool then refuses.

For every export of tests/helpers/hf_zoo.py (every family × dynamo in both transformers
lines, TorchScript where the family has it, and optimum's tasks with and without a cache),
every layer ``inspect`` lists as widenable is planned ×2 by ``widen`` (the plan decides every
refusal: names, groups, widths, memory), every last layer it offers ``--new-outputs`` for is
planned +1 class. A refusal fails the test, naming the layer. Attention heads are held to
the same rule, with the growths done and checked, in tests/widening/test_heads_hf.py.
"""

from __future__ import annotations

from typing import Any

import pytest

import onnxgrow
from onnxgrow.errors import GrowError
from onnxgrow.model_io import load_model
from onnxgrow.widening.api import WidenOp
from onnxgrow.widening.new_outputs_op import NewOutputsOp

pytestmark = [pytest.mark.torch, pytest.mark.transformers]
pytest.importorskip("transformers")

from tests.helpers.hf_zoo import CASES, ExportFailed, export, hf_directory, skip_without_other_environment  # noqa: E402

#: Exports known to fail upstream (tests/structure/test_structure_hf.py).
KNOWN_EXPORT_FAILURES = {("t5", "dynamo")}


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Any:
    directory = hf_directory(tmp_path_factory.getbasetemp())

    def get(name: str, exporter: str) -> Any:
        skip_without_other_environment(exporter)
        try:
            return export(name, exporter, directory)[0]
        except ExportFailed as failed:
            if (name, exporter) in KNOWN_EXPORT_FAILURES:
                pytest.xfail(str(failed))
            raise

    return get


@pytest.mark.parametrize(("name", "exporter"), CASES)
def test_every_growth_inspect_offers_is_planned(exports: Any, name: str, exporter: str) -> None:
    path = exports(name, exporter)
    summary = onnxgrow.inspect_model(path)
    model = load_model(path, infer_shapes=True)
    offered = [layer for layer in summary.layers if layer.widenable]
    assert offered, "inspect offers no layer to widen"
    refused = {}
    for layer in offered:
        try:
            WidenOp({layer.name: "2x"}).plan(model)
        except GrowError as error:
            refused[layer.name] = str(error)
    for layer in (layer for layer in summary.layers if layer.new_outputs):
        try:
            NewOutputsOp({layer.name: "+1"}).plan(model)
        except GrowError as error:
            refused[f"{layer.name} --new-outputs"] = str(error)
    assert not refused, refused
