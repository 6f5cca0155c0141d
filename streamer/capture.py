"""CaptureThread: one named thread per source, feeding a latest-frame slot or a FIFO.

Live (camera, stream, or a file played at its own pace): every decoded frame
overwrites a one-frame slot; an overwrite counts as a drop, so a reader always
gets the freshest frame. Recorded: a bounded FIFO with backpressure, so every
frame is delivered exactly once.

Live sources reconnect by themselves on errors, on end of stream (a dead RTSP
server often just ends the decode loop) and on stalls (no frame for
``stall_timeout``), with capped exponential backoff and jitter. States
(connecting, streaming, stalled, reconnecting, ended, failed) go to a callback
and to the metrics. One source's failure never touches another's thread.
"""

from __future__ import annotations

import enum
import logging
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

import numpy as np
import numpy.typing as npt

from streamer.errors import ConfigError, SourceError
from streamer.frames import DecodedPicture, Frame
from streamer.sources import Source, Stream

__all__ = [
    "CaptureConfig",
    "CaptureMetrics",
    "CaptureThread",
    "LatestFrameSlot",
    "ReconnectPolicy",
    "SourceState",
    "StateEvent",
]

log = logging.getLogger(__name__)

_POLL_S = 0.1


class SourceState(enum.Enum):
    CONNECTING = "connecting"
    STREAMING = "streaming"
    STALLED = "stalled"
    RECONNECTING = "reconnecting"
    ENDED = "ended"
    FAILED = "failed"


@dataclass(frozen=True)
class StateEvent:
    source_id: str
    state: SourceState
    detail: str
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, kw_only=True)
class ReconnectPolicy:
    """Exponential backoff with jitter between reconnect attempts."""

    initial: float = 0.25
    maximum: float = 5.0
    multiplier: float = 2.0
    jitter: float = 0.25  # +- this fraction
    max_attempts: int | None = None  # None: forever

    def delay(self, attempt: int, rng: random.Random) -> float:
        base = min(self.maximum, self.initial * self.multiplier ** max(0, attempt - 1))
        return base * rng.uniform(1 - self.jitter, 1 + self.jitter)


@dataclass(frozen=True, kw_only=True)
class CaptureConfig:
    live: bool = True
    realtime: bool | None = None  # pace a file at its own fps; default: when live
    queue_size: int = 32  # recorded FIFO
    stall_timeout: float = 5.0
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    # a source that has not delivered its first frame after this long has failed (a
    # wrong URL, a web page); None: keep trying (cameras that come up later). Once a
    # source has streamed, it reconnects as ``reconnect`` says.
    connect_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.queue_size < 1:
            raise ConfigError("queue_size must be >= 1")
        if self.stall_timeout <= 0:
            raise ConfigError("stall_timeout must be > 0")
        if self.connect_timeout is not None and not self.connect_timeout > 0:
            raise ConfigError("connect_timeout must be > 0 or None")


class LatestFrameSlot:
    """Holds the newest frame only; ``put`` hands back the frame it displaced."""

    def __init__(self) -> None:
        self._frame: Frame | None = None
        self._cond = threading.Condition()
        self._closed = False

    def put(self, frame: Frame) -> Frame | None:
        with self._cond:
            displaced, self._frame = self._frame, frame
            self._cond.notify_all()
            return displaced

    def wake(self) -> None:
        """Make a waiting ``take`` return now (with a frame if there is one)."""
        with self._cond:
            self._cond.notify_all()

    def take(self, timeout: float) -> Frame | None:
        """The newest frame not yet taken, waiting up to ``timeout``; ``None`` if none came."""
        with self._cond:
            if self._frame is None and not self._closed:
                self._cond.wait(timeout)
            frame, self._frame = self._frame, None
            return frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass(frozen=True)
class CaptureMetrics:
    source_id: str
    state: str
    frames: int  # decoded
    delivered: int
    dropped: int  # overwritten in the live slot before anyone took them
    reconnects: int
    corrupt_packets: int
    declared_fps: float | None
    measured_fps: float | None
    width: int | None
    height: int | None
    states: dict[str, int]
    converted: int = 0  # decoded pictures turned into BGR pixels (the rest never were)


