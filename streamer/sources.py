"""Opening video sources from one string; each connection yields (image, pts) pairs.

Accepted: a video file (anything PyAV opens), a webcam (``0``, ``/dev/video0``),
``rtsp://`` (TCP by default), ``rtmp://``, ``http(s)://`` (HLS, MJPEG, files), an
image folder or glob, and ``synthetic:[?size=1280x720&fps=30&objects=5&seed=0&seconds=S]``.

A ``Source`` is opened once per connection attempt (the capture thread reconnects);
each ``Stream`` is an iterator of BGR images with their pts in seconds. End of
iteration is end of stream; failures raise ``SourceError``.
"""

from __future__ import annotations

import errno
import glob
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

import cv2
import numpy as np
import numpy.typing as npt

from streamer._av import av
from streamer.errors import ConfigError, SourceError
from streamer.frames import DecodedPicture
from streamer.redaction import clean, redact
from streamer.synth import Scene

__all__ = [
    "ImageFolderSource",
    "PyAVSource",
    "Source",
    "Stream",
    "SyntheticSource",
    "open_source",
]

log = logging.getLogger(__name__)

Image = npt.NDArray[np.uint8]
_VIDEO_FILE_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".ts", ".flv", ".gif")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class Stream(Protocol):
    """One open connection to a source."""

    fps: float | None
    width: int
    height: int

    def __iter__(self) -> Iterator[tuple[Image | DecodedPicture, float | None]]: ...

    def close(self) -> None: ...


class Source(Protocol):
    """Something that can be (re)opened into a Stream."""

    source_id: str  # for logs and records; credentials masked
    is_live: bool  # a camera or stream: end of stream means a disconnect, not the end

    def open(self) -> Stream: ...


@dataclass(frozen=True, kw_only=True)
class Timeouts:
    """Seconds PyAV may wait to open, and for data once open (a stall)."""

    open: float = 5.0
    read: float = 5.0


# Display-matrix rotation (counter-clockwise degrees, as PyAV reads it) -> the turn
# that shows the frame as players do; phone videos are stored sideways with one.
_TURNS = {
    90: cv2.ROTATE_90_COUNTERCLOCKWISE,
    180: cv2.ROTATE_180,
    270: cv2.ROTATE_90_CLOCKWISE,
}


def upright(image: Image, rotation: float) -> Image:
    """``image`` turned as its display matrix says (multiples of 90 degrees)."""
    turn = _TURNS.get(round(rotation) % 360)
    if turn is None:
        return image
    return np.asarray(cv2.rotate(image, turn), dtype=np.uint8)


def _bgr(frame: av.VideoFrame) -> Image:
    """A decoded picture as upright BGR pixels."""
    image = np.asarray(frame.to_ndarray(format="bgr24"), dtype=np.uint8)
    return upright(image, frame.rotation) if frame.rotation else image


