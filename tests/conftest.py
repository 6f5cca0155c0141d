"""Shared fixtures: real servers on 127.0.0.1, real media made in tmp dirs."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from streamer.fleet import Fleet
from streamer.server import FaultConfig, ServerConfig, ServerThread
from streamer.synth import Scene, write_video
from tests.helpers import ServerFactory, shared_dir

if TYPE_CHECKING:
    from streamer.web import ControlServer


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


@pytest.fixture(scope="session")
def make_clip(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``make_clip(seconds=4, width=640, height=360, fps=30, objects=4, seed=2)``: an H.264
    clip of a synthetic scene, made once per set of arguments for the whole session."""
    made: dict[tuple[object, ...], Path] = {}
    folder = tmp_path_factory.mktemp("clips")

    def make(
        seconds: float = 4,
        *,
        width: int = 640,
        height: int = 360,
        fps: float = 30,
        objects: int = 4,
        seed: int = 2,
    ) -> Path:
        key = (seconds, width, height, fps, objects, seed)
        if key not in made:
            path = folder / f"clip-{len(made)}.mp4"
            scene = Scene(width=width, height=height, fps=fps, objects=objects, seed=seed)
            write_video(path, scene, seconds=seconds)
            made[key] = path
        return made[key]

    return make


@pytest.fixture
def serve_http() -> Iterator[Callable[[type[http.server.BaseHTTPRequestHandler]], str]]:
    """``serve_http(Handler)``: a threaded HTTP server on 127.0.0.1 for this test; its URL."""
    servers: list[tuple[http.server.ThreadingHTTPServer, threading.Thread]] = []

    def serve(handler: type[http.server.BaseHTTPRequestHandler]) -> str:
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        httpd.daemon_threads = True
        thread = threading.Thread(target=httpd.serve_forever, name="test-http", daemon=True)
        thread.start()
        servers.append((httpd, thread))
        return f"http://127.0.0.1:{httpd.server_address[1]}"

    yield serve
    for httpd, thread in servers:
        httpd.shutdown()
        thread.join(5)
        httpd.server_close()


@pytest.fixture
def web(server: ServerThread) -> Iterator[tuple[Fleet, ControlServer]]:
    """A fleet of live cameras (none yet: add them) sharing a budget of 50 requests/s,
    with its --web server on a free 127.0.0.1 port, no token."""
    from streamer.web import start_control_server

    base = {
        "api_url": server.url,
        "model": "shapes/1",
        "mode": "live",
        "max_fps": 5,
        "rate_limit": 50,
    }
    with Fleet(base) as fleet:
        control: ControlServer = start_control_server(fleet, "127.0.0.1:0", None)
        try:
            yield fleet, control
        finally:
            control.close()
            fleet.stop()
