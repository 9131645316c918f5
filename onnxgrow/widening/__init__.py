"""Widening by channel maps (docs/design.md §1-§4)."""

from onnxgrow.widening.api import GroupReport, WidenOp, WidenReport, widen
from onnxgrow.widening.channel_map import ChannelMap, Init, build_channel_map

__all__ = ["ChannelMap", "GroupReport", "Init", "WidenOp", "WidenReport", "build_channel_map", "widen"]
