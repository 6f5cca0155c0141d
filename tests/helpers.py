"""Small helpers for the tests (no fixtures)."""

from __future__ import annotations

import base64
import http.server
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from streamer.server import ServerThread

REPO = Path(__file__).resolve().parent.parent

# start_server(faults=FaultConfig(...), **ServerConfig fields) -> a started ServerThread
ServerFactory = Callable[..., ServerThread]


def shared_dir() -> Path | None:
    """``$STREAMER_SHARED_DIR``, else ``../shared`` beside the repository."""
    configured = os.environ.get("STREAMER_SHARED_DIR")
    path = Path(configured) if configured else REPO.parent / "shared"
    return path if path.is_dir() else None


def jpeg_bytes(image: np.ndarray, quality: int = 90) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def corners(prediction: dict[str, float]) -> tuple[float, float, float, float]:
    """x1, y1, x2, y2 of a center-based Roboflow prediction."""
    x, y, w, h = prediction["x"], prediction["y"], prediction["width"], prediction["height"]
    return (x - w / 2, y - h / 2, x + w / 2, y + h / 2)


def free_port() -> int:
    """A port nothing listens on right now (bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


STREAMER = [sys.executable, "-m", "streamer.cli"]


def run_cli(
    *args: str, timeout: float = 120, env: Mapping[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``streamer ARGS`` in a subprocess, as a user runs it; ``run`` gets ``--no-progress``."""
    extra = ["--no-progress"] if args and args[0] == "run" else []
    return subprocess.run(
        [*STREAMER, *args, *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=dict(env) if env is not None else None,
        input=stdin,
    )


def start_cli(*args: str, **popen: Any) -> subprocess.Popen[str]:
    """``streamer ARGS`` started in the background (stdout and stderr piped)."""
    extra = ["--no-progress"] if args and args[0] == "run" else []
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen([*STREAMER, *args, *extra], text=True, **popen)


def wait_for(
    condition: Callable[[], object], *, timeout: float = 30.0, what: str = "a condition"
) -> None:
    """Poll ``condition`` until it is true: a readiness signal, never a fixed sleep.

    ``timeout`` only bounds a broken run; a busy machine just takes longer to get there.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def count_lines(path: Path) -> int:
    """Whole lines in ``path`` so far, or in its temporary twin while the run writes it."""
    for candidate in (path, path.parent / f".{path.stem}.streamer-tmp{path.suffix}"):
        try:
            return candidate.read_bytes().count(b"\n")
        except FileNotFoundError:
            continue
    return 0


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def decode(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


# An answer with no detections, as Roboflow's model route gives it.
EMPTY_ANSWER = b'{"predictions": [], "image": {"width": 64, "height": 64}}'


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """Request handler for the small servers tests start: no access log, the request's
    body read in one call, an answer sent in one call."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def reply(
        self,
        status: int,
        body: bytes = b"",
        *,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if body:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
