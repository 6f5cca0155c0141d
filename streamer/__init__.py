"""streamer: real-time video to detections over Roboflow-compatible inference APIs."""

from __future__ import annotations

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
from streamer.synth import Scene, write_video

__all__ = [
    "AuthError",
    "BadResponse",
    "ConfigError",
    "ConnectionFailed",
    "InferenceError",
    "InferenceTimeout",
    "ModelError",
    "ModelNotFound",
    "PlanError",
    "RateLimited",
    "RequestTooLarge",
    "Scene",
    "ServerError",
    "SinkError",
    "SourceError",
    "StreamerError",
    "__version__",
    "write_video",
]
