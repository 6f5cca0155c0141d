"""The client against the local server: preparation, parsing, errors, and no key leaks."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from streamer.client import RoboflowClient, Target, parse_predictions, prepare_image
from streamer.errors import (
    AuthError,
    BadResponse,
    ConfigError,
    ConnectionFailed,
    InferenceError,
    InferenceTimeout,
    ModelNotFound,
    PlanError,
    RateLimited,
    RequestTooLarge,
    ServerError,
)
from streamer.server import FaultConfig, ServerThread
from streamer.synth import Scene
from tests.helpers import QuietHandler, ServerFactory, free_port, iou

KEY = "rf_LEAKCANARY_9f8e7d6c5b4a"


@pytest.fixture(scope="module")
def big_scene() -> Scene:
    return Scene(width=1280, height=720, objects=5, seed=3)


def test_prepare_shrinks_never_upscales() -> None:
    big = np.zeros((720, 1280, 3), np.uint8)
    prepared = prepare_image(big, max_side=640, quality=80, limit=5 << 20)
    assert (prepared.width, prepared.height) == (640, 360)
    assert (prepared.original_width, prepared.original_height) == (1280, 720)
    small = np.zeros((100, 200, 3), np.uint8)
    same = prepare_image(small, max_side=640, quality=80, limit=5 << 20)
    assert (same.width, same.height) == (200, 100)


def test_prepare_fits_the_limit_or_says_so() -> None:
    noise = np.random.default_rng(0).integers(0, 255, (1080, 1920, 3), dtype=np.uint8)
    full = prepare_image(noise, max_side=1920, quality=95, limit=20 << 20)
    assert full.width == 1920
    fitted = prepare_image(noise, max_side=1920, quality=95, limit=400_000)
    assert len(fitted.body) <= 400_000
    assert fitted.width < 1920 or len(fitted.body) < len(full.body)
    with pytest.raises(RequestTooLarge):
        prepare_image(noise, max_side=1920, quality=95, limit=2100)


def test_detections_map_back_to_the_frame(server: ServerThread, big_scene: Scene) -> None:
    with RoboflowClient(Target.model("shapes/1", api_url=server.url)) as client:
        prediction = client.infer(big_scene.render(10))
    detections = prediction.detections
    truth = [t for t in big_scene.truth(10) if not t.occluded]
    assert len(detections) == len(big_scene.truth(10))
    for t in truth:
        scores = [iou(t.box, tuple(box)) for box in detections.xyxy]
        best = int(np.argmax(scores))
        assert scores[best] > 0.9  # in 1280x720 pixels although 640x360 was sent
        assert detections.data["class_name"][best] == t.class_name
        assert detections.class_id is not None
        assert detections.class_id[best] == t.class_id
    assert prediction.server_time is not None


def test_segmentation_keeps_polygons_and_builds_masks_on_demand(
    server: ServerThread, big_scene: Scene
) -> None:
    with RoboflowClient(Target.model("shapes-seg/1", api_url=server.url)) as client:
        prediction = client.infer(big_scene.render(10))
    detections = prediction.detections
    assert detections.mask is None
    polygons = detections.data["polygons"]
    assert len(polygons) == len(detections)
    for polygon, box in zip(polygons, detections.xyxy, strict=True):
        assert polygon[:, 0].min() >= box[0] - 3
        assert polygon[:, 0].max() <= box[2] + 3
    masks = prediction.masks(720, 1280)
    assert masks is not None
    assert masks.shape == (len(detections), 720, 1280)
    assert all(m.any() for m in masks)


def test_keypoints_and_classification(server: ServerThread, big_scene: Scene) -> None:
    with RoboflowClient(Target.model("shapes-pose/1", api_url=server.url)) as client:
        pose = client.infer(big_scene.render(10))
    assert pose.keypoints is not None
    assert pose.keypoints.xy.shape == (len(pose.detections), 5, 2)
    centre = pose.keypoints.xy[:, 4]
    boxes = pose.detections.xyxy
    assert np.allclose(centre[:, 0], (boxes[:, 0] + boxes[:, 2]) / 2, atol=6)
    single = Scene(width=800, height=600, objects=1, seed=5)
    with RoboflowClient(Target.model("shapes-cls/1", api_url=server.url)) as client:
        result = client.infer(single.render(0))
    assert result.classification is not None
    assert result.classification.top == single.truth(0)[0].colour
    assert len(result.detections) == 0


def test_workflow_target(server: ServerThread, big_scene: Scene) -> None:
    target = Target.workflow(
        "local", "detect", api_url=server.url, workflow_inputs={"model_id": "shapes/1"}
    )
    with RoboflowClient(target) as client:
        prediction = client.infer(big_scene.render(4))
    assert len(prediction.detections) == len(big_scene.truth(4))
    wrong = Target.workflow("local", "detect-shapes", api_url=server.url, output_name="boxes")
    with RoboflowClient(wrong) as client, pytest.raises(BadResponse, match="'boxes' not found"):
        client.infer(big_scene.render(4))


@pytest.mark.parametrize(
    "payload",
    [
        [],
        {"predictions": "nope"},
        {"predictions": [{"x": 1, "y": 2, "width": 3}]},
        {"predictions": [{"x": "1", "y": 2, "width": 3, "height": 4}]},
        {"predictions": [{"x": 1, "y": 2, "width": -3, "height": 4}]},
        {"predictions": [1, 2]},
        {"predictions": [{"x": 1, "y": 2, "width": 3, "height": 4, "points": [{"x": 1}]}]},
    ],
)
def test_malformed_answers_are_bad_response(payload: Any) -> None:
    with pytest.raises(BadResponse):
        parse_predictions(payload)


def test_bad_targets() -> None:
    with pytest.raises(ConfigError):
        Target.model("no-version")
    with pytest.raises(ConfigError):
        Target.model("a/1", api_url="ftp://x")
    with pytest.raises(ConfigError):
        Target.model("a/1", confidence=40)
    with pytest.raises(ConfigError):
        Target(api_url="http://x")
    assert Target.model("a/1", api_url="https://detect.roboflow.com").size_limit == 5 << 20
    assert Target.model("a/1", api_url="https://serverless.roboflow.com").size_limit == 20 << 20


# -- errors and secrets -----------------------------------------------------------------------


class _EdgeHandler(QuietHandler):
    """Answers Roboflow errors our server never gives: 402, invalid JSON, an echo of the URL."""

    def do_POST(self) -> None:
        self.read_body()
        if self.path.startswith("/plan/"):
            status, body = 402, b'{"message": "This model requires a paid plan"}'
        elif self.path.startswith("/echo/"):
            status, body = 500, ('{"message": "failed for ' + self.path + '"}').encode()
        else:
            status, body = 200, b"<html>not json</html>"
        self.reply(status, body)  # the HTML body is labelled JSON on purpose


@pytest.fixture
def edge_server(serve_http: Callable[..., str]) -> str:
    return serve_http(_EdgeHandler)


def test_every_error_path_is_typed_and_never_leaks_the_key(
    start_server: ServerFactory, edge_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    frame = Scene(width=320, height=240, objects=2).render(0)
    guarded = start_server(api_key="the-right-key")
    limited = start_server(FaultConfig(rate_limit=1, burst=1))
    failing = start_server(FaultConfig(error_rate=1.0, error_status=503))
    hanging = start_server(FaultConfig(hang_rate=1.0))
    plain = start_server()
    cases: list[tuple[Target, type[InferenceError]]] = [
        (Target.model("shapes/1", api_url=guarded.url), AuthError),
        (Target.model("nope/1", api_url=plain.url), ModelNotFound),
        (Target.model("shapes/1", api_url=failing.url), ServerError),
        (Target.model("shapes/1", api_url=hanging.url), InferenceTimeout),
        (Target.model("shapes/1", api_url=f"http://127.0.0.1:{free_port()}"), ConnectionFailed),
        (Target.model("plan/1", api_url=edge_server), PlanError),
        (Target.model("echo/1", api_url=edge_server), ServerError),
        (Target.model("json/1", api_url=edge_server), BadResponse),
        (Target.workflow("w", "detect", api_url=guarded.url), AuthError),
    ]
    seen: list[str] = []
    caplog.set_level(logging.DEBUG)
    for target, expected in cases:
        with RoboflowClient(target, api_key=KEY, timeout=0.5) as client:
            seen.append(repr(client))
            with pytest.raises(expected) as caught:
                client.infer(frame)
            seen.append(str(caught.value))
            seen.append("".join(traceback.format_exception(caught.value)))
    # 429 after the first request of the limited server
    with RoboflowClient(Target.model("shapes/1", api_url=limited.url), api_key=KEY) as client:
        client.infer(frame)
        with pytest.raises(RateLimited) as caught:
            client.infer(frame)
        assert caught.value.retry_after == 1.0
        seen.append("".join(traceback.format_exception(caught.value)))
    # 413: the server refuses a request over 5 MB (the client thinks the route takes 20 MB)
    noise = np.random.default_rng(1).integers(0, 255, (2880, 5120, 3), dtype=np.uint8)
    huge = prepare_image(noise, max_side=5120, quality=100, limit=20 << 20)
    assert len(huge.body) > 5 << 20
    with RoboflowClient(Target.model("shapes/1", api_url=plain.url), api_key=KEY) as client:
        with pytest.raises(RequestTooLarge) as caught:
            client.send(huge)
        seen.append("".join(traceback.format_exception(caught.value)))
    seen.extend(record.getMessage() for record in caplog.records)
    seen.append(caplog.text)
    assert any("api_key=***" in text for text in seen)  # the URLs were there, masked
    for text in seen:
        assert KEY not in text
