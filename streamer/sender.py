"""SenderPool: N requests in flight over one client, with deadlines, retries and pacing.

::

    submit(frame) ─▶ bounded queue ─▶ N sender threads ─▶ Result (future + callback)
                                        │
                    circuit breaker ────┤  stop sending after K failures in a row
                    rate budget ────────┤  requests/s per API key (streamer.budget), halves on 429
                    retry with backoff ─┘  only while the frame's deadline allows

Threads (not asyncio): a shared ``httpx.Client`` across threads held 0.94-0.98 of
N/latency up to N=32 on these 2-core machines, where ``httpx.AsyncClient`` fell
apart beyond 16-32 in flight; the work per frame (resize, JPEG, base64, parse)
also releases the GIL in OpenCV and numpy.
"""

from __future__ import annotations

import collections
import enum
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from types import TracebackType

from streamer.budget import RateBudget, RateGovernor
from streamer.client import Prediction, Prepared, RoboflowClient
from streamer.errors import (
    ApiUnavailable,
    ConfigError,
    ConnectionFailed,
    InferenceError,
    InferenceTimeout,
    QuotaExhausted,
    RateLimited,
    ServerError,
    StreamerError,
)
from streamer.frames import Frame, Result, Status, Timings

__all__ = [
    "BreakerState",
    "CircuitBreaker",
    "CircuitOpen",
    "PoolFull",
    "RateGovernor",
    "SenderConfig",
    "SenderMetrics",
    "SenderPool",
]

log = logging.getLogger(__name__)

_POLL_S = 0.1
_RETRIABLE = (RateLimited, ServerError, InferenceTimeout, ConnectionFailed)
# An API that is down or failing; not BadResponse: a server that answers garbage is up,
# and each frame gets its own failed record instead of waiting out an "outage".
_BREAKER_FAILURES = (ServerError, InferenceTimeout, ConnectionFailed)


class PoolFull(StreamerError):
    """``submit`` found every slot taken for longer than it may wait."""


class CircuitOpen(InferenceError):
    """The breaker is open: the API failed too often in a row; nothing is sent for now."""


