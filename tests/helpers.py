"""Small helpers for the tests (no fixtures)."""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Callable
from pathlib import Path

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
