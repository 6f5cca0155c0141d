"""Annotated video through PyAV (H.264), keeping the source's timing.

Each frame keeps its own pts from the source on a 1/90000 s clock (exact for
30000/1001, 25, 24, 60 fps and for variable-rate files alike), and the stream
declares the source's rate as an exact fraction. Live mode: the source's pts too,
anchored to the capture clock, which takes over where the source has none and
where the two part by more than a second (a camera that restarted its clock, a
reconnect): a live recording has the camera's own timing, and plays back at the
speed it happened. In both, the encoder's own time base is the stream's, and
timestamps are made strictly increasing whatever the clocks did.

The file is written under a temporary name and renamed into place when finished
(``streamer.outputs``): a killed run never leaves an unreadable file at the target.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from streamer._av import av
from streamer.errors import SinkError
from streamer.outputs import OutputFile
from streamer.sinks.base import Output

__all__ = ["VideoSink"]

log = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 90000)
_REANCHOR_S = 1.0  # source and capture clocks further apart than this: follow capture


class VideoSink:
    name = "video"
    wants_image = True

    def __init__(
        self,
        target: str | Path | OutputFile,
        *,
        live: bool,
        codec: str = "libx264",
        preset: str = "ultrafast",
        crf: int = 23,
    ) -> None:
        """``target``: a path (claimed here, renamed into place on close) or an
        ``OutputFile`` claimed by the caller, who then commits or discards it."""
        if isinstance(target, OutputFile):
            self._claim, self._owns_claim = target, False
        else:
            parent = Path(target).parent
            if not parent.is_dir():
                raise SinkError(f"cannot write {target}: folder {parent} does not exist")
            self._claim, self._owns_claim = OutputFile.claim(target), True
        self.path = str(self._claim.target)
        self.live = live
        # live: every source frame comes (25 a second of full-size BGR, 2.7 MB each at
        # 720p); past 0.6 s behind the encoder the oldest are dropped, not buffered
        self.queue_size = 16 if live else 64
        self._codec = codec
        self._options: dict[str, object] = {"preset": preset, "crf": str(crf)}
        self._container: av.container.OutputContainer | None = None
        self._stream: av.VideoStream | None = None
        self._time_base = TIME_BASE
        self._first_capture: float | None = None
        self._pts_offset: float | None = None  # live: source pts -> output seconds
        self._last_pts = -1
        self.frames = 0
        self.failed = False

    def _open(self, output: Output) -> None:
        width, height = output.frame.size
        if width < 2 or height < 2:
            raise SinkError(
                f"cannot write video {self.path}: {width}x{height} frames are too small"
            )
        if not output.source_fps:
            rate = Fraction(30)
        else:
            rate = Fraction(output.source_fps).limit_denominator(1001)
        try:
            container = av.open(str(self._claim.temp), mode="w")
            stream = container.add_stream(self._codec, rate=rate)
            if not isinstance(stream, av.VideoStream):
                raise SinkError(f"{self._codec} is not a video codec")
            stream.width = width - width % 2
            stream.height = height - height % 2
            stream.pix_fmt = "yuv420p"
            stream.time_base = self._time_base
            # the encoder's clock as fine as the stream's: two frames 10 ms apart must not
            # round onto the same tick of a 1/30 s clock (EINVAL from the encoder)
            stream.codec_context.time_base = self._time_base
            stream.options = self._options
            stream.codec_context.thread_type = "FRAME"
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise SinkError(f"cannot write video {self.path}: {exc}") from exc
        self._container, self._stream = container, stream

    def _pts(self, output: Output) -> int:
        frame = output.frame
        if self._first_capture is None:
            self._first_capture = frame.captured_at
        captured = frame.captured_at - self._first_capture
        if frame.pts is None:
            seconds = captured
        elif not self.live:
            seconds = frame.pts
        else:
            offset = self._pts_offset
            if offset is None or abs(frame.pts + offset - captured) > _REANCHOR_S:
                offset = self._pts_offset = captured - frame.pts
            seconds = frame.pts + offset
        pts = round(seconds / self._time_base)
        pts = max(pts, self._last_pts + 1)  # strictly increasing, whatever the source did
        self._last_pts = pts
        return pts

    def write(self, output: Output) -> None:
        if output.image is None:
            return
        if self._container is None:
            self._open(output)
        assert self._container is not None
        assert self._stream is not None
        image = output.image
        width, height = self._stream.width, self._stream.height
        if image.shape[1] != width or image.shape[0] != height:
            # odd sizes are cropped by a pixel; a new resolution after a reconnect is scaled
            if abs(image.shape[1] - width) <= 1 and abs(image.shape[0] - height) <= 1:
                image = image[:height, :width]
            else:
                image = np.asarray(
                    cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA), np.uint8
                )
        try:
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = self._pts(output)
            frame.time_base = self._time_base
            self._container.mux(self._stream.encode(frame))
        except (av.FFmpegError, OSError, ValueError) as exc:
            self.failed = True
            raise SinkError(f"cannot write video {self.path}: {_reason(exc)}") from exc
        self.frames += 1

    def close(self) -> None:
        container, self._container = self._container, None
        try:
            if container is not None:
                try:
                    if self._stream is not None and not self.failed:
                        container.mux(self._stream.encode(None))
                except (av.FFmpegError, OSError) as exc:
                    self.failed = True
                    raise SinkError(f"cannot finish video {self.path}: {_reason(exc)}") from exc
                finally:
                    try:
                        container.close()
                    except (av.FFmpegError, OSError) as exc:
                        if not self.failed:
                            self.failed = True
                            raise SinkError(
                                f"cannot finish video {self.path}: {_reason(exc)}"
                            ) from exc
        finally:
            if self._owns_claim:
                if self.failed:
                    self._claim.discard()  # an unfinished MP4 cannot be played: keep nothing
                else:
                    self._claim.commit()
        if not self.failed and self.frames:
            log.info("wrote %d frames to %s", self.frames, self.path)


def _reason(exc: BaseException) -> str:
    strerror = getattr(exc, "strerror", None)
    return str(strerror) if strerror else str(exc)