@dataclass(frozen=True, kw_only=True)
class SenderConfig:
    """How the pool sends. Times in seconds."""

    max_in_flight: int = 8
    request_timeout: float = 10.0
    deadline: float | None = None  # after capture; None: no deadline (recorded video)
    max_retries: int = 3
    backoff_base: float = 0.1
    backoff_cap: float = 2.0
    rate_limit: float | None = 20.0  # requests/s per API key (Roboflow's serverless limit)
    breaker_failures: int = 5
    # short: one probe a second costs the API nothing, and a live view is back within
    # about a second of the API
    breaker_cooldown: float = 1.0
    # no deadline (recorded): frames wait for an API failing every request this long,
    # then the run gives up (ApiUnavailable) instead of crawling through the file
    outage_wait: float = 60.0
    submit_timeout: float = 0.0
    # a 429 asking to wait longer than this means the quota is spent: fail, don't hang
    max_retry_wait: float = 60.0

    def __post_init__(self) -> None:
        if not 1 <= self.max_in_flight <= 256:
            raise ConfigError(f"max_in_flight must be in [1, 256], got {self.max_in_flight}")
        if self.request_timeout <= 0:
            raise ConfigError("request_timeout must be > 0")
        if self.deadline is not None and self.deadline <= 0:
            raise ConfigError("deadline must be > 0 or None")
        if self.max_retries < 0:
            raise ConfigError("max_retries must be >= 0")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ConfigError("rate_limit must be > 0 or None")
        if self.breaker_failures < 1 or self.breaker_cooldown <= 0:
            raise ConfigError("breaker needs failures >= 1 and cooldown > 0")
        if self.outage_wait < 0:
            raise ConfigError("outage_wait must be >= 0")
        if not self.max_retry_wait >= 0:
            raise ConfigError("max_retry_wait must be >= 0")


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    """After ``failures`` failures in a row stop for ``cooldown`` s, then let one probe through.

    ``on_change(state, why)`` runs on the thread whose call changed the state (a sender
    thread in a pool), after the breaker's lock is released.
    """

    def __init__(
        self,
        failures: int,
        cooldown: float,
        *,
        on_change: Callable[[BreakerState, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.cooldown = cooldown
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._opened_at = 0.0
        self._failing_since: float | None = None  # first failure of the current streak
        self._warned_at = 0.0
        self._probing = False
        self.last_error = ""

    @property
    def state(self) -> BreakerState:
        return self._state

    def failing_for(self) -> float:
        """Seconds since the first of the failures in a row; 0 while requests succeed."""
        since = self._failing_since
        return 0.0 if since is None else self._clock() - since

    def retry_in(self) -> float:
        return max(0.0, self._opened_at + self.cooldown - self._clock())

    def allow(self) -> bool:
        change = None
        with self._lock:
            if self._state is BreakerState.CLOSED:
                return True
            if (
                self._state is BreakerState.OPEN
                and self._clock() >= self._opened_at + self.cooldown
            ):
                change = self._set(BreakerState.HALF_OPEN, "cooled down; probing")
            allowed = self._state is BreakerState.HALF_OPEN and not self._probing
            if allowed:
                self._probing = True
        self._notify(change)
        return allowed

    def record_success(self) -> None:
        change = None
        with self._lock:
            self._consecutive = 0
            self._failing_since = None
            self._probing = False
            if self._state is not BreakerState.CLOSED:
                change = self._set(BreakerState.CLOSED, "the API answers again")
        self._notify(change)

    def record_failure(self, error: Exception) -> None:
        change = None
        with self._lock:
            self._consecutive += 1
            if self._failing_since is None:
                self._failing_since = self._clock()
            self.last_error = str(error)
            self._probing = False
            if self._state is BreakerState.HALF_OPEN or (
                self._state is BreakerState.CLOSED and self._consecutive >= self.failures
            ):
                self._opened_at = self._clock()
                change = self._set(
                    BreakerState.OPEN, f"{self._consecutive} failures in a row, last: {error}"
                )
        self._notify(change)

    def _notify(self, change: tuple[BreakerState, str] | None) -> None:
        """Call ``on_change`` outside the lock: a callback may use the breaker itself."""
        if change is not None and self._on_change is not None:
            self._on_change(*change)

    def release_probe(self) -> None:
        """A probe ended without an answer either way (e.g. the frame went stale)."""
        with self._lock:
            self._probing = False

    def _set(self, state: BreakerState, why: str) -> tuple[BreakerState, str]:
        """Under the lock: change state and log; the caller notifies once it is released."""
        previous, self._state = self._state, state
        if state is BreakerState.OPEN and previous is BreakerState.CLOSED:
            self._warned_at = self._clock()
            log.warning("the API is failing: pausing requests (%s)", why)
        elif state is BreakerState.CLOSED:
            log.warning("the API answers again (%s)", why)
        else:  # each failed probe: a line a minute at most, not one a second
            now = self._clock()
            level = logging.DEBUG
            if state is BreakerState.OPEN and now - self._warned_at >= 60:
                self._warned_at, level = now, logging.WARNING
            log.log(level, "circuit breaker %s: %s", state.value, why)
        return state, why


@dataclass(frozen=True)
class SenderMetrics:
    """A snapshot of the pool's counters; times in seconds."""

    submitted: int
    ok: int
    failed: int
    stale: int
    retries: int
    rate_limited: int
    in_flight: int
    rate: float | None  # current requests/s cap, None when uncapped
    calls_per_minute: int
    breaker: str
    latency_ewma: float | None  # round trip of ok answers
    latency_p50: float | None
    latency_p95: float | None
    errors: dict[str, int] = field(default_factory=dict)  # by class: each failed attempt


@dataclass
class _Job:
    frame: Frame
    deadline: float | None
    submitted_at: float
    future: Future[Result] = field(default_factory=Future)


class SenderPool:
    """Sends frames through ``client`` with at most ``max_in_flight`` in the pool at once.

    ``on_result(result)`` and ``on_breaker(state, why)`` run on the sender thread
    (``streamer-sender-<i>``) that finished the frame or changed the breaker.

    Example::

        with RoboflowClient(Target.model("coco/1", api_url=url)) as client, \\
             SenderPool(client, SenderConfig(max_in_flight=8, deadline=0.5)) as pool:
            future = pool.submit(frame)
            result = future.result(timeout=5)
    """

    def __init__(
        self,
        client: RoboflowClient,
        config: SenderConfig | None = None,
        *,
        on_result: Callable[[Result], None] | None = None,
        on_breaker: Callable[[BreakerState, str], None] | None = None,
        budget: RateBudget | None = None,
        name: str = "",
    ) -> None:
        """``budget``: the key's shared request budget (``Budgets.for_key``); without
        one, ``config.rate_limit`` gives this pool a budget of its own. ``name`` (the
        camera) goes into thread names and into the budget's bookings."""
        self.client = client
        self.config = config = config or SenderConfig()
        self._on_result = on_result
        if budget is None and config.rate_limit is not None:
            budget = RateGovernor(config.rate_limit)
        self.budget = budget
        self.name = name
        self.breaker = CircuitBreaker(
            config.breaker_failures, config.breaker_cooldown, on_change=on_breaker
        )
        self._slots = threading.BoundedSemaphore(config.max_in_flight)
        self._queue: queue.Queue[_Job] = queue.Queue(maxsize=config.max_in_flight)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._counts = collections.Counter[str]()
        self._errors = collections.Counter[str]()  # failed requests and frames, by class
        self._in_flight = 0
        self._latencies: collections.deque[float] = collections.deque(maxlen=512)
        self._ewma: float | None = None
        self._calls: collections.deque[float] = collections.deque()
        self._random = random.Random()
        self._threads = [
            threading.Thread(
                target=self._work,
                name=f"streamer-sender-{name}-{i}" if name else f"streamer-sender-{i}",
                daemon=True,
            )
            for i in range(config.max_in_flight)
        ]
        self._started = False

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> SenderPool:
        if not self._started:
            self._started = True
            for thread in self._threads:
                thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop taking frames, let requests in flight end (up to ``timeout``), join threads."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.warning("sender threads still running after %.1f s: %s", timeout, ", ".join(alive))
        while True:  # frames never picked up are answered, not forgotten
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            self._finish(job, Status.FAILED, error=InferenceError("pool closed before sending"))

    def __enter__(self) -> SenderPool:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- submitting ---------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Frames queued or being sent."""
        return self._in_flight

    @property
    def latency_ewma(self) -> float | None:
        """Smoothed round trip of answered requests, seconds (the sampler paces by it)."""
        return self._ewma

    @property
    def free_slots(self) -> int:
        return self.config.max_in_flight - self._in_flight

    def submit(
        self, frame: Frame, *, deadline: float | None = None, wait: float | None = None
    ) -> Future[Result]:
        """Queue ``frame``; its Result arrives on the future and ``on_result``.

        ``deadline`` (monotonic) defaults to capture time plus ``config.deadline``.
        Waits at most ``wait`` (default ``config.submit_timeout``) seconds for a free
        slot, then raises ``PoolFull``.
        """
        if self._stop.is_set():
            raise StreamerError("sender pool is closed")
        self.start()
        wait = self.config.submit_timeout if wait is None else wait
        acquired = (
            self._slots.acquire(timeout=wait) if wait > 0 else self._slots.acquire(blocking=False)
        )
        if not acquired:
            raise PoolFull(f"all {self.config.max_in_flight} sender slots are busy")
        if deadline is None and self.config.deadline is not None:
            deadline = frame.captured_at + self.config.deadline
        job = _Job(frame=frame, deadline=deadline, submitted_at=time.monotonic())
        with self._lock:
            self._in_flight += 1
            self._counts["submitted"] += 1
        self._queue.put_nowait(job)  # never full: the semaphore bounds it
        return job.future

    # -- the sender threads -------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                job = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            try:
                self._send(job)
            except Exception as exc:  # a bug must not kill the thread and strand the frame
                log.exception("sender failed on frame %d", job.frame.index)
                error = InferenceError(f"internal error: {type(exc).__name__}")
                self._count_error(error)
                self._finish(job, Status.FAILED, error=error)

    def _send(self, job: _Job) -> None:
        picked = time.monotonic()
        queue_wait = picked - job.submitted_at
        if job.deadline is not None and picked >= job.deadline:
            self._finish(job, Status.STALE, timings=Timings(queue_wait=queue_wait))
            return
        try:
            frame = job.frame
            image = frame.pixels(fit=self.client.target.max_side)  # small from YUV if cheaper
            prepared = self.client.prepare(image, original=frame.size)
        except StreamerError as exc:
            error = exc if isinstance(exc, InferenceError) else InferenceError(str(exc))
            self._count_error(error)
            self._finish(job, Status.FAILED, error=error, timings=Timings(queue_wait=queue_wait))
            return
        prepare = time.monotonic() - picked
        self._attempts(job, prepared, Timings(queue_wait=queue_wait, prepare=prepare))

    def _attempts(self, job: _Job, prepared: Prepared, timings: Timings) -> None:
        config = self.config
        started = time.monotonic()
        attempt = 0
        while True:
            if not self.breaker.allow():
                blocked = self._blocked(job)
                if blocked is None:
                    continue
                self._count_error(blocked)
                self._finish(
                    job, Status.FAILED, error=blocked, timings=_with(timings, started, attempt)
                )
                return
            if self.budget is not None:
                slot = self.budget.reserve(job.deadline, camera=self.name, abandon=self._stop)
                if slot is None or not self._sleep_until(slot):
                    self.breaker.release_probe()
                    self._finish(job, Status.STALE, timings=_with(timings, started, attempt))
                    return
            attempt += 1
            self._count_call()
            timeout = config.request_timeout
            if job.deadline is not None:
                timeout = max(0.01, min(timeout, job.deadline - time.monotonic()))
            try:
                body, server_time = self.client.send(prepared, timeout=timeout, abandon=self._stop)
                parse_started = time.monotonic()
                prediction = self.client.parse(body, prepared)
            except InferenceError as exc:
                error: InferenceError = self._exhausted(exc)
            else:
                self.breaker.record_success()
                done = time.monotonic()
                final = Timings(
                    queue_wait=timings.queue_wait,
                    prepare=timings.prepare,
                    round_trip=parse_started - started,
                    server=server_time,
                    parse=done - parse_started,
                    attempts=attempt,
                )
                late = job.deadline is not None and done > job.deadline
                self._record_latency(parse_started - started)
                self._finish(
                    job, Status.STALE if late else Status.OK, prediction=prediction, timings=final
                )
                return
            self._account_failure(error)
            if (
                job.deadline is None
                and isinstance(error, _BREAKER_FAILURES)
                and self.breaker.state is not BreakerState.CLOSED
            ):
                continue  # an outage, not this frame's fault: wait for the breaker above
            give_up = isinstance(error, QuotaExhausted) or not isinstance(error, _RETRIABLE)
            if give_up or attempt > config.max_retries:
                self._finish(
                    job, Status.FAILED, error=error, timings=_with(timings, started, attempt)
                )
                return
            wait = self._backoff(attempt, error)
            if job.deadline is not None and time.monotonic() + wait >= job.deadline:
                # no time left to try again: the frame is stale, and stale frames are not retried
                self._finish(
                    job, Status.STALE, error=error, timings=_with(timings, started, attempt)
                )
                return
            with self._lock:
                self._counts["retries"] += 1
            log.debug("frame %d: %s; retry %d in %.2f s", job.frame.index, error, attempt, wait)
            if not self._sleep_until(time.monotonic() + wait):
                self._finish(
                    job, Status.FAILED, error=error, timings=_with(timings, started, attempt)
                )
                return

    def _blocked(self, job: _Job) -> InferenceError | None:
        """The breaker is open: ``None`` after waiting a moment (try again), else the error.

        A frame without a deadline (recorded video) waits for the API to come back
        rather than failing fast through the rest of the file, up to ``outage_wait``
        of failures in a row; a live frame fails at once (a fresher one follows).
        """
        if job.deadline is not None:
            retry_in = self.breaker.retry_in()
            return CircuitOpen(f"circuit open after repeated failures; retry in {retry_in:.1f} s")
        if self.breaker.failing_for() >= self.config.outage_wait:
            return self._outage()
        if not self._sleep_until(time.monotonic() + min(0.1, self.breaker.retry_in() + 0.01)):
            return CircuitOpen("pool closed during an outage")
        return None

    def _outage(self) -> ApiUnavailable:
        failing = self.breaker.failing_for()
        return ApiUnavailable(
            f"the API has failed every request for {failing:.0f} s, longer than the "
            f"{self.config.outage_wait:g} s a recorded run waits (--max-retry-wait); "
            f"last: {self.breaker.last_error}"
        )

    def _exhausted(self, error: InferenceError) -> InferenceError:
        """A 429 whose Retry-After is past ``max_retry_wait`` becomes ``QuotaExhausted``."""
        if (
            isinstance(error, RateLimited)
            and not isinstance(error, QuotaExhausted)
            and error.retry_after is not None
            and error.retry_after > self.config.max_retry_wait
        ):
            return QuotaExhausted(
                f"the API asked to wait {error.retry_after:.0f} s before the next request "
                f"(Retry-After), more than the {self.config.max_retry_wait:g} s allowed "
                "(--max-retry-wait): its quota looks spent",
                retry_after=error.retry_after,
            )
        return error

    def _account_failure(self, error: InferenceError) -> None:
        """Tell the budget about 429s and the breaker about failures of the API."""
        self._count_error(error)
        if isinstance(error, QuotaExhausted):
            with self._lock:
                self._counts["rate_limited"] += 1
            self.breaker.release_probe()
        elif isinstance(error, RateLimited):
            with self._lock:
                self._counts["rate_limited"] += 1
            if self.budget is not None:
                self.budget.on_rate_limited(error.retry_after, camera=self.name)
            self.breaker.release_probe()
        elif isinstance(error, _BREAKER_FAILURES):
            self.breaker.record_failure(error)
        else:
            self.breaker.release_probe()

    def _count_error(self, error: InferenceError) -> None:
        with self._lock:
            self._errors[type(error).__name__] += 1

    def _backoff(self, attempt: int, error: InferenceError) -> float:
        """Full-jitter exponential backoff; never sooner than the server's Retry-After."""
        ceiling = min(self.config.backoff_cap, self.config.backoff_base * 2 ** (attempt - 1))
        wait = self._random.uniform(ceiling / 2, ceiling)
        if isinstance(error, RateLimited) and error.retry_after:
            wait = max(wait, error.retry_after)
        return wait

    def _sleep_until(self, moment: float) -> bool:
        """Sleep until ``moment``; ``False`` if the pool is closing."""
        delay = moment - time.monotonic()
        return not (delay > 0 and self._stop.wait(delay))

    def _count_call(self) -> None:
        now = time.monotonic()
        with self._lock:
            self._calls.append(now)
            while self._calls[0] < now - 60:
                self._calls.popleft()

    def _record_latency(self, seconds: float) -> None:
        with self._lock:
            self._latencies.append(seconds)
            self._ewma = seconds if self._ewma is None else 0.8 * self._ewma + 0.2 * seconds

    def _finish(
        self,
        job: _Job,
        status: Status,
        *,
        prediction: Prediction | None = None,
        error: InferenceError | None = None,
        timings: Timings | None = None,
    ) -> None:
        result = Result(
            frame=job.frame,
            status=status,
            prediction=prediction,
            error=error,
            timings=replace(
                timings or Timings(), capture_age=job.submitted_at - job.frame.captured_at
            ),
        )
        with self._lock:
            self._counts[status.value] += 1
            self._in_flight -= 1
        self._slots.release()
        job.future.set_result(result)
        if self._on_result is not None:
            try:
                self._on_result(result)
            except Exception:
                log.exception("on_result callback failed")

    # -- metrics ------------------------------------------------------------------------------

    def metrics(self) -> SenderMetrics:
        with self._lock:
            latencies = sorted(self._latencies)
            counts = dict(self._counts)
            errors = dict(self._errors)
            ewma = self._ewma
            in_flight = self._in_flight
            calls = sum(1 for t in self._calls if t >= time.monotonic() - 60)

        def percentile(q: float) -> float | None:
            return (
                latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else None
            )

        return SenderMetrics(
            submitted=counts.get("submitted", 0),
            ok=counts.get("ok", 0),
            failed=counts.get("failed", 0),
            stale=counts.get("stale", 0),
            retries=counts.get("retries", 0),
            rate_limited=counts.get("rate_limited", 0),
            in_flight=in_flight,
            rate=self.budget.rate if self.budget else None,
            calls_per_minute=calls,
            breaker=self.breaker.state.value,
            latency_ewma=ewma,
            latency_p50=percentile(0.5),
            latency_p95=percentile(0.95),
            errors=errors,
        )


def _with(timings: Timings, started: float, attempts: int) -> Timings:
    return Timings(
        queue_wait=timings.queue_wait,
        prepare=timings.prepare,
        round_trip=time.monotonic() - started,
        attempts=attempts,
    )
