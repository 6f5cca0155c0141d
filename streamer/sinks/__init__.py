"""Outputs of the pipeline, each behind its own bounded queue."""

from __future__ import annotations

from streamer.sinks.base import DropPolicy, Output, Sink, SinkWorker
from streamer.sinks.display import DisplaySink
from streamer.sinks.jsonl import JsonLinesSink
from streamer.sinks.video import VideoSink
from streamer.sinks.webhook import WebhookSink

__all__ = [
    "DisplaySink",
    "DropPolicy",
    "JsonLinesSink",
    "Output",
    "Sink",
    "SinkWorker",
    "VideoSink",
    "WebhookSink",
]
