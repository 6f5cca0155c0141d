"""The HTTP face of the local server: Roboflow's routes, errors and fault injection.

Routes (what Roboflow's hosted API and its self-hosted server answer):

- ``POST /{project}/{version}``: the v1/v2 model route (base64 body, multipart file,
  raw image bytes, or ``image=<url>`` when URL fetching is allowed);
- ``POST /{workspace}/workflows/{id}`` and ``POST /infer/workflows/{workspace}/{id}``;
- ``POST /infer/{task}``, ``GET /model/registry``, ``POST /model/add``, ``GET /info``:
  the self-hosted server's JSON API, which Roboflow's SDK uses for local URLs;
- ``GET /`` and ``GET /health``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from streamer import __version__
from streamer.errors import ModelError
from streamer.server.decode import BadRequest, decode_base64_image, decode_image_bytes, parse_params
from streamer.server.faults import FaultConfig, FaultInjector, retry_after_header
from streamer.server.models import (
    TASK_CLASSIFICATION,
    TASK_INSTANCE_SEGMENTATION,
    TASK_KEYPOINTS,
    TASK_OBJECT_DETECTION,
    Image,
    InferenceParams,
    ModelRegistry,
    builtin_registry,
)

__all__ = ["MODEL_ROUTE_LIMIT", "WORKFLOWS", "InferenceService", "ServerConfig", "create_app"]

log = logging.getLogger(__name__)

MODEL_ROUTE_LIMIT = 5 * 1024 * 1024  # v1 hosted API: image plus everything else
JSON_ROUTE_LIMIT = 20 * 1024 * 1024  # v2 and workflows
UNAUTHORIZED = {"Message": "User is not authorized to access this resource"}
_HANG_POLL_S = 0.05
_HANG_MAX_S = 600.0
_URL_FETCH_TIMEOUT_S = 5.0

# /infer/{task} path segment -> task type
_V1_TASKS = {
    "object_detection": TASK_OBJECT_DETECTION,
    "instance_segmentation": TASK_INSTANCE_SEGMENTATION,
    "keypoints_detection": TASK_KEYPOINTS,
    "classification": TASK_CLASSIFICATION,
}

# Built-in workflows: id -> the model they run when ``inputs.model_id`` is absent.
# Each returns the model's predictions under the output name ``predictions``.
WORKFLOWS: dict[str, str] = {"detect": "coco/1", "detect-shapes": "shapes/1"}


@dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """How ``streamer serve`` runs."""

    host: str = "127.0.0.1"
    port: int = 9001
    models_dir: Path | None = None
    download_weights: bool = False
    api_key: str | None = None
    allow_image_urls: bool = False
    workers: int = 0  # inference threads; 0 = one per core
    faults: FaultConfig = field(default_factory=FaultConfig)


class _HTTPError(Exception):
    def __init__(
        self, status: int, message: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def _error_response(error: _HTTPError) -> JSONResponse:
    body: dict[str, Any] = (
        UNAUTHORIZED if error.status in (401, 403) else {"message": error.message}
    )
    return JSONResponse(body, status_code=error.status, headers=error.headers)


class InferenceService:
    """State shared by the routes: models, faults, the inference threads."""

    def __init__(self, config: ServerConfig, registry: ModelRegistry | None = None) -> None:
        self.config = config
        self.registry = registry or builtin_registry(
            config.models_dir, download=config.download_weights
        )
        self.faults = FaultInjector(config.faults)
        workers = config.workers or max(2, os.cpu_count() or 2)
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="streamer-infer")
        self.stopping = threading.Event()
        self.server_id = uuid.uuid4().hex

    def close(self) -> None:
        self.stopping.set()
        self.executor.shutdown(wait=False, cancel_futures=True)

    # -- helpers used by the routes ----------------------------------------------------

    def check_key(self, request: Request, body_key: Any = None) -> None:
        expected = self.config.api_key
        if expected is None:
            return
        given = request.query_params.get("api_key") or body_key
        if not given:
            auth = request.headers.get("authorization", "")
            given = auth[7:] if auth.lower().startswith("bearer ") else None
        if not given:
            raise _HTTPError(401)
        if not hmac.compare_digest(str(given).encode(), expected.encode()):
            raise _HTTPError(403)

    def model_for(self, model_id: str) -> str:
        if model_id not in self.registry:
            raise _HTTPError(404, f"Model {model_id} not found on this server")
        return model_id

    async def run_model(
        self, model_id: str, image: Image, params: InferenceParams
    ) -> tuple[dict[str, Any], float]:
        """Infer on the worker threads; returns the response body and seconds spent."""

        def work() -> tuple[dict[str, Any], float]:
            started = time.perf_counter()
            model = self.registry.get(model_id)
            body = model.infer(image, params)
            return body, time.perf_counter() - started

        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.executor, work)
        except ModelError as exc:
            raise _HTTPError(503, f"Model {model_id} is unavailable: {exc}") from exc

    async def fetch_image(self, url: str) -> Image:
        """Fetch an image URL, only when allowed: URL fetching lets callers reach other hosts."""
        if not self.config.allow_image_urls:
            raise BadRequest(
                "image URLs are disabled on this server (start it with --allow-image-urls)"
            )
        if not url.lower().startswith(("http://", "https://")):
            raise BadRequest("image URLs must be http:// or https://")
        import httpx

        try:
            async with (
                httpx.AsyncClient(timeout=_URL_FETCH_TIMEOUT_S, follow_redirects=False) as client,
                client.stream("GET", url) as response,
            ):
                if response.status_code != 200:
                    raise BadRequest(f"image URL answered {response.status_code}")
                data = bytearray()
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > MODEL_ROUTE_LIMIT:
                        raise BadRequest("image at URL is larger than 5 MB")
        except httpx.HTTPError as exc:
            raise BadRequest(f"could not fetch the image URL: {type(exc).__name__}") from exc
        return await asyncio.get_running_loop().run_in_executor(
            self.executor, decode_image_bytes, bytes(data)
        )

    async def decode_input(self, value: Any) -> Image:
        """An image from a JSON input: ``{"type": "base64"|"url", "value": ...}``."""
        if isinstance(value, str):
            value = {"type": "base64", "value": value}
        if not isinstance(value, dict) or not isinstance(value.get("value"), str):
            raise BadRequest('an image must be {"type": "base64" or "url", "value": "..."}')
        kind = value.get("type", "base64")
        if kind == "url":
            return await self.fetch_image(value["value"])
        if kind != "base64":
            raise BadRequest(f"image type {kind!r} is not supported (use base64 or url)")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, decode_base64_image, value["value"])


def _response_body(body: dict[str, Any], image: Image, seconds: float) -> dict[str, Any]:
    """Wrap a model's output as the API answers: ids, timing and image size added."""
    height, width = image.shape[:2]
    predictions = body.get("predictions", [])
    if isinstance(predictions, list):
        for prediction in predictions:
            if "x" in prediction:
                prediction["detection_id"] = str(uuid.uuid4())
    return {
        "inference_id": str(uuid.uuid4()),
        "time": round(seconds, 6),
        "image": {"width": width, "height": height},
        **body,
    }


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _HTTPError(413, f"Request exceeds the {limit // (1024 * 1024)} MB limit")
    chunks = bytearray()
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > limit:
            raise _HTTPError(413, f"Request exceeds the {limit // (1024 * 1024)} MB limit")
    body = bytes(chunks)
    request._body = body  # so that request.form() parses what was read
    return body


