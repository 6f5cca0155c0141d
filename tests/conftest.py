"""Shared fixtures: real servers on 127.0.0.1, real media made in tmp dirs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from streamer.server import FaultConfig, ServerConfig, ServerThread
from streamer.synth import Scene
from tests.helpers import ServerFactory, shared_dir


@pytest.fixture(scope="session")
def shared() -> Path:
    path = shared_dir()
    if path is None:
        pytest.skip("../shared (models, videos, images) is not present; set STREAMER_SHARED_DIR")
    return path


@pytest.fixture(scope="session")
def models_dir(shared: Path) -> Path:
    path = shared / "models"
    if not (path / "yolox_nano.onnx").is_file():
        pytest.skip(f"{path}/yolox_nano.onnx is not present")
    return path


@pytest.fixture(scope="session")
def crowd_jpeg(shared: Path) -> bytes:
    return (shared / "images" / "rfinf_crowd.jpg").read_bytes()


@pytest.fixture
def start_server() -> Iterator[ServerFactory]:
    """Start servers with any config; all are stopped at the end of the test."""
    started: list[ServerThread] = []

    def start(faults: FaultConfig | None = None, **config: object) -> ServerThread:
        config.setdefault("port", 0)
        if faults is not None:
            config["faults"] = faults
        server = ServerThread(ServerConfig(**config)).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def server() -> Iterator[ServerThread]:
    """One fault-free server for the whole session; coco/1 loads if ../shared has weights."""
    path = shared_dir()
    models = path / "models" if path is not None else None
    with ServerThread(ServerConfig(port=0, models_dir=models)) as running:
        yield running


@pytest.fixture
def client(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as http:
        yield http


@pytest.fixture(scope="session")
def scene() -> Scene:
    return Scene(width=640, height=360, fps=30, objects=5, seed=3)
