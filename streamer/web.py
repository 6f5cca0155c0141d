"""The control API of a running fleet (``streamer run --web HOST:PORT``).

Routes (JSON)::

    GET    /health                       the process is alive
    GET    /ready                        every camera that should stream does, and the API
                                         answered each sending camera within 30 s (else 503)
    GET    /api/cameras                  each camera: state, fps, share, last error
    POST   /api/cameras                  {"name", "source", ...settings}: add one (201); output
                                         paths, URLs and the key come from the run, not here
    DELETE /api/cameras/{name}           stop it from any state, outputs finalized
    POST   /api/cameras/{name}/pause     send nothing more (live: stays connected)
    POST   /api/cameras/{name}/resume
    GET    /api/stats                    per camera and per budget
    GET    /metrics                      Prometheus text (``streamer.metrics``)

Bound to 127.0.0.1 unless told otherwise; bound anywhere else it requires a bearer
token (``Authorization: Bearer <token>``, compared in constant time), and with a
token given it is required everywhere but ``/health``. Camera URLs are shown masked,
errors in one line with secrets masked. Handlers run on Starlette's thread pool:
adding a camera (its checks, a first request) or removing one (joining its threads)
never blocks the event loop.
"""

from __future__ import annotations

import dataclasses
import hmac
import time
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from streamer.errors import ConfigError, SourceError, StreamerError, redact
from streamer.exits import exit_code
from streamer.fleet import FleetView
from streamer.metrics import CONTENT_TYPE, FleetMetrics
from streamer.sinks.preview import AGE_COMMENT, PreviewConfig, with_comment
from streamer.webpage import camera_page, index_page, login_page

__all__ = ["ControlServer", "parse_bind", "start_control_server"]

TOKEN_COOKIE = "streamer_token"
READY_ANSWER_S = 30.0  # /ready: a sending camera's last answer is at most this old
_PART_HEAD = b"Content-Type: image/jpeg\r\n\r\n"
# Settings a camera added over HTTP takes from the run, never from the request: they
# name files to write, URLs to send frames (and the key) to, or a window to open.
NOT_OVER_HTTP = frozenset(
    {"output", "jsonl", "events", "snapshots", "webhook", "api_url", "api_key", "show"}
)


def parse_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6, ``:8080`` for 127.0.0.1)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--web must look like 127.0.0.1:8080, got {text[:60]!r}")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, float):
        return round(value, 3)
    return value


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": redact(message)}, status_code=status)


