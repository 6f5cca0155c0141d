"""The scene generator: deterministic scenes, exact timing in the encoded video."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest

from streamer.errors import ConfigError
from streamer.server.models import InferenceParams
from streamer.server.shapes import ShapesModel
from streamer.synth import COLOURS, Scene, write_video
from tests.helpers import corners, iou


def test_scene_is_a_pure_function_of_seed_and_index() -> None:
    a = Scene(width=320, height=240, objects=4, seed=9)
    b = Scene(width=320, height=240, objects=4, seed=9)
    assert np.array_equal(a.render(37), b.render(37))
    assert a.truth(37) == b.truth(37)
    assert not np.array_equal(
        a.render(37), Scene(width=320, height=240, objects=4, seed=10).render(37)
    )
    # rendering into a reused buffer gives the same pixels, in that buffer
    buffer = np.zeros((240, 320, 3), np.uint8)
    out = a.render(37, buffer)
    assert out is buffer
    assert np.array_equal(out, a.render(37))


def test_objects_move_stay_inside_and_cross() -> None:
    scene = Scene(width=640, height=360, fps=30, objects=5, seed=0)
    crossings = 0
    for index in range(300):
        truths = scene.truth(index)
        assert len({t.colour for t in truths}) == 5
        for t in truths:
            x1, y1, x2, y2 = t.box
            assert 0 <= x1 < x2 <= 640
            assert 0 <= y1 < y2 <= 360
        crossings += any(t.occluded for t in truths)
    assert crossings > 0  # shapes do cross now and then
    assert scene.truth(0)[0].box != scene.truth(30)[0].box


def test_truth_matches_pixels() -> None:
    scene = Scene(width=320, height=240, objects=3, seed=4)
    for index in (0, 12, 50):
        image = scene.render(index)
        for t in scene.truth(index):
            if t.occluded:
                continue
            ys, xs = np.nonzero((image == COLOURS[t.colour]).all(axis=2))
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == t.box


@pytest.mark.parametrize("fps", [30.0, 25.0, 29.97])
def test_written_video_has_exact_timing_and_truth(tmp_path: Path, fps: float) -> None:
    scene = Scene(width=640, height=360, fps=fps, objects=3, seed=2)
    path = tmp_path / "scene.mp4"
    truth_path = tmp_path / "truth.json"
    count = write_video(path, scene, seconds=2, truth_path=truth_path)
    assert count == round(2 * fps)
    truth = json.loads(truth_path.read_text())
    assert len(truth["frames"]) == count
    assert truth["classes"] == ["circle", "square", "triangle"]
    model = ShapesModel("object-detection")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 640, 360)
        frames = list(container.decode(stream))
    assert len(frames) == count
    for index, frame in enumerate(frames):
        assert frame.time == pytest.approx(index / fps, abs=1e-3)
    for index in (0, count // 2, count - 1):
        predictions = model.infer(frames[index].to_ndarray(format="bgr24"), InferenceParams())[
            "predictions"
        ]
        for t in truth["frames"][index]:
            if not t["occluded"]:
                # H.264 chroma subsampling blurs edges by a pixel or so
                assert max(iou(tuple(t["box"]), corners(p)) for p in predictions) > 0.85


def test_bad_scene_settings() -> None:
    with pytest.raises(ConfigError, match="objects"):
        Scene(objects=9)
    with pytest.raises(ConfigError, match="size"):
        Scene(width=10, height=10)
    with pytest.raises(ConfigError, match="fps"):
        Scene(fps=0)


def test_shapes_model_reads_uncompressed_frames_exactly() -> None:
    scene = Scene(width=640, height=360, objects=8, seed=6)
    model = ShapesModel("object-detection")
    for index in range(0, 300, 7):
        predictions = model.infer(scene.render(index), InferenceParams())["predictions"]
        for t in scene.truth(index):
            if t.occluded:
                continue
            match = [p for p in predictions if corners(p) == t.box]
            assert len(match) == 1, (index, t)
            assert match[0]["class"] == t.class_name