def _shrunk_bgr(frame: av.VideoFrame, fit: int) -> Image | None:
    """A 4:2:0 picture as upright BGR at most ``fit`` on the long side, resized in YUV
    (the chroma planes are a quarter of the luma) and converted at the small size:
    0.59 ms against 0.90 ms for converting 720p and then resizing, JPEG included
    (supervision_walking.mp4, one thread; the images differ by 1.1 grey levels on
    average). ``None`` for other pixel formats and pictures already small enough."""
    if frame.format.name not in ("yuv420p", "yuvj420p"):
        return None
    width, height = frame.width, frame.height
    scale = fit / max(width, height)
    # even sizes: a 4:2:0 picture has one chroma sample per 2x2 block
    small_w, small_h = 2 * max(1, round(width * scale / 2)), 2 * max(1, round(height * scale / 2))
    if scale >= 1 or width % 2 or height % 2 or small_w > width or small_h > height:
        return None
    planes = np.asarray(frame.to_ndarray(format=frame.format.name), dtype=np.uint8)
    luma = planes[:height]
    chroma = planes[height:].reshape(2, height // 2, width // 2)  # U, then V
    small = np.empty((small_h * 3 // 2, small_w), dtype=np.uint8)
    cv2.resize(luma, (small_w, small_h), dst=small[:small_h], interpolation=cv2.INTER_AREA)
    quarter = small[small_h:].reshape(2, small_h // 2, small_w // 2)
    for plane in (0, 1):
        cv2.resize(
            chroma[plane],
            (small_w // 2, small_h // 2),
            dst=quarter[plane],
            interpolation=cv2.INTER_AREA,
        )
    image = np.asarray(cv2.cvtColor(small, cv2.COLOR_YUV2BGR_I420), dtype=np.uint8)
    return upright(image, frame.rotation) if frame.rotation else image


class _PyAVStream:
    def __init__(
        self, container: av.container.InputContainer, source_id: str, *, is_file: bool
    ) -> None:
        self._container = container
        self._source_id = source_id
        self._stream = container.streams.video[0]
        self._stream.thread_type = "AUTO"
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps: float | None = float(rate) if rate else None
        self.width: int = self._stream.codec_context.width
        self.height: int = self._stream.codec_context.height
        self.corrupt_packets = 0
        self.declared_frames = int(self._stream.frames or 0) if is_file else 0
        self.frames_read = 0
        self._http_file = is_file and source_id.lower().startswith(("http://", "https://"))

    def __iter__(self) -> Iterator[tuple[Image | DecodedPicture, float | None]]:
        try:
            for packet in self._container.demux(self._stream):
                try:
                    frames = packet.decode()
                except av.InvalidDataError as exc:
                    # One bad packet costs a frame or two, not the stream.
                    self.corrupt_packets += 1
                    log.warning(
                        "%s: skipped a corrupt packet (%s)", self._source_id, describe_error(exc)
                    )
                    continue
                for frame in frames:
                    width, height = frame.width, frame.height
                    if frame.rotation and frame.rotation % 180:
                        width, height = height, width
                    self.width, self.height = width, height
                    self.frames_read += 1
                    # kept as the decoder made it: converted only if a stage needs pixels
                    yield (
                        DecodedPicture(
                            frame, width=width, height=height, convert=_bgr, shrink=_shrunk_bgr
                        ),
                        frame.time,
                    )
            if self.frames_read < self.declared_frames:
                log.warning(
                    "%s: read %d of the %d frames the file declares (truncated or damaged)",
                    self._source_id,
                    self.frames_read,
                    self.declared_frames,
                )
        except (av.FFmpegError, OSError) as exc:  # OSError: e.g. a network read timed out
            hint = ""
            if self._http_file and isinstance(exc, OSError) and exc.errno == errno.EIO:
                hint = (
                    " (an HTTP server without range requests, serving a file whose index is"
                    " at its end? download it first)"
                )
            raise SourceError(
                f"{self._source_id}: read failed: {describe_error(exc)}{hint}"
            ) from exc

    def low_latency(self) -> None:
        """Decode each frame as it arrives (before the first decode).

        FFmpeg's default here (``AUTO``: frame threading) holds a frame per extra
        thread before it comes out, 40 ms each at 25 fps, and costs more CPU; slice
        threading adds no delay. Measured on supervision_walking.mp4 (720p, this
        2-core machine, median of 3): CPU per frame AUTO 1.74 ms, FRAME 1.76, SLICE
        1.58, NONE 1.61; wall per frame AUTO 1.06 ms, SLICE 1.58. Files read as fast as
        possible keep ``AUTO`` (throughput); cameras, and files played live, use this.
        """
        self._stream.thread_type = "SLICE"

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> _PyAVStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# FFmpeg's errors in words: its errno numbers (1094995529) mean nothing to a user.
_FFMPEG_WORDS: tuple[tuple[type[BaseException], str], ...] = (
    (av.error.InvalidDataError, "not a video file, or corrupt"),
    (av.error.EOFError, "end of file"),
    (av.error.HTTPNotFoundError, "HTTP 404 (not found)"),
    (av.error.HTTPForbiddenError, "HTTP 403 (forbidden)"),
    (av.error.HTTPUnauthorizedError, "HTTP 401 (unauthorized: check the credentials)"),
    (av.error.HTTPBadRequestError, "HTTP 400 (bad request)"),
    (av.error.HTTPTooManyRequestsError, "HTTP 429 (too many requests)"),
    (av.error.HTTPOtherClientError, "an HTTP 4xx error"),
    (av.error.HTTPServerError, "an HTTP 5xx error (the server failed)"),
    (av.error.DemuxerNotFoundError, "not a format FFmpeg can read"),
    (av.error.DecoderNotFoundError, "no decoder for this video's codec"),
    (av.error.ProtocolNotFoundError, "a protocol FFmpeg cannot read"),
    (av.error.ExitError, "interrupted"),
    (ConnectionRefusedError, "connection refused"),
    (ConnectionResetError, "connection reset"),
    (TimeoutError, "timed out"),
    (PermissionError, "permission denied"),
)


def describe_error(exc: BaseException) -> str:
    """A few words for why FFmpeg or the OS failed, credentials masked, one line."""
    for kind, words in _FFMPEG_WORDS:
        if isinstance(exc, kind):
            return words
    strerror = getattr(exc, "strerror", None)
    text = str(strerror) if strerror else str(exc) or type(exc).__name__
    return clean(redact(text), 160)


class PyAVSource:
    """Files, devices and network streams through FFmpeg."""

    def __init__(
        self,
        uri: str,
        *,
        is_live: bool,
        device_format: str | None = None,
        timeouts: Timeouts | None = None,
    ) -> None:
        self.uri = uri
        self.source_id = redact(uri)
        self.is_live = is_live
        self._format = device_format
        self.timeouts = timeouts or Timeouts()

    def _options(self) -> dict[str, str]:
        scheme = urlsplit(self.uri).scheme.lower()
        options: dict[str, str] = {}
        if scheme in ("rtsp", "rtsps"):
            options["rtsp_transport"] = "tcp"  # UDP loses packets on busy links and behind NAT
        if self.is_live:
            # FFmpeg probes ~1 s of a network stream by default; 0.2 s finds H.264 as well.
            options.update(
                analyzeduration="200000", probesize="500000", fflags="nobuffer", flags="low_delay"
            )
        return options

    def open(self) -> _PyAVStream:
        try:
            container = av.open(
                self.uri,
                format=self._format,
                options=self._options(),
                timeout=(self.timeouts.open, self.timeouts.read),
            )
        except FileNotFoundError as exc:
            raise SourceError(f"{self.source_id}: no such file or device") from exc
        except (av.FFmpegError, OSError) as exc:
            raise SourceError(f"cannot open {self.source_id}: {describe_error(exc)}") from exc
        if not container.streams.video:
            container.close()
            raise SourceError(f"{self.source_id} has no video stream")
        try:
            return _PyAVStream(container, self.source_id, is_file=not self.is_live)
        except (av.FFmpegError, OSError) as exc:
            container.close()
            raise SourceError(f"cannot decode {self.source_id}: {describe_error(exc)}") from exc


class _SyntheticStream:
    def __init__(self, scene: Scene, frame_count: int | None, realtime: bool) -> None:
        self._scene = scene
        self._count = frame_count
        self._realtime = realtime
        self.fps: float | None = scene.fps
        self.width = scene.width
        self.height = scene.height
        self.spare: list[Image] = []  # buffers handed back by the capture thread

    def __iter__(self) -> Iterator[tuple[Image, float | None]]:
        started = time.monotonic()
        index = 0
        while self._count is None or index < self._count:
            if self._realtime:
                delay = started + index / self._scene.fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            buffer = self.spare.pop() if self.spare else None
            yield self._scene.render(index, buffer), index / self._scene.fps
            index += 1

    def close(self) -> None:
        self.spare.clear()


class SyntheticSource:
    """The scene generator as a camera: frames rendered as the clock ticks."""

    def __init__(
        self, scene: Scene, *, seconds: float | None = None, realtime: bool | None = None
    ) -> None:
        self.scene = scene
        self.seconds = seconds
        # endless: a camera, paced by the clock; with a length: a recording, as fast as it renders
        self.realtime = seconds is None if realtime is None else realtime
        self.source_id = "synthetic"
        self.is_live = seconds is None

    def open(self) -> _SyntheticStream:
        count = None if self.seconds is None else max(1, round(self.seconds * self.scene.fps))
        return _SyntheticStream(self.scene, count, self.realtime)


def read_image(path: Path) -> Image | None:
    """The image at ``path`` in BGR, or ``None`` if it cannot be read whole.

    A JPEG without its end marker (cut short by a copy or a crash) is refused before
    libjpeg sees it: libjpeg would decode half a picture and print its own warning
    straight to the terminal.
    """
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if data[:2] == b"\xff\xd8" and not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        return None
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    return None if image is None else np.asarray(image, dtype=np.uint8)


class _ImageStream:
    def __init__(self, paths: list[Path], fps: float) -> None:
        self._paths = paths
        self.fps: float | None = fps
        for path in paths:  # an unreadable first image is skipped like any other
            first = read_image(path)
            if first is not None:
                self.height, self.width = first.shape[:2]
                break
        else:
            raise SourceError(f"none of the {len(paths)} images in the folder can be read")

    def __iter__(self) -> Iterator[tuple[Image, float | None]]:
        for index, path in enumerate(self._paths):
            image = read_image(path)
            if image is None:
                log.warning("skipped an unreadable or truncated image: %s", path)
                continue
            yield image, index / (self.fps or 1.0)

    def close(self) -> None:
        pass


class ImageFolderSource:
    """A folder or glob of images, in name order, as a recorded video."""

    def __init__(self, pattern: str, *, fps: float = 1.0) -> None:
        path = Path(pattern)
        if path.is_dir():
            paths = [p for p in sorted(path.iterdir()) if p.suffix.lower() in _IMAGE_SUFFIXES]
        else:
            paths = [
                Path(p)
                for p in sorted(glob.glob(pattern))
                if Path(p).suffix.lower() in _IMAGE_SUFFIXES
            ]
        if not paths:
            raise SourceError(f"no images ({', '.join(_IMAGE_SUFFIXES)}) in {pattern}")
        self._paths = paths
        self.fps = fps
        self.source_id = pattern
        self.is_live = False

    def open(self) -> _ImageStream:
        return _ImageStream(self._paths, self.fps)


def _synthetic(uri: str) -> SyntheticSource:
    query = parse_qs(urlsplit(uri).query)
    allowed = {"size", "fps", "objects", "seed", "seconds"}
    unknown = set(query) - allowed
    if unknown:
        raise ConfigError(
            f"unknown synthetic option(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(allowed))}"
        )

    def value(name: str, default: str) -> str:
        return query.get(name, [default])[-1]

    size = re.fullmatch(r"(\d+)x(\d+)", value("size", "1280x720"))
    if not size:
        raise ConfigError(f"synthetic size must look like 1280x720, got {value('size', '')!r}")
    try:
        fps = float(value("fps", "30"))
        objects = int(value("objects", "5"))
        seed = int(value("seed", "0"))
        seconds = float(query["seconds"][-1]) if "seconds" in query else None
    except ValueError as exc:
        raise ConfigError(f"bad synthetic option in {clean(uri, 120)!r}: {exc}") from exc
    if seconds is not None and not 0 < seconds <= 86_400:
        raise ConfigError(f"synthetic seconds must be in (0, 86400], got {seconds:g}")
    scene = Scene(
        width=int(size.group(1)), height=int(size.group(2)), fps=fps, objects=objects, seed=seed
    )
    return SyntheticSource(scene, seconds=seconds)


def open_source(uri: str, *, timeouts: Timeouts | None = None) -> Source:
    """The ``Source`` for ``uri``, or a one-line ``ConfigError``/``SourceError`` saying why not."""
    text = uri.strip()
    if not text:
        raise ConfigError("empty source")
    scheme = urlsplit(text).scheme.lower() if "://" in text or text.startswith("synthetic:") else ""
    if scheme == "synthetic":
        return _synthetic(text)
    if scheme in ("rtsp", "rtsps", "rtmp", "rtmps", "srt", "udp", "tcp"):
        return PyAVSource(text, is_live=True, timeouts=timeouts)
    if scheme in ("http", "https"):
        path = urlsplit(text).path.lower()
        return PyAVSource(text, is_live=not path.endswith(_VIDEO_FILE_SUFFIXES), timeouts=timeouts)
    if scheme:
        raise ConfigError(f"unsupported source scheme {scheme}:// in {redact(text)!r}")
    if text.isdigit():
        text = f"/dev/video{text}"
    if text.startswith("/dev/video"):
        if not os.path.exists(text):
            raise SourceError(f"no webcam at {text}")
        return PyAVSource(text, is_live=True, device_format="v4l2", timeouts=timeouts)
    try:
        return _open_path(text, timeouts)
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise SourceError(f"cannot read {clean(text, 120)}: {describe_error(exc)}") from exc


def _open_path(text: str, timeouts: Timeouts | None) -> Source:
    file = Path(text)
    if file.is_file():  # "Holiday [1080p].mp4" is a file, not a glob
        return PyAVSource(text, is_live=False, timeouts=timeouts)
    if any(ch in text for ch in "*?[") or file.is_dir():
        return ImageFolderSource(text)
    if not file.exists():
        raise SourceError(f"no such file: {clean(text, 200)}")
    raise SourceError(f"not a file: {clean(text, 200)}")
