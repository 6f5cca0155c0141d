"""SenderPool against `streamer serve` with injected faults."""

from __future__ import annotations

import http.server
import logging
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from streamer.client import RoboflowClient, Target
from streamer.errors import ServerError
from streamer.frames import Frame, Result, Status
from streamer.sender import (
    BreakerState,
    CircuitBreaker,
    CircuitOpen,
    PoolFull,
    RateGovernor,
    SenderConfig,
    SenderPool,
)
from streamer.server import FaultConfig, ServerConfig, ServerThread
from streamer.synth import Scene
from tests.helpers import EMPTY_ANSWER, QuietHandler, ServerFactory, free_port

KEY = "rf_SENDERCANARY_0a1b2c3d4e"
IMAGE = Scene(width=320, height=240, objects=2, seed=1).render(0)


def _frame(index: int) -> Frame:
    return Frame(image=IMAGE, index=index)


def _pool(url: str, **config: object) -> SenderPool:
    client = RoboflowClient(Target.model("shapes/1", api_url=url), api_key=KEY, max_connections=16)
    config.setdefault("rate_limit", None)
    config.setdefault("submit_timeout", 30.0)
    return SenderPool(client, SenderConfig(**config)).start()  # type: ignore[arg-type]


@pytest.fixture
def pools() -> Iterator[list[SenderPool]]:
    made: list[SenderPool] = []
    yield made
    for pool in made:
        pool.close()
        pool.client.close()


def _results(pool: SenderPool, count: int, **submit: object) -> list[Result]:
    futures = [pool.submit(_frame(i), **submit) for i in range(count)]  # type: ignore[arg-type]
    return [f.result(timeout=30) for f in futures]


class _Rendezvous(QuietHandler):
    """Answers only once ``barrier.parties`` requests are being served at the same time."""

    barrier: threading.Barrier

    def do_POST(self) -> None:
        self.read_body()
        try:
            self.barrier.wait()
        except threading.BrokenBarrierError:
            self.reply(500, b'{"message": "fewer requests at once than expected"}')
        else:
            self.reply(200, EMPTY_ANSWER)


def test_the_pool_has_max_in_flight_requests_out_at_once(
    serve_http: Callable[[type[http.server.BaseHTTPRequestHandler]], str],
) -> None:
    """The behaviour behind N/L throughput (speed itself is scripts/bench_sender.py's):
    every one of the N requests is on the wire at the same time."""
    barrier = threading.Barrier(8, timeout=30)
    url = serve_http(type("Rendezvous", (_Rendezvous,), {"barrier": barrier}))
    client = RoboflowClient(Target.model("m/1", api_url=url), timeout=60)
    config = SenderConfig(max_in_flight=8, rate_limit=None, max_retries=0, request_timeout=60)
    with client, SenderPool(client, config) as pool:
        futures = [pool.submit(_frame(i)) for i in range(8)]
        with pytest.raises(PoolFull):
            pool.submit(_frame(8))  # a ninth has no slot
        results = [f.result(timeout=60) for f in futures]
    assert [r.status for r in results] == [Status.OK] * 8
    assert not barrier.broken


def test_results_carry_timings_and_callbacks(start_server: ServerFactory) -> None:
    server = start_server(FaultConfig(latency_ms=50))
    seen: list[Result] = []
    client = RoboflowClient(Target.model("shapes/1", api_url=server.url))
    with client, SenderPool(client, SenderConfig(rate_limit=None), on_result=seen.append) as pool:
        result = pool.submit(_frame(7)).result(timeout=5)
    assert result.status is Status.OK
    assert result.frame.index == 7
    assert result.prediction is not None
    assert len(result.prediction.detections) == 2
    t = result.timings
    assert t.attempts == 1
    assert t.round_trip >= 0.05
    assert t.server is not None
    assert t.server < t.round_trip
    assert t.prepare > 0
    assert t.parse > 0
    assert seen == [result]


def test_submit_never_blocks_beyond_its_timeout(
    start_server: ServerFactory, pools: list[SenderPool]
) -> None:
    server = start_server(FaultConfig(latency_ms=500))
    pool = _pool(server.url, max_in_flight=2, submit_timeout=0.1)
    pools.append(pool)
    pool.submit(_frame(0))
    pool.submit(_frame(1))
    assert pool.free_slots == 0
    started = time.monotonic()
    with pytest.raises(PoolFull):
        pool.submit(_frame(2))
    assert 0.1 <= time.monotonic() - started < 0.3


