"""A model's structure: its residual streams, their blocks, and its attention modules."""

from __future__ import annotations

from dataclasses import dataclass

import onnx_ir as ir

from onnxgrow.errors import GrowError
from onnxgrow.names import naming_context
from onnxgrow.structure.attention import Attention, attentions_among
from onnxgrow.structure.blocks import Block, group_blocks, residual_path
from onnxgrow.structure.flow import DataFlow
from onnxgrow.structure.patterns import block_pattern
from onnxgrow.structure.projections import Projection, find_projections
from onnxgrow.structure.residual import (
    Residual,
    adopt_post_norm,
    attach_projections,
    build_residual,
    find_chains,
)


@dataclass
class ResidualStream:
    """A chain of residual connections grouped into blocks: the stream points are the first
    block's entry and every block's exit."""

    blocks: tuple[Block, ...]

    @property
    def residuals(self) -> tuple[Residual, ...]:
        return tuple(r for b in self.blocks for r in b.residuals)

    @property
    def points(self) -> tuple[ir.Value, ...]:
        """The values between blocks: cutting the graph there leaves one block per piece."""
        return (self.blocks[0].entry, *(b.exit for b in self.blocks))

    @property
    def width(self) -> int | None:
        """The stream's width when every block has the same (a transformer's hidden size);
        None when it changes along the stream (a ResNet's stages)."""
        widths = {b.width for b in self.blocks}
        return widths.pop() if len(widths) == 1 else None

    @property
    def containers(self) -> tuple[str, ...]:
        """The framework containers of its blocks (``model.layers``; ResNet: ``layer1`` ... ``layer4``)."""
        found: list[str] = []
        for block in self.blocks:
            if block.container is not None and block.container not in found:
                found.append(block.container)
        return tuple(found)

    @property
    def name(self) -> str:
        """``model.layers``, ``layer1..layer4``, or ``stream`` without names."""
        containers = self.containers
        if not containers:
            return "stream"
        return containers[0] if len(containers) == 1 else f"{containers[0]}..{containers[-1]}"


@dataclass
class ModelStructure:
    """Every residual stream of a model's main graph (an encoder-decoder has two) in graph
    order, every attention module (those outside any block too), every projection."""

    streams: tuple[ResidualStream, ...]
    attentions: tuple[Attention, ...]
    projections: dict[ir.Node, Projection]

    @property
    def blocks(self) -> tuple[Block, ...]:
        return tuple(b for s in self.streams for b in s.blocks)

    def block(self, name: str) -> Block:
        """The block ``name`` designates: its framework name (``model.layers.3``) or a tail of it
        (``layers.3``) that only it has; a GrowError names the blocks otherwise."""
        hits = [b for b in self.blocks if name in (b.name, b.label)]
        if not hits:
            hits = [b for b in self.blocks if b.name is not None and b.name.endswith("." + name)]
        if len(hits) == 1:
            return hits[0]
        if hits:
            raise GrowError(f"block name {name!r} is ambiguous; it matches: {', '.join(b.label for b in hits)}")
        known = ", ".join(_patterns(self)) or "none found"
        raise GrowError(f"no block named {name!r} (blocks: {known})")

    def block_of(self, node: ir.Node) -> Block | None:
        """The block holding ``node``, if any."""
        return next((b for b in self.blocks if node in b.nodes), None)


def _patterns(structure: ModelStructure) -> list[str]:
    """Block names as ``model.layers.{0..11}``, one per stream."""
    return [block_pattern(s.blocks) for s in structure.streams]


def find_structure(model: ir.Model) -> ModelStructure:
    """The residual streams, blocks and attention modules of ``model``'s main graph (read
    only; infer its shapes first, :func:`onnxgrow.shapes.infer_shapes`, for head splits
    and broadcast checks to see them)."""
    graph = model.graph
    flow = DataFlow(graph)
    context = naming_context(graph)
    projections = find_projections(graph, context)
    attentions = attentions_among(projections.values())
    prefixes = dict(context.legacy_prefixes)
    by_query = {a.query.node: a for a in attentions}
    chains = [[build_residual(c, flow, projections, by_query) for c in chain]
              for chain in find_chains(flow, projections)]
    attach_projections([r for chain in chains for r in chain], projections, flow)
    streams = []
    for residuals in chains:
        paths = [residual_path(r, prefixes) for r in residuals]
        if len(residuals) == 1:
            adopt_post_norm(residuals[0], paths[0], flow)
        streams.append(ResidualStream(tuple(group_blocks(residuals, paths, flow))))
    return ModelStructure(tuple(streams), tuple(attentions), projections)

