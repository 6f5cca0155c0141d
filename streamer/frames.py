"""The envelopes carried through the pipeline: a Frame in, a Result out."""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from streamer.client import Prediction
    from streamer.errors import InferenceError

__all__ = ["Frame", "Result", "Status", "Timings"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    """One decoded frame. ``index`` counts every decoded frame of its source."""

    image: npt.NDArray[np.uint8]
    index: int
    source_id: str = "0"
    pts: float | None = None  # seconds, from the stream
    captured_at: float = field(default_factory=time.monotonic)
    wall_time: float = field(default_factory=time.time)


class Status(enum.Enum):
    OK = "ok"
    FAILED = "failed"
    STALE = "stale"  # answered (or given up) past the frame's deadline


@dataclass(frozen=True, slots=True, kw_only=True)
class Timings:
    """Seconds spent per stage of one frame's request."""

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
