"""The API's request budget: one per (API key, host), shared fairly by every camera.

::

    Budgets ── for_key(key, host, cap) ──▶ RateGovernor (a RateBudget)
                                              ▲ join(camera, weight, min_fps) once
      camera A's sender threads ─ reserve ───┤ reserve(deadline, camera=) before each request
      camera B's sender threads ─ reserve ───┤ on_rate_limited(retry_after) on a 429
      camera A's sampler ─────── share(A) ───┘ paces to its own share, not the whole rate

``RateBudget`` is the contract a sender pool paces by; ``RateGovernor`` is the local
implementation; ``Budgets`` is the registry a process (or a fleet of cameras) keeps:
an explicit object, so two runs in one process or two tests never share one by
accident, and a second, different cap for the same key is an error instead of being
silently ignored.

How the rate is shared: send slots come at the budget's rate (a cap that halves on
a 429 and recovers additively, as TCP does). Each slot goes to one of the cameras
waiting for one: first a camera behind its ``min_fps``, else the one with the
smallest virtual start tag (start-time fair queuing: a camera's tag grows by
``1/weight`` per slot). A camera that waits for nothing takes nothing, so what it
leaves goes to the others (weighted max-min fairness). ``share(camera)`` is the same
division computed ahead, from each camera's recent demand, so that a live camera's
sampler skips frames up front instead of letting them go stale in the queue.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from streamer.errors import ConfigError

__all__ = [
    "BudgetRegistry",
    "BudgetStatus",
    "Budgets",
    "RateBudget",
    "RateGovernor",
    "fair_shares",
]

log = logging.getLogger(__name__)

_DEMAND_WINDOW_S = 3.0  # a camera's demand: its requests over this window
_WAIT_STEP_S = 0.1  # a waiting sender looks at its stop event at least this often


class RateBudget(Protocol):
    """Requests per second for one API key at one host. Thread-safe; any thread."""

    @property
    def rate(self) -> float:
        """The requests/s granted now (below the cap after 429s)."""
        ...

    def join(self, camera: str, *, weight: float = 1.0, min_fps: float = 0.0) -> None:
        """``camera`` will send with this budget, with this weight and floor."""
        ...

    def leave(self, camera: str) -> None:
        """``camera`` stopped: its share goes back to the others."""
        ...

    def share(self, camera: str) -> float:
        """The requests/s ``camera`` may count on now."""
        ...

    def reserve(
        self,
        deadline: float | None = None,
        *,
        camera: str = "",
        abandon: threading.Event | None = None,
    ) -> float | None:
        """Wait for ``camera``'s next send slot and return its time; ``None`` if it
        cannot come before ``deadline`` (monotonic) or ``abandon`` is set."""
        ...

    def on_rate_limited(self, retry_after: float | None, *, camera: str = "") -> None:
        """A 429 reached ``camera``'s request: shrink, and pause for ``retry_after``."""
        ...

    def tokens_left(self) -> float:
        """Sends that could go now without waiting."""
        ...

    def calls_per_minute(self) -> int:
        """Slots granted in the last minute."""
        ...

    def status(self) -> BudgetStatus:
        """A snapshot for stats."""
        ...


class BudgetRegistry(Protocol):
    """Where a fleet gets each API key's budget: ``Budgets`` in one process,
    ``streamer.leases.LeasedBudgets`` across processes and machines."""

    def for_key(self, key_fingerprint: str, host: str, cap: float) -> RateBudget:
        """The budget of this key at this host; ``ConfigError`` if it has another cap."""
        ...

    def items(self) -> list[tuple[str, RateBudget]]:
        """(host, budget) pairs, for stats (the key never shown)."""
        ...


def fair_shares(
    rate: float,
    demands: dict[str, float],
    weights: dict[str, float],
    floors: dict[str, float],
) -> dict[str, float]:
    """Weighted max-min fair division of ``rate``: each camera gets
    ``max(floor, min(demand, weight * level))`` with the one level that spends the
    rate (or every demand met). Floors first: when they alone exceed the rate, they
    are scaled down together."""
    names = list(demands)
    if not names:
        return {}
    floor = {n: min(floors.get(n, 0.0), demands[n]) for n in names}
    floor_total = sum(floor.values())
    if floor_total >= rate:
        scale = rate / floor_total if floor_total else 0.0
        return {n: floor[n] * scale for n in names}

    def spent(level: float) -> float:
        return sum(max(floor[n], min(demands[n], weights.get(n, 1.0) * level)) for n in names)

    if all(math.isfinite(demands[n]) for n in names) and spent(math.inf) <= rate:
        return {n: max(floor[n], demands[n]) for n in names}
    low, high = 0.0, rate / min(weights.get(n, 1.0) for n in names)
    for _ in range(60):
        middle = (low + high) / 2
        if spent(middle) > rate:
            high = middle
        else:
            low = middle
    return {n: max(floor[n], min(demands[n], weights.get(n, 1.0) * low)) for n in names}