async def _read_json(request: Request, limit: int) -> dict[str, Any]:
    raw = await _read_body(request, limit)
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BadRequest("body is not valid JSON") from exc
    if not isinstance(payload, dict):
        raise BadRequest("body must be a JSON object")
    return payload


Handler = Callable[[Request, InferenceService], Awaitable[Response]]


def _inference_route(
    handler: Handler, service: InferenceService
) -> Callable[[Request], Awaitable[Response]]:
    """Apply concurrency cap, rate limit and injected faults, then the handler."""

    async def endpoint(request: Request) -> Response:
        faults = service.faults
        if not faults.admit():
            return _error_response(_HTTPError(503, "Server is at its concurrency limit"))
        try:
            wait = faults.retry_after()
            if wait is not None:
                return _error_response(
                    _HTTPError(
                        429,
                        "Rate limit exceeded",
                        {"Retry-After": retry_after_header(wait)},
                    )
                )
            decision = faults.decide()
            if decision.delay_s:
                await asyncio.sleep(decision.delay_s)
            if decision.hang:
                await _hang(request, service)
                return _error_response(_HTTPError(504, "Injected hang ended"))
            if decision.error_status is not None:
                return _error_response(
                    _HTTPError(decision.error_status, f"Injected error {decision.error_status}")
                )
            started = time.perf_counter()
            response = await handler(request, service)
            response.headers["X-Processing-Time"] = f"{time.perf_counter() - started:.6f}"
            return response
        except _HTTPError as error:
            return _error_response(error)
        except BadRequest as exc:
            return _error_response(_HTTPError(400, str(exc)))
        finally:
            faults.release()

    return endpoint


