"""Widening by channel maps (DESIGN.md §1-§4)."""

from onnxgrow.widening.api import GroupReport, WidenReport, widen
from onnxgrow.widening.channel_map import ChannelMap, Init, build_channel_map

__all__ = ["ChannelMap", "GroupReport", "Init", "WidenReport", "build_channel_map", "widen"]
