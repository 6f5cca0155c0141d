"""The same client against Roboflow's own inference server, when one is running.

Set STREAMER_TEST_ROBOFLOW_URL (e.g. http://127.0.0.1:9001, see ../shared/rf-peer)
and optionally STREAMER_TEST_ROBOFLOW_MODEL (default coco-yolox/1); skipped otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import pytest

from streamer.client import RoboflowClient, Target
from streamer.frames import Frame, Status
from streamer.sender import SenderConfig, SenderPool

URL = os.environ.get("STREAMER_TEST_ROBOFLOW_URL")
MODEL = os.environ.get("STREAMER_TEST_ROBOFLOW_MODEL", "coco-yolox/1")

pytestmark = pytest.mark.skipif(not URL, reason="STREAMER_TEST_ROBOFLOW_URL is not set")


def test_roboflow_server_answers_our_client(shared: Path) -> None:
    assert URL is not None
    image = cv2.imread(str(shared / "images" / "rfinf_crowd.jpg"))
    target = Target.model(MODEL, api_url=URL, confidence=0.35)
    with RoboflowClient(target, timeout=30) as client:
        prediction = client.infer(image)
        people = [n for n in prediction.detections.data["class_name"] if n == "person"]
        assert len(people) >= 8
        config = SenderConfig(max_in_flight=4, rate_limit=None, submit_timeout=60)
        with SenderPool(client, config) as pool:
            futures = [pool.submit(Frame(image=image, index=i)) for i in range(8)]
            results = [f.result(timeout=120) for f in futures]
    assert all(r.status is Status.OK for r in results)