async def _hang(request: Request, service: InferenceService) -> None:
    """Answer nothing until the client gives up or the server stops."""
    await request.body()  # consumed first: polling for disconnect would eat the body
    deadline = time.monotonic() + _HANG_MAX_S
    while time.monotonic() < deadline and not service.stopping.is_set():
        if await request.is_disconnected():
            return
        await asyncio.sleep(_HANG_POLL_S)


# -- routes -------------------------------------------------------------------------------


async def _model_route(request: Request, service: InferenceService) -> Response:
    project = request.path_params["project"]
    version = request.path_params["version"]
    query = request.query_params
    service.check_key(request)
    model_id = service.model_for(f"{project}/{version}")
    params = parse_params(query)
    body = await _read_body(request, MODEL_ROUTE_LIMIT)
    if query.get("image"):
        image = await service.fetch_image(query["image"])
    else:
        image = await _image_from_body(request, body, service)
    result, seconds = await service.run_model(model_id, image, params)
    return JSONResponse(_response_body(result, image, seconds))


async def _image_from_body(request: Request, body: bytes, service: InferenceService) -> Image:
    content_type = request.headers.get("content-type", "").lower()
    if not content_type:
        raise BadRequest("Content-Type header not provided with request.")
    loop = asyncio.get_running_loop()
    if content_type.startswith("multipart/form-data"):
        try:
            form = await request.form()
        except (HTTPException, MultiPartException) as exc:
            raise BadRequest("malformed multipart body") from exc
        upload = form.get("file") or form.get("image")
        if upload is None or isinstance(upload, str):
            raise BadRequest("multipart upload needs a 'file' field")
        data = await upload.read()
        return await loop.run_in_executor(service.executor, decode_image_bytes, data)
    # Like Roboflow's server, any other type is base64 text (raw image bytes get a 400).
    return await loop.run_in_executor(service.executor, decode_base64_image, body)


async def _v1_infer_route(request: Request, service: InferenceService) -> Response:
    task = _V1_TASKS.get(request.path_params["task"])
    if task is None:
        raise _HTTPError(404, f"Unknown task {request.path_params['task']!r}")
    payload = await _read_json(request, JSON_ROUTE_LIMIT)
    service.check_key(request, payload.get("api_key"))
    model_id = service.model_for(str(payload.get("model_id", "")))
    if service.registry.task_type(model_id) != task:
        raise BadRequest(f"Model {model_id} is not a {task} model")
    params = parse_params(payload, confidence_key="confidence", overlap_key="iou_threshold")
    if "image" not in payload:
        raise BadRequest("body needs an 'image'")
    inputs = payload["image"]
    many = isinstance(inputs, list)
    results = []
    for item in inputs if many else [inputs]:
        image = await service.decode_input(item)
        body, seconds = await service.run_model(model_id, image, params)
        results.append(_response_body(body, image, seconds))
    return JSONResponse(results if many else results[0])


