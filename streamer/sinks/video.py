"""Annotated video through PyAV (H.264), keeping the source's timing.

Recorded mode: the stream's own frame rate as an exact fraction (30000/1001 stays
30000/1001) and each frame's pts from the source, so the output neither drifts nor
drops. Live mode: a millisecond time base and pts from capture times, so a
variable output rate plays back at the speed it happened.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from streamer.errors import SinkError
from streamer.sinks.base import Output

__all__ = ["VideoSink"]

log = logging.getLogger(__name__)


class VideoSink:
    name = "video"
    wants_image = True

    def __init__(
        self,
        path: str | Path,
        *,
        live: bool,
        codec: str = "libx264",
        preset: str = "ultrafast",
        crf: int = 23,
    ) -> None:
        self.path = str(path)
        self.live = live
        self._codec = codec
        self._options: dict[str, object] = {"preset": preset, "crf": str(crf)}
        self._container: av.container.OutputContainer | None = None
        self._stream: av.VideoStream | None = None
        self._time_base = Fraction(1, 1000)
        self._first_capture: float | None = None
        self._last_pts = -1
        self.frames = 0
        parent = Path(self.path).parent
        if not parent.is_dir():
            raise SinkError(f"cannot write {self.path}: folder {parent} does not exist")

    def _open(self, output: Output) -> None:
        height, width = output.frame.image.shape[:2]
        try:
            container = av.open(self.path, mode="w")
            if self.live or not output.source_fps:
                rate = Fraction(30)
                self._time_base = Fraction(1, 1000)
            else:
                rate = Fraction(output.source_fps).limit_denominator(1001)
                self._time_base = 1 / rate
            stream = container.add_stream(self._codec, rate=rate)
            if not isinstance(stream, av.VideoStream):
                raise SinkError(f"{self._codec} is not a video codec")
            stream.width = width - width % 2
            stream.height = height - height % 2
            stream.pix_fmt = "yuv420p"
            stream.time_base = self._time_base
            stream.options = self._options
            stream.codec_context.thread_type = "FRAME"
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise SinkError(f"cannot write video {self.path}: {exc}") from exc
        self._container, self._stream = container, stream

    def _pts(self, output: Output) -> int:
        frame = output.frame
        if self.live or frame.pts is None:
            if self._first_capture is None:
                self._first_capture = frame.captured_at
            seconds = frame.captured_at - self._first_capture
        else:
            seconds = frame.pts
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
            raise SinkError(f"cannot write video {self.path}: {exc}") from exc
        self.frames += 1

    def close(self) -> None:
        if self._container is None:
            return
        container, self._container = self._container, None
        try:
            if self._stream is not None:
                container.mux(self._stream.encode(None))
        except (av.FFmpegError, OSError) as exc:
            raise SinkError(f"cannot finish video {self.path}: {exc}") from exc
        finally:
            container.close()
        log.info("wrote %d frames to %s", self.frames, self.path)
