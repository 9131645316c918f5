"""Residual stacks written by hand (``onnx.helper``), named like a PyTorch ``ModuleList`` of blocks:
for the algebra of block insertion without an exporter. Real exports are in hf_zoo and vision_zoo.

``stack(path, blocks, ...)`` is ``x → in_proj → blocks.0 → ... → blocks.{L-1} → head → y``, every
block ``x + fc2(act(fc1(norm(x))))`` with the weights ``blocks.{i}.norm.weight``/``bias``,
``blocks.{i}.fc1.weight``/``bias``, ``blocks.{i}.fc2.weight``/``bias`` (MatMul + bias Add, weights
``[in, out]``), seeded normal values. Variants:

- ``norm="post"``: ``norm(x + fc2(act(fc1(x))))`` (BERT's order); ``norm="none"``: no norm;
- ``after="Relu"``: ``Relu(x + branch)`` (a ResNet block's order; the input is a ReLU output too);
- ``shortcut_at=k``: block k's shortcut is ``blocks.{k}.downsample`` (a MatMul), as in a
  downsampling ResNet block;
- ``extra_output_at=k``: block k's ``fc1`` output is also a model output (as a key/value cache's
  ``present`` is).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from onnx import helper

from tests.helpers.graphs import save_graph

WIDTH = 8
HIDDEN = 12


def stack(path: Path, blocks: int, *, norm: str = "pre", after: str | None = None, act: str = "Gelu",
          shortcut_at: int | None = None, extra_output_at: int | None = None, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}

    def weight(name: str, *shape: int) -> str:
        weights[name] = (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)
        return name

    def norm_weights(prefix: str) -> tuple[str, str]:
        weights[f"{prefix}.weight"] = (1 + 0.1 * rng.standard_normal(WIDTH)).astype(np.float32)
        weights[f"{prefix}.bias"] = (0.1 * rng.standard_normal(WIDTH)).astype(np.float32)
        return f"{prefix}.weight", f"{prefix}.bias"

    nodes = [helper.make_node("MatMul", ["x", weight("in_proj.weight", WIDTH, WIDTH)], ["h0_pre"],
                              name="/in_proj/MatMul")]
    nodes.append(helper.make_node("Relu", ["h0_pre"], ["h0"], name="/in_proj/Relu"))
    outputs = ["y"]
    current = "h0"
    for k in range(blocks):
        p = f"blocks.{k}"
        scale, bias = norm_weights(f"{p}.norm") if norm in ("pre", "post") else ("", "")
        branch_in = current
        if norm == "pre":
            nodes.append(helper.make_node("LayerNormalization", [current, scale, bias], [f"{p}/norm"],
                                          name=f"/{p}/norm/LayerNormalization"))
            branch_in = f"{p}/norm"
        nodes += [
            helper.make_node("MatMul", [branch_in, weight(f"{p}.fc1.weight", WIDTH, HIDDEN)], [f"{p}/fc1/mm"],
                             name=f"/{p}/fc1/MatMul"),
            helper.make_node("Add", [f"{p}/fc1/mm", weight(f"{p}.fc1.bias", HIDDEN)], [f"{p}/fc1"],
                             name=f"/{p}/fc1/Add"),
            helper.make_node(act, [f"{p}/fc1"], [f"{p}/act"], name=f"/{p}/act/{act}"),
            helper.make_node("MatMul", [f"{p}/act", weight(f"{p}.fc2.weight", HIDDEN, WIDTH)], [f"{p}/fc2/mm"],
                             name=f"/{p}/fc2/MatMul"),
            helper.make_node("Add", [f"{p}/fc2/mm", weight(f"{p}.fc2.bias", WIDTH)], [f"{p}/fc2"],
                             name=f"/{p}/fc2/Add"),
        ]
        shortcut = current
        if shortcut_at == k:
            nodes.append(helper.make_node("MatMul", [current, weight(f"{p}.downsample.weight", WIDTH, WIDTH)],
                                          [f"{p}/downsample"], name=f"/{p}/downsample/MatMul"))
            shortcut = f"{p}/downsample"
        nodes.append(helper.make_node("Add", [shortcut, f"{p}/fc2"], [f"{p}/add"], name=f"/{p}/Add"))
        current = f"{p}/add"
        if norm == "post":
            nodes.append(helper.make_node("LayerNormalization", [current, scale, bias], [f"{p}/norm"],
                                          name=f"/{p}/norm/LayerNormalization"))
            current = f"{p}/norm"
        if after is not None:
            nodes.append(helper.make_node(after, [current], [f"{p}/out"], name=f"/{p}/{after}"))
            current = f"{p}/out"
        if extra_output_at == k:
            outputs.append(f"{p}/fc1")
    nodes.append(helper.make_node("MatMul", [current, weight("head.weight", WIDTH, 5)], ["y"], name="/head/MatMul"))
    return save_graph(path, nodes, {"x": ["batch", WIDTH]}, outputs, weights, opset=20)
