"""A trainable PyTorch module that computes an ONNX graph.

:func:`to_torch` turns a model into an :class:`OnnxModule`:

- every weight (see :mod:`onnxgrow.parameter_names`) is an ``nn.Parameter`` registered
  under its framework name (``fc1.weight`` lives at ``module.fc1.weight``), in PyTorch
  layout; BatchNorm running statistics and ``num_batches_tracked`` are buffers. So
  ``module.state_dict()`` has the same keys and layouts as ``onnxgrow export --to
  state-dict`` and loads into the user's own class when it exported from one;
- other constants are non-persistent buffers (they move with ``.to(device)`` and stay
  out of the state dict);
- ``forward`` replays the graph's nodes, each with the function registered for its op
  type in :mod:`onnxgrow.export.torch_ops`. In eval mode it computes what onnxruntime
  computes; in training mode BatchNormalization and Dropout behave like the PyTorch
  modules they came from (batch statistics, dropping).

The module pickles with ``torch.save(module, path)`` and loads with
``torch.load(path, weights_only=False)`` wherever onnxgrow is importable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import ml_dtypes
import numpy as np
import onnx_ir as ir
import torch
from torch import nn

from onnxgrow.errors import GrowError
from onnxgrow.export.program import Branch, FixedRef, ParameterRef, Program, Ref, Step, ValueRef, build_program
from onnxgrow.export.torch_ops import TORCH_OPS, Inputs, OpCall
from onnxgrow.model_io import load_model
from onnxgrow.parameter_names import ParameterTable, parameter_table
from onnxgrow.verification import first_line

#: op type → number of outputs its PyTorch function computes.
SUPPORTED_OPS = {op: entry.outputs for op, entry in TORCH_OPS.items()}


class WeightGroup(nn.Module):
    """Holds the parameters of one framework module path (``layer1`` → ``0`` → ``conv1``)."""


class ConstantStore(nn.Module):
    """Holds the graph's non-weight constants as non-persistent buffers."""


