"""Pipeline: capture -> sampler -> sender pool -> reorder -> render thread -> sinks.

::

    streamer-capture-<camera> ─▶ slot / FIFO ─▶ streamer-feed-<camera> (sampler, submit)
                                                   │    ▲ streamer-sender-<camera>-<i> send
                                                   │ recorded: (frame, future) in frame order
                                                   │ live: results as they arrive
                                                   ▼
                      streamer-render-<camera> (tracker, annotators; owns all their state)
                                                   ▼
        streamer-sink-<camera>-video / -jsonl / -webhook / -display (own bounded queues)

Live: the newest result is handed on (records, callbacks) as soon as it arrives; an
older result arriving late is counted and handed to the tracker only (which ignores
the past). With an image output (video, window), every source frame (or
``render_fps`` of them) goes from the capture thread straight to the render thread
and is drawn as it comes, with the tracks predicted forward to its capture time: the
recording has the camera's frames and timing, boxes moving smoothly at any API
latency. Without one, nothing is drawn. Recorded: every frame is emitted in order,
inferred ones with their detections, the others with the tracker's predictions,
marked ``predicted``.

Example::

    sinks = [VideoSink("out.mp4", live=False)]
    with Pipeline(source, client, PipelineSettings(live=False), sinks=sinks) as pipeline:
        pipeline.wait()
"""

from __future__ import annotations

import collections
import logging
import queue
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Protocol

import supervision as sv

from streamer.analytics import Analytics, LineSpec, ZoneSpec
from streamer.budget import RateBudget
from streamer.capture import CaptureConfig, CaptureThread, ReconnectPolicy, SourceState, StateEvent
from streamer.client import RoboflowClient
from streamer.errors import (
    ApiUnavailable,
    AuthError,
    ModelNotFound,
    PlanError,
    QuotaExhausted,
    SinkError,
    SourceError,
    StreamerError,
)
from streamer.frames import Frame, Image, Result, Status
from streamer.records import build_record, status_text
from streamer.render import Hud, RenderConfig, Renderer, canvas_for
from streamer.sampler import Sampler, SamplerConfig, SkipCause
from streamer.sender import PoolFull, SenderConfig, SenderPool
from streamer.sinks.base import DropPolicy, Output, Sink, SinkWorker
from streamer.sources import Source
from streamer.tracking import TrackerConfig, Tracking

__all__ = [
    "Pipeline",
    "PipelineSettings",
    "PipelineStatus",
    "StageObserver",
    "camera_name",
    "new_run_id",
]

log = logging.getLogger(__name__)

_POLL_S = 0.1
_END = object()
# Errors after which every further request fails the same way: stop, say why.
_FATAL = (AuthError, ModelNotFound, PlanError, QuotaExhausted, ApiUnavailable)


def camera_name(source_id: str) -> str:
    """A short name for thread names and logs from a source id (credentials already
    masked): a file's stem, a URL's host and last path part, ``synthetic``."""
    text = source_id.split("?", 1)[0].rstrip("/")
    if "://" in text:
        host = text.split("://", 1)[1].rsplit("@", 1)[-1]
        parts = host.split("/")
        text = parts[0].split(":", 1)[0] + (f"-{parts[-1]}" if len(parts) > 1 else "")
    else:
        text = text.rsplit("/", 1)[-1].rsplit(".", 1)[0] or text
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.")
    return name[:40] or "camera"