class CaptureThread:
    """Reads one source on its own thread ``streamer-capture-<name>`` (the camera's
    name; by default the source's id).

    Example::

        with CaptureThread(open_source("rtsp://cam/stream"), CaptureConfig(live=True)) as capture:
            frame = capture.read(timeout=1.0)  # the freshest frame, or None
    """

    def __init__(
        self,
        source: Source,
        config: CaptureConfig | None = None,
        *,
        on_state: Callable[[StateEvent], None] | None = None,
        on_frame: Callable[[Frame], None] | None = None,
        name: str | None = None,
    ) -> None:
        """``on_frame``: live, every frame as it is decoded, on this thread, before the
        slot (the render thread's copy: drawing every source frame needs them all, and
        the slot keeps only the newest); it must not block."""
        self.source = source
        self._on_frame = on_frame
        self.config = config or CaptureConfig(live=source.is_live)
        self._on_state = on_state
        self._realtime = (
            self.config.realtime if self.config.realtime is not None else self.config.live
        )
        self._slot = LatestFrameSlot()
        self._fifo: queue.Queue[Frame] = queue.Queue(maxsize=self.config.queue_size)
        self._stop = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._state = SourceState.CONNECTING
        self._states: Counter[str] = Counter()
        self._counts: Counter[str] = Counter()
        self._declared_fps: float | None = None
        self._interval_ewma: float | None = None
        self._size: tuple[int, int] | None = None
        self._rng = random.Random()
        self._streamed = False  # any frame delivered, ever
        self._index = 0  # the next frame's index: every decoded frame counts
        self._started_at = time.monotonic()
        self._last_reason = ""
        self._thread = threading.Thread(
            target=self._run, name=f"streamer-capture-{name or source.source_id}", daemon=True
        )

    # -- public ------------------------------------------------------------------------------

    def start(self) -> CaptureThread:
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._slot.close()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning(
                "%s: capture thread did not stop within %.1f s", self.source.source_id, timeout
            )

    def __enter__(self) -> CaptureThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def state(self) -> SourceState:
        return self._state

    @property
    def declared_fps(self) -> float | None:
        """The stream's own frame rate, once connected (read on every output frame)."""
        return self._declared_fps

    @property
    def finished(self) -> bool:
        """The source ended or failed and every frame it produced was read."""
        return self._done.is_set() and self._fifo.empty()

    def read(self, timeout: float = 1.0) -> Frame | None:
        """Live: the freshest frame not yet read. Recorded: the next frame in order.

        ``None`` if no frame came within ``timeout`` (check ``finished``).
        """
        if self.config.live:
            frame = self._slot.take(timeout)
        else:
            try:
                frame = self._fifo.get(timeout=timeout)
            except queue.Empty:
                frame = None
        if frame is not None:
            with self._lock:
                self._counts["delivered"] += 1
        return frame

    def wake(self) -> None:
        """Live: make a reader blocked in ``read`` return now (e.g. a sender slot freed)."""
        self._slot.wake()

    def metrics(self) -> CaptureMetrics:
        with self._lock:
            ewma = self._interval_ewma
            return CaptureMetrics(
                source_id=self.source.source_id,
                state=self._state.value,
                frames=self._counts["frames"],
                delivered=self._counts["delivered"],
                dropped=self._counts["dropped"],
                reconnects=self._counts["reconnects"],
                corrupt_packets=self._counts["corrupt"],
                declared_fps=self._declared_fps,
                measured_fps=1 / ewma if ewma else None,
                width=self._size[0] if self._size else None,
                height=self._size[1] if self._size else None,
                states=dict(self._states),
                converted=self._counts["converted"],
            )

    # -- the thread ----------------------------------------------------------------------------

    def _set_state(self, state: SourceState, detail: str, *, level: int | None = None) -> None:
        with self._lock:
            self._state = state
            self._states[state.value] += 1
        if level is None:
            warn = state in (SourceState.STALLED, SourceState.FAILED)
            level = logging.WARNING if warn else logging.INFO
        log.log(level, "%s: %s (%s)", self.source.source_id, state.value, detail)
        if self._on_state is not None:
            try:
                self._on_state(StateEvent(self.source.source_id, state, detail))
            except Exception:
                log.exception("state callback failed")

    def _reason(self, text: str) -> str:
        """``text`` without the source's name in front (the log line already has it)."""
        name = self.source.source_id
        return text.replace(f"{name}: ", "").replace(f" {name}", "")

    def _run(self) -> None:
        attempt = 0
        self._started_at = time.monotonic()
        try:
            self._set_state(SourceState.CONNECTING, "attempt 1")
            while not self._stop.is_set():
                try:
                    stream = self.source.open()
                except SourceError as exc:
                    if not self._retry(attempt := attempt + 1, self._reason(str(exc))):
                        return
                    continue
                if self._realtime:
                    # a camera (or a file played as one) is read as it comes: no frame
                    # may wait behind others in the decoder (see _PyAVStream.low_latency)
                    low_latency = getattr(stream, "low_latency", None)
                    if callable(low_latency):
                        low_latency()
                before = self._index
                try:
                    reason = self._pump(stream)
                except SourceError as exc:
                    reason = str(exc)  # a stall or read error: try again (live)
                    if not self.source.is_live:
                        # a file read again from the start would repeat its frames
                        self._set_state(SourceState.FAILED, self._reason(reason))
                        return
                finally:
                    stream.close()
                got_frames = self._index > before
                if self._stop.is_set():
                    return
                if reason is None:  # end of stream
                    if not self.source.is_live:
                        self._set_state(SourceState.ENDED, f"{self._index} frames")
                        return
                    reason = "end of stream"
                attempt = 0 if got_frames else attempt
                if not self._retry(attempt := attempt + 1, self._reason(reason)):
                    return
        finally:
            self._done.set()

    def _retry(self, attempt: int, reason: str) -> bool:
        """Wait before reconnect ``attempt``; ``False`` when giving up (or stopping).

        Before the first frame ever arrived, each new reason is a warning (a wrong URL
        is said at once, not only with --debug), and ``connect_timeout`` applies.
        """
        policy = self.config.reconnect
        if not self.source.is_live and attempt > 1:
            self._set_state(SourceState.FAILED, reason)
            return False
        if policy.max_attempts is not None and attempt > policy.max_attempts:
            self._set_state(
                SourceState.FAILED, f"gave up after {policy.max_attempts} attempts: {reason}"
            )
            return False
        delay = policy.delay(attempt, self._rng)
        limit = self.config.connect_timeout
        if not self._streamed and limit is not None:
            left = self._started_at + limit - time.monotonic()
            if left <= 0:
                self._set_state(SourceState.FAILED, f"no frame within {limit:g} s: {reason}")
                return False
            delay = min(delay, left)
        if "stalled" in reason or "timed out" in reason.lower():
            self._set_state(SourceState.STALLED, reason)
        with self._lock:
            self._counts["reconnects"] += 1
        news = not self._streamed and reason != self._last_reason
        self._last_reason = reason
        self._set_state(
            SourceState.RECONNECTING,
            f"{reason}; retrying in {delay:.1f} s",
            level=logging.WARNING if news else logging.INFO,
        )
        return not self._stop.wait(delay)

    def _note_size(self, size: tuple[int, int]) -> None:
        with self._lock:
            if self._size is not None and self._size != size:
                log.warning(
                    "%s: resolution changed from %dx%d to %dx%d",
                    self.source.source_id,
                    *self._size,
                    *size,
                )
            self._size = size

    def _pump(self, stream: Stream) -> str | None:
        """Deliver frames until end of stream (``None``) or a stall (the reason).

        ``self._index`` counts every frame delivered, across reconnects, so indices
        never repeat even when a read fails mid-stream.
        """
        with self._lock:
            self._declared_fps = stream.fps
        got_frames = False
        first_pts: float | None = None
        started = time.monotonic()
        last_frame = started
        for image, pts in stream:
            now = time.monotonic()
            if self._stop.is_set():
                break
            if not got_frames:
                got_frames = self._streamed = True
                size = _size(image)  # as shown: rotation applied
                self._note_size(size)
                self._set_state(
                    SourceState.STREAMING, f"{size[0]}x{size[1]} at {stream.fps or 0:.3g} fps"
                )
            if self._realtime and not self.source.is_live and pts is not None:
                # a file standing in for a camera: hold each frame until its time comes
                first_pts = pts if first_pts is None else first_pts
                delay = started + (pts - first_pts) - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                now = time.monotonic()
            if now - last_frame > self.config.stall_timeout:
                return f"stalled: no frame for {now - last_frame:.1f} s"
            self._note_interval(now - last_frame if self._index else None)
            last_frame = now
            if isinstance(image, DecodedPicture):
                image.on_convert = self._count_conversion
            frame = Frame(
                image=None if isinstance(image, DecodedPicture) else image,
                decoded=image if isinstance(image, DecodedPicture) else None,
                index=self._index,
                source_id=self.source.source_id,
                pts=pts,
                captured_at=now,
            )
            self._index += 1
            if not self._deliver(frame, stream):
                break
        corrupt = getattr(stream, "corrupt_packets", 0)
        if corrupt:
            with self._lock:
                self._counts["corrupt"] += corrupt
        return None

    def _count_conversion(self) -> None:
        """A frame's pixels were converted (on whichever thread needed them first)."""
        with self._lock:
            self._counts["converted"] += 1

    def _note_interval(self, seconds: float | None) -> None:
        with self._lock:
            self._counts["frames"] += 1
            if seconds is not None and seconds > 0:
                ewma = self._interval_ewma
                self._interval_ewma = seconds if ewma is None else 0.9 * ewma + 0.1 * seconds

    def _deliver(self, frame: Frame, stream: Stream) -> bool:
        if self.config.live:
            if self._on_frame is not None:
                self._on_frame(frame)
            displaced = self._slot.put(frame)
            if displaced is not None:
                with self._lock:
                    self._counts["dropped"] += 1
                if displaced.image is not None and self._on_frame is None:
                    _recycle(stream, displaced.image)  # not while the renderer may hold it
            return True
        while not self._stop.is_set():  # backpressure: wait for the reader, never drop
            try:
                self._fifo.put(frame, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False


def _size(picture: npt.NDArray[np.uint8] | DecodedPicture) -> tuple[int, int]:
    if isinstance(picture, DecodedPicture):
        return picture.width, picture.height
    return int(picture.shape[1]), int(picture.shape[0])


def _recycle(stream: Stream, image: npt.NDArray[np.uint8]) -> None:
    """Give a never-read frame's buffer back to a stream that renders into spares."""
    spare = getattr(stream, "spare", None)
    if isinstance(spare, list) and len(spare) < 4:
        spare.append(image)
