"""Fleet: many cameras in one process, one fair budget per API key, cameras added and
removed while the others run.

::

    CLI args, --config (+ SIGHUP), --web /api/cameras ──▶ Fleet.add / remove / pause / resume
                                                            │
      Fleet ── Camera "door" ── Pipeline (capture ▸ sampler ▸ sender ▸ render ▸ sinks)
        │  ── Camera "aisle" ── Pipeline ...
        ├── Budgets: one RateGovernor per (API key, host), shared fairly by its cameras
        ├── one connection pool per API URL (every camera's requests in flight bounded)
        ├── the embedded inference server, started for the first camera that needs it
        ├── JSON lines written by several cameras to one file: one shared writer
        └── thread streamer-fleet: settles each camera whose pipeline ended (outputs
            renamed into place or kept aside, its exit code and summary)

A camera's failure (a source that never opens, a dead stream, an API error of its
own model) ends that camera only. ``wait`` returns when every camera has ended;
``exit_code`` is then the worst camera's.

Example::

    with Fleet({"model": "coco/1", "jsonl": "out/{camera}.jsonl"}) as fleet:
        fleet.add("door", "rtsp://cam1/stream", weight=2)
        fleet.add("aisle", "aisle.mp4", mode="live")
        fleet.wait()
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import supervision as sv

from streamer.budget import BudgetRegistry, Budgets, BudgetStatus
from streamer.camera import (
    Camera,
    Outputs,
    inputs_of,
    pipeline_settings,
    preflight,
    rate_limit,
    target_for,
    total_frames,
)
from streamer.capture import StateEvent
from streamer.client import DEFAULT_API_URL, RoboflowClient, resolve_api_key
from streamer.config import RUN_WIDE, RunConfig, camera_config
from streamer.errors import (
    ConfigError,
    SinkError,
    redact,
)
from streamer.exits import (
    EXIT_OK,
    EXIT_OUTPUT,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    worst,
)
from streamer.frames import Result
from streamer.mqtt import MqttPublisher
from streamer.outputs import STDOUT, OutputFile, check_outputs
from streamer.pipeline import Pipeline, PipelineStatus, camera_name, new_run_id
from streamer.sinks import DisplaySink, JsonLinesSink, Sink, VideoSink, WebhookSink
from streamer.sinks.base import DropPolicy, Output, SinkWorker
from streamer.sinks.display import display_problem
from streamer.sinks.preview import Preview, PreviewConfig, PreviewFeed
from streamer.sinks.webhook import check_webhook_url
from streamer.sources import Source, SyntheticSource, Timeouts, open_source
from streamer.transport import SharedTransport

if TYPE_CHECKING:  # prometheus-client comes with the server extra, as the web server
    from streamer.metrics import FleetMetrics

__all__ = ["Camera", "CameraInfo", "Fleet", "FleetStatus"]

log = logging.getLogger(__name__)

CAMERA_TEMPLATE = "{camera}"
_SETTLE_POLL_S = 0.1

Prediction = Callable[[str, Output, sv.Detections], None]
StatusChange = Callable[[str, StateEvent], None]


class SharedLines:
    """One JSON lines file (or stdout) written by several cameras: one writer thread,
    each camera handing it records (or events) through its own small ``Sink``."""

    def __init__(self, path: str, *, events: bool = False) -> None:
        self.path = path
        self.events = events
        self.label = "events" if events else "records"
        self.claim = OutputFile.claim(path) if path != STDOUT else None
        self.sink = JsonLinesSink(self.claim if self.claim is not None else STDOUT, events=events)
        self.worker = SinkWorker(
            self.sink,
            capacity=256,
            policy=DropPolicy.BLOCK,
            thread_name=f"streamer-sink-{self.sink.name}",
        ).start()

    def for_camera(self) -> Sink:
        return _ToSharedLines(self.worker, events=self.events)

    def close(self, keep: bool) -> str:
        self.worker.close(timeout=10.0)
        if self.claim is None:
            return f"{self.label}: stdout"
        if self.worker.error is not None or not keep:
            kept = self.claim.keep_partial()
            return (
                f"{self.label}: partial, kept as {kept}" if kept else f"{self.label}: not written"
            )
        return f"{self.label}: {self.claim.commit()}"


class _ToSharedLines:
    """A camera's view of a shared JSON lines file (closing it closes nothing)."""

    wants_image = False
    queue_size = 64

    def __init__(self, worker: SinkWorker, *, events: bool) -> None:
        self._worker = worker
        self.events = events
        self.name = "events" if events else "jsonl"

    def write(self, output: Output) -> None:
        if self._worker.error is not None:
            raise self._worker.error
        self._worker.put(output)

    def close(self) -> None:
        """The shared writer is the fleet's to close."""


