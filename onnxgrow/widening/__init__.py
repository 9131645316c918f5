"""Widening by channel maps (docs/design.md §1-§4).

The public API other packages use: the widening growths and their reports (:func:`widen`,
:class:`WidenOp`, :class:`NewOutputsOp`, :class:`VocabularyOp`, :class:`HeadsOp`), the
growable layers of a model (:func:`find_layers`, :func:`find_layer`), and
:func:`plan_group`, which closes a layer's channel group without changing anything.
"""

from onnxgrow.widening.api import WidenGroup, WidenOp, WidenReport
from onnxgrow.widening.channel_map import ChannelMap, Init, build_channel_map
from onnxgrow.widening.context import GroupContext
from onnxgrow.widening.functions import widen
from onnxgrow.widening.heads_op import HeadsOp, HeadsReport
from onnxgrow.widening.layers import Layer, NotGrowable, find_layer, find_layers
from onnxgrow.widening.new_outputs_op import NewOutputsOp, NewOutputsReport
from onnxgrow.widening.planner import plan_group
from onnxgrow.widening.vocabulary import VocabularyOp, VocabularyReport

__all__ = [
    "ChannelMap", "GroupContext", "HeadsOp", "HeadsReport", "Init", "Layer", "NewOutputsOp", "NewOutputsReport",
    "NotGrowable", "VocabularyOp", "VocabularyReport", "WidenGroup", "WidenOp", "WidenReport",
    "build_channel_map", "find_layer", "find_layers", "plan_group", "widen",
]
