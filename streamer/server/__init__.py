"""A local Roboflow-compatible inference server with built-in models and fault injection."""

from __future__ import annotations

from streamer.server.app import ServerConfig, create_app
from streamer.server.faults import FaultConfig
from streamer.server.runner import ServerThread, serve

__all__ = ["FaultConfig", "ServerConfig", "ServerThread", "create_app", "serve"]