def _snapshot_folder(path: str) -> None:
    """The snapshots folder, made if missing; ``ConfigError`` when it cannot be."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--snapshots {path} is a file; give a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--snapshots {path}: cannot make the folder ({exc.strerror})") from exc


@dataclass(frozen=True)
class _Paths:
    """One camera's output paths, templates filled in."""

    video: str | None
    jsonl: str | None
    events: str | None
    shared_jsonl: bool  # the fleet's one records file
    shared_events: bool
    inputs: list[Path]  # what the camera reads: no output may go there


@dataclass(frozen=True)
class CameraInfo:
    """What ``Fleet.cameras()`` and the control API tell about a camera."""

    name: str
    source: str  # credentials masked
    state: str  # starting, connecting, streaming, reconnecting, paused, done, failed, stopped
    live: bool
    weight: float
    min_fps: float
    share: float | None  # requests/s of the shared budget it may count on now
    source_fps: float | None
    inference_fps: float | None
    last_error: str | None
    exit_code: int | None  # once ended


class Ended(Protocol):
    def summary(self) -> str: ...


class FleetView(Protocol):
    """What the ``--web`` server and ``/metrics`` drive: a ``Fleet`` in this process,
    or ``streamer.cluster_cameras.ClusterView`` over cameras on a Ray cluster."""

    run_id: str
    metrics: FleetMetrics | None
    preview: PreviewConfig | None

    def add(self, name: str | None = None, source: str | None = None, **overrides: Any) -> Any:
        """Start a camera; ``ConfigError`` (bad or taken), ``SourceError``, ... if not."""
        ...

    def remove(self, name: str) -> Ended: ...

    def pause(self, name: str) -> None: ...

    def resume(self, name: str) -> None: ...

    def names(self) -> list[str]: ...

    def cameras(self) -> list[CameraInfo]: ...

    def states(self) -> dict[str, str]:
        """Each camera's state alone (cheaper than ``cameras()``: for every scrape)."""
        ...

    def status(self) -> FleetStatus: ...

    def preview_of(self, name: str) -> PreviewFeed | None: ...


@dataclass(frozen=True)
class FleetStatus:
    """Per camera and per budget, for ``/api/stats`` and progress lines."""

    run_id: str
    cameras: dict[str, PipelineStatus]
    budgets: dict[str, BudgetStatus]  # by host


