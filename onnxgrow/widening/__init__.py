"""Widening by channel maps (docs/design.md §1-§4).

The public API other packages use: :func:`widen` and its report, the growable layers of a
model (:func:`find_layers`, :func:`find_layer`), and :func:`plan_group`, which closes a
layer's channel group without changing anything.
"""

from onnxgrow.widening.api import GroupReport, WidenOp, WidenReport
from onnxgrow.widening.channel_map import ChannelMap, Init, build_channel_map
from onnxgrow.widening.context import GroupContext
from onnxgrow.widening.functions import widen
from onnxgrow.widening.layers import Layer, NotGrowable, find_layer, find_layers
from onnxgrow.widening.planner import plan_group

__all__ = [
    "ChannelMap", "GroupContext", "GroupReport", "Init", "Layer", "NotGrowable", "WidenOp", "WidenReport",
    "build_channel_map", "find_layer", "find_layers", "plan_group", "widen",
]