def new_run_id() -> str:
    """A run's id: its start time (UTC) and four random hex digits, sortable and short."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    return f"{stamp}-{secrets.token_hex(2)}"


def _drop_policy(sink: Sink, live: bool) -> DropPolicy:
    """The sink's own policy (``drop_policy(live)``), else: live keeps the newest,
    recorded never loses an output."""
    declared = getattr(sink, "drop_policy", None)
    if callable(declared):
        policy = declared(live)
        if isinstance(policy, DropPolicy):
            return policy
    return DropPolicy.DROP_OLDEST if live else DropPolicy.BLOCK


class _LiveInbox:
    """Live mode's way into the render thread: results (the tracker's input) and, with
    an image output, the source frames to draw. Results come out first. When drawing
    falls behind, the oldest waiting frame makes room (counted): the view and the
    recording skip a frame rather than fall ever further behind the camera."""

    def __init__(self, *, results: int, frames: int) -> None:
        self._results: collections.deque[Result] = collections.deque()
        self._frames: collections.deque[Frame] = collections.deque()
        self._result_capacity = results
        self._frame_capacity = frames
        self._cond = threading.Condition()
        self._ended = False

    def put_result(self, result: Result) -> bool:
        """``False``: full, the result was not taken."""
        with self._cond:
            if len(self._results) >= self._result_capacity:
                return False
            self._results.append(result)
            self._cond.notify()
            return True

    def put_frame(self, frame: Frame) -> bool:
        """Never blocks; ``False``: an older frame was dropped to make room."""
        with self._cond:
            room = len(self._frames) < self._frame_capacity
            if not room:
                self._frames.popleft()
            self._frames.append(frame)
            self._cond.notify()
            return room

    def end(self) -> None:
        """Nothing more comes: ``get`` returns ``_END`` once the rest is taken."""
        with self._cond:
            self._ended = True
            self._cond.notify()

    def get(self, timeout: float) -> object | None:
        """A result, else a frame, else ``_END`` at the end; ``None`` after ``timeout``."""
        with self._cond:
            if not (self._results or self._frames or self._ended):
                self._cond.wait(timeout)
            if self._results:
                return self._results.popleft()
            if self._frames:
                return self._frames.popleft()
            return _END if self._ended else None


@dataclass(frozen=True)
class _Pending:
    """Recorded mode: a frame in output order, with its request if it was sent."""

    frame: Frame
    future: Future[Result] | None


@dataclass(frozen=True, kw_only=True)
class PipelineSettings:
    live: bool
    sampler: SamplerConfig | None = None
    sender: SenderConfig = field(default_factory=SenderConfig)
    stall_timeout: float = 5.0
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    connect_timeout: float | None = None  # no first frame after this long: the source failed
    render: RenderConfig = field(default_factory=RenderConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    queue_size: int = 32  # recorded: frames buffered between stages
    render_fps: float = 0.0  # live, with an image output: frames drawn per second; 0: all
    lines: tuple[LineSpec, ...] = ()  # counting lines
    zones: tuple[ZoneSpec, ...] = ()
    update_interval: float = 5.0  # seconds between two track_update events of a track
    snapshots: Path | None = None  # folder for each ended track's best frame (JPEG)
    weight: float = 1.0  # this camera's part of a shared budget, against the others'
    min_fps: float = 0.0  # requests/s this camera gets first when the budget allows


@dataclass(frozen=True)
class PipelineStatus:
    """A snapshot for progress lines and the HUD."""

    source_state: str
    frames: int  # decoded by capture
    outputs: int  # frames rendered and handed to sinks
    ok: int
    predicted: int
    failed: int
    stale: int
    late: int  # live: results older than one already shown
    dropped_capture: int
    skipped: dict[str, int]
    sink_drops: dict[str, int]
    source_fps: float | None
    inference_fps: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    breaker: str
    rate: float | None
    result_age_p50_ms: float | None = None  # capture -> result, ok results
    result_age_p95_ms: float | None = None
    in_flight: int = 0
    rate_limited: int = 0  # 429s answered
    reconnects: int = 0
    paused: bool = False
    last_result_age_s: float | None = None  # since the last ok answer; None: none yet
    converted: int = 0  # decoded frames whose pixels some stage needed (upload, drawing)
    drawn: int = 0  # live: source frames drawn for the image outputs
    draw_dropped: int = 0  # live: source frames not drawn because drawing fell behind
    errors: dict[str, int] = field(default_factory=dict)  # failed requests, by error class
    sent: int = 0  # requests submitted to the sender pool
    retries: int = 0  # requests sent again
    events: dict[str, int] = field(default_factory=dict)  # analytics events, by type


class StageObserver(Protocol):
    """Timings for metrics, called on the camera's render thread; keep them short."""

    def result(self, result: Result) -> None:
        """A result handed on to the outputs (once per result)."""
        ...

    def rendered(self, seconds: float) -> None:
        """A frame drawn for the image outputs, in ``seconds``."""
        ...


