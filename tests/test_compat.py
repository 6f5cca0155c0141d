"""Roboflow's own client and supervision's parsers against our server.

The SDK pins older supervision/numpy/opencv, so it runs from .venv-sdk
(scripts/sdk-venv.sh) in a subprocess, exactly as a user would call it.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import supervision as sv

from streamer.server import ServerThread
from streamer.synth import Scene
from tests.helpers import FORM, REPO, b64, corners, iou, jpeg_bytes

SDK_PYTHON = REPO / ".venv-sdk" / "bin" / "python"
PROBE = Path(__file__).with_name("sdk_probe.py")


def _sdk(
    server: ServerThread, model_id: str, image: Path, mode: str, confidence: float | None = None
):
    if not SDK_PYTHON.exists():
        pytest.skip("no .venv-sdk: run scripts/sdk-venv.sh to test against Roboflow's SDK")
    args = [str(SDK_PYTHON), str(PROBE), server.url, model_id, str(image), mode]
    if confidence is not None:
        args.append(str(confidence))
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def _matched(ours: list[dict], theirs: list[dict], min_iou: float) -> None:
    assert len(theirs) == len(ours)
    for prediction in ours:
        best = max(theirs, key=lambda p: iou(corners(p), corners(prediction)))
        assert best["class"] == prediction["class"]
        assert iou(corners(best), corners(prediction)) > min_iou


@pytest.fixture(scope="module")
def frame_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Scene]:
    scene = Scene(width=640, height=360, objects=5, seed=3)
    path = tmp_path_factory.mktemp("frames") / "frame.png"
    cv2.imwrite(str(path), scene.render(40))
    return path, scene


@pytest.mark.parametrize("mode", ["v0", "v1"])
def test_sdk_infer_gets_our_predictions(
    server: ServerThread, client: httpx.Client, frame_file, mode: str
) -> None:
    path, _ = frame_file
    theirs = _sdk(server, "shapes/1", path, mode)
    ours = client.post("/shapes/1", content=b64(path.read_bytes()), headers=FORM).json()
    assert theirs["image"] == ours["image"]
    _matched(ours["predictions"], theirs["predictions"], 0.9)


@pytest.mark.parametrize("mode", ["v0", "v1"])
def test_sdk_infer_coco(
    server: ServerThread, client: httpx.Client, models_dir: Path, shared: Path, mode: str
) -> None:
    path = shared / "images" / "rfinf_crowd.jpg"
    theirs = _sdk(server, "coco/1", path, mode, confidence=0.35)
    ours = client.post(
        "/coco/1", params={"confidence": 35}, content=b64(path.read_bytes()), headers=FORM
    )
    ours_predictions = ours.json()["predictions"]
    assert len([p for p in theirs["predictions"] if p["class"] == "person"]) >= 8
    # The SDK re-encodes (and in v1 shrinks) the image, so scores move a little:
    # compare the confident boxes, which must all be there.
    confident = [p for p in ours_predictions if p["confidence"] >= 0.5]
    for prediction in confident:
        best = max(theirs["predictions"], key=lambda p: iou(corners(p), corners(prediction)))
        assert iou(corners(best), corners(prediction)) > 0.8


def test_sdk_run_workflow(server: ServerThread, frame_file) -> None:
    path, scene = frame_file
    outputs = _sdk(server, "detect-shapes", path, "workflow")
    assert len(outputs) == 1
    predictions = outputs[0]["predictions"]["predictions"]
    assert len(predictions) == len(scene.truth(40))


def test_supervision_parses_detections(client: httpx.Client, scene: Scene) -> None:
    image = scene.render(20)
    body = client.post("/shapes/1", content=b64(jpeg_bytes(image)), headers=FORM).json()
    detections = sv.Detections.from_inference(body)
    assert len(detections) == len(body["predictions"])
    for xyxy, name, prediction in zip(
        detections.xyxy, detections.data["class_name"], body["predictions"], strict=True
    ):
        assert tuple(xyxy) == pytest.approx(corners(prediction))
        assert name == prediction["class"]


def test_supervision_parses_segmentation(client: httpx.Client, scene: Scene) -> None:
    body = client.post(
        "/shapes-seg/1", content=b64(jpeg_bytes(scene.render(20))), headers=FORM
    ).json()
    detections = sv.Detections.from_inference(body)
    assert detections.mask is not None
    assert detections.mask.shape == (len(body["predictions"]), 360, 640)
    for mask, prediction in zip(detections.mask, body["predictions"], strict=True):
        ys, xs = np.nonzero(mask)
        x1, y1, _x2, _y2 = corners(prediction)
        assert abs(xs.min() - x1) <= 2
        assert abs(ys.min() - y1) <= 2


def test_supervision_parses_keypoints(client: httpx.Client, scene: Scene) -> None:
    body = client.post(
        "/shapes-pose/1", content=b64(jpeg_bytes(scene.render(20))), headers=FORM
    ).json()
    keypoints = sv.KeyPoints.from_inference(body)
    assert keypoints.xy.shape == (len(body["predictions"]), 5, 2)
    first = body["predictions"][0]["keypoints"]
    assert keypoints.xy[0][4] == pytest.approx((first[4]["x"], first[4]["y"]))
