"""Sampler: which frames are sent, and when. Pure: the clock is injected.

Live: send the freshest frame when a sender slot is free, no faster than
``max_fps``, and spread over the measured latency: with N slots and a round trip
of L seconds the pool sustains N/L frames/s, so one frame every L/N seconds keeps
the slots busy without sending frames in bursts that all come back together.
Recorded: every frame, or every k-th, the caller waiting for a slot
(backpressure). Optionally a motion gate skips frames that barely differ from the
last one sent, with a forced refresh so still objects are checked again.

Every frame not sent is counted with its cause.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from streamer.errors import ConfigError
from streamer.frames import Frame

__all__ = ["Decision", "MotionGate", "Sampler", "SamplerConfig", "SkipCause"]


class SkipCause(enum.Enum):
    BUSY = "busy"  # no free sender slot
    PACING = "pacing"  # sooner than max_fps or latency / slots allow
    STRIDE = "stride"  # recorded: not an every-k-th frame
    STILL = "still"  # motion gate: too similar to the last frame sent
    PAUSED = "paused"  # live: the camera is paused (nothing sent, nothing rendered)


@dataclass(frozen=True)
class Decision:
    send: bool
    cause: SkipCause | None = None


@dataclass(frozen=True, kw_only=True)
class SamplerConfig:
    live: bool = True
    max_fps: float | None = None
    stride: int = 1  # recorded: send every k-th frame
    motion_threshold: float | None = None  # mean absolute difference, 0-255; None: off
    motion_refresh: float = 2.0  # seconds: send anyway after this long
    motion_width: int = 64  # frames are compared at this width, in grey

    def __post_init__(self) -> None:
        if self.max_fps is not None and self.max_fps <= 0:
            raise ConfigError(f"max_fps must be > 0, got {self.max_fps}")
        if self.stride < 1:
            raise ConfigError(f"stride must be >= 1, got {self.stride}")
        if self.motion_threshold is not None and not 0 <= self.motion_threshold <= 255:
            raise ConfigError("motion_threshold must be in [0, 255]")
        if self.motion_refresh <= 0 or self.motion_width < 8:
            raise ConfigError("motion_refresh must be > 0 and motion_width >= 8")


class MotionGate:
    """Compares a small grey copy of each frame with the last one sent."""

    def __init__(self, threshold: float, refresh: float, width: int) -> None:
        self.threshold = threshold
        self.refresh = refresh
        self.width = width
        self._last: npt.NDArray[np.int16] | None = None
        self._last_sent_at = -1e18

    def _thumbnail(self, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.int16]:
        height = max(1, round(image.shape[0] * self.width / image.shape[1]))
        small = cv2.resize(image, (self.width, height), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        return np.asarray(grey, dtype=np.int16)

    def moved(self, image: npt.NDArray[np.uint8], now: float) -> tuple[bool, npt.NDArray[np.int16]]:
        thumb = self._thumbnail(image)
        if (
            self._last is None
            or self._last.shape != thumb.shape
            or now - self._last_sent_at >= self.refresh
        ):
            return True, thumb
        return float(np.abs(thumb - self._last).mean()) >= self.threshold, thumb

    def sent(self, thumb: npt.NDArray[np.int16], now: float) -> None:
        self._last = thumb
        self._last_sent_at = now


class Sampler:
    """Answers "send this frame now?"; call ``decide`` for every frame in order.

    ``free_slots`` and ``latency`` (seconds, e.g. the pool's EWMA round trip) come
    from the sender pool; ``slots`` is its size.
    """

    def __init__(
        self, config: SamplerConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self._clock = clock
        self._next_at: float | None = None  # when the next send is due, on a steady schedule
        self._lock = threading.Lock()  # skipped is written by the feeder, read by status()
        self.skipped: Counter[SkipCause] = Counter()
        self.sent = 0
        self._gate = (
            MotionGate(config.motion_threshold, config.motion_refresh, config.motion_width)
            if config.motion_threshold is not None
            else None
        )

    def interval(
        self, *, slots: int, latency: float | None, rate_cap: float | None = None
    ) -> float:
        """The least time between two sends."""
        gaps = [0.0]
        if self.config.max_fps:
            gaps.append(1 / self.config.max_fps)
        if latency and slots:
            # a little faster than the pool sustains, so slots never idle; BUSY stops the excess
            gaps.append(0.9 * latency / slots)
        if rate_cap:
            gaps.append(1 / rate_cap)
        return max(gaps)

    def decide(
        self,
        frame: Frame,
        *,
        free_slots: int,
        slots: int,
        latency: float | None = None,
        rate_cap: float | None = None,
    ) -> Decision:
        now = self._clock()
        if not self.config.live:
            if frame.index % self.config.stride:
                return self._skip(SkipCause.STRIDE)
        else:
            if free_slots <= 0:
                return self._skip(SkipCause.BUSY)
            gap = self.interval(slots=slots, latency=latency, rate_cap=rate_cap)
            if self._next_at is not None and now < self._next_at - 1e-6:
                return self._skip(SkipCause.PACING)
        if self._gate is not None:
            moved, thumb = self._gate.moved(frame.pixels(), now)
            if not moved:
                return self._skip(SkipCause.STILL)
            self._gate.sent(thumb, now)
        if self.config.live:
            # Keep to the schedule rather than to the last send, or a 25 fps source capped
            # at 10 would send every 3rd frame (8.3/s); but bank at most half a gap of
            # credit after an idle spell, so sends never come in bursts.
            gap = self.interval(slots=slots, latency=latency, rate_cap=rate_cap)
            previous = self._next_at if self._next_at is not None else now
            self._next_at = max(previous, now - gap / 2) + gap
        self.sent += 1
        return Decision(send=True)

    def count_skip(self, cause: SkipCause) -> None:
        """Count a frame skipped before it reached ``decide`` (a paused camera)."""
        self._skip(cause)

    def retract(self, cause: SkipCause) -> None:
        """Take back one skip: the frame is being decided again (held while busy)."""
        with self._lock:
            if self.skipped[cause] > 0:
                self.skipped[cause] -= 1

    def skipped_counts(self) -> dict[str, int]:
        """A copy of the skips by cause, safe to take from any thread."""
        with self._lock:
            return {cause.value: count for cause, count in self.skipped.items()}

    def _skip(self, cause: SkipCause) -> Decision:
        with self._lock:
            self.skipped[cause] += 1
        return Decision(send=False, cause=cause)
