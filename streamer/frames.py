"""The envelopes carried through the pipeline: a Frame in, a Result out.

A frame from a video decoder keeps the decoder's own picture (YUV) until a stage asks
for pixels (``Frame.pixels()``): the upload of a sent frame, the drawing of a rendered
one, the motion gate. A frame the sampler drops is never converted, which on a 25 fps
camera sampled at 5 fps is most of them (BGR conversion of 720p costs 1.2-2.5 ms).
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from streamer.client import Prediction
    from streamer.errors import InferenceError

__all__ = ["DecodedPicture", "Frame", "Result", "Status", "Timings"]

Image = npt.NDArray[np.uint8]


class DecodedPicture:
    """A decoder's picture (an ``av.VideoFrame``), converted to BGR once, on first use,
    by whichever thread asks first; ``on_convert`` (set by whoever counts them, e.g. the
    capture thread) is called on that thread after the first conversion.

    A stage that needs no more than a given size (the upload: 640 px) may get the
    picture shrunk before it is converted (``bgr(fit=...)``): the planes are resized in
    YUV, where there is half as much to resize, and converted at the small size.
    """

    __slots__ = (
        "_convert",
        "_image",
        "_lock",
        "_picture",
        "_shrink",
        "_used",
        "height",
        "on_convert",
        "width",
    )

    def __init__(
        self,
        picture: Any,
        *,
        width: int,
        height: int,
        convert: Callable[[Any], Image],
        shrink: Callable[[Any, int], Image | None] | None = None,
    ) -> None:
        """``width``, ``height``: as shown (rotation applied); ``convert``: picture ->
        upright BGR pixels; ``shrink``: (picture, long side) -> upright BGR pixels of
        at most that long side, or ``None`` where it cannot."""
        self._picture: Any = picture
        self._convert = convert
        self._shrink = shrink
        self._used = False
        self.on_convert: Callable[[], None] | None = None
        self._image: Image | None = None
        self._lock = threading.Lock()
        self.width = width
        self.height = height

    def bgr(self, fit: int | None = None) -> Image:
        """Upright BGR pixels: full size, or (``fit``) at most ``fit`` on the long side
        when that is cheaper (made for the caller, not kept), else full size."""
        with self._lock:
            wants_small = fit is not None and max(self.width, self.height) > fit
            if self._image is None and wants_small and self._shrink is not None:
                assert fit is not None
                small = self._shrink(self._picture, fit)
                if small is not None:
                    self._count()
                    return small
            if self._image is None:
                self._image = self._convert(self._picture)
                self._picture = None  # the decoder's buffer is not needed any more
                self._count()
            return self._image

    def _count(self) -> None:
        if not self._used:
            self._used = True
            if self.on_convert is not None:
                self.on_convert()


@dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    """One decoded frame. ``index`` counts every decoded frame of its source.

    Its pixels are ``image`` (BGR, as synthetic and image sources make them) or
    ``decoded`` (a video decoder's picture, converted on first use): read them with
    ``pixels()``, and the size with ``size`` (which converts nothing).
    """

    image: Image | None = None
    decoded: DecodedPicture | None = None
    index: int
    source_id: str = "0"
    pts: float | None = None  # seconds, from the stream
    captured_at: float = field(default_factory=time.monotonic)
    wall_time: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        if (self.image is None) == (self.decoded is None):
            raise ValueError("a Frame has either an image or a decoded picture")

    def pixels(self, fit: int | None = None) -> Image:
        """BGR pixels (a decoded picture is converted now, once). ``fit``: the caller
        needs no more than this long side, and may get a smaller image (compare its
        shape with ``size``)."""
        if self.image is not None:
            return self.image
        assert self.decoded is not None
        return self.decoded.bgr(fit)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), without converting anything."""
        if self.image is not None:
            return int(self.image.shape[1]), int(self.image.shape[0])
        assert self.decoded is not None
        return self.decoded.width, self.decoded.height


class Status(enum.Enum):
    OK = "ok"
    FAILED = "failed"
    STALE = "stale"  # answered (or given up) past the frame's deadline


@dataclass(frozen=True, slots=True, kw_only=True)
class Timings:
    """Seconds spent per stage of one frame's request."""

    capture_age: float = 0.0  # captured -> submitted to the pool (waiting in the sampler)
    queue_wait: float = 0.0  # submitted -> a sender picked it up
    prepare: float = 0.0  # resize, JPEG, base64
    round_trip: float = 0.0  # HTTP, all attempts and backoff included
    server: float | None = None  # X-Processing-Time of the answer
    parse: float = 0.0  # JSON -> supervision objects
    attempts: int = 0

    @property
    def total(self) -> float:
        return self.queue_wait + self.prepare + self.round_trip + self.parse


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """What became of one frame sent for inference."""

    frame: Frame
    status: Status
    prediction: Prediction | None = None
    error: InferenceError | None = None
    timings: Timings = field(default_factory=Timings)
    completed_at: float = field(default_factory=time.monotonic)

    @property
    def reason(self) -> str | None:
        """Why it failed or went stale, in a few words; ``None`` when ok."""
        if self.status is Status.OK:
            return None
        if self.error is not None:
            return str(self.error)
        return "deadline passed" if self.status is Status.STALE else "unknown"

    @property
    def age(self) -> float:
        """Seconds from capture to this result."""
        return self.completed_at - self.frame.captured_at
