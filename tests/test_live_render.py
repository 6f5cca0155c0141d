"""Live rendering at the source's rate: with an image output, every frame of a live
source is drawn as it comes, with the tracks predicted forward to its capture time, so
a live recording has the source's frames and timestamps at any API latency.

A real file played live (paced at its own rate by the capture thread) against the
local server answering in 400 ms; the boxes are checked against the scene's truth."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamer.client import RoboflowClient, Target
from streamer.frames import Frame
from streamer.pipeline import Pipeline, PipelineSettings
from streamer.render import RenderConfig
from streamer.server import FaultConfig
from streamer.sinks import JsonLinesSink, VideoSink
from streamer.sinks.base import Output
from streamer.sources import open_source
from streamer.synth import Scene
from tests.helpers import ServerFactory, decode, iou, records

FPS, SECONDS, WIDTH, HEIGHT = 25, 3, 320, 240
FRAMES = FPS * SECONDS


class _Drawn:
    """An image sink that keeps what it was given (the pipeline's edge, in memory)."""

    name = "drawn"
    wants_image = True

    def __init__(self) -> None:
        self.outputs: list[tuple[dict[str, Any], bool]] = []  # record, anything drawn

    def write(self, output: Output) -> None:
        assert output.image is not None
        drawn = bool(np.any(output.image != output.frame.pixels()))
        self.outputs.append((output.record, drawn))

    def close(self) -> None:
        pass


def _times(path: Path) -> list[Fraction]:
    """Each frame's pts in seconds, exactly."""
    return [Fraction(frame.pts or 0) * Fraction(frame.time_base or 0) for frame in decode(path)]


def _run_live(
    clip: Path, start_server: ServerFactory, sinks: list[Any], render_fps: float = 0.0
) -> Pipeline:
    server = start_server(FaultConfig(latency_ms=400))
    settings = PipelineSettings(live=True, render=RenderConfig(hud=False), render_fps=render_fps)
    client = RoboflowClient(Target.model("shapes/1", api_url=server.url))
    with client, Pipeline(open_source(str(clip)), client, settings, sinks=sinks) as pipeline:
        assert pipeline.wait(timeout=60)
    assert pipeline.error is None
    return pipeline


def test_a_live_recording_has_every_source_frame_at_its_own_time_with_boxes(
    make_clip: Callable[..., Path], start_server: ServerFactory, tmp_path: Path
) -> None:
    clip = make_clip(SECONDS, width=WIDTH, height=HEIGHT, fps=FPS, objects=3, seed=5)
    video, jsonl, drawn = tmp_path / "live.mp4", tmp_path / "live.jsonl", _Drawn()
    pipeline = _run_live(
        clip, start_server, [VideoSink(video, live=True), JsonLinesSink(jsonl), drawn]
    )

    source_pts, output_pts = _times(clip), _times(video)
    assert len(source_pts) == FRAMES
    assert output_pts == [pts - source_pts[0] for pts in source_pts]  # every frame, same clock

    status = pipeline.status()
    assert status.drawn == FRAMES
    assert status.draw_dropped == 0
    assert status.converted == FRAMES  # each drawn frame converted once, sent ones too
    results = records(jsonl)  # the JSON lines keep one record per result
    assert 0 < len(results) < FRAMES
    assert all(r["status"] == "ok" for r in results)

    # Drawn frames are the source's, in order, all predicted; once the first answer
    # (400 ms) is in, every one has boxes drawn on it, near where the objects are.
    assert [r["frame_index"] for r, _ in drawn.outputs] == list(range(FRAMES))
    assert {r["status"] for r, _ in drawn.outputs} == {"predicted"}
    first = next(i for i, (r, _) in enumerate(drawn.outputs) if r["detections"])
    assert first >= 0.4 * FPS  # nothing to draw before the first answer
    assert not any(boxes for _, boxes in drawn.outputs[:first])
    assert all(r["detections"] and boxes for r, boxes in drawn.outputs[first:])
    scene = Scene(width=WIDTH, height=HEIGHT, fps=FPS, objects=3, seed=5)
    overlaps = [
        max(iou(truth.box, (d["x1"], d["y1"], d["x2"], d["y2"])) for d in record["detections"])
        for record, _ in drawn.outputs[first:]
        for truth in scene.truth(record["frame_index"])
        if not truth.occluded
    ]
    # predicted 400+ ms ahead of the newest answer: off at the bounces, close elsewhere
    # (measured: median 0.83; the same boxes not moved forward: 0.13)
    assert statistics.median(overlaps) >= 0.6


def test_render_fps_draws_fewer_frames_on_the_source_clock(
    make_clip: Callable[..., Path], start_server: ServerFactory, tmp_path: Path
) -> None:
    clip = make_clip(SECONDS, width=WIDTH, height=HEIGHT, fps=FPS, objects=3, seed=5)
    video = tmp_path / "five.mp4"
    pipeline = _run_live(clip, start_server, [VideoSink(video, live=True)], render_fps=5)
    assert _times(video) == [Fraction(i, 5) for i in range(SECONDS * 5)]
    assert pipeline.status().drawn == SECONDS * 5
    assert pipeline.status().converted < FRAMES  # frames neither drawn nor sent stay YUV


def test_without_an_image_output_nothing_is_drawn(
    make_clip: Callable[..., Path], start_server: ServerFactory, tmp_path: Path
) -> None:
    clip = make_clip(SECONDS, width=WIDTH, height=HEIGHT, fps=FPS, objects=3, seed=5)
    pipeline = _run_live(clip, start_server, [JsonLinesSink(tmp_path / "only.jsonl")])
    status = pipeline.status()
    assert status.drawn == 0
    assert status.converted == pipeline.pool.metrics().submitted  # the uploads only


def test_a_live_recording_follows_the_capture_clock_where_the_source_clock_jumps(
    tmp_path: Path,
) -> None:
    """A camera that reconnects starts its pts again: the recording goes on at the
    capture clock's pace, then at the source's again, never backwards."""
    image = np.full((64, 64, 3), 90, dtype=np.uint8)
    sink = VideoSink(tmp_path / "jump.mp4", live=True)
    # (source pts, capture time)
    stamps: list[tuple[float | None, float]] = [(0.00, 10.00), (0.04, 10.04), (0.08, 10.08)]
    stamps += [(0.00, 12.00), (0.04, 12.04)]  # reconnected 1.9 s later, pts from 0
    stamps += [(None, 12.10)]  # a frame without pts
    for index, (pts, captured) in enumerate(stamps):
        frame = Frame(image=image, index=index, pts=pts, captured_at=captured)
        sink.write(Output(frame=frame, image=image, record={}, source_fps=25))
    sink.close()
    seconds = [float(t) for t in _times(tmp_path / "jump.mp4")]
    assert seconds == pytest.approx([0.0, 0.04, 0.08, 2.0, 2.04, 2.1], abs=1e-4)