class _Api:
    """The handlers: each runs on Starlette's thread pool and drives the fleet."""

    def __init__(self, fleet: FleetView, token: str | None) -> None:
        self.fleet = fleet
        self.token = token

    def guarded(self, handler: Any) -> Any:
        """``handler(request, body)`` behind the token check, off the event loop."""

        async def endpoint(request: Request) -> Response:
            denied = self.refused(request)
            if denied is not None:
                return denied
            body = None
            if request.method == "POST" and request.url.path == "/api/cameras":
                try:
                    body = await request.json()
                except ValueError:
                    return _error(400, "the body must be a JSON object")
            try:
                result: Response = await run_in_threadpool(handler, request, body)
            except KeyError:
                return _error(404, f"no camera named {request.path_params.get('name')!r}")
            return result

        return endpoint

    def refused(self, request: Request) -> Response | None:
        if self.token is None or request.url.path in ("/health", "/login"):
            return None
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            value = request.cookies.get(TOKEN_COOKIE, "")  # a browser, after /login
        if value and hmac.compare_digest(value.encode(), self.token.encode()):
            return None
        path = request.url.path
        if (path == "/" or path.startswith("/camera/")) and not path.endswith(".mjpg"):
            return HTMLResponse(login_page(), status_code=401)  # a page: the login form
        return JSONResponse(
            {"error": "a bearer token is required (Authorization: Bearer <token>)"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    def health(self, request: Request, body: Any) -> Response:
        return JSONResponse({"status": "alive", "run_id": self.fleet.run_id})

    def ready(self, request: Request, body: Any) -> Response:
        problems = [] if self.fleet.names() else ["no cameras"]
        status = self.fleet.status()
        for info in self.fleet.cameras():
            if info.state in ("paused", "done", "removed", "stopped"):
                continue
            if info.state != "streaming":
                problems.append(f"{info.name}: {info.state}")
                continue
            camera = status.cameras.get(info.name)
            age = camera.last_result_age_s if camera is not None else None
            if age is not None and age > READY_ANSWER_S:
                problems.append(f"{info.name}: no answer from the API for {age:.0f} s")
        return JSONResponse(
            {"ready": not problems, "problems": problems}, status_code=503 if problems else 200
        )

    def list_cameras(self, request: Request, body: Any) -> Response:
        return JSONResponse({"cameras": [_jsonable(info) for info in self.fleet.cameras()]})

    def add_camera(self, request: Request, body: Any) -> Response:
        if not isinstance(body, dict):
            return _error(400, 'the body must be a JSON object: {"name", "source", ...}')
        entry = dict(body)
        name = entry.pop("name", None)
        source = entry.pop("source", None)
        if not isinstance(source, str):
            return _error(400, "source is required (a file, a camera, a URL or synthetic:)")
        refused = sorted(NOT_OVER_HTTP & set(entry))
        if refused:
            return _error(
                400,
                f"{', '.join(refused)} cannot be set over HTTP: a camera added here writes "
                "and sends where the run's settings say (its {camera} paths)",
            )
        try:
            camera = self.fleet.add(name, source, **entry)
        except ConfigError as exc:
            return _error(409 if "exists already" in str(exc) else 400, str(exc))
        except SourceError as exc:
            return _error(422, str(exc))
        except StreamerError as exc:  # the API refused: key, model, unreachable
            return _error(502 if exit_code(exc) in (4, 5, 6) else 422, str(exc))
        return JSONResponse(_jsonable(self._info(camera.name)), status_code=201)

    def _info(self, name: str) -> Any:
        for info in self.fleet.cameras():
            if info.name == name:
                return info
        raise KeyError(name)

    def remove_camera(self, request: Request, body: Any) -> Response:
        name = request.path_params["name"]
        started = time.monotonic()
        camera = self.fleet.remove(name)
        return JSONResponse(
            {
                "name": name,
                "removed_in_s": round(time.monotonic() - started, 3),
                "summary": camera.summary(),
            }
        )

    def pause(self, request: Request, body: Any) -> Response:
        self.fleet.pause(request.path_params["name"])
        return JSONResponse(_jsonable(self._info(request.path_params["name"])))

    def resume(self, request: Request, body: Any) -> Response:
        self.fleet.resume(request.path_params["name"])
        return JSONResponse(_jsonable(self._info(request.path_params["name"])))

    def stats(self, request: Request, body: Any) -> Response:
        return JSONResponse(_jsonable(self.fleet.status()))

    def index(self, request: Request, body: Any) -> Response:
        return HTMLResponse(index_page(self.fleet.names()))

    def camera_page(self, request: Request, body: Any) -> Response:
        name = request.path_params["name"]
        if name not in self.fleet.names():
            raise KeyError(name)  # 404
        return HTMLResponse(camera_page(name))

    async def login(self, request: Request) -> Response:
        """A browser's way in off loopback: the token from a form, kept in a cookie."""
        if self.token is None:
            return RedirectResponse("/", status_code=303)
        form = await request.form()
        given = str(form.get("token", ""))
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return HTMLResponse(login_page(failed=True), status_code=401)
        answer = RedirectResponse("/", status_code=303)
        answer.set_cookie(TOKEN_COOKIE, given, httponly=True, samesite="strict")
        return answer

    async def preview(self, request: Request) -> Response:
        """``multipart/x-mixed-replace`` JPEGs: every viewer of a camera reads the same
        encode, the newest each time it is ready for one (a slow viewer skips frames)."""
        denied = self.refused(request)
        if denied is not None:
            return denied
        name = request.path_params["name"]
        preview = self.fleet.preview_of(name)
        if preview is None:
            return _error(404, f"no preview of a camera named {name!r}")

        async def parts() -> AsyncIterator[bytes]:
            # A browser shows a part only once the next part's headers come (Chromium
            # finishes an image when the next one starts: a whole preview interval
            # later), so each JPEG goes out with the next part's headers after it, and
            # the parts have no Content-Length; the age rides in the JPEG, as a comment.
            yield b"--frame\r\n" + _PART_HEAD
            with preview.watching():
                sequence = 0
                while not preview.closed:
                    frame = await preview.next_after(sequence, timeout=1.0)
                    if frame is None:
                        continue  # none made in a second (or closed): look at closed again
                    sequence = frame.sequence
                    age = (time.monotonic() - frame.captured_at) * 1000  # capture to now
                    jpeg = with_comment(frame.jpeg, f"{AGE_COMMENT}{age:.1f}")
                    yield jpeg + b"\r\n--frame\r\n" + _PART_HEAD

        return StreamingResponse(
            parts(),
            media_type="multipart/x-mixed-replace; boundary=frame",
            headers={"Cache-Control": "no-store"},
        )

    def metrics(self, request: Request, body: Any) -> Response:
        assert self.fleet.metrics is not None
        return Response(self.fleet.metrics.render(), media_type=CONTENT_TYPE)


def create_app(
    fleet: FleetView,
    token: str | None,
    preview: PreviewConfig | None = None,
    *,
    metrics_per_camera: bool = False,
) -> Starlette:
    if fleet.metrics is None:  # from now on every camera's results are observed
        fleet.metrics = FleetMetrics(
            fleet,
            per_camera=metrics_per_camera,
            remote=getattr(fleet, "histograms", None),  # cameras elsewhere (Ray)
        )
    if fleet.preview is None:  # cameras added from now on get a preview
        fleet.preview = preview or PreviewConfig()
    api = _Api(fleet, token)
    routes = [
        Route("/", api.guarded(api.index), methods=["GET"]),
        Route("/login", api.login, methods=["POST"]),
        Route("/camera/{name}", api.guarded(api.camera_page), methods=["GET"]),
        Route("/camera/{name}/preview.mjpg", api.preview, methods=["GET"]),
        Route("/health", api.guarded(api.health), methods=["GET"]),
        Route("/ready", api.guarded(api.ready), methods=["GET"]),
        Route("/api/cameras", api.guarded(api.list_cameras), methods=["GET"]),
        Route("/api/cameras", api.guarded(api.add_camera), methods=["POST"]),
        Route("/api/cameras/{name}", api.guarded(api.remove_camera), methods=["DELETE"]),
        Route("/api/cameras/{name}/pause", api.guarded(api.pause), methods=["POST"]),
        Route("/api/cameras/{name}/resume", api.guarded(api.resume), methods=["POST"]),
        Route("/api/stats", api.guarded(api.stats), methods=["GET"]),
        Route("/metrics", api.guarded(api.metrics), methods=["GET"]),
    ]
    return Starlette(routes=routes)


class ControlServer:
    """The control API on thread ``streamer-web``, listening before ``start`` returns."""

    def __init__(
        self,
        fleet: FleetView,
        host: str,
        port: int,
        token: str | None,
        preview: PreviewConfig | None = None,
        *,
        metrics_per_camera: bool = False,
    ) -> None:
        from streamer.server.runner import UvicornThread, is_loopback

        if not is_loopback(host) and not token:
            raise ConfigError(
                f"--web {host} is reachable from other machines: give --web-token "
                "(or $STREAMER_WEB_TOKEN), or bind 127.0.0.1"
            )
        app = create_app(fleet, token, preview, metrics_per_camera=metrics_per_camera)
        self._thread = UvicornThread(app, host, port, name="streamer-web")
        self.url = self._thread.url

    def start(self) -> ControlServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._thread.stop()


def start_control_server(
    fleet: FleetView,
    bind: str,
    token: str | None,
    preview: PreviewConfig | None = None,
    *,
    metrics_per_camera: bool = False,
) -> ControlServer:
    host, port = parse_bind(bind)
    server = ControlServer(fleet, host, port, token, preview, metrics_per_camera=metrics_per_camera)
    return server.start()