async def _workflow_route(request: Request, service: InferenceService) -> Response:
    workflow_id = request.path_params["workflow_id"]
    if workflow_id not in WORKFLOWS:
        raise _HTTPError(
            404, f"Workflow {workflow_id} not found (built-in: {', '.join(WORKFLOWS)})"
        )
    payload = await _read_json(request, JSON_ROUTE_LIMIT)
    service.check_key(request, payload.get("api_key"))
    inputs = payload.get("inputs")
    if not isinstance(inputs, dict) or "image" not in inputs:
        raise BadRequest("workflow needs inputs.image")
    model_id = service.model_for(str(inputs.get("model_id") or WORKFLOWS[workflow_id]))
    params = parse_params(inputs)
    images = inputs["image"] if isinstance(inputs["image"], list) else [inputs["image"]]
    outputs = []
    for item in images:
        image = await service.decode_input(item)
        body, seconds = await service.run_model(model_id, image, params)
        outputs.append({"predictions": _response_body(body, image, seconds)})
    return JSONResponse({"outputs": outputs, "profiler_trace": []})


def _model_description(service: InferenceService, model_id: str) -> dict[str, Any]:
    size = service.registry.get(model_id).input_size
    return {
        "model_id": model_id,
        "task_type": service.registry.task_type(model_id),
        "batch_size": 1,
        "input_height": size,
        "input_width": size,
    }


def _available_models(service: InferenceService) -> list[dict[str, Any]]:
    return [
        _model_description(service, model_id)
        for model_id in service.registry.ids()
        if service.registry.availability(model_id) is None
    ]


def create_app(config: ServerConfig, registry: ModelRegistry | None = None) -> Starlette:
    """The ASGI app; ``app.state.service`` holds its ``InferenceService``."""
    service = InferenceService(config, registry)

    async def root(request: Request) -> Response:
        models = []
        for model_id in service.registry.ids():
            reason = service.registry.availability(model_id)
            entry: dict[str, Any] = {
                "model_id": model_id,
                "task_type": service.registry.task_type(model_id),
                "available": reason is None,
            }
            if reason is not None:
                entry["reason"] = reason
            models.append(entry)
        return JSONResponse(
            {
                "name": "streamer local inference server",
                "version": __version__,
                "models": models,
                "workflows": sorted(WORKFLOWS),
            }
        )

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "healthy"})

    async def info(request: Request) -> Response:
        return JSONResponse(
            {
                "name": "streamer local inference server",
                "version": __version__,
                "uuid": service.server_id,
            }
        )

    async def registry_route(request: Request) -> Response:
        try:
            service.check_key(request)
        except _HTTPError as error:
            return _error_response(error)
        return JSONResponse({"models": _available_models(service)})

    async def add_model(request: Request) -> Response:
        try:
            payload = await _read_json(request, 64 * 1024)
            service.check_key(request, payload.get("api_key"))
            model_id = service.model_for(str(payload.get("model_id", "")))
            reason = service.registry.availability(model_id)
            if reason is not None:
                raise _HTTPError(503, f"Model {model_id} is unavailable: {reason}")
        except _HTTPError as error:
            return _error_response(error)
        except BadRequest as exc:
            return _error_response(_HTTPError(400, str(exc)))
        return JSONResponse({"models": _available_models(service)})

    routes = [
        Route("/", root, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
        Route("/info", info, methods=["GET"]),
        Route("/model/registry", registry_route, methods=["GET"]),
        Route("/model/add", add_model, methods=["POST"]),
        Route(
            "/infer/workflows/{workspace}/{workflow_id}",
            _inference_route(_workflow_route, service),
            methods=["POST"],
        ),
        Route("/infer/{task}", _inference_route(_v1_infer_route, service), methods=["POST"]),
        Route(
            "/{workspace}/workflows/{workflow_id}",
            _inference_route(_workflow_route, service),
            methods=["POST"],
        ),
        Route("/{project}/{version}", _inference_route(_model_route, service), methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    app.state.service = service
    return app
