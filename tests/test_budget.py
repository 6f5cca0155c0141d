"""The shared budget's fairness, deterministic: an injected clock drives the
non-blocking core (request, grant_due) the way waiting sender threads would."""

from __future__ import annotations

import math
import threading
import time

import pytest

from streamer.budget import RateGovernor, _Ticket, fair_shares


def jain(values: list[float]) -> float:
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values))


def simulate(
    governor: RateGovernor,
    now: list[float],
    demand: dict[str, float | None],
    seconds: float,
    *,
    step: float = 0.005,
    in_flight: int = 2,
) -> dict[str, int]:
    """Cameras asking for slots: ``None`` always has ``in_flight`` requests waiting
    (backlogged); a number asks at most that many per second. Slots granted each."""
    waiting: dict[str, list[_Ticket]] = {name: [] for name in demand}
    asked_at: dict[str, float] = dict.fromkeys(demand, -math.inf)
    granted = dict.fromkeys(demand, 0)
    start = now[0]
    while now[0] < start + seconds:
        for name, fps in demand.items():
            if fps is None:
                while len(waiting[name]) < in_flight:
                    waiting[name].append(governor.request(name))
            elif now[0] - asked_at[name] >= 1 / fps and not waiting[name]:
                waiting[name].append(governor.request(name))
                asked_at[name] = now[0]
        governor.grant_due()
        for name, tickets in waiting.items():
            done = [t for t in tickets if t.granted_at is not None]
            granted[name] += len(done)
            waiting[name] = [t for t in tickets if t.granted_at is None]
        now[0] += step
    return granted


def test_equal_cameras_share_the_rate_equally_and_spend_all_of_it() -> None:
    now = [0.0]
    governor = RateGovernor(20, clock=lambda: now[0])
    cameras = {f"cam{i}": None for i in range(32)}
    for name in cameras:
        governor.join(name)
    granted = simulate(governor, now, cameras, 60)
    assert sum(granted.values()) / 60 >= 0.95 * 20
    assert jain([float(v) for v in granted.values()]) >= 0.999


def test_weights_divide_the_rate_in_their_ratio() -> None:
    now = [0.0]
    governor = RateGovernor(21, clock=lambda: now[0])
    for name, weight in (("one", 1.0), ("two", 2.0), ("four", 4.0)):
        governor.join(name, weight=weight)
    granted = simulate(governor, now, dict.fromkeys(("one", "two", "four")), 60)
    assert granted["two"] / granted["one"] == pytest.approx(2, rel=0.05)
    assert granted["four"] / granted["one"] == pytest.approx(4, rel=0.05)
    shares = governor.status().shares
    assert shares["two"] / shares["one"] == pytest.approx(2, rel=0.05)


def test_a_camera_that_needs_less_leaves_its_share_to_the_others() -> None:
    now = [0.0]
    governor = RateGovernor(20, clock=lambda: now[0])
    for name in ("slow", "a", "b"):
        governor.join(name)
    granted = simulate(governor, now, {"slow": 2.0, "a": None, "b": None}, 30)
    assert granted["slow"] / 30 == pytest.approx(2, rel=0.05)  # all it asked for
    assert granted["a"] / 30 == pytest.approx(9, rel=0.05)  # (20 - 2) / 2 each
    assert granted["b"] / 30 == pytest.approx(9, rel=0.05)
    # the samplers' view agrees: the slow camera's share is near its demand, not a third
    shares = governor.status().shares
    assert shares["slow"] < 5
    assert shares["a"] == pytest.approx(shares["b"])


def test_min_fps_is_served_first_even_against_heavy_weights() -> None:
    now = [0.0]
    governor = RateGovernor(10, clock=lambda: now[0])
    governor.join("small", weight=1, min_fps=3)
    governor.join("big", weight=100)
    granted = simulate(governor, now, {"small": None, "big": None}, 30)
    assert granted["small"] / 30 >= 3 * 0.95
    assert granted["big"] / 30 >= 6.5  # and the rest goes by weight


def test_a_429_shrinks_every_share() -> None:
    now = [0.0]
    governor = RateGovernor(20, clock=lambda: now[0])
    for name in ("a", "b"):
        governor.join(name)
    simulate(governor, now, {"a": None, "b": None}, 5)
    before = governor.status().shares
    governor.on_rate_limited(None, camera="a")
    after = governor.status().shares
    assert after["a"] == pytest.approx(before["a"] / 2, rel=0.1)
    assert after["b"] == pytest.approx(before["b"] / 2, rel=0.1)


def test_a_camera_that_leaves_gives_its_share_back_and_its_waiters_return() -> None:
    governor = RateGovernor(1)
    governor.join("a")
    governor.join("b")
    assert governor.reserve(None, camera="a") is not None
    answers: list[float | None] = []
    waiter = threading.Thread(target=lambda: answers.append(governor.reserve(None, camera="a")))
    waiter.start()
    deadline = time.monotonic() + 5
    while not governor.status().waiting.get("a") and time.monotonic() < deadline:
        time.sleep(0.001)
    governor.leave("a")
    waiter.join(timeout=2)
    assert not waiter.is_alive()
    assert answers == [None]
    assert "a" not in governor.status().shares


@pytest.mark.parametrize(
    ("rate", "demands", "weights", "floors", "expected"),
    [
        (20, {"a": math.inf, "b": math.inf}, {}, {}, {"a": 10, "b": 10}),
        (20, {"a": 2, "b": math.inf}, {}, {}, {"a": 2, "b": 18}),
        (20, {"a": 5, "b": 5}, {}, {}, {"a": 5, "b": 5}),  # every demand met
        (30, {"a": math.inf, "b": math.inf}, {"a": 1, "b": 2}, {}, {"a": 10, "b": 20}),
        (10, {"a": math.inf, "b": math.inf}, {"b": 9}, {"a": 4}, {"a": 4, "b": 6}),
        (4, {"a": math.inf, "b": math.inf}, {}, {"a": 4, "b": 4}, {"a": 2, "b": 2}),
    ],
)
def test_fair_shares(
    rate: float,
    demands: dict[str, float],
    weights: dict[str, float],
    floors: dict[str, float],
    expected: dict[str, float],
) -> None:
    shares = fair_shares(rate, demands, weights, floors)
    assert shares == pytest.approx(expected, rel=1e-6)