def test_twenty_percent_500s_lose_nothing(
    start_server: ServerFactory, pools: list[SenderPool]
) -> None:
    server = start_server(FaultConfig(error_rate=0.2, seed=4))
    pool = _pool(server.url, max_in_flight=8, max_retries=4, backoff_base=0.01)
    pools.append(pool)
    results = _results(pool, 100)
    assert [r.status for r in results] == [Status.OK] * 100
    assert pool.metrics().retries >= 20
    assert any(r.timings.attempts > 1 for r in results)


def test_retry_after_is_honoured(start_server: ServerFactory, pools: list[SenderPool]) -> None:
    server = start_server(FaultConfig(rate_limit=1, burst=1))
    pool = _pool(server.url, max_in_flight=1, max_retries=2)
    pools.append(pool)
    first, second = _results(pool, 2)
    assert first.status is Status.OK
    assert second.status is Status.OK
    assert second.timings.attempts == 2
    assert second.timings.round_trip >= 1.0  # waited out Retry-After: 1
    assert pool.metrics().rate_limited == 1


def test_a_429_storm_lowers_the_rate_and_it_recovers(
    start_server: ServerFactory, pools: list[SenderPool]
) -> None:
    governor = RateGovernor(40, recovery_per_s=20)
    storm = start_server(FaultConfig(rate_limit=5, burst=1))
    client = RoboflowClient(Target.model("shapes/1", api_url=storm.url))
    config = SenderConfig(max_in_flight=8, max_retries=0, rate_limit=40, submit_timeout=30)
    pool = SenderPool(client, config, budget=governor)
    pools.append(pool.start())
    results = _results(pool, 40)
    assert any(r.status is Status.FAILED for r in results)
    cut = governor.rate
    assert cut < 40
    # the storm is over (no more 429s): additive recovery back to the cap
    time.sleep(2.1)
    assert governor.rate == pytest.approx(40)
    assert governor.calls_per_minute() >= 40


def test_governor_paces_requests() -> None:
    now = [0.0]
    governor = RateGovernor(10, clock=lambda: now[0])
    granted = []
    for step in range(50):  # 0.5 s in 10 ms steps, a request always waiting
        now[0] = step * 0.01
        ticket = governor.request("cam")
        governor.grant_due()
        if ticket.granted_at is not None:
            granted.append(ticket.granted_at)
        else:
            governor.cancel(ticket)
    assert granted == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    now[0] = 1.0
    governor.on_rate_limited(retry_after=2.0)
    assert governor.rate == pytest.approx(5)
    governor.on_rate_limited(retry_after=None)  # within a second: no second cut
    assert governor.rate == pytest.approx(5)
    ticket = governor.request("cam")
    assert governor.grant_due() == pytest.approx(2.0)  # paused for Retry-After
    assert ticket.granted_at is None
    now[0] = 3.0
    governor.grant_due()
    assert ticket.granted_at == pytest.approx(3.0)
    now[0] = 12.0
    assert governor.rate == pytest.approx(10)  # recovered additively, capped


def test_reserve_gives_up_at_the_deadline_and_when_abandoned() -> None:
    governor = RateGovernor(1)
    assert governor.reserve(None, camera="a") is not None  # the first slot is free
    started = time.monotonic()
    assert governor.reserve(time.monotonic() + 0.2, camera="a") is None  # next one is 1 s away
    assert time.monotonic() - started < 0.9
    stop = threading.Event()
    stop.set()
    assert governor.reserve(None, camera="a", abandon=stop) is None


def test_hanging_requests_time_out(start_server: ServerFactory, pools: list[SenderPool]) -> None:
    server = start_server(FaultConfig(hang_rate=1.0))
    pool = _pool(server.url, request_timeout=0.5, max_retries=0)
    pools.append(pool)
    started = time.monotonic()
    result = pool.submit(_frame(0)).result(timeout=5)
    elapsed = time.monotonic() - started
    assert result.status is Status.FAILED
    assert "within 0.5 s" in str(result.reason)
    assert 0.5 <= elapsed < 1.0


def test_stale_frames_are_not_retried(start_server: ServerFactory, pools: list[SenderPool]) -> None:
    server = start_server(FaultConfig(latency_ms=300))
    pool = _pool(server.url, deadline=0.2, max_retries=3)
    pools.append(pool)
    results = _results(pool, 4)
    assert [r.status for r in results] == [Status.STALE] * 4
    assert all(r.timings.attempts == 1 for r in results)
    time.sleep(0.3)
    assert server.service.faults.requests_seen == 4  # one request per frame, no retries
    # a frame already past its deadline is not even sent
    late = pool.submit(_frame(9), deadline=time.monotonic() - 1).result(timeout=5)
    assert late.status is Status.STALE
    assert late.timings.attempts == 0
    assert server.service.faults.requests_seen == 4


