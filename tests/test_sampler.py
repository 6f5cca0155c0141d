"""The sampler's decisions under a fake clock."""

from __future__ import annotations

import numpy as np
import pytest

from streamer.errors import ConfigError
from streamer.frames import Frame
from streamer.sampler import Sampler, SamplerConfig, SkipCause
from streamer.synth import Scene


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


BLANK = np.zeros((36, 64, 3), np.uint8)


def _frame(index: int, image: np.ndarray = BLANK) -> Frame:
    return Frame(image=image, index=index, captured_at=0.0)


def test_live_sends_when_a_slot_is_free_within_max_fps() -> None:
    clock = Clock()
    sampler = Sampler(SamplerConfig(max_fps=10), clock=clock)
    sent = []
    for i in range(60):  # 2 s of 30 fps
        clock.now = i / 30
        if sampler.decide(_frame(i), free_slots=8, slots=8).send:
            sent.append(i)
    assert len(sent) == 20  # 10 per second
    assert sampler.skipped[SkipCause.PACING] == 40
    assert sent[:4] == [0, 3, 6, 9]


def test_live_skips_when_busy() -> None:
    sampler = Sampler(SamplerConfig(), clock=Clock())
    decision = sampler.decide(_frame(0), free_slots=0, slots=8)
    assert not decision.send
    assert decision.cause is SkipCause.BUSY
    assert sampler.skipped == {SkipCause.BUSY: 1}


def test_live_spreads_sends_over_the_latency() -> None:
    """8 slots, 400 ms round trip: one send every ~45 ms, not 8 at once."""
    clock = Clock()
    sampler = Sampler(SamplerConfig(), clock=clock)
    assert sampler.interval(slots=8, latency=0.4) == pytest.approx(0.045)
    sent = []
    for i in range(30):  # 1 s of 30 fps, plenty of free slots
        clock.now = i / 30
        if sampler.decide(_frame(i), free_slots=8, slots=8, latency=0.4).send:
            sent.append(clock.now)
    # on average one send per 45 ms (frames come every 33 ms, so gaps alternate)
    assert 20 <= len(sent) <= 23
    assert np.diff(sent).mean() >= 0.045 - 1e-9
    assert np.diff(sent).min() > 0.03


def test_pacing_keeps_the_rate_when_frames_do_not_divide_it() -> None:
    """25 fps capped at 10: 10 sends a second, not every 3rd frame (8.3/s)."""
    clock = Clock()
    sampler = Sampler(SamplerConfig(max_fps=10), clock=clock)
    sent = 0
    for i in range(250):
        clock.now = i / 25
        sent += sampler.decide(_frame(i), free_slots=8, slots=8).send
    assert sent in (100, 101)


def test_no_burst_after_an_idle_spell() -> None:
    clock = Clock()
    sampler = Sampler(SamplerConfig(max_fps=10), clock=clock)
    assert sampler.decide(_frame(0), free_slots=8, slots=8).send
    clock.now = 5.0  # busy for a long time
    assert sampler.decide(_frame(1), free_slots=8, slots=8).send
    clock.now = 5.04
    assert not sampler.decide(_frame(2), free_slots=8, slots=8).send


def test_live_honours_the_rate_cap() -> None:
    sampler = Sampler(SamplerConfig(max_fps=30), clock=Clock())
    assert sampler.interval(slots=8, latency=0.1, rate_cap=5) == pytest.approx(0.2)


def test_recorded_sends_every_kth() -> None:
    sampler = Sampler(SamplerConfig(live=False, stride=3), clock=Clock())
    sent = [i for i in range(10) if sampler.decide(_frame(i), free_slots=0, slots=8).send]
    assert sent == [0, 3, 6, 9]
    assert sampler.skipped[SkipCause.STRIDE] == 6


def test_recorded_default_sends_every_frame() -> None:
    sampler = Sampler(SamplerConfig(live=False), clock=Clock())
    assert all(sampler.decide(_frame(i), free_slots=1, slots=1).send for i in range(20))


def test_motion_gate_skips_still_frames_and_refreshes() -> None:
    clock = Clock()
    sampler = Sampler(SamplerConfig(motion_threshold=2.0, motion_refresh=1.0), clock=clock)
    scene = Scene(width=320, height=180, objects=3, seed=0)
    still = scene.render(0)
    assert sampler.decide(_frame(0, still), free_slots=8, slots=8).send
    clock.now = 0.2
    assert sampler.decide(_frame(1, still.copy()), free_slots=8, slots=8).cause is SkipCause.STILL
    clock.now = 0.4
    assert sampler.decide(_frame(2, scene.render(30)), free_slots=8, slots=8).send  # things moved
    clock.now = 1.5
    assert sampler.decide(_frame(3, scene.render(30)), free_slots=8, slots=8).send  # refresh
    assert sampler.skipped == {SkipCause.STILL: 1}


@pytest.mark.parametrize("config", [{"max_fps": 0}, {"stride": 0}, {"motion_threshold": 300}])
def test_bad_sampler_config(config: dict) -> None:
    with pytest.raises(ConfigError):
        SamplerConfig(**config)


def test_skip_counts_are_a_copy_safe_to_take_from_another_thread() -> None:
    sampler = Sampler(SamplerConfig(live=False, stride=2))
    for index in range(4):
        sampler.decide(_frame_for_counts(index), free_slots=1, slots=1)
    counts = sampler.skipped_counts()
    assert counts == {"stride": 2}
    sampler.decide(_frame_for_counts(5), free_slots=1, slots=1)
    assert counts == {"stride": 2}  # a snapshot, not the live counter
    assert sampler.skipped_counts() == {"stride": 3}


def _frame_for_counts(index: int) -> Frame:
    return Frame(image=np.zeros((8, 8, 3), np.uint8), index=index)
