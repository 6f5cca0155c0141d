"""Fuzzing the two parsers that face the outside: the server's requests, the client's answers.

Whatever comes in, the answer is a clean error (BadRequest / 400, BadResponse) or a
result; never another exception, a crash or a hang.
"""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamer.client import MAX_DETECTIONS, Classification, Prediction, parse_predictions
from streamer.errors import BadResponse
from streamer.server import ServerThread
from streamer.server.decode import BadRequest, decode_base64_image, parse_params

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=30,
)
numbers = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.none(),
)
near_predictions = st.lists(
    st.dictionaries(
        st.sampled_from(
            ["x", "y", "width", "height", "confidence", "class", "class_id", "points", "keypoints"]
        ),
        numbers
        | st.lists(st.dictionaries(st.sampled_from(["x", "y", "confidence"]), numbers), max_size=4),
    ),
    max_size=6,
)


@FUZZ
@given(payload=json_values)
def test_any_json_is_a_prediction_or_bad_response(payload: Any) -> None:
    try:
        result = parse_predictions(payload)
    except BadResponse:
        return
    assert isinstance(result, Prediction)


@FUZZ
@given(predictions=near_predictions, top=st.one_of(st.none(), st.text(max_size=5)))
def test_near_valid_answers(predictions: list[dict[str, Any]], top: str | None) -> None:
    payload: dict[str, Any] = {"predictions": predictions, "image": {"width": 640, "height": 480}}
    if top is not None:
        payload["top"] = top
    try:
        result = parse_predictions(payload, scale_x=2.0, scale_y=2.0)
    except BadResponse:
        return
    if result.classification is not None:
        assert isinstance(result.classification, Classification)
    else:
        assert len(result.detections) == len(predictions)
        assert np.all(result.detections.xyxy[:, 2] >= result.detections.xyxy[:, 0])


def test_answers_up_to_the_cap_parse_and_beyond_it_are_refused() -> None:
    item = {
        "x": 10,
        "y": 10,
        "width": 4,
        "height": 4,
        "confidence": 0.9,
        "class": "a",
        "class_id": 0,
    }
    result = parse_predictions({"predictions": [item] * MAX_DETECTIONS})
    assert len(result.detections) == MAX_DETECTIONS
    with pytest.raises(BadResponse, match="100000 predictions, more than the 10000"):
        parse_predictions({"predictions": [item] * 100_000})


@FUZZ
@given(body=st.binary(max_size=400) | st.text(max_size=400))
def test_server_body_decoding_is_clean(body: bytes | str) -> None:
    try:
        image = decode_base64_image(body)
    except BadRequest:
        return
    assert image.ndim == 3


def _jpeg(width: int, height: int) -> bytes:
    ok, data = cv2.imencode(".jpg", np.zeros((height, width, 3), np.uint8))
    assert ok
    return data.tobytes()


@FUZZ
@given(cut=st.integers(0, 600), flip=st.integers(0, 599))
def test_truncated_and_corrupted_images(cut: int, flip: int) -> None:
    data = bytearray(_jpeg(32, 24))
    if flip < len(data):
        data[flip] ^= 0xFF
    with contextlib.suppress(BadRequest):
        decode_base64_image(base64.b64encode(bytes(data[:cut])))


@FUZZ
@given(
    values=st.dictionaries(
        st.sampled_from(["confidence", "overlap", "max_detections", "class_agnostic_nms"]), numbers
    )
)
def test_parameters_are_validated(values: dict[str, Any]) -> None:
    try:
        params = parse_params(values)
    except BadRequest:
        return
    assert 0 <= params.confidence <= 1
    assert 0 <= params.overlap <= 1
    assert 0 <= params.max_detections <= 10_000


@pytest.fixture(scope="module")
def fuzz_server() -> Any:
    with ServerThread() as server:
        yield server


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.binary(max_size=300),
    content_type=st.sampled_from(
        [
            "application/x-www-form-urlencoded",
            "image/jpeg",
            "multipart/form-data; boundary=x",
            "text/plain",
            "application/json",
        ]
    ),
    query=st.dictionaries(
        st.sampled_from(["confidence", "overlap", "max_detections", "image"]),
        st.text(max_size=8),
        max_size=3,
    ),
)
def test_server_answers_garbage_cleanly(
    fuzz_server: ServerThread, body: bytes, content_type: str, query: dict[str, str]
) -> None:
    response = httpx.post(
        f"{fuzz_server.url}/shapes/1",
        params=query,
        content=body,
        headers={"Content-Type": content_type},
        timeout=5,
    )
    assert response.status_code in (200, 400, 413), response.text
    assert isinstance(response.json(), dict)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(payload=json_values)
def test_json_routes_answer_garbage_cleanly(fuzz_server: ServerThread, payload: Any) -> None:
    for path in ("/w/workflows/detect-shapes", "/infer/object_detection"):
        response = httpx.post(f"{fuzz_server.url}{path}", content=json.dumps(payload), timeout=5)
        assert response.status_code in (200, 400, 404), response.text
