"""Every registered op type has a test case that names it.

Registries: widening rules and layer producers (``onnxgrow/widening/rules/registry.py``),
the derivations of dims shape inference left unknown (``known_dims.DERIVATIONS``, cases in
``test_known_dims``), deepening layer kinds (``onnxgrow/deepening/kinds/registry.py``), and the PyTorch and
Keras export ops (``onnxgrow/export/{torch,keras}_ops/registry.py``). A case "names" an op
when the table a parametrised equivalence test runs over holds it: the widening tables of
``test_widen_ops`` (keyed by op type), the deepening networks of ``test_deepen``
(keyed by the layer's op type), and the op types of the nodes in the graphs that
``test_export_torch_ops`` and ``test_export_keras_ops`` compare with onnxruntime (and the
Keras builder's own merged steps, each with the case whose graph makes it).

So registering a new op without adding its case makes :func:`test_every_registered_growth_op_has_a_case`
or :func:`test_every_registered_export_op_has_a_case` fail. The export half needs PyTorch (the export
ops import it); the growth half runs without it.

The Keras registry is read in a subprocess with ``KERAS_BACKEND=torch``, as the Keras op tests
run: importing Keras here would load TensorFlow into the test process, next to PyTorch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable
from types import ModuleType

import pytest

from onnxgrow.deepening.kinds import registry as kinds
from onnxgrow.widening.rules import known_dims
from onnxgrow.widening.rules import registry as rules
from tests.deepening import test_deepen
from tests.helpers.export_op_graphs import op_types
from tests.helpers.paths import REPO
from tests.widening import test_known_dims, test_widen_ops

#: (registry name, its registered op types, the op types its test tables hold)
Tables = list[tuple[str, Iterable[str], set[str]]]


def growth_tables() -> Tables:
    """The widening and deepening registries and their test tables (no PyTorch needed)."""
    return [
        ("widening rules", rules.RULES, set(test_widen_ops.WIDEN_CASES) | set(test_widen_ops.REFUSED_CASES)),
        ("widening layers", rules.PRODUCERS, set(test_widen_ops.LAYER_CASES)),
        ("derived dims", known_dims.DERIVATIONS, set(test_known_dims.CASES)),
        ("deepening kinds", kinds.KINDS, set(test_deepen.KIND_CASES)),
    ]


def torch_ops_registry() -> ModuleType:
    """The PyTorch export op registry; the export ops import PyTorch, so skip without it."""
    pytest.importorskip("torch")
    from onnxgrow.export.torch_ops import registry

    return registry


def export_tables(keras: Iterable[str]) -> Tables:
    """The PyTorch and Keras export registries and their test tables (``keras``: the Keras
    registry's op types)."""
    torch_ops = torch_ops_registry()
    from tests.export import test_export_keras_ops, test_export_torch_ops

    return [
        ("torch export ops", torch_ops.TORCH_OPS, op_types(test_export_torch_ops.CASES)),
        ("keras export ops", keras,
         op_types(test_export_keras_ops.SUPPORTED) | set(test_export_keras_ops.BUILDER_STEPS)),
    ]


def keras_ops() -> list[str]:
    """The op types of the Keras registry (``onnxgrow/export/keras_ops/registry.py``)."""
    code = "import json; from onnxgrow.export.keras_ops import KERAS_OPS; print(json.dumps(sorted(KERAS_OPS)))"
    env = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return list(json.loads(run.stdout.strip().splitlines()[-1]))


def uncovered(tables: Tables) -> dict[str, list[str]]:
    """Per registry, the registered op types that no test table holds (read from the registries now)."""
    return {name: sorted(set(registry) - covered) for name, registry, covered in tables}


def test_every_registered_growth_op_has_a_case() -> None:
    missing = {name: ops for name, ops in uncovered(growth_tables()).items() if ops}
    assert not missing, f"registered op types without a test case: {missing}"


@pytest.mark.torch
def test_every_registered_export_op_has_a_case() -> None:
    missing = {name: ops for name, ops in uncovered(export_tables(keras_ops())).items() if ops}
    assert not missing, f"registered op types without a test case: {missing}"


def test_the_growth_tables_hold_registered_ops_only() -> None:
    """A stale entry (an op whose rule was removed) would hide a missing one."""
    assert set(test_widen_ops.WIDEN_CASES) | set(test_widen_ops.REFUSED_CASES) <= set(rules.RULES)
    assert set(test_widen_ops.LAYER_CASES) <= set(rules.PRODUCERS)
    assert set(test_known_dims.CASES) <= set(known_dims.DERIVATIONS)
    assert set(test_deepen.KIND_CASES) <= set(kinds.KINDS)


@pytest.mark.torch
def test_the_keras_builder_steps_name_supported_cases() -> None:
    pytest.importorskip("torch")
    from tests.export import test_export_keras_ops

    assert set(test_export_keras_ops.BUILDER_STEPS.values()) <= {c.id for c in test_export_keras_ops.SUPPORTED}


def test_a_growth_op_registered_without_a_case_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register a rule and a layer kind the way a contributor would, into copies of the
    registries: the contract names each of them."""
    monkeypatch.setattr(rules, "RULES", dict(rules.RULES))
    monkeypatch.setattr(kinds, "KINDS", dict(kinds.KINDS))

    @rules.rule("NewOp")
    class NewOpRule:
        def propagate(self, ctx: object, node: object, known: object) -> None: ...

        def rewrite(self, ctx: object, node: object, known: object) -> None: ...

    kinds.kind("NewLayer")(lambda node: NotImplemented)

    assert uncovered(growth_tables()) == {"widening rules": ["NewOp"], "widening layers": [],
                                          "derived dims": [], "deepening kinds": ["NewLayer"]}


@pytest.mark.torch
def test_an_export_op_registered_without_a_case_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register a PyTorch op the way a contributor would, into a copy of its registry (and a
    Keras op into a copy of its op types): the contract names each of them."""
    torch_ops = torch_ops_registry()
    monkeypatch.setattr(torch_ops, "TORCH_OPS", dict(torch_ops.TORCH_OPS))
    torch_ops.torch_op("NewOp")(lambda call, inputs: inputs[0])

    assert uncovered(export_tables([*keras_ops(), "NewOp"])) == {"torch export ops": ["NewOp"],
                                                                  "keras export ops": ["NewOp"]}
