"""A camera's live preview for the web view: the newest drawn frame as a JPEG.

One encode per frame shown, whatever the number of viewers (they all read the same
bytes), at most ``fps`` a second and ``width`` pixels wide, and nothing at all while
nobody watches: the pipeline asks ``wants_frame()`` before drawing a frame for it.
Viewers never hold the camera up: each reads the newest JPEG when it is ready for one,
so a slow viewer skips frames instead of queueing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

from streamer.sinks.base import DropPolicy, Output

__all__ = [
    "AGE_COMMENT",
    "MjpegReader",
    "Preview",
    "PreviewConfig",
    "PreviewFeed",
    "PreviewFrame",
    "jpeg_comment",
    "with_comment",
]

AGE_COMMENT = "capture-age-ms="  # in each preview JPEG's comment: capture to bytes out


@dataclass(frozen=True)
class PreviewConfig:
    fps: float = 10.0  # JPEGs a second at most, per camera
    width: int = 640  # pixels, at most


@dataclass(frozen=True)
class PreviewFrame:
    sequence: int  # counts the JPEGs made: a viewer waits for a larger one
    jpeg: bytes
    captured_at: float  # the frame's capture time (monotonic), for latency figures


class Preview:
    name = "preview"
    wants_image = True
    queue_size = 2

    @staticmethod
    def drop_policy(live: bool) -> DropPolicy:
        return DropPolicy.DROP_OLDEST  # a preview only ever wants the newest frame

    def __init__(self, *, fps: float = 10.0, width: int = 640, quality: int = 75) -> None:
        self.interval = 1.0 / fps
        self.width = width
        self.max_width = width  # frames drawn for previews only are drawn this wide
        self.quality = quality
        self._lock = threading.Lock()
        self._viewers = 0
        self._connections = 0  # viewers ever connected
        self._latest: PreviewFrame | None = None
        # viewers waiting for the next JPEG, woken on their event loop when it is made
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._last_encode = -1e18
        self.encoded = 0
        self.closed = False

    # -- the pipeline's side (its render thread and this sink's worker) --------------------

    def wants_frame(self) -> bool:
        """Whether a frame drawn now would be shown: someone watches, and it is due."""
        with self._lock:
            return self._viewers > 0 and time.monotonic() - self._last_encode >= self.interval

    def write(self, output: Output) -> None:
        if output.image is None or not self.wants_frame():
            return
        image = output.image
        height, width = image.shape[:2]
        if width > self.width:
            size = (self.width, max(1, round(height * self.width / width)))
            image = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            return
        with self._lock:
            self._last_encode = time.monotonic()
            self.encoded += 1
            self._latest = PreviewFrame(self.encoded, jpeg.tobytes(), output.frame.captured_at)
        self._wake()

    def _wake(self) -> None:
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for loop, waiter in waiters:
            with contextlib.suppress(RuntimeError):  # its loop has closed: nobody waits
                loop.call_soon_threadsafe(_resolve, waiter)

    def close(self) -> None:
        self.closed = True
        self._wake()

    # -- the viewers' side ------------------------------------------------------------------

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """While a viewer is connected: frames are drawn and encoded for it."""
        self.watch(1)
        try:
            yield
        finally:
            self.watch(-1)

    def watch(self, change: int) -> None:
        """``1``: a viewer came (a remote one, through the head of a Ray cluster, too);
        ``-1``: one left."""
        with self._lock:
            self._viewers = max(0, self._viewers + change)
            if change > 0:
                self._connections += change

    @property
    def viewers(self) -> int:
        with self._lock:
            return self._viewers

    @property
    def connections(self) -> int:
        """Viewers connected since the camera started, gone ones included."""
        with self._lock:
            return self._connections

    def newer_than(self, sequence: int) -> PreviewFrame | None:
        """The newest JPEG if it is newer than ``sequence``; never waits."""
        with self._lock:
            latest = self._latest
        return latest if latest is not None and latest.sequence > sequence else None

    async def next_after(self, sequence: int, timeout: float) -> PreviewFrame | None:
        """The newest JPEG newer than ``sequence``, waiting up to ``timeout`` seconds for
        one to be made (woken when it is, not polling); ``None`` if none came or the
        preview closed."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (asyncio.get_running_loop(), waiter)
        with self._lock:
            latest = self._latest
            if latest is not None and latest.sequence > sequence:
                return latest
            if self.closed:
                return None
            self._waiters.append(entry)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            with self._lock:
                if entry in self._waiters:
                    self._waiters.remove(entry)
            return None
        return self.newer_than(sequence)


class PreviewFeed(Protocol):
    """What the web server's MJPEG route reads: a ``Preview`` here, or a camera's
    preview in a Ray actor seen through the head."""

    @property
    def closed(self) -> bool: ...

    @property
    def viewers(self) -> int: ...

    @property
    def connections(self) -> int: ...

    def watching(self) -> contextlib.AbstractContextManager[None]: ...

    async def next_after(self, sequence: int, timeout: float) -> PreviewFrame | None: ...


def with_comment(jpeg: bytes, text: str) -> bytes:
    """``jpeg`` with a comment segment (COM) right after its start marker."""
    body = text.encode("ascii")
    return jpeg[:2] + b"\xff\xfe" + (len(body) + 2).to_bytes(2, "big") + body + jpeg[2:]


def jpeg_comment(jpeg: bytes) -> str | None:
    """The comment ``with_comment`` put in, if any."""
    if jpeg[2:4] != b"\xff\xfe":
        return None
    size = int.from_bytes(jpeg[4:6], "big")
    return jpeg[6 : 4 + size].decode("ascii", "replace")


class MjpegReader:
    """The viewer's side of ``/camera/<name>/preview.mjpg``: feed it the bytes as they
    come, take the JPEGs whole. Parts end at the next boundary (they carry no length)."""

    def __init__(self, boundary: bytes = b"frame") -> None:
        self._boundary = b"\r\n--" + boundary + b"\r\n"
        self._buffer = b"\r\n"  # the stream opens with the boundary, no CRLF before it
        self._in_part = False

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        jpegs: list[bytes] = []
        while True:
            if not self._in_part:
                start = self._buffer.find(self._boundary)
                head_end = self._buffer.find(b"\r\n\r\n", start + len(self._boundary) - 2)
                if start < 0 or head_end < 0:
                    return jpegs
                self._buffer = self._buffer[head_end + 4 :]
                self._in_part = True
            end = self._buffer.find(self._boundary)
            if end < 0:
                return jpegs
            jpegs.append(self._buffer[:end])
            self._buffer = self._buffer[end:]
            self._in_part = False


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():  # not already given up on (timeout, the viewer gone)
        waiter.set_result(None)
