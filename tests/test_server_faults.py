"""Every fault-injection flag, over real HTTP, and its determinism under a seed."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from streamer.errors import ConfigError
from streamer.server import FaultConfig
from streamer.server.faults import FaultInjector, TokenBucket
from streamer.synth import Scene
from tests.helpers import FORM, ServerFactory, b64, jpeg_bytes, wait_for


@pytest.fixture(scope="module")
def frame_body() -> bytes:
    return b64(jpeg_bytes(Scene(width=320, height=180, objects=2, seed=1).render(0)))


def _statuses(url: str, body: bytes, count: int) -> list[int]:
    with httpx.Client(base_url=url, timeout=5) as http:
        return [
            http.post("/shapes/1", content=body, headers=FORM).status_code for _ in range(count)
        ]


# -- the schedule itself ---------------------------------------------------------------------


def test_error_rate_is_exact_per_hundred_and_seeded() -> None:
    def failing(seed: int) -> list[int]:
        injector = FaultInjector(FaultConfig(error_rate=0.2, seed=seed))
        return [d.number for d in (injector.decide() for _ in range(300)) if d.error_status]

    first = failing(7)
    assert len(first) == 60
    for block in range(3):
        assert sum(1 for n in first if block * 100 <= n < (block + 1) * 100) == 20
    assert failing(7) == first
    assert failing(8) != first


def test_jitter_is_bounded_and_seeded() -> None:
    def delays(seed: int) -> list[float]:
        injector = FaultInjector(FaultConfig(latency_ms=100, jitter_ms=40, seed=seed))
        return [injector.decide().delay_s for _ in range(200)]

    first = delays(1)
    assert all(0.06 <= d <= 0.14 for d in first)
    assert max(first) - min(first) > 0.06  # spread over the range, not constant
    assert delays(1) == first
    assert delays(2) != first


def test_token_bucket_rate() -> None:
    bucket = TokenBucket(rate=10, burst=2)
    now = time.monotonic()
    assert bucket.take(now) == 0
    assert bucket.take(now) == 0
    assert bucket.take(now) == pytest.approx(0.1)
    assert bucket.take(now + 0.1) == 0  # one token refilled after 1/rate


@pytest.mark.parametrize(
    "config",
    [
        {"error_rate": 1.5},
        {"hang_rate": -0.1},
        {"latency_ms": -1},
        {"error_status": 404},
        {"rate_limit": 0},
        {"max_concurrency": 0},
    ],
)
def test_bad_fault_config_is_rejected(config: dict) -> None:
    with pytest.raises(ConfigError):
        FaultConfig(**config)


# -- over HTTP ---------------------------------------------------------------------------------


def test_latency(start_server: ServerFactory, frame_body: bytes) -> None:
    server = start_server(FaultConfig(latency_ms=200))
    with httpx.Client(base_url=server.url, timeout=5) as http:
        http.get("/health")  # connect outside the timing
        times = []
        for _ in range(3):
            started = time.perf_counter()
            assert http.post("/shapes/1", content=frame_body, headers=FORM).status_code == 200
            times.append(time.perf_counter() - started)
        started = time.perf_counter()
        http.get("/health")  # not an inference route: no latency
        health = time.perf_counter() - started
    assert all(0.2 <= t < 0.4 for t in times), times
    assert health < 0.1


def test_jitter_over_http(start_server: ServerFactory, frame_body: bytes) -> None:
    config = FaultConfig(latency_ms=100, jitter_ms=50, seed=3)
    expected = [d.delay_s for d in (FaultInjector(config).decide() for _ in range(6))]
    server = start_server(config)
    with httpx.Client(base_url=server.url, timeout=5) as http:
        for delay in expected:
            started = time.perf_counter()
            http.post("/shapes/1", content=frame_body, headers=FORM)
            elapsed = time.perf_counter() - started
            assert delay <= elapsed < delay + 0.1


@pytest.mark.parametrize("status", [500, 502, 503])
def test_error_rate_over_http(start_server: ServerFactory, frame_body: bytes, status: int) -> None:
    config = FaultConfig(error_rate=0.2, error_status=status, seed=5)
    server = start_server(config)
    statuses = _statuses(server.url, frame_body, 100)
    assert statuses.count(status) == 20
    assert statuses.count(200) == 80
    # the very requests the schedule names, and again on a fresh server with the same seed
    injector = FaultInjector(config)
    planned = [injector.decide().error_status or 200 for _ in range(100)]
    assert statuses == planned
    assert _statuses(start_server(config).url, frame_body, 100) == statuses


def test_injected_error_body(start_server: ServerFactory, frame_body: bytes) -> None:
    server = start_server(FaultConfig(error_rate=1.0, error_status=502))
    with httpx.Client(base_url=server.url) as http:
        response = http.post("/shapes/1", content=frame_body, headers=FORM)
    assert response.status_code == 502
    assert "502" in response.json()["message"]


def test_rate_limit_answers_429_with_retry_after(
    start_server: ServerFactory, frame_body: bytes
) -> None:
    server = start_server(FaultConfig(rate_limit=5, burst=5))
    with httpx.Client(base_url=server.url, timeout=5) as http:
        responses = [http.post("/shapes/1", content=frame_body, headers=FORM) for _ in range(12)]
        codes = [r.status_code for r in responses]
        assert codes[:5] == [200] * 5
        assert codes.count(429) >= 6
        limited = next(r for r in responses if r.status_code == 429)
        assert limited.headers["Retry-After"] == "1"
        time.sleep(float(limited.headers["Retry-After"]))
        assert http.post("/shapes/1", content=frame_body, headers=FORM).status_code == 200


def test_rate_limit_holds_the_rate(start_server: ServerFactory, frame_body: bytes) -> None:
    server = start_server(FaultConfig(rate_limit=20, burst=1))
    with httpx.Client(base_url=server.url, timeout=5) as http:
        started = time.monotonic()
        ok = 0
        while time.monotonic() - started < 1.5:
            ok += http.post("/shapes/1", content=frame_body, headers=FORM).status_code == 200
    assert 25 <= ok <= 33  # 20/s for 1.5 s, plus the first token


def test_hanging_requests_never_answer(start_server: ServerFactory, frame_body: bytes) -> None:
    server = start_server(FaultConfig(hang_rate=1.0))
    with httpx.Client(base_url=server.url, timeout=0.5) as http:
        started = time.perf_counter()
        with pytest.raises(httpx.ReadTimeout):
            http.post("/shapes/1", content=frame_body, headers=FORM)
        assert time.perf_counter() - started < 1.0
        assert http.get("/health").status_code == 200  # the server itself still answers
    # the hung request is let go once its client is gone
    deadline = time.monotonic() + 2
    while server.service.faults.in_flight and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.service.faults.in_flight == 0


def test_hang_rate_is_partial(start_server: ServerFactory, frame_body: bytes) -> None:
    config = FaultConfig(hang_rate=0.1, seed=2)
    server = start_server(config)
    injector = FaultInjector(config)
    planned = [injector.decide().hang for _ in range(20)]
    outcomes = []
    with httpx.Client(base_url=server.url, timeout=0.3) as http:
        for _ in range(20):
            try:
                outcomes.append(
                    http.post("/shapes/1", content=frame_body, headers=FORM).status_code != 200
                )
            except httpx.ReadTimeout:
                outcomes.append(True)
    assert outcomes == planned
    assert sum(planned) == 2


def test_max_concurrency_answers_503(start_server: ServerFactory, frame_body: bytes) -> None:
    server = start_server(FaultConfig(max_concurrency=2, latency_ms=3000))

    def post(_: int) -> int:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            return http.post("/shapes/1", content=frame_body, headers=FORM).status_code

    with ThreadPoolExecutor(2) as pool:
        held = [pool.submit(post, i) for i in range(2)]
        # both slots taken (a readiness signal, not a sleep): the next ones are refused
        wait_for(lambda: server.service.faults.in_flight == 2, what="two requests held")
        refused = [post(i) for i in range(3)]
        assert refused == [503, 503, 503]
        assert [f.result(timeout=30) for f in held] == [200, 200]
    # capacity comes back once they finish
    assert server.service.faults.in_flight == 0
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.post("/shapes/1", content=frame_body, headers=FORM).status_code == 200


def test_server_stops_promptly_with_hung_requests(
    start_server: ServerFactory, frame_body: bytes
) -> None:
    server = start_server(FaultConfig(hang_rate=1.0))

    def hang(_: int) -> int | None:
        """504 when the server lets the request go, None when it drops the connection."""
        with httpx.Client(base_url=server.url, timeout=10) as http:
            try:
                return http.post("/shapes/1", content=frame_body, headers=FORM).status_code
            except httpx.HTTPError:
                return None

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(hang, i) for i in range(3)]
        time.sleep(0.3)
        started = time.perf_counter()
        server.stop()
        assert time.perf_counter() - started < 3
        # every hung client is released within the stop, none waits for its own timeout
        assert all(future.result(timeout=3) in (504, None) for future in futures)