def test_errors_near_the_deadline_go_stale_instead_of_retrying(
    start_server: ServerFactory, pools: list[SenderPool]
) -> None:
    server = start_server(FaultConfig(error_rate=1.0, latency_ms=50))
    pool = _pool(server.url, deadline=0.3, max_retries=10, backoff_base=0.2, breaker_failures=100)
    pools.append(pool)
    result = pool.submit(_frame(0)).result(timeout=5)
    assert result.status is Status.STALE
    assert result.error is not None
    assert 1 <= result.timings.attempts <= 3


def test_breaker_opens_and_closes(pools: list[SenderPool]) -> None:
    port = free_port()
    changes: list[BreakerState] = []
    client = RoboflowClient(Target.model("shapes/1", api_url=f"http://127.0.0.1:{port}"))
    config = SenderConfig(
        max_in_flight=1,
        max_retries=0,
        breaker_failures=3,
        breaker_cooldown=0.5,
        rate_limit=None,
        submit_timeout=30,
    )
    pool = SenderPool(client, config, on_breaker=lambda state, why: changes.append(state))
    pools.append(pool.start())
    # nothing listens: connection refused, three times (live frames: with deadlines)
    down = _results(pool, 3, deadline=time.monotonic() + 10)
    assert all(r.status is Status.FAILED for r in down)
    assert pool.breaker.state is BreakerState.OPEN
    # a frame with a deadline (live) fails fast while the breaker is open
    fast = pool.submit(_frame(3), deadline=time.monotonic() + 5).result(timeout=5)
    assert isinstance(fast.error, CircuitOpen)
    assert fast.timings.attempts == 0
    with ServerThread(ServerConfig(port=port)):  # the API comes back on the same port
        time.sleep(0.6)  # cooldown over
        probe = pool.submit(_frame(4)).result(timeout=5)
        assert probe.status is Status.OK
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]
    assert pool.metrics().breaker == "closed"


def test_frames_without_deadline_wait_out_an_outage(pools: list[SenderPool]) -> None:
    """Recorded video: an open breaker makes frames wait for the API, not fail."""
    port = free_port()
    client = RoboflowClient(Target.model("shapes/1", api_url=f"http://127.0.0.1:{port}"))
    config = SenderConfig(
        max_in_flight=2,
        max_retries=0,
        breaker_failures=2,
        breaker_cooldown=0.3,
        rate_limit=None,
        submit_timeout=30,
    )
    pool = SenderPool(client, config)
    pools.append(pool.start())
    # two live frames (with deadlines) are refused and open the breaker
    assert all(r.status is Status.FAILED for r in _results(pool, 2, deadline=time.monotonic() + 10))
    assert pool.breaker.state is BreakerState.OPEN
    waiting = [pool.submit(_frame(i)) for i in (2, 3)]
    time.sleep(1.0)
    assert not any(f.done() for f in waiting)  # neither failed nor sent: waiting
    with ServerThread(ServerConfig(port=port)):
        results = [f.result(timeout=5) for f in waiting]
    assert [r.status for r in results] == [Status.OK, Status.OK]


def test_breaker_half_open_lets_one_probe() -> None:
    now = [0.0]
    breaker = CircuitBreaker(2, 1.0, clock=lambda: now[0])
    breaker.record_failure(RuntimeError("a"))
    assert breaker.allow()
    breaker.record_failure(RuntimeError("b"))
    assert not breaker.allow()
    now[0] = 1.5
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one
    breaker.record_failure(RuntimeError("c"))
    assert breaker.state is BreakerState.OPEN
    now[0] = 3.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state.value == "closed"  # (mypy narrows .state after the line above)


def test_close_answers_every_frame_and_stops_threads(start_server: ServerFactory) -> None:
    server = start_server(FaultConfig(latency_ms=200))
    client = RoboflowClient(Target.model("shapes/1", api_url=server.url))
    pool = SenderPool(client, SenderConfig(max_in_flight=4, rate_limit=None)).start()
    futures = [pool.submit(_frame(i)) for i in range(4)]
    started = time.monotonic()
    pool.close(timeout=2)
    assert time.monotonic() - started < 2.5
    assert all(f.done() for f in futures)
    assert not [
        t for t in threading.enumerate() if t.name.startswith("streamer-sender-") and t.is_alive()
    ]
    client.close()


