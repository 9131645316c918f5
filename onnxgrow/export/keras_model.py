"""A trainable Keras 3 functional model that computes an ONNX graph.

:func:`to_keras` replays the graph's steps with the functions registered in
:mod:`onnxgrow.export.keras_ops`. The model has the ONNX model's inputs (same names
where Keras allows, same layout: NCHW stays NCHW) and outputs in order. Weights of
Dense, Conv, normalisation, Embedding and PReLU layers are Keras variables (trainable,
BatchNorm moving statistics not); layers are named after the framework modules
(``fc1``, ``layer1_0_conv1``). A weight read by an op with no Keras layer (a position
embedding added to a tensor) is kept as a constant and listed in
:attr:`KerasExport.frozen`. ``Add(MatMul(x, W), b)`` becomes one Dense layer with a
trainable bias.

Keras chooses its backend when it is first imported: :func:`import_keras` keeps
``KERAS_BACKEND`` when it is set, else uses TensorFlow when installed (Keras' default),
else JAX, else PyTorch.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import onnx_ir as ir

from onnxgrow.errors import GrowError
from onnxgrow.export.program import FixedRef, ParameterRef, Program, Ref, Step, ValueRef, build_program
from onnxgrow.model_io import load_model
from onnxgrow.names import is_keras3_graph, is_tf2onnx_graph
from onnxgrow.parameter_names import ParameterTable, parameter_table

KERAS_SUFFIX = ".keras"
_BACKENDS = ("tensorflow", "jax", "torch")


def import_keras() -> Any:
    """Keras 3, with a backend that is installed (see the module docstring)."""
    if "keras" not in sys.modules and not os.environ.get("KERAS_BACKEND"):
        for backend in _BACKENDS:
            if importlib.util.find_spec(backend) is not None:
                os.environ["KERAS_BACKEND"] = backend
                break
    try:
        import keras
    except ImportError as exc:
        raise GrowError(f"the Keras export needs Keras 3 and one of {', '.join(_BACKENDS)}: "
                        f"pip install 'onnxgrow[keras]' (Keras and TensorFlow), or set KERAS_BACKEND=torch "
                        f"with PyTorch installed ({exc})") from None
    if int(keras.__version__.split(".")[0]) < 3:
        raise GrowError(f"the Keras export needs Keras 3, found {keras.__version__}")
    return keras


@dataclass
class KerasExport:
    """The Keras model and what the export noticed."""

    model: Any
    table: ParameterTable
    frozen: list[str] = field(default_factory=list)
    shared: dict[str, int] = field(default_factory=dict)  # weight → Keras layers holding a copy

    keras_named: bool = False  # layers are named from a TensorFlow converter's Keras scopes

    def notes(self) -> list[str]:
        """The parameter table's notes (without the weights it could not give a framework
        name, when the Keras layers are named from their scopes), constants, untied copies."""
        lines = self.table.notes()
        if self.keras_named:
            unnamed = {u.describe() for u in self.table.unnamed}
            lines = [line for line in lines if line not in unnamed]
        lines += [f"{name}: read by an op with no Keras layer; kept as a constant (not trainable)"
                  for name in self.frozen]
        lines += [f"{name}: read by {count} layers; in Keras each holds its own copy (they start equal "
                  "and are no longer tied)" for name, count in self.shared.items()]
        return lines


def _consumers(steps: Sequence[Step]) -> dict[str, list[Step]]:
    consumers: dict[str, list[Step]] = {}
    for step in steps:
        for ref in step.inputs:
            if isinstance(ref, ValueRef):
                consumers.setdefault(ref.name, []).append(step)
    return consumers


def _merge_bias_adds(program: Program) -> list[Step]:
    """Fold ``Add(MatMul(x, W), b)`` with a 2-D weight W and a 1-D constant b into the
    MatMul step (its third input), so Keras makes one Dense layer with a bias."""
    consumers = _consumers(program.steps)
    graph_outputs = {ref.name for _, ref in program.outputs if isinstance(ref, ValueRef)}
    merged: dict[int, Step] = {}
    dropped: set[int] = set()
    for step in program.steps:
        if step.op_type != "MatMul" or not isinstance(step.inputs[1], ParameterRef):
            continue
        out = step.outputs[0]
        users = consumers.get(out, [])
        if out in graph_outputs or len(users) != 1 or users[0].op_type != "Add":
            continue
        add = users[0]
        bias = next((r for r in add.inputs if not (isinstance(r, ValueRef) and r.name == out)), None)
        if isinstance(bias, (ParameterRef, FixedRef)):
            merged[id(step)] = replace(step, inputs=(*step.inputs, bias), outputs=add.outputs)
            dropped.add(id(add))
    return [merged.get(id(s), s) for s in program.steps if id(s) not in dropped]


class _KerasBuilder:
    def __init__(self, keras: Any, program: Program, table: ParameterTable, keras3: bool) -> None:
        from onnxgrow.export.keras_ops import KERAS_OPS, LayerNames, Weight

        self.keras = keras
        self.ops = KERAS_OPS
        self.weight_class = Weight
        self.program = program
        self.table = table
        self.names = LayerNames(keras3)
        self.env: dict[str, Any] = {}

    def fetch(self, ref: Ref | None, step: Step | None = None) -> Any:
        if ref is None:
            return None
        if isinstance(ref, ValueRef):
            return self.env[ref.name]
        if isinstance(ref, FixedRef):
            return self.program.constants[ref.key]
        param = self.table.parameters[ref.name]
        array = param.array if ref.perm is None else np.transpose(param.array, ref.perm)
        return self.weight_class(ref.name, np.ascontiguousarray(array), param.buffer, param.onnx_name)

    def constant(self, ref: Ref | None) -> np.ndarray | None:
        """The array of a constant reference (None for a run-time value)."""
        if ref is None or isinstance(ref, ValueRef):
            return None
        value = self.fetch(ref)
        return value.array if isinstance(value, self.weight_class) else value

    def build(self) -> Any:
        from onnxgrow.export.keras_ops import KerasCall, onnx_layout, run_op

        inputs = []
        for spec in self.program.inputs:
            tensor = self.keras.Input(shape=spec.shape[1:], batch_size=spec.shape[0] if spec.shape else None,
                                      dtype=spec.dtype, name=self.names.make(spec.name))
            inputs.append(tensor)
            self.env[spec.name] = tensor
        steps = _merge_norm_arithmetic(_merge_bias_adds(self.program), self.program, self.constant, self.names.keras3)
        for step in steps:
            call = KerasCall(step.attrs, self.program.opset, step.node, step.op_type, len(step.outputs), self.names)
            result = run_op(call, [self.fetch(r) for r in step.inputs])
            results = result if isinstance(result, (tuple, list)) else (result,)
            for name, value in zip(step.outputs, results):
                if name:
                    self.env[name] = value
        outputs = [onnx_layout(self.fetch(ref)) for _, ref in self.program.outputs]
        if any(not isinstance(o, self.keras.KerasTensor) for o in outputs):
            raise GrowError("cannot export to Keras: a graph output does not depend on the inputs")
        return self.keras.Model(inputs if len(inputs) > 1 else inputs[0],
                                outputs if len(outputs) > 1 else outputs[0],
                                name=_model_name(self.program))


Constant = Callable[[Ref | None], "np.ndarray | None"]


def _per_channel(constant: Constant, ref: Ref | None) -> np.ndarray | None:
    """A constant broadcast along one axis (``[C]``, ``[1, C, 1, 1]``) as ``[C]``."""
    array = constant(ref)
    if array is None or array.ndim == 0 or not np.issubdtype(array.dtype, np.floating) \
            or array.size != max(array.shape):
        return None
    return array.reshape(-1)


def _norm_operands(step: Step, constant: Constant) -> tuple[ValueRef, np.ndarray] | None:
    """``(x, c)`` of a Mul/Add of a run-time value by a per-channel constant."""
    for value, other in ((0, 1), (1, 0)):
        x, array = step.inputs[value], _per_channel(constant, step.inputs[other])
        if isinstance(x, ValueRef) and array is not None:
            return x, array
    return None


def _merge_norm_arithmetic(steps: list[Step], program: Program, constant: Constant, keras3: bool) -> list[Step]:
    """tf2onnx writes a Keras BatchNormalization as ``Mul`` (and ``Add``) by per-channel
    constants in the layer's ``batchnorm`` scope, its statistics folded into them: that
    becomes one ``ScaleShift`` step, a Keras layer named after the BatchNormalization whose
    trainable scale and shift are those constants. (A Keras BatchNormalization would train
    on batch statistics the graph no longer has, so ``fit`` would start from another function.)"""
    from onnxgrow.export.keras_layout import norm_layer_of

    consumers = _consumers(steps)
    merged: dict[int, Step] = {}
    dropped: set[int] = set()
    for step in steps:
        operands = _norm_operands(step, constant) if step.op_type == "Mul" else None
        layer = norm_layer_of(step.node, keras3)
        if operands is None or layer is None:
            continue
        x, scale = operands
        shift, outputs = np.zeros_like(scale), step.outputs
        users = consumers.get(step.outputs[0], [])
        add = users[0] if len(users) == 1 and users[0].op_type == "Add" else None
        add_operands = _norm_operands(add, constant) if add is not None else None
        if add is not None and add_operands is not None and norm_layer_of(add.node, keras3) == layer \
                and add_operands[1].size == scale.size:
            shift, outputs = add_operands[1], add.outputs
            dropped.add(id(add))
        keys = []
        for array in (scale, shift):
            keys.append(f"norm{len(program.constants)}")
            program.constants[keys[-1]] = array
        merged[id(step)] = Step("ScaleShift", step.node, (x, *(FixedRef(k) for k in keys)), outputs, {})
    return [merged.get(id(s), s) for s in steps if id(s) not in dropped]


def _model_name(program: Program) -> str:
    return "onnxgrow_" + re.sub(r"\W+", "_", "_".join(n for n, _ in program.outputs))[:40]


def to_keras(model: ir.Model | str | os.PathLike[str]) -> KerasExport:
    """A trainable Keras 3 model computing ``model`` (a path or an ``ir.Model``).

    Raises GrowError naming the first node Keras cannot express (and pointing to the
    Keras weights export).
    """
    keras = import_keras()
    from onnxgrow.export.keras_ops import KERAS_OPS

    if not isinstance(model, ir.Model):
        model = load_model(model)
    table = parameter_table(model)
    try:
        program = build_program(model, table, {op: k.outputs for op, k in KERAS_OPS.items()}, "Keras")
        builder = _KerasBuilder(keras, program, table, is_keras3_graph(model.graph))
        keras_model = builder.build()
    except GrowError as exc:
        raise GrowError(f"{exc}. To rebuild the model in Keras yourself, export its weights with "
                        "--to keras-weights") from None
    shared = {name: count for name, count in builder.names.variables.items() if count > 1}
    return KerasExport(keras_model, table, builder.names.frozen, shared, is_tf2onnx_graph(model.graph))


def run_keras(keras_model: Any, feeds: Mapping[str, np.ndarray], input_names: Sequence[str],
              output_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Run ``keras_model`` in inference mode on named numpy inputs; outputs by ONNX name."""
    keras = import_keras()
    args = [feeds[name] for name in input_names]
    result = keras_model(args if len(args) > 1 else args[0], training=False)
    results = result if isinstance(result, (list, tuple)) else [result]
    return {name: np.asarray(keras.ops.convert_to_numpy(r)) for name, r in zip(output_names, results)}
