"""Roboflow's inference protocol, client side: targets, requests, responses, errors.

One ``RoboflowClient`` per target; it is thread-safe and keeps one pool of
keep-alive connections. Each call is one attempt: retries, deadlines and pacing
belong to ``streamer.sender``.

Example::

    target = Target.model("coco/1", api_url="http://127.0.0.1:9001")
    with RoboflowClient(target) as client:
        prediction = client.infer(frame_bgr)
        print(prediction.detections.xyxy, prediction.detections.data["class_name"])
"""

from __future__ import annotations

import base64
import email.utils
import json
import logging
import math
import os
import re
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import cv2
import httpx
import numpy as np
import numpy.typing as npt
import supervision as sv

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
from streamer.redaction import clean, install_log_redaction, redact
from streamer.transport import DeadlineTransport, request_deadline

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_API_URL",
    "Classification",
    "Prediction",
    "Prepared",
    "RoboflowClient",
    "Target",
    "check_api_key",
    "parse_predictions",
    "prepare_image",
    "resolve_api_key",
]

log = logging.getLogger(__name__)

API_KEY_ENV = "ROBOFLOW_API_KEY"
DEFAULT_API_URL = "https://serverless.roboflow.com"
V1_HOSTS = frozenset(
    f"{name}.roboflow.com" for name in ("detect", "outline", "classify", "segment", "infer")
)
V1_LIMIT = 5 * 1024 * 1024
V2_LIMIT = 20 * 1024 * 1024
_QUERY_OVERHEAD = 2048  # headers and query string, counted against the limit too
_FORM = {"Content-Type": "application/x-www-form-urlencoded"}
# More than any real model answers for one frame; a server sending more is broken or
# hostile, and 100,000 boxes would be gigabytes of masks and labels downstream.
MAX_DETECTIONS = 10_000
MAX_API_KEY_LENGTH = 512
KEY_TRANSPORTS = ("query", "header", "both")
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")
_WORKSPACE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

Image = npt.NDArray[np.uint8]


def resolve_api_key(explicit: str | None = None) -> str | None:
    """The key given, else ``$ROBOFLOW_API_KEY``, else ``None`` (local servers need none)."""
    return explicit or os.environ.get(API_KEY_ENV) or None


def check_api_key(key: str | None) -> str | None:
    """``key`` if it can be one; else a ``ConfigError`` that does not show it."""
    if key is not None and (
        len(key) > MAX_API_KEY_LENGTH
        or not key.isascii()
        or not key.isprintable()
        or any(ch.isspace() for ch in key)
    ):
        raise ConfigError(
            f"the API key does not look like one ({len(key)} characters; "
            f"keys are at most {MAX_API_KEY_LENGTH} printable ASCII characters, no spaces)"
        )
    return key