class Pipeline:
    """Wires the stages and owns their threads; a context manager.

    Callbacks and the thread each runs on: ``observer`` (metrics) on the render thread,
    once per result handed on and once per frame drawn; ``on_prediction(output, detections)`` on
    ``streamer-render-<camera>``, once per output frame (live: once per result, not
    per drawn frame); ``on_status(event)`` on the
    capture thread ``streamer-capture-<camera>``, at each state change. Keep them short: they
    run inside the stage. ``stop()`` may be called from any of them, and from signal
    handlers.
    """

    def __init__(
        self,
        source: Source,
        client: RoboflowClient,
        settings: PipelineSettings,
        *,
        sinks: Sequence[Sink] = (),
        on_prediction: Callable[[Output, sv.Detections], None] | None = None,
        on_status: Callable[[StateEvent], None] | None = None,
        budget: RateBudget | None = None,
        camera: str | None = None,
        run_id: str | None = None,
        observer: StageObserver | None = None,
    ) -> None:
        """``budget``: the API key's shared request budget (``Budgets.for_key``), else
        the pool's own from ``settings.sender.rate_limit``. ``camera``: the name in
        thread names, bookings and records (default: from the source). ``run_id``:
        stamped on every record (default: a new one)."""
        self.settings = settings
        self.client = client
        self.camera = camera or camera_name(source.source_id)
        self.run_id = run_id or new_run_id()
        self._on_prediction = on_prediction
        self._on_status = on_status
        self._observer = observer
        self._stop = threading.Event()
        self._finished = threading.Event()
        self.error: StreamerError | None = None
        # live with an image output: every source frame is drawn, as it comes
        self._draws_frames = settings.live and any(s.wants_image for s in sinks)
        self._draw_interval = 1.0 / settings.render_fps if settings.render_fps > 0 else 0.0
        self._next_draw: float | None = None  # capture thread only
        capture_config = CaptureConfig(
            live=settings.live,
            queue_size=settings.queue_size,
            stall_timeout=settings.stall_timeout,
            reconnect=settings.reconnect,
            connect_timeout=settings.connect_timeout,
        )
        self.capture = CaptureThread(
            source,
            capture_config,
            on_state=self._capture_event,
            on_frame=self._offer_frame if self._draws_frames else None,
            name=self.camera,
        )
        sampler_config = settings.sampler or SamplerConfig(live=settings.live)
        self.sampler = Sampler(sampler_config)
        self.pool = SenderPool(
            client,
            settings.sender,
            on_result=self._on_result if settings.live else None,
            budget=budget,
            name=self.camera,
        )
        self._sinks = [
            SinkWorker(
                sink,
                capacity=getattr(sink, "queue_size", 64),
                policy=_drop_policy(sink, settings.live),
                on_failure=self._sink_failed,
                thread_name=f"streamer-sink-{self.camera}-{sink.name}",
            )
            for sink in sinks
        ]
        self.sink_errors: dict[str, SinkError] = {}
        self.unfinished_sinks: set[str] = set()  # still writing when close gave up on them
        self.all_sinks_failed = False
        self._wants_image = any(s.wants_image for s in sinks)
        self._image_workers = [w for w in self._sinks if w.sink.wants_image]
        # when every image output shows frames no wider than some size (previews), they
        # are drawn that wide: a quarter of a 720p frame's pixels to convert and draw
        widths = [getattr(w.sink, "max_width", None) for w in self._image_workers]
        self._draw_width: int | None = (
            max(w for w in widths if w is not None)
            if widths and all(w is not None for w in widths)
            else None
        )
        # analytics: with lines or zones (counts in records, drawn), or an events output
        self._wants_events = any(getattr(s, "events", False) is True for s in sinks)
        self._counts_anything = bool(settings.lines or settings.zones)
        self._analytics: Analytics | None = None  # render thread only, from the first frame
        self._last_frame: Frame | None = None
        self._record_workers = [w for w in self._sinks if not w.sink.wants_image]
        # recorded: (frame, future | None) in frame order; live: the inbox
        self._render_queue: queue.Queue[object] = queue.Queue(maxsize=settings.queue_size)
        self._inbox = _LiveInbox(
            results=max(settings.queue_size, 2 * settings.sender.max_in_flight),
            frames=16,  # 0.6 s at 25 fps; decoded pictures, 1.4 MB each at 720p
        )
        self._lock = threading.Lock()
        self._counts: collections.Counter[str] = collections.Counter()
        self._events: collections.Counter[str] = collections.Counter()  # analytics, by type
        self.failure_reasons: collections.Counter[str] = collections.Counter()
        self._completions: collections.deque[float] = collections.deque(maxlen=120)
        self._ages: collections.deque[float] = collections.deque(maxlen=256)
        self._resumed = threading.Event()
        self._resumed.set()
        self._newest_shown = -1
        self._hud_cache: tuple[float, PipelineStatus] | None = None
        self._threads = [
            threading.Thread(target=self._feed, name=f"streamer-feed-{self.camera}", daemon=True),
            threading.Thread(
                target=self._render_loop, name=f"streamer-render-{self.camera}", daemon=True
            ),
        ]

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Pipeline:
        if self.pool.budget is not None:
            self.pool.budget.join(
                self.camera, weight=self.settings.weight, min_fps=self.settings.min_fps
            )
        for worker in self._sinks:
            worker.start()
        self.pool.start()
        self.capture.start()
        for thread in self._threads:
            thread.start()
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the source ended and every output was handed on; ``False`` on timeout."""
        return self._finished.wait(timeout)

    def stop(self) -> None:
        """Ask every stage to stop (safe from signal handlers and callbacks)."""
        self._stop.set()

    def pause(self) -> None:
        """Send nothing more until ``resume``: live frames are read and skipped (the
        source stays connected, so resuming is instant; the camera's part of the
        budget goes to the others meanwhile), recorded frames wait."""
        if self._resumed.is_set():
            self._resumed.clear()
            if self.settings.live and self.pool.budget is not None:
                self.pool.budget.leave(self.camera)  # recorded: requests queued still go

    def resume(self) -> None:
        if not self._resumed.is_set():
            if self.settings.live and self.pool.budget is not None:
                self.pool.budget.join(
                    self.camera, weight=self.settings.weight, min_fps=self.settings.min_fps
                )
            self._resumed.set()

    @property
    def paused(self) -> bool:
        return not self._resumed.is_set()

    def close(self, timeout: float = 10.0) -> None:
        """Stop, then join every thread and finalize the sinks (video written, lines flushed).

        Stopped before the end (a signal, a fatal error): sinks stop retrying, so
        that shutdown takes about a second whatever a webhook is doing.
        """
        interrupted = self._stop.is_set()
        self._stop.set()
        deadline = time.monotonic() + timeout
        self.capture.stop(timeout=2.0)
        for thread in self._threads:
            if thread.ident is None:
                continue  # never started
            thread.join(max(0.1, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("%s did not stop in time", thread.name)
        self.pool.close(timeout=1.0 if interrupted else 2.0)
        if self.pool.budget is not None:
            self.pool.budget.leave(self.camera)
        for worker in self._sinks:  # all at once: a slow webhook does not delay the video
            worker.begin_close(interrupt=interrupted)
        for worker in self._sinks:
            # files get the time they need to be finalized; a peer that may never answer
            # gets a short last try once the run is being stopped
            left = max(1.0, deadline - time.monotonic())
            worker.join(min(left, 1.5) if interrupted and worker.interruptible else left)
            if worker.error is not None:
                self.sink_errors.setdefault(worker.sink.name, worker.error)
            if not worker.finished:
                self.unfinished_sinks.add(worker.sink.name)
        self._finished.set()

    def _sink_failed(self, worker: SinkWorker) -> None:
        """On the failed sink's thread: when no output is left to keep, stop the run."""
        with self._lock:
            self.sink_errors.setdefault(worker.sink.name, worker.error or SinkError("failed"))
            if self._sinks and all(w.failed for w in self._sinks):
                self.all_sinks_failed = True
        if self.all_sinks_failed:
            log.warning("no output is left to write: stopping")
            self._stop.set()

    def _fail(self, error: StreamerError) -> None:
        """Keep the first error that ends the run (capture, render and sink threads)."""
        with self._lock:
            if self.error is None:
                self.error = error

    def __enter__(self) -> Pipeline:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- feeding ------------------------------------------------------------------------------

    def _capture_event(self, event: StateEvent) -> None:
        if event.state is SourceState.FAILED:
            self._fail(SourceError(f"{event.source_id}: {event.detail}"))
        if self._on_status is not None:
            self._on_status(event)

    def _feed(self) -> None:
        live = self.settings.live
        slots = self.settings.sender.max_in_flight
        # Live: the newest frame that found every slot busy. When a slot frees, it goes at
        # once if it is at most half a frame interval old, instead of the slot idling up
        # to a whole interval (at 400 ms and 8 in flight that idling cost 5% of the
        # throughput); older than that, the next frame is nearer, and fresher.
        held: Frame | None = None
        try:
            while not self._stop.is_set():
                if not self._resumed.is_set():
                    if not live:
                        self._resumed.wait(_POLL_S)  # recorded: the FIFO holds the frames
                        continue
                    held = None
                    if self.capture.read(timeout=_POLL_S) is not None:
                        self.sampler.count_skip(SkipCause.PAUSED)
                    elif self.capture.finished:
                        break
                    continue
                frame = self.capture.read(timeout=_POLL_S)
                if frame is None:
                    if self.capture.finished:
                        break
                    if held is None or not self.pool.free_slots:
                        continue
                    frame, held = held, None
                    if time.monotonic() - frame.captured_at > self._hold_limit():
                        continue  # the next frame is nearer than this one is old: wait for it
                    self.sampler.retract(SkipCause.BUSY)  # decided again below
                budget = self.pool.budget
                decision = self.sampler.decide(
                    frame,
                    free_slots=self.pool.free_slots,
                    slots=slots,
                    latency=self.pool.latency_ewma,
                    rate_cap=budget.share(self.camera) if budget is not None else None,
                )
                if live:
                    held = frame if decision.cause is SkipCause.BUSY else None
                    if decision.send:
                        self.pool.submit(frame)
                    continue
                future = self._submit_waiting(frame) if decision.send else None
                if not self._put(_Pending(frame, future)):
                    break
        finally:
            if live:  # let answers in flight arrive before the end
                deadline = time.monotonic() + self.settings.sender.request_timeout
                while (
                    self.pool.in_flight and not self._stop.is_set() and time.monotonic() < deadline
                ):
                    time.sleep(0.01)
            if live:
                self._inbox.end()
            else:
                self._put(_END, force=True)

    def _hold_limit(self) -> float:
        fps = self.capture.declared_fps or 30.0
        return 0.5 / fps

    def _submit_waiting(self, frame: Frame) -> Future[Result] | None:
        """Recorded mode: wait for a free slot (backpressure) and send; None when stopping."""
        while not self._stop.is_set():
            try:
                return self.pool.submit(frame, wait=_POLL_S)
            except PoolFull:
                continue
        return None

    def _put(self, item: object, *, force: bool = False) -> bool:
        while force or not self._stop.is_set():
            try:
                self._render_queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                if force and self._stop.is_set():
                    return False
        return False

    def _on_result(self, result: Result) -> None:
        """Live mode, on a sender thread: hand the result to the render thread."""
        if not self._inbox.put_result(result):
            with self._lock:
                self._counts["render_overflow"] += 1
        self.capture.wake()  # a slot is free: the feeder may send the frame it holds

    def _offer_frame(self, frame: Frame) -> None:
        """Live, on the capture thread: a source frame for the image outputs, at most
        ``render_fps`` of them, on the source's own clock where it has one."""
        if not any(worker.wants_frame() for worker in self._image_workers):
            return  # e.g. a preview nobody watches: nothing to draw
        if self._draw_interval:
            at = frame.pts if frame.pts is not None else frame.captured_at
            due, interval = self._next_draw, self._draw_interval
            if due is not None and due - interval <= at < due - 0.001:
                return  # not due yet (1 ms: the float error of adding intervals up)
            steady = due is not None and 0 <= at - due < interval
            self._next_draw = (due if steady and due is not None else at) + interval
        if not self._inbox.put_frame(frame):
            with self._lock:
                self._counts["draw_dropped"] += 1

    # -- rendering ----------------------------------------------------------------------------

    def _render_loop(self) -> None:
        tracking: Tracking | None = None
        renderer: Renderer | None = None
        try:
            while True:
                item = self._next_item()
                if item is None:
                    if self._stop.is_set():
                        break
                    continue
                if item is _END:
                    break
                if tracking is None or renderer is None:
                    fps = self.capture.declared_fps or 30.0
                    tracking = Tracking(fps, self.settings.tracker)
                    renderer = Renderer(self.settings.render, fps=fps)
                    self._start_analytics(item)
                if isinstance(item, Result):
                    self._render_live(item, tracking, renderer)
                elif isinstance(item, Frame):
                    self._draw(item, tracking, renderer)
                elif isinstance(item, _Pending):
                    result = self._await(item.future) if item.future is not None else None
                    if result is None and item.future is not None:
                        break  # stopping
                    self._emit(item.frame, result, tracking, renderer)
                if isinstance(self.error, _FATAL):
                    self._stop.set()
                    break
            self._finish_analytics()
        except Exception:
            log.exception("render thread failed")
            self._fail(StreamerError("internal error in the render thread"))
            self._stop.set()
        finally:
            self._finished.set()

    def _start_analytics(self, item: object) -> None:
        """Lines and zones need the frame size: built with the first item."""
        if not (self._counts_anything or self._wants_events):
            return
        frame = (
            item.frame
            if isinstance(item, Result | _Pending)
            else item
            if isinstance(item, Frame)
            else None
        )
        if frame is None:
            return
        self._analytics = Analytics(
            self.settings.lines,
            self.settings.zones,
            size=frame.size,
            camera=self.camera,
            run_id=self.run_id,
            lost_after=self.settings.tracker.lost_track_seconds,
            update_interval=self.settings.update_interval,
            lifecycle=self._wants_events,
            snapshots=self.settings.snapshots,
        )

    def _finish_analytics(self) -> None:
        """The run ended: the tracks still open end, their events go out last."""
        analytics, frame = self._analytics, self._last_frame
        if analytics is None or frame is None:
            return
        events = analytics.finish(frame, self._timestamp(frame))
        for note in analytics.never_seen():
            log.warning("%s: %s (check the class names)", self.camera, note)
        self._count_events(events)
        if events:
            output = Output(frame=frame, image=None, record={}, events=tuple(events))
            for worker in self._record_workers:
                worker.put(output)

    def _next_item(self) -> object | None:
        if self.settings.live:
            return self._inbox.get(_POLL_S)
        try:
            return self._render_queue.get(timeout=_POLL_S)
        except queue.Empty:
            return None

    def _await(self, future: Future[Result]) -> Result | None:
        while not self._stop.is_set():
            try:
                return future.result(timeout=_POLL_S)
            except TimeoutError:
                continue
        return None

    def _render_live(self, result: Result, tracking: Tracking, renderer: Renderer) -> None:
        if result.frame.index <= self._newest_shown:
            with self._lock:
                self._counts["late"] += 1
            if result.prediction is not None:
                tracking.update(result.prediction.detections, self._timestamp(result.frame))
            return
        self._newest_shown = result.frame.index
        self._emit(result.frame, result, tracking, renderer)

    def _draw(self, frame: Frame, tracking: Tracking, renderer: Renderer) -> None:
        """Live: a source frame for the image outputs, with the tracks predicted to it."""
        timestamp = self._timestamp(frame)
        detections = tracking.predict(timestamp)
        last = tracking.last_update
        ahead = None if last is None else (timestamp - last) * 1000
        status = "no result yet" if ahead is None else f"predicted +{ahead:.0f} ms"
        started = time.perf_counter()
        overlay = self._overlay()
        pixels, drawn = self._canvas(frame, detections, overlay is None)
        image = renderer.render(
            pixels,
            drawn,
            predicted=True,
            hud=self._hud(status) if self.settings.render.hud else None,
            overlay=overlay,
        )
        self._rendered(time.perf_counter() - started)
        record = self._record(frame, status_text(None), None, detections)
        output = Output(
            frame=frame, image=image, record=record, source_fps=self.capture.declared_fps
        )
        with self._lock:
            self._counts["drawn"] += 1
        for worker in self._image_workers:
            worker.put(output)

    def _canvas(
        self, frame: Frame, detections: sv.Detections, scalable: bool
    ) -> tuple[Image, sv.Detections]:
        """The previews' width when only previews take the frame and nothing drawn needs
        the full frame's coordinates (zones, lines, keypoints)."""
        if self._draw_width is None or not scalable:
            return frame.pixels(), detections
        return canvas_for(frame, detections, self._draw_width)

    def _overlay(self) -> Callable[[Image], Image] | None:
        """The zones and lines, drawn under the boxes, when there are any."""
        if self._counts_anything and self._analytics is not None:
            return self._analytics.draw
        return None

    def _record(
        self, frame: Frame, status: str, result: Result | None, detections: sv.Detections
    ) -> dict[str, object]:
        prediction = result.prediction if result is not None else None
        return build_record(
            camera=self.camera,
            run_id=self.run_id,
            source=frame.source_id,
            frame_index=frame.index,
            pts=frame.pts,
            status=status,
            result=result,
            detections=detections,
            classification=prediction.classification if prediction is not None else None,
        )

    def _timestamp(self, frame: Frame) -> float:
        if not self.settings.live and frame.pts is not None:
            return frame.pts
        return frame.captured_at

    def _emit(
        self, frame: Frame, result: Result | None, tracking: Tracking, renderer: Renderer
    ) -> None:
        status = status_text(result)
        prediction = result.prediction if result is not None else None
        timestamp = self._timestamp(frame)
        if prediction is not None:
            detections = tracking.update(prediction.detections, timestamp)
        else:
            detections = tracking.predict(timestamp)
        if result is not None and isinstance(result.error, _FATAL):
            self._fail(result.error)
        self._count(result, status)
        events: list[dict[str, object]] = []
        if self._analytics is not None:
            events = self._analytics.update(detections, frame, timestamp)
            self._last_frame = frame
            self._count_events(events)
        image = None
        # live frames are drawn in _draw; here, only when an image output takes one now
        drawn_here = self._wants_image and not self._draws_frames
        if drawn_here and any(w.wants_frame() for w in self._image_workers):
            started = time.perf_counter()
            overlay = self._overlay()
            keypoints = prediction.keypoints if prediction is not None else None
            pixels, drawn = self._canvas(frame, detections, overlay is None and keypoints is None)
            image = renderer.render(
                pixels,
                drawn,
                predicted=prediction is None,
                keypoints=keypoints,
                classification=prediction.classification if prediction is not None else None,
                hud=self._hud(status) if self.settings.render.hud else None,
                overlay=overlay,
            )
            self._rendered(time.perf_counter() - started)
        record = self._record(frame, status, result, detections)
        if self._counts_anything and self._analytics is not None:
            record.update(self._analytics.counts())
        output = Output(
            frame=frame,
            image=image,
            record=record,
            source_fps=self.capture.declared_fps,
            events=tuple(events),
        )
        for worker in self._record_workers if self._draws_frames else self._sinks:
            worker.put(output)
        if self._on_prediction is not None:
            try:
                self._on_prediction(output, detections)
            except Exception:
                log.exception("on_prediction callback failed")

    def _count(self, result: Result | None, status: str) -> None:
        with self._lock:
            self._counts["outputs"] += 1
            if result is None:
                self._counts["predicted"] += 1
            else:
                self._counts[result.status.value] += 1
                if result.status is Status.FAILED:
                    self.failure_reasons[(result.reason or "unknown")[:160]] += 1
                if result.status is Status.OK:
                    self._completions.append(time.monotonic())
                    self._ages.append(result.age)
        if result is not None and self._observer is not None:
            try:
                self._observer.result(result)
            except Exception:
                log.exception("result observer failed")

    def _count_events(self, events: list[dict[str, object]]) -> None:
        if events:
            with self._lock:
                self._events.update(str(event["event"]) for event in events)

    def _rendered(self, seconds: float) -> None:
        if self._observer is not None:
            try:
                self._observer.rendered(seconds)
            except Exception:
                log.exception("render observer failed")

    def _hud(self, status: str) -> Hud:
        now = time.monotonic()
        if self._hud_cache is None or now - self._hud_cache[0] > 0.25:  # not per frame
            self._hud_cache = (now, self.status())
        snapshot = self._hud_cache[1]
        return Hud(
            source_fps=snapshot.source_fps,
            inference_fps=snapshot.inference_fps,
            latency_p50_ms=snapshot.latency_p50_ms,
            latency_p95_ms=snapshot.latency_p95_ms,
            dropped=snapshot.dropped_capture + sum(snapshot.skipped.values()),
            status=status,
        )

    # -- status ---------------------------------------------------------------------------------

    def status(self) -> PipelineStatus:
        capture = self.capture.metrics()
        sender = self.pool.metrics()
        with self._lock:
            counts = dict(self._counts)
            events = dict(self._events)
            completions = list(self._completions)
            ages = sorted(self._ages)
        inference_fps = None
        if len(completions) >= 2 and completions[-1] > completions[0]:
            inference_fps = (len(completions) - 1) / (completions[-1] - completions[0])

        def ms(value: float | None) -> float | None:
            return None if value is None else value * 1000

        return PipelineStatus(
            source_state=capture.state,
            frames=capture.frames,
            outputs=counts.get("outputs", 0),
            ok=counts.get("ok", 0),
            predicted=counts.get("predicted", 0),
            failed=counts.get("failed", 0),
            stale=counts.get("stale", 0),
            late=counts.get("late", 0),
            dropped_capture=capture.dropped,
            skipped=self.sampler.skipped_counts(),
            sink_drops={w.sink.name: w.dropped for w in self._sinks},
            source_fps=capture.measured_fps,
            inference_fps=inference_fps,
            latency_p50_ms=ms(sender.latency_p50),
            latency_p95_ms=ms(sender.latency_p95),
            breaker=sender.breaker,
            rate=sender.rate,
            result_age_p50_ms=ms(ages[len(ages) // 2]) if ages else None,
            result_age_p95_ms=ms(ages[min(len(ages) - 1, int(len(ages) * 0.95))]) if ages else None,
            in_flight=sender.in_flight,
            rate_limited=sender.rate_limited,
            reconnects=capture.reconnects,
            paused=self.paused,
            last_result_age_s=time.monotonic() - completions[-1] if completions else None,
            converted=capture.converted,
            drawn=counts.get("drawn", 0),
            draw_dropped=counts.get("draw_dropped", 0),
            errors=sender.errors,
            events=events,
            sent=sender.submitted,
            retries=sender.retries,
        )