class OnnxModule(nn.Module):
    """Computes an ONNX graph with PyTorch ops; its weights are trainable parameters.

    Call it with the graph's inputs in order (tensors or numpy arrays); it returns the
    single output, or a tuple of outputs in graph order.
    """

    def __init__(self, program: Program, table: ParameterTable) -> None:
        super().__init__()
        self._onnx_program = program
        #: What naming the weights found: folded BatchNorms, added entries, unnamed weights.
        self.notes: list[str] = table.notes()
        self._onnx_constants = ConstantStore()
        for key, array in program.constants.items():
            self._onnx_constants.register_buffer(key, _tensor(array), persistent=False)
        for name, param in table.parameters.items():
            value = _tensor(param.array)
            if param.buffer:
                self._register(name, value, buffer=True)
            else:
                self._register(name, nn.Parameter(value, requires_grad=value.is_floating_point()))
        for alias, name in table.aliases.items():
            owner = self.get_parameter(name) if not table.parameters[name].buffer else self.get_buffer(name)
            self._register(alias, owner, buffer=table.parameters[name].buffer)

    def _register(self, name: str, value: torch.Tensor, buffer: bool = False) -> None:
        """Register ``value`` at the dotted path ``name``, making weight groups on the way."""
        *path, leaf = name.split(".")
        module: nn.Module = self
        try:
            for part in path:
                child = module._modules.get(part)
                if child is None:
                    child = WeightGroup()
                    module.add_module(part, child)
                module = child
            if buffer:
                module.register_buffer(leaf, value)
            else:
                module.register_parameter(leaf, value)  # type: ignore[arg-type]
        except (KeyError, TypeError) as exc:
            raise GrowError(f"weight name {name!r} cannot be used in a PyTorch module: {exc}") from None

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self._onnx_program.inputs]

    @property
    def output_names(self) -> list[str]:
        return [name for name, _ in self._onnx_program.outputs]

    def _fetch(self, ref: Ref | None, env: dict[str, torch.Tensor]) -> torch.Tensor | None:
        if ref is None:
            return None
        if isinstance(ref, ValueRef):
            return env[ref.name]
        if isinstance(ref, FixedRef):
            return self._onnx_constants.get_buffer(ref.key)
        assert isinstance(ref, ParameterRef)
        tensor = self.get_buffer(ref.name) if ref.buffer else self.get_parameter(ref.name)
        return tensor if ref.perm is None else tensor.permute(ref.perm)

    def forward(self, *inputs: Any) -> torch.Tensor | tuple[torch.Tensor, ...]:
        program = self._onnx_program
        if len(inputs) != len(program.inputs):
            raise TypeError(f"this module takes {len(program.inputs)} input(s) "
                            f"({', '.join(self.input_names)}), got {len(inputs)}")
        env = {spec.name: torch.as_tensor(x) for spec, x in zip(program.inputs, inputs)}
        self._run(program.steps, env)
        outputs = tuple(self._fetch(ref, env) for _, ref in program.outputs)
        return outputs[0] if len(outputs) == 1 else outputs  # type: ignore[return-value]

    def _run(self, steps: list[Step], env: dict[str, torch.Tensor]) -> None:
        """Run ``steps`` in order, adding their outputs to ``env``."""
        for step in steps:
            branches = {name: partial(self._run_branch, branch, env) for name, branch in step.branches.items()}
            call = OpCall(step.attrs, self._onnx_program.opset, self.training, step.node, step.op_type,
                          len(step.outputs), branches)
            results = _run_step(call, [self._fetch(r, env) for r in step.inputs])
            for name, value in zip(step.outputs, results):
                if name:
                    env[name] = value

    def _run_branch(self, branch: Branch, env: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """A subgraph's outputs: it reads ``env``, and its own values stay in a scope of its own."""
        scope = dict(env)
        self._run(branch.steps, scope)
        return tuple(self._fetch(ref, scope) for ref in branch.outputs)  # type: ignore[misc]

    def extra_repr(self) -> str:
        program = self._onnx_program
        ops = sorted({step.op_type for step in program.steps})
        return (f"inputs={self.input_names}, outputs={self.output_names}, "
                f"{len(program.steps)} nodes ({', '.join(ops)}), opset {program.opset}")


def _run_step(call: OpCall, values: list[torch.Tensor | None]) -> tuple[torch.Tensor, ...]:
    """The outputs of one node's function; any failure inside it becomes a GrowError naming
    the node and its op, so a module that cannot run a model says where, not how deep."""
    try:
        result = TORCH_OPS[call.op_type].function(call, Inputs(call, values))
    except GrowError:
        raise
    except Exception as exc:  # torch raises RuntimeError, TypeError, IndexError...
        raise call.refuse(first_line(exc)) from exc
    return (result,) if isinstance(result, torch.Tensor) else tuple(result)


def to_torch(model: ir.Model | str | os.PathLike[str]) -> OnnxModule:
    """A trainable ``nn.Module`` computing ``model`` (a path or an ``ir.Model``), in eval mode.

    Raises GrowError naming the first node whose op has no PyTorch function.
    """
    if not isinstance(model, ir.Model):
        model = load_model(model)
    table = parameter_table(model)
    program = build_program(model, table, SUPPORTED_OPS, "PyTorch")
    return OnnxModule(program, table).eval()


def run_torch(module: OnnxModule, feeds: Mapping[str, np.ndarray], names: Sequence[str]) -> dict[str, np.ndarray]:
    """Run ``module`` in eval mode without gradients on named numpy inputs."""
    module.eval()
    with torch.no_grad():
        result = module(*(_tensor(np.asarray(feeds[n])) for n in names))
    results = result if isinstance(result, tuple) else (result,)
    return {name: _array(r) for name, r in zip(module.output_names, results)}


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A numpy array as a tensor; bfloat16 (ml_dtypes, which torch cannot read) bit for bit."""
    if array.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(array.copy())


def _array(tensor: torch.Tensor) -> np.ndarray:
    """A tensor as a numpy array; bfloat16 (which numpy cannot hold) as the exact float32."""
    tensor = tensor.detach().cpu()
    return (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()
