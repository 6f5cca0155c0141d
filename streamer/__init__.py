"""streamer: real-time video to detections over Roboflow-compatible inference APIs.

The public API, importable from here; the heavier parts load on first use, so that
``streamer --version`` stays quick.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from streamer.errors import (
    AuthError,
    BadResponse,
    ConfigError,
    ConnectionFailed,
    InferenceError,
    InferenceTimeout,
    ModelError,
    ModelNotFound,
    PlanError,
    RateLimited,
    RequestTooLarge,
    ServerError,
    SinkError,
    SourceError,
    StreamerError,
)

if TYPE_CHECKING:  # real types for type checkers; at run time they load on first use
    from streamer.capture import CaptureConfig, CaptureThread
    from streamer.client import Prediction, RoboflowClient, Target
    from streamer.frames import Frame, Result, Status
    from streamer.pipeline import Pipeline, PipelineSettings
    from streamer.sampler import SamplerConfig
    from streamer.sender import SenderConfig, SenderPool
    from streamer.sources import open_source
    from streamer.synth import Scene, write_video

_LAZY = {
    "CaptureConfig": "streamer.capture",
    "CaptureThread": "streamer.capture",
    "Frame": "streamer.frames",
    "Pipeline": "streamer.pipeline",
    "PipelineSettings": "streamer.pipeline",
    "Prediction": "streamer.client",
    "Result": "streamer.frames",
    "RoboflowClient": "streamer.client",
    "SamplerConfig": "streamer.sampler",
    "Scene": "streamer.synth",
    "SenderConfig": "streamer.sender",
    "SenderPool": "streamer.sender",
    "Status": "streamer.frames",
    "Target": "streamer.client",
    "open_source": "streamer.sources",
    "write_video": "streamer.synth",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'streamer' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "AuthError",
    "BadResponse",
    "CaptureConfig",
    "CaptureThread",
    "ConfigError",
    "ConnectionFailed",
    "Frame",
    "InferenceError",
    "InferenceTimeout",
    "ModelError",
    "ModelNotFound",
    "Pipeline",
    "PipelineSettings",
    "PlanError",
    "Prediction",
    "RateLimited",
    "RequestTooLarge",
    "Result",
    "RoboflowClient",
    "SamplerConfig",
    "Scene",
    "SenderConfig",
    "SenderPool",
    "ServerError",
    "SinkError",
    "SourceError",
    "Status",
    "StreamerError",
    "Target",
    "__version__",
    "open_source",
    "write_video",
]
