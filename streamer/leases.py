"""One API budget across processes and machines: the rate is lent out in short leases.

::

    LeaseBook (one per API key and host: a Ray actor, or a manager in the batch's parent)
       ▲ lease(holder, weight, min_fps, demand) every ~term/3 ─▶ Lease(rate, seconds, paused)
       │ rate_limited(retry_after) on a 429, from any holder
    LeasedBudget (in each worker process: a RateBudget, what a camera's senders pace by)
       reserve() ─ local slots at the leased rate: a request costs no remote call

A lease is the right to send at ``rate`` requests/s for ``seconds``. The book never
lends more than its rate in all: a holder's new lease is its weighted max-min fair
share of the rate (``streamer.budget.fair_shares``, from the demands the holders
report) but no more than what the other holders' unexpired leases leave, so a share
moves from one holder to another within one term. A holder that dies simply stops
renewing: its lease runs out and its share goes back to the others; a book that is
restarted (its actor on another node) lends nothing for one term, since it does not
know the leases still out. A 429 from any holder halves the whole book's rate (once a
second) and pauses everyone for its Retry-After; the rate recovers additively, as the
local ``RateGovernor`` does. A holder's lease ends, by its own clock, no later than the
book's (it counts from before it asked), so the two never disagree in the unsafe
direction. A holder takes a send slot only when it is due (never books ahead), so a
cut lease slows its very next send. Holders pace independently: over any window the
API may see up to one request per holder above the rate (an API's token bucket with
a burst of at least the number of holders absorbs it).
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

from streamer.budget import BudgetStatus, RateBudget, fair_shares
from streamer.errors import ConfigError

__all__ = ["Lease", "LeaseBook", "LeasedBudget", "LeasedBudgets", "Lender", "SharedBook"]

log = logging.getLogger(__name__)

TERM_S = 1.0  # a lease's length: how long a dead holder's share stays lent
_DEMAND_WINDOW_S = 3.0
_WAIT_STEP_S = 0.1


@dataclass(frozen=True)
class Lease:
    rate: float  # requests/s the holder may send
    seconds: float  # for this long, from when it asked
    paused_for: float = 0.0  # send nothing for this long first (a Retry-After)


@dataclass
class _Holder:
    weight: float = 1.0
    min_fps: float = 0.0
    demand: float = 0.0
    rate: float = 0.0  # of its current lease
    expires: float = -math.inf
    granted: int = 0  # requests it reported sending


class LeaseBook:
    """The lender's side; not thread-safe by itself (an actor runs one call at a time;
    ``SharedBook`` adds a lock)."""

    def __init__(
        self,
        cap: float,
        *,
        term: float = TERM_S,
        floor: float = 0.5,
        recovery_per_s: float | None = None,
        restarted: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (cap > 0 and math.isfinite(cap)):
            raise ConfigError(f"a budget must be a positive rate, got {cap}")
        self.cap = cap
        self.term = term
        self.floor = min(floor, cap)
        self.recovery_per_s = recovery_per_s if recovery_per_s is not None else cap / 20
        self._clock = clock
        now = clock()
        self._rate = cap
        self._updated = now
        self._last_cut = -math.inf
        self._paused_until = now
        # a book restarted elsewhere does not know the leases still out: none for a term
        self._lend_from = now + term if restarted else now
        self._holders: dict[str, _Holder] = {}
        self._calls: collections.deque[tuple[float, int]] = collections.deque()

    def _recover(self, now: float) -> None:
        self._rate = min(self.cap, self._rate + self.recovery_per_s * (now - self._updated))
        self._updated = now

    def lease(
        self,
        holder: str,
        *,
        weight: float = 1.0,
        min_fps: float = 0.0,
        demand: float = math.inf,
        sent: int = 0,
    ) -> Lease:
        """``holder``'s next lease, replacing its last. ``demand``: requests/s it would
        send; ``sent``: requests sent since its last lease (for the stats)."""
        now = self._clock()
        self._recover(now)
        self._forget_gone(now)
        state = self._holders.setdefault(holder, _Holder())
        state.weight, state.min_fps, state.demand = weight, min_fps, demand
        state.granted += sent
        if sent:
            self._calls.append((now, sent))
        self._trim(now)
        if now < self._lend_from:
            state.rate, state.expires = 0.0, now + self.term
            return Lease(0.0, min(self.term, self._lend_from - now))
        fair = self._fair(now, holder).get(holder, 0.0)
        others = sum(
            h.rate for name, h in self._holders.items() if name != holder and h.expires > now
        )
        state.rate = max(0.0, min(fair, self._rate - others))
        state.expires = now + self.term
        return Lease(state.rate, self.term, max(0.0, self._paused_until - now))

    def release(self, holder: str) -> None:
        """``holder`` stopped and sends no more: its share goes back now."""
        self._holders.pop(holder, None)

    def rate_limited(self, retry_after: float | None) -> None:
        """A 429 reached a holder: halve (once a second) and pause for ``retry_after``."""
        now = self._clock()
        self._recover(now)
        if now - self._last_cut >= 1.0:
            self._rate = max(self.floor, self._rate / 2)
            self._last_cut = now
            log.warning("429 from the API: the shared rate cut to %.1f/s", self._rate)
        if retry_after:
            self._paused_until = max(self._paused_until, now + retry_after)

    def _forget_gone(self, now: float) -> None:
        """Holders that stopped renewing a term ago are gone (their lease long over)."""
        for name in [n for n, h in self._holders.items() if h.expires < now - self.term]:
            del self._holders[name]

    def _fair(self, now: float, asking: str) -> dict[str, float]:
        """The division among the holders with a lease out, and the one asking."""
        live = {n: h for n, h in self._holders.items() if h.expires > now or n == asking}
        return fair_shares(
            self._rate,
            {n: h.demand for n, h in live.items()},
            {n: h.weight for n, h in live.items()},
            {n: h.min_fps for n, h in live.items()},
        )

    def _trim(self, now: float) -> None:
        """A minute of sends kept: bounded however rarely the stats are read."""
        while self._calls and self._calls[0][0] < now - 60:
            self._calls.popleft()

    def status(self) -> BudgetStatus:
        now = self._clock()
        self._recover(now)
        self._trim(now)
        live = {n: h for n, h in self._holders.items() if h.expires > now}
        return BudgetStatus(
            cap=self.cap,
            rate=self._rate,
            calls_per_minute=sum(count for _, count in self._calls),
            shares={n: h.rate for n, h in live.items()},
            granted={n: h.granted for n, h in self._holders.items()},
            waiting={},
            tokens=max(0.0, self._rate - sum(h.rate for h in live.values())),
        )


class Lender(Protocol):
    """Where a ``LeasedBudget`` gets its leases: a book over some transport (a Ray
    actor, a multiprocessing manager). Each call may raise on a transport failure."""

    def lease(
        self, holder: str, *, weight: float, min_fps: float, demand: float, sent: int
    ) -> Lease: ...

    def release(self, holder: str) -> None: ...

    def rate_limited(self, retry_after: float | None) -> None: ...

    def status(self) -> BudgetStatus: ...


class SharedBook:
    """A ``LeaseBook`` behind a lock: a ``Lender`` for threads of one process, and what
    the batch's parent serves to its worker processes."""

    def __init__(self, cap: float, **options: object) -> None:
        self._book = LeaseBook(cap, **options)  # type: ignore[arg-type]
        self._lock = threading.Lock()

    def lease(
        self, holder: str, *, weight: float, min_fps: float, demand: float, sent: int
    ) -> Lease:
        with self._lock:
            return self._book.lease(
                holder, weight=weight, min_fps=min_fps, demand=demand, sent=sent
            )

    def release(self, holder: str) -> None:
        with self._lock:
            self._book.release(holder)

    def rate_limited(self, retry_after: float | None) -> None:
        with self._lock:
            self._book.rate_limited(retry_after)

    def status(self) -> BudgetStatus:
        with self._lock:
            return self._book.status()


