"""Every route of the local server over real HTTP on 127.0.0.1."""

from __future__ import annotations

import http.server
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from streamer.server import ServerThread
from streamer.synth import COLOURS, Scene
from tests.helpers import FORM, ServerFactory, b64, corners, iou, jpeg_bytes

DETECTION_KEYS = {"x", "y", "width", "height", "confidence", "class", "class_id", "detection_id"}


def _visible(scene: Scene, index: int) -> list:
    return [t for t in scene.truth(index) if not t.occluded]


def _post_frame(client: httpx.Client, model: str, image: np.ndarray, **params: object) -> dict:
    response = client.post(f"/{model}", params=params, content=b64(jpeg_bytes(image)), headers=FORM)
    assert response.status_code == 200, response.text
    return response.json()


def test_root_lists_models_and_workflows(client: httpx.Client) -> None:
    body = client.get("/").json()
    ids = {m["model_id"]: m for m in body["models"]}
    assert {"coco/1", "shapes/1", "shapes-seg/1", "shapes-pose/1", "shapes-cls/1"} <= set(ids)
    assert ids["shapes/1"]["task_type"] == "object-detection"
    assert ids["shapes/1"]["available"] is True
    assert "detect" in body["workflows"]
    assert client.get("/health").json() == {"status": "healthy"}
    info = client.get("/info").json()
    assert info["name"]
    assert info["version"]
    assert info["uuid"]


def test_shapes_detections_match_ground_truth(client: httpx.Client, scene: Scene) -> None:
    for index in (0, 17, 45, 90):
        body = _post_frame(client, "shapes/1", scene.render(index))
        assert body["image"] == {"width": 640, "height": 360}
        assert isinstance(body["time"], float)
        uuid.UUID(body["inference_id"])
        predictions = body["predictions"]
        for prediction in predictions:
            assert set(prediction) == DETECTION_KEYS
            uuid.UUID(prediction["detection_id"])
        for truth in _visible(scene, index):
            same_class = [p for p in predictions if p["class"] == truth.class_name]
            best = max((iou(truth.box, corners(p)) for p in same_class), default=0.0)
            assert best > 0.9, (index, truth)
            match = max(same_class, key=lambda p: iou(truth.box, corners(p)))
            assert match["class_id"] == truth.class_id
            assert match["confidence"] > 0.8


def test_body_formats_give_the_same_answer(client: httpx.Client, scene: Scene) -> None:
    image = scene.render(5)
    data = jpeg_bytes(image)
    as_base64 = client.post("/shapes/1", content=b64(data), headers=FORM).json()
    as_upload = client.post("/shapes/1", files={"file": ("frame.jpg", data, "image/jpeg")}).json()
    raw = client.post("/shapes/1", content=data, headers={"Content-Type": "image/jpeg"})
    as_data_uri = client.post(
        "/shapes/1", content=b"data:image/jpeg;base64," + b64(data), headers=FORM
    ).json()

    def boxes(body: dict) -> list:
        return sorted(
            (p["class"], p["x"], p["y"], p["width"], p["height"]) for p in body["predictions"]
        )

    assert boxes(as_base64) == boxes(as_upload) == boxes(as_data_uri)
    # raw bytes are refused, as Roboflow's own server refuses them
    assert raw.status_code == 400
    assert "raw bytes instead of a base64-encoded string" in raw.json()["message"]
    assert len(as_base64["predictions"]) == len(scene.truth(5))


def test_png_is_accepted(client: httpx.Client, scene: Scene) -> None:
    _ok, png = cv2.imencode(".png", scene.render(2))
    body = client.post("/shapes/1", content=b64(png.tobytes()), headers=FORM).json()
    assert len(body["predictions"]) == len(scene.truth(2))


def test_coco_finds_the_crowd(models_dir: Path, crowd_jpeg: bytes, client: httpx.Client) -> None:
    response = client.post(
        "/coco/1", params={"confidence": 35}, content=b64(crowd_jpeg), headers=FORM
    )
    assert response.status_code == 200
    body = response.json()
    people = [p for p in body["predictions"] if p["class"] == "person"]
    assert len(people) >= 8
    assert all(p["confidence"] >= 0.35 for p in body["predictions"])
    assert body["image"] == {"width": 640, "height": 425}
    for p in people:  # boxes inside the image, people taller than wide
        x1, y1, x2, y2 = corners(p)
        assert 0 <= x1 < x2 <= 640
        assert 0 <= y1 < y2 <= 425
        assert p["height"] > p["width"]
    assert float(response.headers["X-Processing-Time"]) > 0


