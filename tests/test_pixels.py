"""Pixels on demand: a decoded frame is converted to BGR only when a stage needs it
(its upload, its drawing); frames the sampler drops never are. Counted by the capture
thread, asserted against what was sent and rendered, on real encoded video."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from streamer._av import av
from streamer.client import RoboflowClient, Target
from streamer.frames import DecodedPicture
from streamer.pipeline import Pipeline, PipelineSettings
from streamer.sampler import SamplerConfig
from streamer.server import ServerThread
from streamer.sinks import JsonLinesSink, VideoSink
from streamer.sources import _bgr, _shrunk_bgr, open_source
from streamer.synth import Scene
from tests.helpers import decode, iou, records


def _run(clip: Path, server: ServerThread, settings: PipelineSettings, sinks: list) -> Pipeline:
    client = RoboflowClient(Target.model("shapes/1", api_url=server.url))
    with client, Pipeline(open_source(str(clip)), client, settings, sinks=sinks) as pipeline:
        assert pipeline.wait(timeout=60)
    return pipeline


def test_live_frames_the_sampler_drops_are_never_converted(
    make_clip: Callable[..., Path], server: ServerThread, tmp_path: Path
) -> None:
    clip = make_clip(3, width=320, height=240, fps=30)
    settings = PipelineSettings(live=True, sampler=SamplerConfig(live=True, max_fps=5))
    pipeline = _run(clip, server, settings, [JsonLinesSink(tmp_path / "out.jsonl")])
    status = pipeline.status()
    sent = pipeline.pool.metrics().submitted
    assert status.frames == 90  # every frame decoded
    assert 0 < sent < 30
    assert status.converted == sent  # only the uploads needed pixels


def test_recorded_every_kth_converts_the_sent_ones_and_keeps_one_record_per_frame(
    make_clip: Callable[..., Path], server: ServerThread, tmp_path: Path
) -> None:
    clip = make_clip(2, width=320, height=240, fps=30)
    settings = PipelineSettings(live=False, sampler=SamplerConfig(live=False, stride=3))
    pipeline = _run(clip, server, settings, [JsonLinesSink(tmp_path / "out.jsonl")])
    lines = records(tmp_path / "out.jsonl")
    assert [line["frame_index"] for line in lines] == list(range(60))  # unchanged: in order
    assert pipeline.status().converted == 20  # frames 0, 3, 6, ...: the sent ones


def test_rendered_frames_are_converted_once_each(
    make_clip: Callable[..., Path], server: ServerThread, tmp_path: Path
) -> None:
    clip = make_clip(2, width=320, height=240, fps=30)
    settings = PipelineSettings(live=False, sampler=SamplerConfig(live=False, stride=2))
    video = tmp_path / "out.mp4"
    pipeline = _run(clip, server, settings, [VideoSink(video, live=False)])
    assert len(decode(video)) == 60
    assert pipeline.status().converted == 60  # drawn on: all; sent and drawn: still once


def test_uploads_of_large_frames_are_shrunk_in_yuv_and_boxes_land_on_the_full_frame(
    make_clip: Callable[..., Path], server: ServerThread, tmp_path: Path
) -> None:
    clip = make_clip(1, width=1280, height=720, fps=30, objects=4, seed=7)
    settings = PipelineSettings(live=False, sampler=SamplerConfig(live=False, stride=3))
    pipeline = _run(clip, server, settings, [JsonLinesSink(tmp_path / "out.jsonl")])
    assert pipeline.status().converted == 10  # the sent ones, each once, at 640 px
    scene = Scene(width=1280, height=720, fps=30, objects=4, seed=7)
    inferred = [line for line in records(tmp_path / "out.jsonl") if line["status"] == "ok"]
    assert len(inferred) == 10
    for line in inferred:
        boxes = [(d["x1"], d["y1"], d["x2"], d["y2"]) for d in line["detections"]]
        for truth in scene.truth(line["frame_index"]):
            if not truth.occluded:  # found, in 1280x720 pixels although 640x360 was sent
                assert max(iou(truth.box, box) for box in boxes) > 0.8  # as when converted first


def test_a_picture_shrunk_in_yuv_matches_one_converted_then_resized(
    make_clip: Callable[..., Path],
) -> None:
    clip = make_clip(1, width=1280, height=720, fps=30, objects=4, seed=7)
    with av.open(str(clip)) as container:
        picture = next(container.decode(video=0))
        full = DecodedPicture(picture, width=1280, height=720, convert=_bgr)
        converted = cv2.resize(full.bgr(), (640, 360), interpolation=cv2.INTER_AREA)
        shrunk = DecodedPicture(
            picture, width=1280, height=720, convert=_bgr, shrink=_shrunk_bgr
        ).bgr(fit=640)
    assert shrunk.shape == (360, 640, 3)
    assert float(np.abs(shrunk.astype(int) - converted.astype(int)).mean()) < 2.0
    assert _shrunk_bgr(picture, 1280) is None  # nothing to shrink: the full conversion


def test_frames_for_previews_only_are_drawn_at_the_previews_width(
    make_clip: Callable[..., Path],
) -> None:
    """``canvas_for``: a 1280x720 frame (decoded, or BGR as synthetic sources give)
    shrunk to 640 wide with its boxes halved, so what is drawn lands where the full
    frame's boxes are; with masks, the frame as it is."""
    import supervision as sv

    from streamer.frames import Frame
    from streamer.render import canvas_for

    scene = Scene(width=1280, height=720, fps=30, objects=3, seed=2)
    boxes = np.array([t.box for t in scene.truth(0)], dtype=float)
    detections = sv.Detections(xyxy=boxes, class_id=np.zeros(len(boxes), int))
    clip = make_clip(1, width=1280, height=720, fps=30, objects=3, seed=2)
    stream = open_source(str(clip)).open()
    try:
        picture, _ = next(iter(stream))
    finally:
        stream.close()
    assert isinstance(picture, DecodedPicture)
    decoded = Frame(decoded=picture, index=0)
    for frame in (Frame(image=scene.render(0), index=0), decoded):
        pixels, drawn = canvas_for(frame, detections, 640)
        assert pixels.shape == (360, 640, 3)
        assert np.allclose(drawn.xyxy, boxes / 2)
        assert np.allclose(detections.xyxy, boxes)  # the caller's untouched
        full = cv2.resize(frame.pixels(), (640, 360), interpolation=cv2.INTER_AREA)
        assert float(np.abs(pixels.astype(int) - full.astype(int)).mean()) < 3  # same picture
    masked = sv.Detections(
        xyxy=boxes, mask=np.zeros((len(boxes), 720, 1280), bool), class_id=np.zeros(3, int)
    )
    pixels, drawn = canvas_for(decoded, masked, 640)
    assert pixels.shape == (720, 1280, 3)
    assert drawn is masked
    small = Frame(image=np.zeros((240, 320, 3), np.uint8), index=0)
    assert canvas_for(small, detections, 640)[0].shape == (240, 320, 3)  # never enlarged