@dataclass(frozen=True, kw_only=True)
class Target:
    """Where frames go and how: a model route or a workflow, thresholds, upload size."""

    api_url: str = DEFAULT_API_URL
    model_id: str | None = None
    workspace: str | None = None
    workflow_id: str | None = None
    workflow_inputs: Mapping[str, Any] = field(default_factory=dict)
    image_input: str = "image"  # the workflow input that takes the image
    output_name: str = "predictions"  # the workflow output that holds predictions
    confidence: float = 0.4  # fraction; sent as 0-100 on the model route
    overlap: float = 0.3
    max_side: int = 640  # long side of the upload; frames are never upscaled
    jpeg_quality: int = 80

    def __post_init__(self) -> None:
        url = httpx.URL(self.api_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigError(
                f"API URL must be http(s)://host[:port], got {redact(self.api_url)!r}"
            )
        if self.is_workflow:
            if not self.workspace or not self.workflow_id or self.model_id:
                raise ConfigError("a workflow target needs a workspace and a workflow id, no model")
            for part in (self.workspace, self.workflow_id):
                if not _WORKSPACE_ID.fullmatch(part or ""):
                    raise ConfigError(
                        "workflow must look like workspace/workflow_id, "
                        f"got {clean(str(part), 80)!r}"
                    )
        elif not self.model_id or not _MODEL_ID.fullmatch(self.model_id):
            raise ConfigError(
                "model id must look like project/version (letters, digits, - _ .), "
                f"got {clean(str(self.model_id), 80)!r}"
            )
        for name in ("confidence", "overlap"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be a fraction in [0, 1], got {getattr(self, name)}")
        if not 32 <= self.max_side <= 8192:
            raise ConfigError(f"max_side must be in [32, 8192], got {self.max_side}")
        if not 10 <= self.jpeg_quality <= 100:
            raise ConfigError(f"jpeg_quality must be in [10, 100], got {self.jpeg_quality}")

    @classmethod
    def model(cls, model_id: str, *, api_url: str = DEFAULT_API_URL, **options: Any) -> Target:
        return cls(api_url=api_url, model_id=model_id, **options)

    @classmethod
    def workflow(
        cls, workspace: str, workflow_id: str, *, api_url: str = DEFAULT_API_URL, **options: Any
    ) -> Target:
        return cls(api_url=api_url, workspace=workspace, workflow_id=workflow_id, **options)

    @property
    def is_workflow(self) -> bool:
        return self.workflow_id is not None or self.workspace is not None

    @property
    def host(self) -> str:
        return httpx.URL(self.api_url).host

    @property
    def path(self) -> str:
        if self.is_workflow:
            return f"/{self.workspace}/workflows/{self.workflow_id}"
        return f"/{self.model_id}"

    @property
    def name(self) -> str:
        return (
            f"workflow {self.workspace}/{self.workflow_id}"
            if self.is_workflow
            else str(self.model_id)
        )

    @property
    def size_limit(self) -> int:
        """Request size the route takes: 5 MB on v1 hosts and model routes, 20 MB on v2."""
        if self.host in V1_HOSTS:
            return V1_LIMIT
        if self.host == "serverless.roboflow.com" or self.is_workflow:
            return V2_LIMIT
        return V1_LIMIT


@dataclass(frozen=True)
class Prepared:
    """An image ready to send: base64 JPEG, and the size it was shrunk to."""

    body: bytes
    width: int
    height: int
    original_width: int
    original_height: int


def prepare_image(
    image: Image,
    *,
    max_side: int,
    quality: int,
    limit: int,
    original: tuple[int, int] | None = None,
) -> Prepared:
    """Shrink so the long side is at most ``max_side``, JPEG, base64; fit under ``limit``.

    ``original``: (width, height) of the frame ``image`` was already shrunk from, which
    the answer's coordinates are mapped back to (default: ``image``'s own).

    If the upload would pass ``limit`` bytes, try lower qualities, then smaller
    sizes; ``RequestTooLarge`` if nothing fits.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
        raise ConfigError(f"frames must be BGR images (H, W, 3), got shape {image.shape}")
    height, width = image.shape[:2]
    side = min(max_side, max(height, width))
    for q in sorted({quality, min(quality, 60), min(quality, 40)}, reverse=True):
        prepared = _encode(image, side, q, original)
        if len(prepared.body) + _QUERY_OVERHEAD <= limit:
            return prepared
    while side > 64:
        side = int(side * 0.7)
        prepared = _encode(image, side, 40, original)
        if len(prepared.body) + _QUERY_OVERHEAD <= limit:
            return prepared
    raise RequestTooLarge(f"frame does not fit the {limit // (1024 * 1024)} MB request limit")


def _encode(image: Image, side: int, quality: int, original: tuple[int, int] | None) -> Prepared:
    height, width = image.shape[:2]
    scale = side / max(height, width)
    if scale < 1:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    else:
        resized = image
    ok, jpeg = cv2.imencode(".jpg", resized, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ConfigError("could not JPEG-encode the frame")
    return Prepared(
        body=base64.b64encode(jpeg.tobytes()),
        width=resized.shape[1],
        height=resized.shape[0],
        original_width=original[0] if original else width,
        original_height=original[1] if original else height,
    )


@dataclass(frozen=True)
class Classification:
    """Single- or multi-label classification; ``scores`` best first."""

    top: str
    confidence: float
    scores: tuple[tuple[str, float], ...]


@dataclass(frozen=True, eq=False)
class Prediction:
    """A parsed answer, in pixels of the original frame.

    ``detections.data`` holds ``class_name`` and ``detection_id``, and
    ``polygons`` (one (N, 2) float array per detection) for segmentation: masks
    are built only when something asks (``masks``).
    """

    detections: sv.Detections
    keypoints: sv.KeyPoints | None = None
    classification: Classification | None = None
    server_time: float | None = None
    inference_id: str | None = None

    def masks(self, height: int, width: int) -> npt.NDArray[np.bool_] | None:
        polygons = self.detections.data.get("polygons")
        if polygons is None:
            return None
        return np.array(
            [
                sv.polygon_to_mask(np.asarray(p, dtype=np.int32), (width, height)).astype(bool)
                if len(p) >= 3
                else np.zeros((height, width), dtype=bool)
                for p in polygons
            ]
        ).reshape(-1, height, width)


_LARGEST = 1e7  # pixels or scores beyond this are nonsense, and overflow float32


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadResponse(f"{what} is not a number: {value!r:.40}")
    number = float(value)
    if not math.isfinite(number) or abs(number) > _LARGEST:
        raise BadResponse(f"{what} is out of range: {value!r:.40}")
    return number


def parse_predictions(payload: Any, *, scale_x: float = 1.0, scale_y: float = 1.0) -> Prediction:
    """Parse one response (or workflow output) into supervision objects.

    ``scale_x/y`` map the server's pixels back to the frame's (original / sent).
    """
    if not isinstance(payload, dict):
        raise BadResponse(f"expected a JSON object, got {type(payload).__name__}")
    raw = payload.get("predictions")
    server_time = payload.get("time") if isinstance(payload.get("time"), int | float) else None
    inference_id = (
        payload.get("inference_id") if isinstance(payload.get("inference_id"), str) else None
    )
    if "top" in payload or isinstance(raw, dict):
        return Prediction(
            detections=sv.Detections.empty(),
            classification=_parse_classification(payload),
            server_time=server_time,
            inference_id=inference_id,
        )
    if not isinstance(raw, list):
        raise BadResponse("response has no 'predictions' list")
    count = len(raw)
    if count > MAX_DETECTIONS:
        raise BadResponse(
            f"the answer has {count} predictions, more than the {MAX_DETECTIONS} taken from "
            "one frame (a broken server?); the frame is recorded as failed"
        )
    xyxy = np.zeros((count, 4), dtype=np.float32)
    confidence = np.zeros(count, dtype=np.float32)
    class_id = np.zeros(count, dtype=int)
    names: list[str] = []
    ids: list[str] = []
    polygons: list[npt.NDArray[np.float32]] = []
    keypoint_rows: list[list[tuple[float, float, float]]] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise BadResponse(f"prediction {i} is not an object")
        try:
            x, y = _number(item["x"], "x"), _number(item["y"], "y")
            w, h = _number(item["width"], "width"), _number(item["height"], "height")
        except KeyError as exc:
            raise BadResponse(f"prediction {i} lacks {exc.args[0]!r}") from None
        if w < 0 or h < 0:
            raise BadResponse(f"prediction {i} has a negative size")
        xyxy[i] = (
            (x - w / 2) * scale_x,
            (y - h / 2) * scale_y,
            (x + w / 2) * scale_x,
            (y + h / 2) * scale_y,
        )
        confidence[i] = _number(item.get("confidence", 0.0), "confidence")
        class_id[i] = int(_number(item.get("class_id", -1), "class_id"))
        names.append(str(item.get("class", "")))
        ids.append(str(item.get("detection_id", "")))
        if "points" in item:
            polygons.append(_parse_points(item["points"], scale_x, scale_y))
        if "keypoints" in item:
            keypoint_rows.append(_parse_keypoints(item["keypoints"], scale_x, scale_y))
    data: dict[str, Any] = {
        "class_name": np.array(names, dtype=object),
        "detection_id": np.array(ids, dtype=object),
    }
    if polygons:
        if len(polygons) != count:
            raise BadResponse("only some predictions have 'points'")
        holder = np.empty(count, dtype=object)
        holder[:] = polygons
        data["polygons"] = holder
    detections = sv.Detections(xyxy=xyxy, confidence=confidence, class_id=class_id, data=data)
    return Prediction(
        detections=detections,
        keypoints=_keypoints(keypoint_rows, count),
        server_time=server_time,
        inference_id=inference_id,
    )


def _parse_points(points: Any, sx: float, sy: float) -> npt.NDArray[np.float32]:
    if not isinstance(points, list):
        raise BadResponse("'points' is not a list")
    try:
        array = np.array(
            [(_number(p["x"], "x") * sx, _number(p["y"], "y") * sy) for p in points], np.float32
        )
    except (KeyError, TypeError) as exc:
        raise BadResponse("a point lacks x or y") from exc
    return array.reshape(-1, 2)


def _parse_keypoints(points: Any, sx: float, sy: float) -> list[tuple[float, float, float]]:
    if not isinstance(points, list):
        raise BadResponse("'keypoints' is not a list")
    try:
        return [
            (
                _number(p["x"], "x") * sx,
                _number(p["y"], "y") * sy,
                _number(p.get("confidence", 1.0), "confidence"),
            )
            for p in points
        ]
    except (KeyError, TypeError, AttributeError) as exc:
        raise BadResponse("a keypoint lacks x or y") from exc


def _keypoints(rows: list[list[tuple[float, float, float]]], count: int) -> sv.KeyPoints | None:
    if not rows:
        return None
    if len(rows) != count or len({len(r) for r in rows}) != 1:
        raise BadResponse("keypoint lists differ in length between predictions")
    array = np.array(rows, dtype=np.float32).reshape(count, -1, 3)
    return sv.KeyPoints(xy=array[:, :, :2], keypoint_confidence=array[:, :, 2])


def _parse_classification(payload: dict[str, Any]) -> Classification:
    raw = payload.get("predictions")
    scores: list[tuple[str, float]] = []
    if isinstance(raw, list):
        for item in raw:
            if not isinstance(item, dict):
                raise BadResponse("classification prediction is not an object")
            scores.append(
                (str(item.get("class", "")), _number(item.get("confidence", 0.0), "confidence"))
            )
    elif isinstance(raw, dict):  # multi-label: {class: {"confidence": ...}}
        for name, item in raw.items():
            value = item.get("confidence", 0.0) if isinstance(item, dict) else item
            scores.append((str(name), _number(value, "confidence")))
    scores.sort(key=lambda s: -s[1])
    top = payload.get("top")
    if not isinstance(top, str):
        top = scores[0][0] if scores else ""
    confidence = payload.get("confidence")
    if not isinstance(confidence, int | float) or isinstance(confidence, bool):
        confidence = scores[0][1] if scores else 0.0
    return Classification(top=top, confidence=float(confidence), scores=tuple(scores))


def _is_html(response: httpx.Response) -> bool:
    kind = response.headers.get("Content-Type", "").lower()
    if "html" in kind:
        return True
    head = response.content[:256].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<?xml"))


def _json_body(response: httpx.Response) -> Any:
    """The decoded JSON, or ``None`` when the body is not JSON (nesting too deep included)."""
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return None


def _server_message(response: httpx.Response) -> str:
    """The server's own words about an error, as one safe line."""
    if _is_html(response):
        return "an HTML page"
    body = _json_body(response)
    if body is None:
        return clean(response.text, 400) or response.reason_phrase
    if isinstance(body, dict):
        for key in ("message", "Message", "detail", "error"):
            if isinstance(body.get(key), str):
                return clean(str(body[key]), 400)
    return clean(str(body), 400)


def _seconds(value: str | None) -> float | None:
    """A positive number from a header or field, else ``None``."""
    try:
        number = float(value) if value is not None else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) and number >= 0 else None


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class RoboflowClient:
    """Sends frames to one target over a pool of keep-alive connections (thread-safe)."""

    def __init__(
        self,
        target: Target,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        max_connections: int = 8,
        transport: httpx.BaseTransport | None = None,
        key_transport: str = "query",
    ) -> None:
        """``key_transport``: how the key travels: ``query`` (``api_key=``, the hosted
        API's way and the SDK's default), ``header`` (``Authorization: Bearer``: the
        key stays out of URLs and proxy logs; inference servers 1.5+), or ``both``."""
        if key_transport not in KEY_TRANSPORTS:
            raise ConfigError(
                f"api_key_transport must be one of {', '.join(KEY_TRANSPORTS)}, "
                f"got {clean(key_transport, 40)!r}"
            )
        self.target = target
        self._api_key = check_api_key(resolve_api_key(api_key))
        self._key_in_query = key_transport in ("query", "both")
        self._key_in_header = key_transport in ("header", "both")
        self.timeout = timeout
        # httpx logs every request URL, query string (and so the key) included.
        install_log_redaction("httpx", "httpcore")
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._http = httpx.Client(
            base_url=target.api_url,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            transport=transport
            or DeadlineTransport(
                limits=limits, socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
            ),
            headers=self._headers(),
        )

    def _headers(self) -> dict[str, str]:
        headers = {"User-Agent": "streamer"}
        if self._key_in_header and self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return f"RoboflowClient({self.target.name!r} at {self.target.api_url!r}, key={key})"

    @property
    def api_key_fingerprint(self) -> str:
        """Identifies the key without revealing it (for sharing a rate governor)."""
        import hashlib

        return hashlib.sha256((self._api_key or "").encode()).hexdigest()[:16]

    def prepare(self, image: Image, *, original: tuple[int, int] | None = None) -> Prepared:
        """``original``: (width, height) of the frame ``image`` was shrunk from."""
        return prepare_image(
            image,
            max_side=self.target.max_side,
            quality=self.target.jpeg_quality,
            limit=self.target.size_limit,
            original=original,
        )

    def send(
        self,
        prepared: Prepared,
        *,
        timeout: float | None = None,
        abandon: threading.Event | None = None,
    ) -> tuple[Any, float | None]:
        """One attempt: POST, check status, decode JSON. Returns (body, server seconds).

        ``timeout`` (default the client's) bounds the whole request: connecting,
        sending and every read together, not each of them. ``abandon`` set from
        another thread ends the wait for the answer within a fraction of a second.
        """
        target = self.target
        seconds = timeout if timeout is not None else self.timeout
        request_timeout = httpx.Timeout(seconds, connect=min(seconds, 5.0))
        try:
            with request_deadline(time.monotonic() + seconds, abandon):
                response = self._post(prepared, request_timeout)
        except httpx.TimeoutException as exc:
            raise InferenceTimeout(f"no answer from {target.host} within {seconds:.1f} s") from exc
        except httpx.TransportError as exc:
            raise ConnectionFailed(
                f"cannot reach {target.host}: {type(exc).__name__}: "
                f"{clean(self._redact(str(exc)), 200)}"
            ) from exc
        self._raise_for_status(response)
        if _is_html(response):
            raise BadResponse(
                f"{target.host} answered {response.status_code} with an HTML page "
                "(is --api-url a Roboflow-compatible inference server?)",
                status=response.status_code,
            )
        body = _json_body(response)
        if body is None:
            raise BadResponse(
                f"{target.host} answered {response.status_code} with something that is not "
                f"JSON: {clean(self._redact(response.text), 80)!r}",
                status=response.status_code,
            )
        server = _seconds(response.headers.get("X-Processing-Time"))
        if server is None and isinstance(body, dict):
            server = _seconds(str(body.get("time")))  # Roboflow's own server sends no header
        return body, server

    def _post(self, prepared: Prepared, request_timeout: httpx.Timeout) -> httpx.Response:
        target = self.target
        key = self._api_key if self._key_in_query else None
        if target.is_workflow:
            image = {"type": "base64", "value": prepared.body.decode("ascii")}
            payload = {
                "api_key": key,
                "inputs": {**target.workflow_inputs, target.image_input: image},
            }
            return self._http.post(target.path, json=payload, timeout=request_timeout)
        params: dict[str, str | float] = {
            "confidence": round(target.confidence * 100, 3),
            "overlap": round(target.overlap * 100, 3),
        }
        if key:
            params["api_key"] = key
        return self._http.post(
            target.path,
            params=params,
            content=prepared.body,
            headers=_FORM,
            timeout=request_timeout,
        )

    def parse(self, body: Any, prepared: Prepared) -> Prediction:
        """Map an answer back onto the original frame."""
        target = self.target
        if target.is_workflow:
            body = self._workflow_output(body)
        # The server's own idea of the size it saw wins over ours.
        image = body.get("image") if isinstance(body, dict) else None
        sent_w = _seconds(str(image.get("width"))) if isinstance(image, dict) else None
        sent_h = _seconds(str(image.get("height"))) if isinstance(image, dict) else None
        if not sent_w or not sent_h:
            sent_w, sent_h = float(prepared.width), float(prepared.height)
        return parse_predictions(
            body,
            scale_x=prepared.original_width / sent_w,
            scale_y=prepared.original_height / sent_h,
        )

    def infer(self, image: Image, *, timeout: float | None = None) -> Prediction:
        """Prepare, send once, parse."""
        prepared = self.prepare(image)
        body, _ = self.send(prepared, timeout=timeout)
        return self.parse(body, prepared)

    def _workflow_output(self, body: Any) -> Any:
        outputs = body.get("outputs") if isinstance(body, dict) else None
        if not isinstance(outputs, list) or not outputs or not isinstance(outputs[0], dict):
            raise BadResponse("workflow answer has no 'outputs' list")
        name = self.target.output_name
        if name not in outputs[0]:
            available = ", ".join(sorted(outputs[0])) or "none"
            raise BadResponse(f"workflow output {name!r} not found (outputs: {available})")
        return outputs[0][name]

    def _redact(self, text: str) -> str:
        return redact(text, self._api_key)

    def _raise_for_status(self, response: httpx.Response) -> None:
        status = response.status_code
        where = f"{self.target.name} at {self.target.host}"
        if 300 <= status < 400:
            location = clean(self._redact(response.headers.get("Location", "nowhere")), 120)
            raise BadResponse(
                f"{self.target.host} answered {status}, a redirect to {location}; "
                "give the final address as --api-url",
                status=status,
            )
        if status < 400:
            return
        message = self._redact(_server_message(response))
        if status == 404 and _json_body(response) is None:
            # Roboflow answers an unknown model with JSON; a page or plain text means
            # the URL never reached an inference route
            raise BadResponse(
                f"{self.target.host} answered 404 with "
                f"{'an HTML page' if _is_html(response) else repr(message[:80])} "
                "(is --api-url a Roboflow-compatible inference server?)",
                status=status,
            )
        if status in (401, 403):
            raise AuthError(f"{status} from {where}: {message} (check the API key)", status=status)
        if status == 402:
            raise PlanError(
                f"402 from {where}: {message}. This model is served only by the v2 API "
                f"({DEFAULT_API_URL}) or needs a plan upgrade",
                status=status,
            )
        if status == 404:
            raise ModelNotFound(f"404: {where} not found: {message}", status=status)
        if status == 413:
            raise RequestTooLarge(f"413 from {where}: request too large: {message}", status=status)
        if status == 429:
            retry_after = _retry_after(response.headers.get("Retry-After"))
            raise RateLimited(f"429 from {where}: {message}", retry_after=retry_after)
        if status >= 500:
            raise ServerError(f"{status} from {where}: {message}", status=status)
        raise InferenceError(f"{status} from {where}: {message}", status=status)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RoboflowClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