def test_confidence_scales_and_overlap(
    models_dir: Path, crowd_jpeg: bytes, client: httpx.Client
) -> None:
    def count(**params: object) -> int:
        response = client.post("/coco/1", params=params, content=b64(crowd_jpeg), headers=FORM)
        assert response.status_code == 200, response.text
        return len(response.json()["predictions"])

    # 0-100 and fractions below 1 mean the same threshold.
    assert count(confidence=35) == count(confidence=0.35)
    assert count(confidence=70) < count(confidence=35) < count(confidence=10)
    # A tighter IoU threshold suppresses more overlapping boxes.
    assert count(confidence=10, overlap=5) < count(confidence=10, overlap=90)
    assert count(confidence=10, max_detections=3) == 3


def test_default_confidence_is_40(
    models_dir: Path, crowd_jpeg: bytes, client: httpx.Client
) -> None:
    body = client.post("/coco/1", content=b64(crowd_jpeg), headers=FORM).json()
    assert min(p["confidence"] for p in body["predictions"]) >= 0.4
    explicit = client.post(
        "/coco/1", params={"confidence": 40}, content=b64(crowd_jpeg), headers=FORM
    )
    assert len(explicit.json()["predictions"]) == len(body["predictions"])


def test_segmentation_polygons_outline_each_shape(client: httpx.Client, scene: Scene) -> None:
    body = _post_frame(client, "shapes-seg/1", scene.render(30))
    visible = _visible(scene, 30)
    assert visible
    for truth in visible:
        prediction = max(body["predictions"], key=lambda p: iou(truth.box, corners(p)))
        points = np.array([[q["x"], q["y"]] for q in prediction["points"]], dtype=np.float32)
        assert len(points) >= 3
        x1, y1, x2, y2 = truth.box
        area = cv2.contourArea(points)
        box_area = (x2 - x1 - 1) * (y2 - y1 - 1)  # a contour runs through edge pixel centres
        ideal = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5}[truth.class_name]
        assert area / box_area == pytest.approx(ideal, abs=0.08)
        assert points[:, 0].min() >= x1 - 2
        assert points[:, 0].max() <= x2 + 2


def test_keypoints_are_extremes_and_centre(client: httpx.Client, scene: Scene) -> None:
    body = _post_frame(client, "shapes-pose/1", scene.render(60))
    for truth in _visible(scene, 60):
        prediction = max(body["predictions"], key=lambda p: iou(truth.box, corners(p)))
        keypoints = {k["class"]: k for k in prediction["keypoints"]}
        assert list(keypoints) == ["top", "right", "bottom", "left", "center"]
        x1, y1, x2, y2 = truth.box
        assert keypoints["top"]["y"] == pytest.approx(y1, abs=2)
        assert keypoints["bottom"]["y"] == pytest.approx(y2 - 1, abs=2)
        assert keypoints["left"]["x"] == pytest.approx(x1, abs=2)
        assert keypoints["right"]["x"] == pytest.approx(x2 - 1, abs=2)
        assert keypoints["center"]["x"] == pytest.approx((x1 + x2) / 2, abs=2)


def test_classification_names_the_dominant_colour(client: httpx.Client) -> None:
    single = Scene(width=320, height=240, objects=1, seed=11)
    colour = single.truth(0)[0].colour
    body = _post_frame(client, "shapes-cls/1", single.render(0))
    assert body["top"] == colour
    assert body["confidence"] > 0.9
    assert body["predictions"][0] == {
        "class": colour,
        "class_id": list(COLOURS).index(colour),
        "confidence": body["confidence"],
    }
    assert "detection_id" not in body["predictions"][0]
    blank = _post_frame(client, "shapes-cls/1", np.full((64, 64, 3), 40, np.uint8))
    assert blank["top"] == "none"