@dataclass
class _Pacer:
    """One camera's side of its lease: local send slots at the leased rate."""

    holder: str
    weight: float
    min_fps: float
    rate: float = 0.0
    valid_until: float = -math.inf
    paused_until: float = -math.inf
    next_slot: float = -math.inf
    sent: int = 0  # since the last lease
    sent_total: int = 0
    waiting: int = 0
    asks: collections.deque[float] = field(default_factory=collections.deque)
    joined_at: float = field(default_factory=time.monotonic)

    def demand(self, now: float) -> float:
        """Like ``RateGovernor``'s: what it asked for lately, with room to grow."""
        while self.asks and self.asks[0] < now - _DEMAND_WINDOW_S:
            self.asks.popleft()
        age = min(_DEMAND_WINDOW_S, max(0.5, now - self.joined_at))
        wanted = len(self.asks) / age
        active = wanted > 0 or self.waiting > 0
        return max(self.min_fps, 1.5 * wanted + 1.0 if active else 0.0)


class LeasedBudget:
    """A ``RateBudget`` whose rate is leased from a ``Lender``: each camera paces its
    requests locally at its lease's rate; a thread renews the leases every third of a
    term. Without a valid lease (the lender unreachable), nothing is sent."""

    def __init__(
        self,
        lender: Lender,
        cap: float,
        *,
        holder_prefix: str,
        term: float = TERM_S,
        call_timeout: float = 2.0,
    ) -> None:
        self.cap = cap
        self._lender = lender
        self._prefix = holder_prefix
        self._term = term
        self._call_timeout = call_timeout
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._pacers: dict[str, _Pacer] = {}
        self._calls: collections.deque[float] = collections.deque()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._failures = 0

    # -- RateBudget ----------------------------------------------------------------------------

    @property
    def rate(self) -> float:
        with self._lock:
            return sum(p.rate for p in self._pacers.values())

    def join(self, camera: str, *, weight: float = 1.0, min_fps: float = 0.0) -> None:
        if not (weight > 0 and math.isfinite(weight)):
            raise ConfigError(f"weight must be a positive number, got {weight}")
        with self._lock:
            pacer = self._pacers.get(camera)
            if pacer is None:
                pacer = self._pacers[camera] = _Pacer(f"{self._prefix}/{camera}", weight, min_fps)
            pacer.weight, pacer.min_fps = weight, min_fps
        self._renew(camera)  # a first lease now, so that share() means something
        with self._lock:
            if self._renewer is None:
                self._renewer = threading.Thread(
                    target=self._renew_loop, name=f"streamer-lease-{self._prefix}", daemon=True
                )
                self._renewer.start()

    def leave(self, camera: str) -> None:
        with self._lock:
            pacer = self._pacers.pop(camera, None)
            self._changed.notify_all()
        if pacer is not None:
            try:
                self._lender.release(pacer.holder)
            except Exception as exc:  # the lease runs out by itself
                log.debug("lease release failed: %s", exc)

    def share(self, camera: str) -> float:
        with self._lock:
            pacer = self._pacers.get(camera)
            return pacer.rate if pacer is not None else 0.0

    def reserve(
        self,
        deadline: float | None = None,
        *,
        camera: str = "",
        abandon: threading.Event | None = None,
    ) -> float | None:
        with self._lock:
            pacer = self._pacers.get(camera)
            if pacer is None:
                return None
            pacer.asks.append(time.monotonic())
            pacer.waiting += 1
            try:
                while True:
                    now = time.monotonic()
                    if self._pacers.get(camera) is not pacer:
                        return None  # the camera left
                    if (deadline is not None and now >= deadline) or (
                        abandon is not None and abandon.is_set()
                    ):
                        return None
                    slot = max(pacer.next_slot, pacer.paused_until, now)
                    usable = pacer.rate > 0 and slot < pacer.valid_until
                    if usable and slot <= now:
                        # a slot is taken only when due, never booked ahead: a lease cut
                        # to a lower rate slows the very next send
                        pacer.next_slot = max(slot, now - 0.5 / pacer.rate) + 1 / pacer.rate
                        pacer.sent += 1
                        pacer.sent_total += 1
                        self._calls.append(now)
                        while self._calls[0] < now - 60:  # a minute kept, for the stats
                            self._calls.popleft()
                        self._changed.notify_all()  # the others look at the next slot
                        return now
                    # no rate, no valid lease, or not due yet: wait for it, a renewal or
                    # the deadline
                    wait = _WAIT_STEP_S
                    if usable:
                        wait = min(wait, slot - now)
                    if deadline is not None:
                        wait = min(wait, deadline - now)
                    self._changed.wait(max(0.001, wait))
            finally:
                pacer.waiting -= 1

    def on_rate_limited(self, retry_after: float | None, *, camera: str = "") -> None:
        with self._lock:
            pacer = self._pacers.get(camera)
            if pacer is not None:  # back off here at once; the lender tells the others
                pacer.rate /= 2
                if retry_after:
                    pacer.paused_until = max(pacer.paused_until, time.monotonic() + retry_after)
        try:
            self._lender.rate_limited(retry_after)
        except Exception as exc:
            log.warning("could not tell the shared budget about a 429: %s", exc)

    def tokens_left(self) -> float:
        with self._lock:
            now = time.monotonic()
            free = any(
                p.rate > 0 and max(p.next_slot, p.paused_until) <= now < p.valid_until
                for p in self._pacers.values()
            )
            return 1.0 if free else 0.0

    def calls_per_minute(self) -> int:
        with self._lock:
            now = time.monotonic()
            while self._calls and self._calls[0] < now - 60:
                self._calls.popleft()
            return len(self._calls)

    def status(self) -> BudgetStatus:
        """The whole book's (every holder's, cluster-wide) when the lender answers."""
        try:
            return self._lender.status()
        except Exception as exc:
            log.debug("budget status: %s", exc)
            with self._lock:
                return BudgetStatus(
                    cap=self.cap,
                    rate=sum(p.rate for p in self._pacers.values()),
                    calls_per_minute=len(self._calls),
                    shares={n: p.rate for n, p in self._pacers.items()},
                    granted={n: p.sent_total for n, p in self._pacers.items()},
                    waiting={n: p.waiting for n, p in self._pacers.items()},
                )

    def close(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(self._call_timeout + 1)
        for camera in list(self._pacers):
            self.leave(camera)

    # -- renewals ------------------------------------------------------------------------------

    def _renew_loop(self) -> None:
        while not self._stop.wait(self._term / 3):
            with self._lock:
                cameras = list(self._pacers)
            for camera in cameras:
                self._renew(camera)

    def _renew(self, camera: str) -> None:
        with self._lock:
            pacer = self._pacers.get(camera)
            if pacer is None:
                return
            asked_at = time.monotonic()
            demand, sent = pacer.demand(asked_at), pacer.sent
            holder, weight, min_fps = pacer.holder, pacer.weight, pacer.min_fps
        try:
            lease = self._lender.lease(
                holder, weight=weight, min_fps=min_fps, demand=demand, sent=sent
            )
        except Exception as exc:  # unreachable: the current lease runs out, then nothing
            self._failures += 1
            if self._failures in (1, 10) or self._failures % 100 == 0:
                log.warning("the shared budget does not answer (%s): sending stops when the "
                            "lease runs out", type(exc).__name__)  # fmt: skip
            return
        self._failures = 0
        with self._lock:
            if self._pacers.get(camera) is not pacer:
                return
            pacer.sent -= sent
            pacer.rate = lease.rate
            # counted from before the call: never later than the lender's own end
            pacer.valid_until = asked_at + lease.seconds
            if lease.paused_for:
                pacer.paused_until = max(pacer.paused_until, asked_at + lease.paused_for)
            self._changed.notify_all()


class LeasedBudgets:
    """A fleet's ``BudgetRegistry`` on one lender: the budget of one API key at one host,
    shared with every other process that leases from the same lender."""

    def __init__(self, lender: Lender, cap: float, *, holder_prefix: str) -> None:
        self.cap = cap
        self._lender = lender
        self._prefix = holder_prefix
        self._lock = threading.Lock()
        self._budget: LeasedBudget | None = None
        self._at: tuple[str, str] | None = None

    def for_key(self, key_fingerprint: str, host: str, cap: float) -> LeasedBudget:
        with self._lock:
            if cap != self.cap:
                raise ConfigError(
                    f"the shared budget is {self.cap:g} requests/s; a camera cannot ask "
                    f"for {cap:g}/s of its own"
                )
            if self._budget is None:
                self._budget = LeasedBudget(self._lender, cap, holder_prefix=self._prefix)
                self._at = (key_fingerprint, host)
            elif self._at != (key_fingerprint, host):
                raise ConfigError("the shared budget serves one API key at one host")
            return self._budget

    def items(self) -> list[tuple[str, RateBudget]]:
        with self._lock:
            if self._budget is None or self._at is None:
                return []
            return [(self._at[1], self._budget)]

    def close(self) -> None:
        with self._lock:
            budget, self._budget = self._budget, None
        if budget is not None:
            budget.close()
