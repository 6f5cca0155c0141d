"""The leased budget: a book that lends its rate in short leases (clock injected, so
exact), and the local pacing of a ``LeasedBudget`` against it."""

from __future__ import annotations

import random
import threading
import time

import pytest

from streamer.errors import ConfigError
from streamer.leases import LeaseBook, LeasedBudget, SharedBook


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _lent(book: LeaseBook, clock: Clock) -> float:
    """What the book has lent and is still out, by its own records."""
    return sum(h.rate for h in book._holders.values() if h.expires > clock.now)


def test_the_book_never_lends_more_than_its_rate() -> None:
    clock = Clock()
    book = LeaseBook(10, term=1.0, clock=clock)
    rng = random.Random(7)
    holders = [f"h{i}" for i in range(6)]
    cut_at = -1e9
    for _ in range(2000):
        clock.now += rng.uniform(0, 0.2)
        name = rng.choice(holders)
        if rng.random() < 0.05:
            book.release(name)
            continue
        if rng.random() < 0.02:
            book.rate_limited(None)
            cut_at = clock.now
        book.lease(name, weight=rng.choice([1, 2]), demand=rng.choice([1.0, 5.0, 50.0]))
        # leases lent before a 429 run out within a term; from then on, never over
        if clock.now - cut_at > 1.0:
            assert _lent(book, clock) <= book._rate + 1e-9


def test_shares_converge_to_the_weighted_fair_division() -> None:
    clock = Clock()
    book = LeaseBook(10, term=1.0, clock=clock)
    weights = {"a": 1.0, "b": 1.0, "c": 2.0}
    leases = {}
    for _ in range(10):  # renewals every third of a term
        for name, weight in weights.items():
            leases[name] = book.lease(name, weight=weight, demand=100.0)
        clock.now += 1 / 3
    assert leases["a"].rate == pytest.approx(2.5)
    assert leases["b"].rate == pytest.approx(2.5)
    assert leases["c"].rate == pytest.approx(5.0)
    # a holder asking for little keeps little; the rest goes to the others
    for _ in range(10):
        leases["a"] = book.lease("a", weight=1, demand=1.0)
        leases["b"] = book.lease("b", weight=1, demand=100.0)
        leases["c"] = book.lease("c", weight=2, demand=100.0)
        clock.now += 1 / 3
    assert leases["a"].rate == pytest.approx(1.0)
    assert leases["b"].rate == pytest.approx(3.0)
    assert leases["c"].rate == pytest.approx(6.0)


def test_a_holder_that_stops_renewing_gives_its_share_back_after_its_lease() -> None:
    clock = Clock()
    book = LeaseBook(10, term=1.0, clock=clock)
    for _ in range(6):
        book.lease("alive", demand=100.0)
        book.lease("dies", demand=100.0)
        clock.now += 1 / 3
    assert book.lease("alive", demand=100.0).rate == pytest.approx(5.0)
    # "dies" stops renewing: its 5/s stay lent until its lease ends, never sooner
    clock.now += 0.5
    assert book.lease("alive", demand=100.0).rate == pytest.approx(5.0)
    clock.now += 0.6  # past its lease
    assert book.lease("alive", demand=100.0).rate == pytest.approx(10.0)


def test_a_429_halves_the_whole_rate_and_pauses_every_holder() -> None:
    clock = Clock()
    book = LeaseBook(10, term=1.0, clock=clock)
    book.lease("a", demand=100.0)
    book.rate_limited(2.0)
    book.rate_limited(2.0)  # the same second: one cut
    clock.now += 1.01  # a's old lease over
    lease = book.lease("b", demand=100.0)
    assert book.status().rate == pytest.approx(5.0 + 10 / 20 * 1.01)  # recovering
    assert lease.paused_for == pytest.approx(0.99)
    clock.now += 20
    assert book.status().rate == 10


def test_a_restarted_book_lends_nothing_for_one_term() -> None:
    clock = Clock()
    book = LeaseBook(10, term=1.0, restarted=True, clock=clock)
    assert book.lease("a", demand=100.0).rate == 0
    clock.now += 1.0
    assert book.lease("a", demand=100.0).rate == 10


def test_bad_caps_are_refused() -> None:
    with pytest.raises(ConfigError):
        LeaseBook(0)


def test_leased_budgets_in_two_processes_share_one_rate() -> None:
    """Two LeasedBudgets (as two worker processes would hold) on one book: neither
    sends without a lease, and together they never exceed the book's rate."""
    book = SharedBook(20.0, term=0.6)
    budgets = [LeasedBudget(book, 20.0, holder_prefix=f"p{i}", term=0.6) for i in range(2)]
    sent: dict[str, list[float]] = {"p0": [], "p1": []}
    stop = threading.Event()

    def sender(budget: LeasedBudget, name: str) -> None:
        while not stop.is_set():
            slot = budget.reserve(time.monotonic() + 1.0, camera="cam", abandon=stop)
            if slot is not None:
                time.sleep(max(0.0, slot - time.monotonic()))
                sent[name].append(time.monotonic())

    try:
        for budget in budgets:
            budget.join("cam", weight=1.0)
        threads = [
            threading.Thread(target=sender, args=(b, f"p{i}"), name=f"sender-{i}-{j}")
            for i, b in enumerate(budgets)
            for j in range(3)
        ]
        for thread in threads:
            thread.start()
        started = time.monotonic()
        deadline = started + 30
        while len(sent["p0"]) + len(sent["p1"]) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        for thread in threads:
            thread.join(5)
        elapsed = time.monotonic() - started
    finally:
        for budget in budgets:
            budget.close()
    total = len(sent["p0"]) + len(sent["p1"])
    assert total >= 60
    # never above the rate (one slot of slack per holder for the first lease's start)
    assert total <= 20 * elapsed + 2
    assert len(sent["p0"]) >= 10
    assert len(sent["p1"]) >= 10
    assert book.status().calls_per_minute <= total