@pytest.mark.parametrize(
    "path", ["/myspace/workflows/detect-shapes", "/infer/workflows/myspace/detect-shapes"]
)
def test_workflow_route(client: httpx.Client, scene: Scene, path: str) -> None:
    image = {"type": "base64", "value": b64(jpeg_bytes(scene.render(8))).decode()}
    response = client.post(path, json={"api_key": "x", "inputs": {"image": image}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["outputs"]) == 1
    predictions = body["outputs"][0]["predictions"]
    assert predictions["image"] == {"width": 640, "height": 360}
    assert len(predictions["predictions"]) == len(scene.truth(8))
    # two images in, two outputs out; model chosen by input
    both = client.post(
        path, json={"inputs": {"image": [image, image], "model_id": "shapes-seg/1"}}
    ).json()
    assert len(both["outputs"]) == 2
    assert "points" in both["outputs"][1]["predictions"]["predictions"][0]


def test_unknown_workflow_is_404(client: httpx.Client) -> None:
    response = client.post(
        "/w/workflows/nope", json={"inputs": {"image": {"type": "base64", "value": ""}}}
    )
    assert response.status_code == 404


def test_self_hosted_json_api(client: httpx.Client, scene: Scene) -> None:
    registry = client.get("/model/registry").json()["models"]
    shapes = next(m for m in registry if m["model_id"] == "shapes/1")
    assert shapes == {
        "model_id": "shapes/1",
        "task_type": "object-detection",
        "batch_size": 1,
        "input_height": 640,
        "input_width": 640,
    }
    assert client.post("/model/add", json={"model_id": "shapes/1"}).status_code == 200
    assert client.post("/model/add", json={"model_id": "nope/1"}).status_code == 404
    image = {"type": "base64", "value": b64(jpeg_bytes(scene.render(3))).decode()}
    body = client.post(
        "/infer/object_detection", json={"model_id": "shapes/1", "image": image, "confidence": 0.5}
    ).json()
    assert len(body["predictions"]) == len(scene.truth(3))
    wrong_task = client.post("/infer/classification", json={"model_id": "shapes/1", "image": image})
    assert wrong_task.status_code == 400
    batch = client.post(
        "/infer/object_detection", json={"model_id": "shapes/1", "image": [image, image]}
    )
    assert isinstance(batch.json(), list)
    assert len(batch.json()) == 2


# -- errors ---------------------------------------------------------------------------------


def test_unknown_model_is_404(client: httpx.Client, scene: Scene) -> None:
    response = client.post("/nope/3", content=b64(jpeg_bytes(scene.render(0))), headers=FORM)
    assert response.status_code == 404
    assert "nope/3" in response.json()["message"]


@pytest.mark.parametrize(
    ("body", "headers", "fragment"),
    [
        (b"not base64 at all!!", FORM, "base64"),
        (b64(b"GIF89a but not an image really"), FORM, "decode"),
        (b"", FORM, "empty"),
        (b"\x89PNG\r\n\x1a\n", {"Content-Type": "image/png"}, "raw bytes"),
    ],
)
def test_undecodable_images_are_400(
    client: httpx.Client, body: bytes, headers: dict, fragment: str
) -> None:
    response = client.post("/shapes/1", content=body, headers=headers)
    assert response.status_code == 400
    assert fragment in response.json()["message"]


def test_missing_content_type_is_400(server: ServerThread, scene: Scene) -> None:
    request = httpx.Request(
        "POST", f"{server.url}/shapes/1", content=b64(jpeg_bytes(scene.render(0)))
    )
    assert "content-type" not in request.headers
    with httpx.Client() as raw:
        response = raw.send(request)
    assert response.status_code == 400
    assert "Content-Type" in response.json()["message"]


@pytest.mark.parametrize(
    "params", [{"confidence": "abc"}, {"confidence": 150}, {"overlap": -1}, {"max_detections": "x"}]
)
def test_bad_parameters_are_400(client: httpx.Client, scene: Scene, params: dict) -> None:
    response = client.post(
        "/shapes/1", params=params, content=b64(jpeg_bytes(scene.render(0))), headers=FORM
    )
    assert response.status_code == 400


def test_request_over_5mb_is_413(client: httpx.Client) -> None:
    response = client.post("/shapes/1", content=b"A" * (5 * 1024 * 1024 + 1), headers=FORM)
    assert response.status_code == 413
    # The same size in chunks, without a Content-Length, is cut off too.
    chunked = client.post("/shapes/1", content=iter([b"A" * (1024 * 1024)] * 6), headers=FORM)
    assert chunked.status_code == 413


def test_decompression_bomb_is_refused(client: httpx.Client) -> None:
    # A tiny PNG that declares 100k x 100k pixels.
    huge = np.zeros((1, 1, 3), np.uint8)
    _ok, png = cv2.imencode(".png", huge)
    data = bytearray(png.tobytes())
    data[16:20] = (100_000).to_bytes(4, "big")
    data[20:24] = (100_000).to_bytes(4, "big")
    response = client.post("/shapes/1", content=b64(bytes(data)), headers=FORM)
    assert response.status_code == 400
    assert "larger than" in response.json()["message"]


def test_api_key_required_when_configured(start_server: ServerFactory, scene: Scene) -> None:
    server = start_server(api_key="sekrit-key-123")
    body = b64(jpeg_bytes(scene.render(0)))
    with httpx.Client(base_url=server.url) as http:
        missing = http.post("/shapes/1", content=body, headers=FORM)
        assert missing.status_code == 401
        assert missing.json() == {"Message": "User is not authorized to access this resource"}
        wrong = http.post("/shapes/1", params={"api_key": "nope"}, content=body, headers=FORM)
        assert wrong.status_code == 403
        assert wrong.json() == {"Message": "User is not authorized to access this resource"}
        assert (
            http.post(
                "/shapes/1", params={"api_key": "sekrit-key-123"}, content=body, headers=FORM
            ).status_code
            == 200
        )
        bearer = {**FORM, "Authorization": "Bearer sekrit-key-123"}
        assert http.post("/shapes/1", content=body, headers=bearer).status_code == 200
        image = {"type": "base64", "value": body.decode()}
        assert (
            http.post("/w/workflows/detect-shapes", json={"inputs": {"image": image}}).status_code
            == 401
        )
        ok = http.post(
            "/w/workflows/detect-shapes",
            json={"api_key": "sekrit-key-123", "inputs": {"image": image}},
        )
        assert ok.status_code == 200
        assert http.get("/model/registry").status_code == 401


def test_image_urls_are_refused_by_default(client: httpx.Client) -> None:
    response = client.post("/shapes/1", params={"image": "http://127.0.0.1:1/x.jpg"}, headers=FORM)
    assert response.status_code == 400
    assert "disabled" in response.json()["message"]


@pytest.fixture
def image_host(tmp_path: Path, scene: Scene, serve_http: Callable[..., str]) -> str:
    """A plain HTTP server on 127.0.0.1 holding one frame as frame.jpg."""
    (tmp_path / "frame.jpg").write_bytes(jpeg_bytes(scene.render(12)))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return serve_http(Quiet)


def test_image_urls_when_allowed(
    start_server: ServerFactory, image_host: str, scene: Scene
) -> None:
    server = start_server(allow_image_urls=True)
    with httpx.Client(base_url=server.url) as http:
        ok = http.post("/shapes/1", params={"image": f"{image_host}/frame.jpg"}, headers=FORM)
        assert ok.status_code == 200, ok.text
        assert len(ok.json()["predictions"]) == len(scene.truth(12))
        missing = http.post("/shapes/1", params={"image": f"{image_host}/nope.jpg"}, headers=FORM)
        assert missing.status_code == 400
        scheme = http.post("/shapes/1", params={"image": "file:///etc/passwd"}, headers=FORM)
        assert scheme.status_code == 400
        assert "http" in scheme.json()["message"]


def test_missing_weights_answer_503_with_reason(
    start_server: ServerFactory, tmp_path: Path, scene: Scene
) -> None:
    server = start_server(models_dir=tmp_path)
    with httpx.Client(base_url=server.url) as http:
        response = http.post("/coco/1", content=b64(jpeg_bytes(scene.render(0))), headers=FORM)
        assert response.status_code == 503
        assert "yolox_nano.onnx" in response.json()["message"]
        coco = next(m for m in http.get("/").json()["models"] if m["model_id"] == "coco/1")
        assert coco["available"] is False
        assert "not found" in coco["reason"]
        # other models still serve
        assert (
            http.post(
                "/shapes/1", content=b64(jpeg_bytes(scene.render(0))), headers=FORM
            ).status_code
            == 200
        )


def test_corrupt_weights_are_rejected(
    start_server: ServerFactory, tmp_path: Path, scene: Scene
) -> None:
    (tmp_path / "yolox_nano.onnx").write_bytes(b"not the model")
    server = start_server(models_dir=tmp_path)
    with httpx.Client(base_url=server.url) as http:
        response = http.post("/coco/1", content=b64(jpeg_bytes(scene.render(0))), headers=FORM)
    assert response.status_code == 503
    assert "sha256" in response.json()["message"]