def test_the_key_never_leaks_from_the_pool(
    start_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    guarded = start_server(api_key="other")
    failing = start_server(FaultConfig(error_rate=1.0))
    texts: list[str] = []
    for url in (guarded.url, failing.url, f"http://127.0.0.1:{free_port()}"):
        pool = _pool(url, max_retries=1, backoff_base=0.01)
        for result in _results(pool, 2, deadline=time.monotonic() + 10):
            assert result.status is Status.FAILED
            texts.append(str(result.reason))
            texts.append(repr(result))
        texts.append(repr(pool.metrics()))
        pool.close()
        pool.client.close()
    texts.append(caplog.text)
    assert all(KEY not in text for text in texts)


def test_pool_frames_are_independent_of_shape() -> None:
    # a frame that is not an image fails cleanly, without killing the sender thread
    client = RoboflowClient(Target.model("shapes/1", api_url="http://127.0.0.1:9"))
    with client, SenderPool(client, SenderConfig(rate_limit=None, max_in_flight=1)) as pool:
        bad = pool.submit(Frame(image=np.zeros((4, 4), np.uint8), index=0)).result(timeout=5)
        assert bad.status is Status.FAILED
        assert "BGR" in str(bad.reason)
        assert pool.free_slots == 1


def test_the_breaker_measures_how_long_the_api_has_failed() -> None:
    """With an injected clock: the streak's length drives a recorded run's outage wait."""
    now = [100.0]
    breaker = CircuitBreaker(3, 1.0, clock=lambda: now[0])
    assert breaker.failing_for() == 0.0
    breaker.record_failure(ServerError("500"))
    now[0] += 4.0
    breaker.record_failure(ServerError("500"))
    assert breaker.failing_for() == pytest.approx(4.0)  # from the first failure in a row
    assert breaker.last_error == "500"
    breaker.record_success()
    assert breaker.failing_for() == 0.0
    for _ in range(3):
        breaker.record_failure(ServerError("503"))
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()
    now[0] += 1.0
    assert breaker.allow()  # one probe after the cooldown
    assert not breaker.allow()


def test_a_breaker_callback_may_use_the_breaker() -> None:
    """on_change runs after the lock is released: a callback calling allow() or reading
    the state does not deadlock (it did while the lock was held)."""
    now = [0.0]
    seen: list[tuple[BreakerState, bool]] = []

    def on_change(state: BreakerState, why: str) -> None:
        seen.append((state, breaker.allow()))

    breaker = CircuitBreaker(1, 1.0, on_change=on_change, clock=lambda: now[0])

    def drive() -> None:
        breaker.record_failure(ServerError("500"))  # opens
        now[0] += 2.0
        breaker.allow()  # half-open: the probe
        breaker.record_success()  # closed

    worker = threading.Thread(target=drive, name="test-breaker", daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "deadlocked in on_change"
    assert [state for state, _ in seen] == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]
    assert seen[-1][1] is True  # closed: allow() inside the callback says yes


def test_budgets_are_one_per_key_and_host_and_refuse_a_second_cap() -> None:
    from streamer.budget import Budgets
    from streamer.errors import ConfigError

    budgets = Budgets()
    first = budgets.for_key("key-a", "detect.roboflow.com", 20)
    assert budgets.for_key("key-a", "detect.roboflow.com", 20) is first  # shared
    assert budgets.for_key("key-b", "detect.roboflow.com", 20) is not first
    assert budgets.for_key("key-a", "serverless.roboflow.com", 20) is not first
    with pytest.raises(ConfigError, match="another cap"):
        budgets.for_key("key-a", "detect.roboflow.com", 40)  # not silently ignored
    assert len(budgets) == 3
    assert len(Budgets()) == 0  # no process-wide state: a new registry starts empty


def test_pools_of_one_key_share_its_budget(start_server: ServerFactory) -> None:
    from streamer.budget import Budgets

    server = start_server()
    budget = Budgets().for_key("k", "127.0.0.1", 10)
    clients = [RoboflowClient(Target.model("shapes/1", api_url=server.url)) for _ in range(2)]
    pools = [
        SenderPool(c, SenderConfig(max_in_flight=2), budget=budget, name=f"cam{i}")
        for i, c in enumerate(clients)
    ]
    try:
        for pool in pools:
            pool.start()
        names = {t.name for t in threading.enumerate()}
        assert {"streamer-sender-cam0-0", "streamer-sender-cam1-1"} <= names
        futures = [pool.submit(_frame(i), wait=5) for i, pool in enumerate(pools) for _ in "ab"]
        assert all(f.result(timeout=10).status is Status.OK for f in futures)
        assert budget.calls_per_minute() == 4  # both pools booked from the one budget
    finally:
        for pool, client in zip(pools, clients, strict=True):
            pool.close()
            client.close()
