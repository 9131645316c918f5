"""A model's repeated structure (docs/design.md §11): its residual streams, the blocks on
them (transformer layers, residual conv blocks) with their attention, FFN, norms and
shortcuts, and the attention modules and projections everything is made of.

``find_structure(model)`` reads a model (shapes inferred) and changes nothing. Heads,
hidden-size growth, block insertion and the segmented check all start from it.
"""

from onnxgrow.structure.attention import (
    FUSED_ATTENTION_OPS,
    Attention,
    HeadSplit,
    attentions_among,
    find_attention,
    find_attentions,
    fused_attention_node,
    head_split,
)
from onnxgrow.structure.blocks import Block, BlockKind, NormPosition, indexed_prefixes, split_index
from onnxgrow.structure.flow import DataFlow
from onnxgrow.structure.masks import is_causal
from onnxgrow.structure.model import ModelStructure, ResidualStream, find_structure
from onnxgrow.structure.norms import NORM_OPS, Norm, find_norm
from onnxgrow.structure.patterns import block_pattern, fill, generalise, index_ranges, mention, merge_names
from onnxgrow.structure.projections import Projection, find_projections, projection_width
from onnxgrow.structure.residual import FFN, Residual, ResidualKind

__all__ = [
    "FFN", "FUSED_ATTENTION_OPS", "NORM_OPS", "Attention", "Block", "BlockKind", "DataFlow", "HeadSplit",
    "ModelStructure", "Norm", "NormPosition", "Projection", "Residual", "ResidualKind", "ResidualStream",
    "attentions_among", "block_pattern", "fill", "find_attention", "find_attentions", "find_norm",
    "find_projections", "find_structure", "fused_attention_node", "generalise", "head_split", "index_ranges",
    "indexed_prefixes", "is_causal", "merge_names", "mention", "projection_width", "split_index",
]
