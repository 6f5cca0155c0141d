"""Capture from files and synthetic sources: exactly-once, freshness, pacing, bad input."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from streamer.capture import CaptureConfig, CaptureThread, LatestFrameSlot, SourceState, StateEvent
from streamer.errors import ConfigError, SourceError
from streamer.frames import Frame
from streamer.sources import ImageFolderSource, PyAVSource, SyntheticSource, open_source
from streamer.synth import Scene


@pytest.fixture(scope="module")
def clip(make_clip: Callable[..., Path]) -> Path:
    return make_clip(3, width=320, height=240, objects=3, seed=1)


def _decoded_count(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_recorded_mode_delivers_every_frame_exactly_once(clip: Path) -> None:
    states: list[SourceState] = []
    capture = CaptureThread(
        open_source(str(clip)),
        CaptureConfig(live=False, queue_size=4),
        on_state=lambda e: states.append(e.state),
    )
    indices = []
    with capture:
        while not capture.finished:
            frame = capture.read(timeout=0.5)
            if frame is not None:
                indices.append(frame.index)
                time.sleep(0.002)  # a reader slower than the decoder: backpressure, no loss
    assert indices == list(range(_decoded_count(clip)))
    assert len(indices) == 90
    assert states == [SourceState.CONNECTING, SourceState.STREAMING, SourceState.ENDED]
    metrics = capture.metrics()
    assert metrics.frames == metrics.delivered == 90
    assert metrics.dropped == 0
    assert metrics.declared_fps == pytest.approx(30)
    assert (metrics.width, metrics.height) == (320, 240)


def test_frames_carry_pts_and_times(clip: Path) -> None:
    with CaptureThread(open_source(str(clip)), CaptureConfig(live=False)) as capture:
        frames = [capture.read(timeout=2) for _ in range(5)]
    for i, frame in enumerate(frames):
        assert frame is not None
        assert frame.index == i
        assert frame.pts == pytest.approx(i / 30, abs=1e-3)
        assert frame.source_id == str(clip)
        assert frame.pixels().shape == (240, 320, 3)
        assert abs(frame.wall_time - time.time()) < 5


def test_file_played_live_is_paced_and_fresh(clip: Path) -> None:
    """A consumer taking 200 ms per frame gets frames at most two intervals old."""
    capture = CaptureThread(open_source(str(clip)), CaptureConfig(live=True))
    ages, indices = [], []
    started = time.monotonic()
    with capture:
        while not capture.finished and time.monotonic() - started < 5:
            frame = capture.read(timeout=0.5)
            if frame is None:
                continue
            ages.append(time.monotonic() - frame.captured_at)
            indices.append(frame.index)
            time.sleep(0.2)
    elapsed = time.monotonic() - started
    assert 2.8 < elapsed < 4.0  # 3 s of video at its own pace, not as fast as possible
    assert max(ages) <= 2 / 30
    assert 10 <= len(indices) <= 17
    assert indices == sorted(indices)
    metrics = capture.metrics()
    assert metrics.dropped >= 90 - len(indices) - 1
    assert metrics.measured_fps == pytest.approx(30, rel=0.15)


def test_synthetic_live_source_runs_at_its_fps_and_recycles_buffers() -> None:
    source = open_source("synthetic:?size=320x240&fps=20&objects=2")
    assert isinstance(source, SyntheticSource)
    assert source.is_live
    with CaptureThread(source) as capture:
        time.sleep(1.0)
        first = capture.read(timeout=1)
        assert first is not None
        assert first.pixels().shape == (240, 320, 3)
        assert capture.state is SourceState.STREAMING
        metrics = capture.metrics()
    assert metrics.measured_fps == pytest.approx(20, rel=0.15)
    assert 17 <= metrics.frames <= 24
    assert metrics.dropped >= metrics.frames - 2
    names = [t.name for t in threading.enumerate()]
    assert "streamer-capture-synthetic" not in names  # stopped with the context


def test_synthetic_with_seconds_is_recorded() -> None:
    source = open_source("synthetic:?size=160x120&fps=10&seconds=2")
    assert not source.is_live
    with CaptureThread(source, CaptureConfig(live=False, realtime=False)) as capture:
        frames = []
        while not capture.finished:
            frame = capture.read(timeout=0.5)
            if frame is not None:
                frames.append(frame)
    assert [f.index for f in frames] == list(range(20))


def test_image_folder(tmp_path: Path) -> None:
    scene = Scene(width=64, height=64, objects=1)
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i:03d}.png"), scene.render(i))
    (tmp_path / "notes.txt").write_text("not an image")
    source = open_source(str(tmp_path))
    assert isinstance(source, ImageFolderSource)
    with CaptureThread(source, CaptureConfig(live=False)) as capture:
        frames = [capture.read(timeout=2) for _ in range(3)]
    assert [f.index for f in frames if f is not None] == [0, 1, 2]
    assert np.array_equal(frames[1].pixels(), scene.render(1))  # type: ignore[union-attr]
    assert isinstance(open_source(str(tmp_path / "*.png")), ImageFolderSource)


@pytest.mark.parametrize(
    ("uri", "error", "message"),
    [
        ("/nope/missing.mp4", SourceError, "no such file"),
        ("ftp://host/x.mp4", ConfigError, "unsupported source scheme"),
        ("/dev/video97", SourceError, "no webcam"),
        ("97", SourceError, "no webcam"),
        ("synthetic:?colour=red", ConfigError, "unknown synthetic option"),
        ("synthetic:?size=huge", ConfigError, "size"),
        ("", ConfigError, "empty"),
    ],
)
def test_bad_sources_say_why(uri: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        open_source(uri)


def test_empty_folder_and_non_video_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no images"):
        open_source(str(tmp_path))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(SourceError, match="cannot open"):
        open_source(str(text)).open()


def test_a_file_that_cannot_open_fails_once(tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 1000)
    events: list[StateEvent] = []
    capture = CaptureThread(
        PyAVSource(str(broken), is_live=False), CaptureConfig(live=False), on_state=events.append
    )
    with capture:
        deadline = time.monotonic() + 3
        while not capture.finished and time.monotonic() < deadline:
            time.sleep(0.05)
    assert capture.finished
    assert events[-1].state is SourceState.FAILED
    assert "cannot open" in events[-1].detail


def test_truncated_file_delivers_what_it_has(clip: Path, tmp_path: Path) -> None:
    # MPEG-TS needs no index at the end, so half a file is a file cut mid-stream.
    truncated = tmp_path / "truncated.ts"
    ts = tmp_path / "clip.ts"
    with av.open(str(clip)) as source, av.open(str(ts), "w", format="mpegts") as target:
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is None:
                continue
            packet.stream = stream
            target.mux(packet)
    whole = ts.read_bytes()
    truncated.write_bytes(whole[: len(whole) // 2])
    with CaptureThread(
        PyAVSource(str(truncated), is_live=False), CaptureConfig(live=False)
    ) as capture:
        frames = []
        deadline = time.monotonic() + 10
        while not capture.finished and time.monotonic() < deadline:
            frame = capture.read(timeout=0.2)
            if frame is not None:
                frames.append(frame)
    assert 20 <= len(frames) < 90
    assert capture.state is SourceState.ENDED


def test_latest_slot_hands_back_the_displaced_frame() -> None:
    slot = LatestFrameSlot()
    image = np.zeros((2, 2, 3), np.uint8)
    a, b = Frame(image=image, index=0), Frame(image=image, index=1)
    assert slot.put(a) is None
    assert slot.put(b) is a
    assert slot.take(0.01) is b
    assert slot.take(0.01) is None


def test_stop_is_prompt_even_when_the_reader_is_gone(clip: Path) -> None:
    capture = CaptureThread(open_source(str(clip)), CaptureConfig(live=False, queue_size=2)).start()
    time.sleep(0.3)  # the FIFO is full, the thread waits on backpressure
    started = time.monotonic()
    capture.stop(timeout=2)
    assert time.monotonic() - started < 1
    assert not any(
        t.name.startswith("streamer-capture-") for t in threading.enumerate() if t.is_alive()
    )