@dataclass(frozen=True)
class BudgetStatus:
    """A snapshot for stats: the budget and each camera's part of it."""

    cap: float
    rate: float
    calls_per_minute: int
    shares: dict[str, float]  # requests/s each camera may count on now
    granted: dict[str, int]  # slots granted per camera since it joined
    waiting: dict[str, int]  # requests waiting for a slot now
    tokens: float = 0.0  # sends that could go now without waiting


@dataclass(eq=False)
class _Ticket:
    camera: str
    granted_at: float | None = None


@dataclass(eq=False)
class _Camera:
    weight: float = 1.0
    min_fps: float = 0.0
    finish: float = 0.0  # virtual time its next slot may start at
    last_grant: float = -math.inf
    floor_due: float = -math.inf  # when its next min_fps slot is due, on a steady schedule
    granted: int = 0
    waiting: collections.deque[_Ticket] = field(default_factory=collections.deque)
    arrivals: collections.deque[float] = field(default_factory=collections.deque)
    joined_at: float = 0.0


class RateGovernor:
    """The local ``RateBudget``: a requests-per-second cap that halves on 429 and
    recovers additively (AIMD), its slots shared by the cameras waiting for them.

    Every camera that sends with one API key to one host must share one (see
    ``Budgets``), since the API's limit is per key, not per camera.

    The core is clock-driven and does not block (``request``, ``grant_due``,
    ``cancel``), so fairness is tested deterministically; ``reserve`` waits on it.
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
        self._granted = threading.Condition(self._lock)
        now = clock()
        self._next_slot = now
        self._updated = now
        self._last_cut = -1e9
        self._paused_until = now
        self._virtual = 0.0  # start tag of the last slot granted
        self._cameras: dict[str, _Camera] = {}
        self._calls: collections.deque[float] = collections.deque()
        self._shares: tuple[float, dict[str, float]] | None = None

    # -- cameras ------------------------------------------------------------------------------

    def join(self, camera: str, *, weight: float = 1.0, min_fps: float = 0.0) -> None:
        if not (weight > 0 and math.isfinite(weight)):
            raise ConfigError(f"weight must be a positive number, got {weight}")
        if not (min_fps >= 0 and math.isfinite(min_fps)):
            raise ConfigError(f"min_fps must be >= 0, got {min_fps}")
        with self._lock:
            state = self._camera(camera)
            state.weight, state.min_fps = weight, min_fps
            self._shares = None

    def leave(self, camera: str) -> None:
        with self._lock:
            self._cameras.pop(camera, None)  # its waiting senders see it gone and give up
            self._shares = None
            self._granted.notify_all()

    def _camera(self, camera: str) -> _Camera:
        state = self._cameras.get(camera)
        if state is None:
            now = self._clock()
            state = self._cameras[camera] = _Camera(finish=self._virtual, joined_at=now)
        return state

    # -- the rate -----------------------------------------------------------------------------

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
            return self._tokens(self._clock())

    def _tokens(self, now: float) -> float:
        free = max(self._next_slot, self._paused_until) <= now
        return 1.0 if free and not any(c.waiting for c in self._cameras.values()) else 0.0

    def on_rate_limited(self, retry_after: float | None, *, camera: str = "") -> None:
        """A 429: halve the rate (once per second, however many answers say so) and pause."""
        with self._lock:
            now = self._clock()
            self._recover(now)
            if now - self._last_cut >= 1.0:
                self._rate = max(self.floor, self._rate / 2)
                self._last_cut = now
                self._shares = None
                log.warning("429 from the API: send rate cut to %.1f/s", self._rate)
            if retry_after:
                self._paused_until = max(self._paused_until, now + retry_after)

    # -- the non-blocking core ----------------------------------------------------------------

    def request(self, camera: str = "") -> _Ticket:
        """Queue a request for a slot; ``grant_due`` grants it in fair order."""
        with self._lock:
            now = self._clock()
            state = self._camera(camera)
            state.arrivals.append(now)
            while state.arrivals[0] < now - _DEMAND_WINDOW_S:
                state.arrivals.popleft()
            ticket = _Ticket(camera)
            state.waiting.append(ticket)
            return ticket

    def cancel(self, ticket: _Ticket) -> None:
        with self._lock:
            state = self._cameras.get(ticket.camera)
            if state is not None and ticket in state.waiting:
                state.waiting.remove(ticket)

    def grant_due(self) -> float:
        """Grant every slot that is due now; seconds until the next one could be."""
        with self._lock:
            return self._grant_due(self._clock())

    def _grant_due(self, now: float) -> float:
        self._recover(now)
        granted = False
        while True:
            due = max(self._next_slot, self._paused_until)
            if due > now:
                break
            chosen = self._pick(now)
            if chosen is None:
                break
            state = self._cameras[chosen]
            ticket = state.waiting.popleft()
            start = max(self._virtual, state.finish)
            state.finish = start + 1 / state.weight
            self._virtual = start
            state.last_grant = now
            if state.min_fps > 0:
                gap = 1 / state.min_fps
                state.floor_due = max(state.floor_due, now - gap) + gap
            state.granted += 1
            ticket.granted_at = due
            # a wake-up a little late does not lose the slot: catch up half a slot at most
            self._next_slot = max(due, now - 0.5 / self._rate) + 1 / self._rate
            self._trim(now)
            self._calls.append(now)
            granted = True
        if granted:
            self._granted.notify_all()
        return max(0.0, max(self._next_slot, self._paused_until) - now)

    def _pick(self, now: float) -> str | None:
        """The camera the next slot goes to: one behind its ``min_fps`` first (the most
        overdue), else the smallest virtual start tag (ties: the longest unserved)."""
        waiting = [(name, c) for name, c in self._cameras.items() if c.waiting]
        if not waiting:
            return None
        behind = [
            (now - c.floor_due, name) for name, c in waiting if c.min_fps > 0 and now >= c.floor_due
        ]
        if behind:
            return max(behind)[1]
        return min(
            waiting,
            key=lambda item: (max(self._virtual, item[1].finish), item[1].last_grant),
        )[0]

    # -- blocking ---------------------------------------------------------------------------------

    def reserve(
        self,
        deadline: float | None = None,
        *,
        camera: str = "",
        abandon: threading.Event | None = None,
    ) -> float | None:
        ticket = self.request(camera)
        with self._lock:
            while True:
                now = self._clock()
                wait = self._grant_due(now)
                if ticket.granted_at is not None:
                    return ticket.granted_at
                state = self._cameras.get(camera)
                if state is None or ticket not in state.waiting:
                    return None  # the camera left
                if (deadline is not None and now >= deadline) or (
                    abandon is not None and abandon.is_set()
                ):
                    state.waiting.remove(ticket)
                    return None
                if deadline is not None:
                    wait = min(wait, deadline - now)
                # a slot that is due but went to another camera: wait for the next grant
                self._granted.wait(min(max(wait, 0.001), _WAIT_STEP_S))

    # -- shares -------------------------------------------------------------------------------

    def share(self, camera: str) -> float:
        with self._lock:
            now = self._clock()
            if self._shares is None or now - self._shares[0] > 0.25:
                self._shares = (now, self._fair_shares(now))
            shares = self._shares[1]
            return shares.get(camera, self._rate)

    def _fair_shares(self, now: float) -> dict[str, float]:
        self._recover(now)
        demands: dict[str, float] = {}
        for name, state in self._cameras.items():
            while state.arrivals and state.arrivals[0] < now - _DEMAND_WINDOW_S:
                state.arrivals.popleft()
            age = min(_DEMAND_WINDOW_S, max(0.5, now - state.joined_at))
            wanted = len(state.arrivals) / age
            # room to grow: a camera held at its share asks for more than it gets, so a
            # share others leave unused flows to it within a few seconds; one asking for
            # nothing keeps only its floor
            active = wanted > 0 or state.waiting
            demands[name] = max(state.min_fps, 1.5 * wanted + 1.0 if active else 0.0)
        return fair_shares(
            self._rate,
            demands,
            {n: s.weight for n, s in self._cameras.items()},
            {n: s.min_fps for n, s in self._cameras.items()},
        )

    def status(self) -> BudgetStatus:
        with self._lock:
            now = self._clock()
            self._trim(now)
            shares = self._fair_shares(now)
            return BudgetStatus(
                cap=self.cap,
                rate=self._rate,
                calls_per_minute=len(self._calls),
                shares=shares,
                granted={n: s.granted for n, s in self._cameras.items()},
                waiting={n: len(s.waiting) for n, s in self._cameras.items()},
                tokens=self._tokens(now),
            )


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

    def items(self) -> list[tuple[str, RateBudget]]:
        """(host, budget) pairs, for stats (the key never shown)."""
        with self._lock:
            return [(host, budget) for (_, host), budget in self._budgets.items()]

    def __len__(self) -> int:
        return len(self._budgets)
