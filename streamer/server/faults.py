"""Fault injection for the local server: exact and repeatable under a seed.

Decisions are a function of (seed, request number), where requests are numbered
in arrival order on the inference routes. Rates are exact per block of 100
requests (so to 1%): with ``error_rate=0.2`` exactly 20 of every 100 fail, at
positions a seeded shuffle picks, so short tests see the rate and reruns see
the same requests fail.
"""

from __future__ import annotations

import math
import random
import threading
import time
from dataclasses import dataclass

from streamer.errors import ConfigError

__all__ = ["Decision", "FaultConfig", "FaultInjector", "TokenBucket"]

_BLOCK = 100
_ERROR_STATUSES = (500, 502, 503, 504)


@dataclass(frozen=True, kw_only=True)
class FaultConfig:
    """What to inject; everything off by default."""

    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_rate: float = 0.0
    error_status: int = 500
    rate_limit: float | None = None  # requests per second, token bucket
    burst: float | None = None  # bucket size; defaults to max(1, rate_limit)
    hang_rate: float = 0.0
    max_concurrency: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.latency_ms < 0 or self.jitter_ms < 0:
            raise ConfigError("latency and jitter must be >= 0 ms")
        for name in ("error_rate", "hang_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {value}")
        if self.error_status not in _ERROR_STATUSES:
            raise ConfigError(f"error status must be one of {_ERROR_STATUSES}")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ConfigError("rate limit must be > 0 requests per second")
        if self.burst is not None and self.burst < 1:
            raise ConfigError("burst must be >= 1")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ConfigError("max concurrency must be >= 1")


@dataclass(frozen=True)
class Decision:
    """What happens to one request, decided when it arrives."""

    number: int
    delay_s: float
    hang: bool
    error_status: int | None


class _ExactSchedule:
    """Which request numbers are hit, exactly ``rate`` of each block, seeded."""

    def __init__(self, rate: float, seed: int, salt: str) -> None:
        self._hits = round(rate * _BLOCK)
        self._seed = seed
        self._salt = salt
        self._block = -1
        self._chosen: frozenset[int] = frozenset()

    def hit(self, number: int) -> bool:
        if self._hits == 0:
            return False
        block, slot = divmod(number, _BLOCK)
        if block != self._block:
            rng = random.Random(f"{self._seed}:{self._salt}:{block}")
            self._chosen = frozenset(rng.sample(range(_BLOCK), self._hits))
            self._block = block
        return slot in self._chosen


class TokenBucket:
    """A token bucket; ``take`` answers 0 when a token was taken, else seconds to wait."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def take(self, now: float | None = None) -> float:
        with self._lock:
            now = time.monotonic() if now is None else now
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1 - 1e-9:  # float error must not turn a full token away
                self._tokens = max(0.0, self._tokens - 1)
                return 0.0
            return (1 - self._tokens) / self.rate


class FaultInjector:
    """Numbers requests and decides each one's fate; thread-safe."""

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._next = 0
        self._errors = _ExactSchedule(config.error_rate, config.seed, "error")
        self._hangs = _ExactSchedule(config.hang_rate, config.seed, "hang")
        self._bucket = (
            TokenBucket(config.rate_limit, config.burst or max(1.0, config.rate_limit))
            if config.rate_limit
            else None
        )
        self._in_flight = 0

    def admit(self) -> bool:
        """Count a request in; ``False`` when over ``max_concurrency`` (answer 503)."""
        with self._lock:
            limit = self.config.max_concurrency
            if limit is not None and self._in_flight >= limit:
                return False
            self._in_flight += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._in_flight -= 1

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def requests_seen(self) -> int:
        """Requests that got past the concurrency cap and the rate limit."""
        return self._next

    def retry_after(self) -> float | None:
        """``None`` when the rate limit admits this request, else seconds to wait."""
        if self._bucket is None:
            return None
        wait = self._bucket.take()
        return wait if wait > 0 else None

    def decide(self) -> Decision:
        with self._lock:
            number = self._next
            self._next += 1
            hang = self._hangs.hit(number)
            error = self.config.error_status if self._errors.hit(number) else None
        delay = self.config.latency_ms
        if self.config.jitter_ms:
            jitter = random.Random(f"{self.config.seed}:jitter:{number}").uniform(-1, 1)
            delay = max(0.0, delay + jitter * self.config.jitter_ms)
        return Decision(number=number, delay_s=delay / 1000, hang=hang, error_status=error)


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` is whole seconds (RFC 9110); never say 0 while limiting."""
    return str(max(1, math.ceil(seconds)))
