"""The API's request budget: one per (API key, host), shared by all that send with it.

::

    Budgets ── for_key(key, host, cap) ──▶ RateGovernor (a RateBudget)
                                              ▲ reserve(deadline, camera=) before each request
      SenderPool(s) ──────────────────────────┘ on_rate_limited(retry_after, camera=) on a 429

``RateBudget`` is the contract a sender pool paces by; ``RateGovernor`` is the local
implementation; ``Budgets`` is the registry a process (or a fleet of cameras) keeps:
an explicit object, so two runs in one process or two tests never share one by
accident, and a second, different cap for the same key is an error instead of being
silently ignored.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from streamer.errors import ConfigError

__all__ = ["Budgets", "RateBudget", "RateGovernor"]

log = logging.getLogger(__name__)


class RateBudget(Protocol):
    """Requests per second for one API key at one host. Thread-safe; any thread."""

    @property
    def rate(self) -> float:
        """The requests/s granted now (below the cap after 429s)."""
        ...

    def reserve(self, deadline: float | None = None, *, camera: str = "") -> float | None:
        """Book a send slot for ``camera``: when to send, or ``None`` if past ``deadline``."""
        ...

    def on_rate_limited(self, retry_after: float | None, *, camera: str = "") -> None:
        """A 429 reached ``camera``'s request: shrink, and pause for ``retry_after``."""
        ...

    def tokens_left(self) -> float:
        """Sends that could go now without waiting."""
        ...

    def calls_per_minute(self) -> int:
        """Slots booked in the last minute."""
        ...


class RateGovernor:
    """The local ``RateBudget``: a requests-per-second cap that halves on 429 and
    recovers additively (AIMD), booking send slots on a steady schedule.

    Every camera's pool that sends with one API key to one host must share one (see
    ``Budgets``), since the API's limit is per key, not per pool. ``camera`` is taken
    for the contract; the shares between cameras are the next step (issue 11).
    """

    def __init__(
        self,
        cap: float,
        *,
        floor: float = 0.5,
        recovery_per_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cap = cap
        self.floor = min(floor, cap)
        # Back from half to full within about 10 s, as TCP's additive increase would.
        self.recovery_per_s = recovery_per_s if recovery_per_s is not None else cap / 20
        self._clock = clock
        self._rate = cap
        self._lock = threading.Lock()
        now = clock()
        self._next_slot = now
        self._updated = now
        self._last_cut = -1e9
        self._paused_until = now
        self._calls: collections.deque[float] = collections.deque()

    def _recover(self, now: float) -> None:
        self._rate = min(self.cap, self._rate + self.recovery_per_s * (now - self._updated))
        self._updated = now

    @property
    def rate(self) -> float:
        with self._lock:
            self._recover(self._clock())
            return self._rate

    def calls_per_minute(self) -> int:
        with self._lock:
            self._trim(self._clock())
            return len(self._calls)

    def _trim(self, now: float) -> None:
        while self._calls and self._calls[0] < now - 60:
            self._calls.popleft()

    def tokens_left(self) -> float:
        """Sends that could go right now without waiting: 1 when a slot is free, else 0."""
        with self._lock:
            now = self._clock()
            return 1.0 if max(self._next_slot, self._paused_until) <= now else 0.0

    def reserve(self, deadline: float | None = None, *, camera: str = "") -> float | None:
        """Book the next send slot; its time, or ``None`` if it would fall past ``deadline``."""
        with self._lock:
            now = self._clock()
            self._recover(now)
            slot = max(now, self._next_slot, self._paused_until)
            if deadline is not None and slot > deadline:
                return None
            self._next_slot = slot + 1 / self._rate
            self._trim(now)
            self._calls.append(slot)
            return slot

    def on_rate_limited(self, retry_after: float | None, *, camera: str = "") -> None:
        """A 429: halve the rate (once per second, however many answers say so) and pause."""
        with self._lock:
            now = self._clock()
            self._recover(now)
            if now - self._last_cut >= 1.0:
                self._rate = max(self.floor, self._rate / 2)
                self._last_cut = now
                log.warning("429 from the API: send rate cut to %.1f/s", self._rate)
            if retry_after:
                self._paused_until = max(self._paused_until, now + retry_after)


class Budgets:
    """One ``RateGovernor`` per (API key fingerprint, host), made on first use."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._budgets: dict[tuple[str, str], RateGovernor] = {}

    def for_key(self, key_fingerprint: str, host: str, cap: float) -> RateGovernor:
        """The budget of this key at this host; ``ConfigError`` if it exists with another cap."""
        with self._lock:
            budget = self._budgets.get((key_fingerprint, host))
            if budget is None:
                budget = self._budgets[(key_fingerprint, host)] = RateGovernor(
                    cap, clock=self._clock
                )
            elif budget.cap != cap:
                raise ConfigError(
                    f"the API key's budget at {host} is {budget.cap:g} requests/s; "
                    f"another cap ({cap:g}/s) for the same key cannot apply too"
                )
            return budget

    def __len__(self) -> int:
        return len(self._budgets)