class Fleet:
    """Cameras that share one process, one budget per API key, one connection pool per
    API URL; the object the CLI, the ``--web`` API and SIGHUP all drive.

    Callbacks and their threads: ``on_prediction(camera, output, detections)`` on that
    camera's ``streamer-render-<camera>`` thread, once per output frame;
    ``on_status(camera, event)`` on its capture thread, at each source state change;
    ``on_end(camera)`` on the thread that settled it (``streamer-fleet``, or the one
    calling ``remove``/``close``). Keep them short.
    """

    def __init__(
        self,
        base: Mapping[str, Any] | None = None,
        *,
        models_dir: Path | None = None,
        config_path: Path | None = None,
        run_id: str | None = None,
        share_outputs: bool = True,
        max_in_flight_per_host: int = 64,
        on_prediction: Prediction | None = None,
        on_status: StatusChange | None = None,
        on_end: Callable[[Camera], None] | None = None,
        on_quit: Callable[[], None] | None = None,
        on_note: Callable[[str], None] | None = None,
        mqtt: MqttPublisher | None = None,
        budgets: BudgetRegistry | None = None,
    ) -> None:
        """``base``: settings every camera starts from (``RunConfig`` fields, checked
        again per camera). ``share_outputs``: a JSON lines path without ``{camera}``
        is one file for every camera (records tell them apart by ``camera``); else a
        second camera on it is refused. ``on_quit``: a window's q or Esc. ``on_note``:
        a line for the person running it (which server answers), else logged.
        ``mqtt``: the run's broker connection (started by the caller, closed by it after
        the fleet): every camera publishes its events and counts there. ``budgets``:
        where each API key's budget comes from (default: this process's own)."""
        self.mqtt = mqtt
        # Prometheus metrics (``streamer.metrics.FleetMetrics``), when the web server
        # serves them: every camera's results are observed there
        self.metrics: FleetMetrics | None = None
        # the web view's previews: every camera added while it is set gets one
        self.preview: PreviewConfig | None = None
        self.base = {k: v for k, v in (base or {}).items() if k not in RUN_WIDE and k != "name"}
        self.models_dir = models_dir
        self.config_path = config_path
        self.run_id = run_id or new_run_id()
        self.share_outputs = share_outputs
        self.max_in_flight_per_host = max_in_flight_per_host
        self._on_prediction = on_prediction
        self._on_status = on_status
        self._on_end = on_end
        self._on_quit = on_quit
        self._on_note = on_note
        self.budgets: BudgetRegistry = budgets if budgets is not None else Budgets()
        self._lock = threading.RLock()
        self._cameras: dict[str, Camera] = {}
        self._reserved: set[str] = set()  # names being added
        self._transports: dict[str, SharedTransport] = {}
        self._checked_targets: set[tuple[str, str, str]] = set()
        self._shared_lines: dict[str, SharedLines] = {}
        self._inputs: dict[str, list[Path]] = {}  # files each camera reads
        self._written: dict[str, str] = {}  # resolved output path -> the camera it is for
        self._server: contextlib.ExitStack | None = None
        self._server_url: str | None = None
        self._closing = threading.Event()
        self._changed = threading.Condition(self._lock)
        self._received: int | None = None
        # started with the first camera: a fleet made and never used holds no thread
        self._settler = threading.Thread(
            target=self._settle_loop, name="streamer-fleet", daemon=True
        )

    # -- adding --------------------------------------------------------------------------------

    def add(self, name: str | None = None, source: str | None = None, **overrides: Any) -> Camera:
        """Start a camera; the checks it fails raise (``ConfigError``, ``SourceError``,
        ``InferenceError`` …) and leave nothing behind."""
        entry = dict(overrides)
        if source is not None:
            entry["source"] = source
        if name is not None:
            entry["name"] = name
        return self.add_config(camera_config(self.base, entry))

    def add_config(self, config: RunConfig) -> Camera:
        if self._closing.is_set():
            raise ConfigError("the fleet is closing: no camera can be added")
        source = open_source(
            config.source, timeouts=Timeouts(open=10.0, read=config.capture.stall_timeout)
        )
        name = self._reserve_name(config.name, source.source_id)
        claimed: list[str] = []  # output paths taken for it, given back if it fails
        try:
            camera = self._build(name, config, source, claimed)
        except BaseException:
            with self._lock:
                self._reserved.discard(name)
                for key in claimed:
                    self._written.pop(key, None)
            raise
        with self._lock:
            self._reserved.discard(name)
            self._cameras[name] = camera
            self._changed.notify_all()
            if self._settler.ident is None:
                self._settler.start()
        camera.pipeline.start()
        log.info("camera %s started (%s)", name, source.source_id)
        return camera

    def _reserve_name(self, wanted: str | None, source_id: str) -> str:
        with self._lock:
            taken = set(self._cameras) | self._reserved
            if wanted is not None:
                if wanted in taken:
                    raise ConfigError(f"a camera named {wanted!r} exists already")
                name = wanted
            else:
                stem = camera_name(source_id)
                name, number = stem, 2
                while name in taken:
                    name, number = f"{stem}-{number}", number + 1
            self._reserved.add(name)
            return name

    def _build(self, name: str, config: RunConfig, source: Source, claimed: list[str]) -> Camera:
        paths = self._output_paths(name, config, source, claimed)
        video, jsonl, events, inputs = paths.video, paths.jsonl, paths.events, paths.inputs
        if config.outputs.webhook:
            check_webhook_url(config.outputs.webhook)
        if config.outputs.snapshots:
            _snapshot_folder(config.outputs.snapshots)
        if config.outputs.show and (problem := display_problem()) is not None:
            raise SinkError(f"--show needs a display, and {problem}; use --output instead")
        if not source.is_live:
            source.open().close()  # a file that cannot be read is said so first, in one line
        live = config.capture.mode == "live" if config.capture.mode is not None else source.is_live
        api_key = resolve_api_key(config.target.api_key)
        embedded = config.target.api_url is None and api_key is None
        default_model = "shapes/1" if isinstance(source, SyntheticSource) else "coco/1"
        if not embedded and not (config.target.model or config.target.workflow):
            raise ConfigError(
                "give --model project/version or --workflow workspace/id for a remote API"
            )
        api_url = config.target.api_url or DEFAULT_API_URL
        target = target_for(config, api_url, default_model)  # settings checked first
        if embedded:
            api_url = self._embedded_url()
            target = target_for(config, api_url, default_model)
        client = RoboflowClient(
            target,
            api_key,
            timeout=config.sender.request_timeout,
            transport=self._transport(target.api_url),
            key_transport=config.target.api_key_transport,
        )
        outputs = Outputs()
        try:
            checked = (target.api_url, target.name, client.api_key_fingerprint)
            with self._lock:
                known = checked in self._checked_targets
            if not known:  # one probe per model, not per camera
                preflight(client, max_retry_wait=config.sender.max_retry_wait)
                with self._lock:
                    self._checked_targets.add(checked)
            outputs.claim(
                video,
                None if paths.shared_jsonl else jsonl,
                None if paths.shared_events else events,
            )
            cap = rate_limit(config, target)
            budget = (
                self.budgets.for_key(client.api_key_fingerprint, target.host, cap) if cap else None
            )
            sinks = self._sinks(name, config, live, outputs, paths)
            pipeline = Pipeline(
                source,
                client,
                pipeline_settings(config, live, target),
                sinks=sinks,
                budget=budget,
                camera=name,
                run_id=self.run_id,
                on_prediction=self._prediction_callback(name),
                observer=_CameraObserver(self, name),
                on_status=self._status_callback(name),
            )
        except BaseException:
            outputs.release()
            client.close()
            raise
        with self._lock:
            self._inputs[name] = inputs
        return Camera(
            name,
            config,
            source=source,
            live=live,
            client=client,
            outputs=outputs,
            pipeline=pipeline,
            total=total_frames(source),
        )

    def _output_paths(
        self, name: str, config: RunConfig, source: Source, claimed: list[str]
    ) -> _Paths:
        """The camera's video, records and events paths (templates filled in), whether
        records and events go to the fleet's shared files, and the files it reads;
        ``ConfigError`` when an output would write over any camera's input or another's
        video."""
        shared_jsonl = self._shares(config.outputs.jsonl)
        shared_events = self._shares(config.outputs.events)
        video = self._unused(_expand(config.outputs.output, name), name, "--output", claimed)
        jsonl = _expand(config.outputs.jsonl, name)
        if not shared_jsonl:
            jsonl = self._unused(jsonl, name, "--jsonl", claimed)
        events = _expand(config.outputs.events, name)
        if not shared_events:
            events = self._unused(events, name, "--events", claimed)
        inputs = inputs_of(source, self.config_path)
        with self._lock:
            others = [path for paths in self._inputs.values() for path in paths]
        check_outputs([*inputs, *others], {"--output": video, "--jsonl": jsonl, "--events": events})
        return _Paths(video, jsonl, events, shared_jsonl, shared_events, inputs)

    def _unused(self, path: str | None, name: str, flag: str, claimed: list[str]) -> str | None:
        """``path`` for camera ``name``: ``ConfigError`` when another camera of this fleet
        took it (a path without ``{camera}``); ``stem-2.suffix`` (-3 …) when ``name``
        itself wrote it already, so that a camera removed and added again (a SIGHUP
        change) keeps its first recording instead of replacing it."""
        if not path or path == STDOUT:
            return path
        candidate, number = Path(path), 2
        with self._lock:
            while (owner := self._written.get(str(candidate.resolve()))) is not None:
                if str(candidate.resolve()) in claimed:
                    return str(candidate)  # both its outputs on one path: check_outputs says so
                if owner != name:
                    raise ConfigError(
                        f"{flag} {path} is camera {owner!r}'s already: put {CAMERA_TEMPLATE} "
                        f"in the path (out/{CAMERA_TEMPLATE}{Path(path).suffix})"
                    )
                candidate = Path(path).with_name(f"{Path(path).stem}-{number}{Path(path).suffix}")
                number += 1
            key = str(candidate.resolve())
            self._written[key] = name  # taken now: a camera added meanwhile sees it
            claimed.append(key)
        return str(candidate)

    def _shares(self, lines: str | None) -> bool:
        """Whether a records (events) path is the fleet's one file for every camera, not
        the camera's own (``{camera}`` in the path)."""
        return bool(lines) and self.share_outputs and CAMERA_TEMPLATE not in (lines or "")

    def _sinks(
        self,
        name: str,
        config: RunConfig,
        live: bool,
        outputs: Outputs,
        paths: _Paths,
    ) -> list[Sink]:
        sinks: list[Sink] = []
        if outputs.video is not None:
            sinks.append(VideoSink(outputs.video, live=live))
        if paths.jsonl and paths.shared_jsonl:
            sinks.append(self._lines(paths.jsonl).for_camera())
        elif paths.jsonl:
            sinks.append(JsonLinesSink(outputs.jsonl if outputs.jsonl is not None else STDOUT))
        if paths.events and paths.shared_events:
            sinks.append(self._lines(paths.events, events=True).for_camera())
        elif paths.events:
            target = outputs.events if outputs.events is not None else STDOUT
            sinks.append(JsonLinesSink(target, events=True))
        if config.outputs.webhook:
            payload = config.outputs.webhook_payload
            sinks.append(
                WebhookSink(
                    config.outputs.webhook,
                    records=payload in ("records", "both"),
                    events=payload in ("events", "both"),
                )
            )
        if config.outputs.show:
            sinks.append(DisplaySink(f"streamer {name}", on_quit=self._quit))
        if self.mqtt is not None:
            sinks.append(self.mqtt.for_camera(name))
        if self.preview is not None:
            sinks.append(Preview(fps=self.preview.fps, width=self.preview.width))
        outputs.sinks = {sink.name: sink for sink in sinks}
        return sinks

    def _lines(self, path: str, *, events: bool = False) -> SharedLines:
        key = path if path == STDOUT else str(Path(path).resolve())
        with self._lock:
            shared = self._shared_lines.get(key)
            if shared is None:
                shared = self._shared_lines[key] = SharedLines(path, events=events)
            elif shared.events != events:
                raise ConfigError(f"{path} cannot take both the records and the events")
            return shared

    def _quit(self) -> None:
        if self._on_quit is not None:
            self._on_quit()
        else:
            self.stop()

    def _transport(self, api_url: str) -> httpx.BaseTransport:
        with self._lock:
            shared = self._transports.get(api_url)
            if shared is None:
                shared = self._transports[api_url] = SharedTransport(self.max_in_flight_per_host)
            return shared.borrow()

    def _embedded_url(self) -> str:
        with self._lock:
            if self._server_url is None:
                from streamer.server import ServerConfig, ServerThread

                stack = contextlib.ExitStack()
                server = stack.enter_context(
                    ServerThread(ServerConfig(port=0, models_dir=self.models_dir))
                )
                self._server, self._server_url = stack, server.url
                note = f"no API URL or key: using the embedded server at {server.url}"
                if self._on_note is not None:
                    self._on_note(note)
                else:
                    log.info("%s", note)
            return self._server_url

    def _prediction_callback(self, name: str) -> Callable[[Output, sv.Detections], None] | None:
        callback = self._on_prediction
        if callback is None:
            return None
        return lambda output, detections: callback(name, output, detections)

    def _status_callback(self, name: str) -> Callable[[StateEvent], None] | None:
        callback = self._on_status
        if callback is None:
            return None
        return lambda event: callback(name, event)

    # -- control -------------------------------------------------------------------------------

    def camera(self, name: str) -> Camera:
        with self._lock:
            camera = self._cameras.get(name)
        if camera is None:
            raise KeyError(name)
        return camera

    def remove(self, name: str) -> Camera:
        """Stop ``name`` from any state (connecting and reconnecting included), finalize
        its outputs and forget it; its threads and sockets are gone when this returns."""
        camera = self.camera(name)
        camera.removed = True
        camera.pipeline.stop()
        camera.finish()
        with self._lock:
            self._cameras.pop(name, None)
            self._inputs.pop(name, None)
            self._changed.notify_all()
        if self.metrics is not None:
            self.metrics.forget(name)
        self._ended(camera)
        log.info("camera %s removed", name)
        return camera

    def pause(self, name: str) -> None:
        self.camera(name).pipeline.pause()

    def resume(self, name: str) -> None:
        self.camera(name).pipeline.resume()

    def names(self) -> list[str]:
        with self._lock:
            return list(self._cameras)

    def preview_of(self, name: str) -> Preview | None:
        """The web view's preview of ``name``, if it has one."""
        with self._lock:
            camera = self._cameras.get(name)
        return camera.preview if camera is not None else None

    def cameras(self) -> list[CameraInfo]:
        with self._lock:
            cameras = list(self._cameras.values())
        return [self._info(camera) for camera in cameras]

    def states(self) -> dict[str, str]:
        with self._lock:
            cameras = list(self._cameras.values())
        return {camera.name: camera.state() for camera in cameras}

    def _info(self, camera: Camera) -> CameraInfo:
        status = camera.pipeline.status()
        budget = camera.pipeline.pool.budget
        error = camera.error or camera.pipeline.error
        return CameraInfo(
            name=camera.name,
            source=camera.source.source_id,
            state=camera.state(),
            live=camera.live,
            weight=camera.config.sampler.weight,
            min_fps=camera.config.sampler.min_fps,
            share=budget.share(camera.name) if budget is not None and not camera.ended else None,
            source_fps=status.source_fps,
            inference_fps=status.inference_fps,
            last_error=redact(str(error), camera.config.target.api_key)
            if error is not None
            else None,
            exit_code=camera.code,
        )

    def status(self) -> FleetStatus:
        with self._lock:
            cameras = dict(self._cameras)
        return FleetStatus(
            run_id=self.run_id,
            cameras={name: camera.pipeline.status() for name, camera in cameras.items()},
            budgets={host: budget.status() for host, budget in self.budgets.items()},
        )

    # -- ending --------------------------------------------------------------------------------

    def stop(self, received: int | None = None) -> None:
        """Ask every camera to stop (safe from signal handlers)."""
        if received is not None and self._received is None:
            self._received = received
        with self._lock:
            cameras = list(self._cameras.values())
        for camera in cameras:
            camera.pipeline.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Until every camera has ended and been settled; ``False`` on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while any(not c.ended for c in self._cameras.values()) or self._reserved:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(min(left, 0.5) if left is not None else 0.5)
        return True

    def _settle_loop(self) -> None:
        while not self._closing.is_set():
            with self._lock:
                done = [c for c in self._cameras.values() if not c.ended and c.pipeline.wait(0)]
            for camera in done:
                self._settle(camera)
            self._closing.wait(_SETTLE_POLL_S)

    def _settle(self, camera: Camera) -> None:
        camera.finish(self._received)
        with self._lock:
            self._changed.notify_all()
        self._ended(camera)

    def _ended(self, camera: Camera) -> None:
        if self._on_end is not None:
            try:
                self._on_end(camera)
            except Exception:
                log.exception("on_end callback failed")

    def ended(self) -> list[Camera]:
        with self._lock:
            return [c for c in self._cameras.values() if c.ended]

    def exit_code(self) -> int:
        with self._lock:
            codes = [c.code for c in self._cameras.values() if c.code is not None]
        if self._received is not None:
            return EXIT_SIGINT if self._received == signal.SIGINT else EXIT_SIGTERM
        return worst(codes)

    def close(self) -> list[str]:
        """Stop every camera, settle its outputs, close the shared parts; notes on the
        shared outputs (for the summary)."""
        self.stop()
        with self._lock:
            cameras = list(self._cameras.values())
        for camera in cameras:
            if not camera.ended:
                self._settle(camera)
        self._closing.set()
        if self._settler.ident is not None:
            self._settler.join(timeout=5.0)
        # the one records file of every camera is whole unless no camera ended as asked
        # (one camera's failure does not make the others' records partial)
        keep = (
            any(c.code in (EXIT_OK, EXIT_OUTPUT, EXIT_SIGINT, EXIT_SIGTERM) for c in cameras)
            or self._received is not None
        )
        notes = [shared.close(keep) for shared in self._shared_lines.values()]
        self._shared_lines.clear()
        for transport in self._transports.values():
            transport.close()
        self._transports.clear()
        if self._server is not None:
            self._server.close()
            self._server = None
        return notes

    def __enter__(self) -> Fleet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _expand(path: str | None, camera: str) -> str | None:
    """An output path template with ``{camera}`` filled in."""
    if path is None:
        return None
    return path.replace(CAMERA_TEMPLATE, camera)


class _CameraObserver:
    """A camera's timings, to the fleet's metrics once the web server has set them."""

    def __init__(self, fleet: Fleet, camera: str) -> None:
        self._fleet = fleet
        self._camera = camera

    def result(self, result: Result) -> None:
        metrics = self._fleet.metrics
        if metrics is not None:
            metrics.observe(self._camera, result)

    def rendered(self, seconds: float) -> None:
        metrics = self._fleet.metrics
        if metrics is not None:
            metrics.rendered(self._camera, seconds)
