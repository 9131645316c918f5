"""The garbage collector kept off loaded models (onnxgrow/collector.py), and given back as it was."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest

from onnxgrow import collector
from onnxgrow.options import GrowOptions
from onnxgrow.widening.functions import widen_file
from tests.helpers.graphs import mlp


class Cycle:
    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def collector_as_found():  # type: ignore[no-untyped-def]
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    if enabled:
        gc.enable()


@pytest.mark.parametrize("enabled", [True, False])
def test_paused_gives_the_collector_back_as_it_was(enabled: bool) -> None:
    (gc.enable if enabled else gc.disable)()
    with collector.paused():
        assert not gc.isenabled()
    assert gc.isenabled() is enabled


def test_what_the_load_made_is_frozen_in_the_block_and_collectable_after() -> None:
    gc.unfreeze()
    with collector.spared_after(Cycle) as made:
        assert gc.isenabled() and gc.get_freeze_count() > 0
        gone = weakref.ref(made)
        del made
        gc.collect()
        assert gone() is not None  # frozen: unreachable, but not collected
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert gone() is None


def test_an_earlier_freeze_is_left_alone() -> None:
    gc.freeze()
    before = gc.get_freeze_count()
    with collector.spared_after(Cycle):
        pass
    assert gc.get_freeze_count() == before > 0


def test_a_failed_load_leaves_the_collector_as_it_was() -> None:
    gc.unfreeze()

    def failing() -> None:
        raise ValueError("no model")

    with pytest.raises(ValueError), collector.spared_after(failing):
        pass
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_growth_leaves_the_collector_as_it_was(tmp_path: Path) -> None:
    gc.unfreeze()
    src = mlp(tmp_path / "mlp.onnx", [3, 5, 2], ["Relu"])
    widen_file(src, tmp_path / "wide.onnx", {"dense_1": 7}, options=GrowOptions(verify=None))
    assert gc.isenabled() and gc.get_freeze_count() == 0
