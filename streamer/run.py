"""``streamer run``: settings turned into running cameras, progress, exit codes.

Order of work: settings, outputs (writable, not over an input, locked), display and
source are checked before the embedded server starts or any frame is sent; then the
run; then the outputs are renamed into place (done, or stopped by a signal), kept
beside as ``*.partial.*`` (the run failed), or discarded (the output itself failed).

One camera or many: each is a camera of one ``Fleet``. With several, a camera that
fails ends alone; the run ends when every camera has ended (or on a signal), and its
exit code is the worst camera's (``streamer.exits``). ``--web`` keeps the run going
for cameras added later; ``SIGHUP`` re-reads ``--config`` and applies the difference.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import cv2

from streamer.config import FleetConfig, RunConfig, load_fleet
from streamer.errors import ConfigError, SinkError, SourceError, StreamerError, redact
from streamer.exits import (
    EXIT_CODES,
    exit_code,
    worst,
)
from streamer.fleet import Camera, Fleet
from streamer.mqtt import MqttPublisher
from streamer.pipeline import PipelineStatus, camera_name
from streamer.sinks.display import PUMP_INTERVAL_S, DisplaySink
from streamer.sinks.preview import PreviewConfig

__all__ = ["EXIT_CODES", "exit_code", "run", "run_safely"]

log = logging.getLogger(__name__)


def _progress_line(status: PipelineStatus, total: int | None, started: float, live: bool) -> str:
    elapsed = max(1e-6, time.monotonic() - started)
    if not live:
        fps = status.outputs / elapsed
        if total:
            eta = f"{(total - status.outputs) / fps:.0f}s" if fps > 0 else "-"
            share = min(1.0, status.outputs / total)
            bar = "#" * int(share * 20)
            return (
                f"[{bar:<20}] {status.outputs}/{total} frames {fps:.1f} fps "
                f"ETA {eta}  failed {status.failed}"
            )
        return f"{status.outputs} frames {fps:.1f} fps  failed {status.failed}"

    dropped = status.dropped_capture + sum(status.skipped.values())
    return (
        f"{status.source_state}  source {_f(status.source_fps)} fps  "
        f"inference {_f(status.inference_fps)} fps  latency p50 {_f(status.latency_p50_ms)} ms  "
        f"dropped {dropped}  failed {status.failed}  stale {status.stale}"
    )


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _fleet_line(fleet: Fleet) -> str:
    """Several cameras: each one's state and inference fps, and the budgets' use."""
    parts = [f"{info.name} {info.state} {_f(info.inference_fps)} fps" for info in fleet.cameras()]
    for host, budget in fleet.status().budgets.items():
        parts.append(f"{host} {budget.calls_per_minute / 60:.1f}/{budget.rate:.1f} req/s")
    return "  ".join(parts)


def tune_threads() -> None:
    """One OpenCV thread per call: the pipeline already runs resizes and encodes on
    several threads at once, and OpenCV's own pool only adds hand-offs and spinning
    on top (JPEG preparation of a 720p frame: 1.1 ms of CPU with it, 0.66 without).
    """
    cv2.setNumThreads(1)


@dataclass
class _Run:
    """One ``streamer run``: its cameras' fleet, and what the driver needs to know."""

    fleet: Fleet
    settings: FleetConfig
    config_path: Path | None
    overrides: dict[str, Any]
    sources: list[str]
    single: bool
    keep_running: bool  # --web: cameras may come later; run until a signal
    failed_at_start: dict[str, StreamerError] = field(default_factory=dict)
    from_config: dict[str, str] = field(default_factory=dict)  # config key -> camera name
    received: list[int] = field(default_factory=list)
    reload_asked: bool = False

    def start_cameras(self) -> None:
        """Every camera of the settings. One camera: any failure is the run's. Several:
        a camera whose source fails ends alone; anything else stops the start."""
        for config in self.settings.cameras:
            if self.received:
                break  # a signal during the start: the cameras started so far stop
            try:
                camera = self.fleet.add_config(config)
            except SourceError as exc:
                if self.single:
                    raise
                name = config.name or camera_name(redact(config.source))
                self.failed_at_start[name] = exc
                print(f"streamer: error: camera {name}: {_shown(exc, config)}", file=sys.stderr)
                continue
            self.from_config[_config_key(config)] = camera.name

    def reload(self) -> None:
        """SIGHUP: read ``--config`` again; cameras added, removed or changed there are
        added, removed or restarted; the others are not touched."""
        self.reload_asked = False
        if self.config_path is None:
            log.warning("SIGHUP: no --config to read again")
            return
        try:
            fresh = load_fleet(self.config_path, self.overrides, self.sources)
        except StreamerError as exc:
            log.error("SIGHUP: config not applied: %s", redact(str(exc)))
            return
        wanted = {_config_key(c): c for c in fresh.cameras}
        running = {key: c for key, c in ((_config_key(c), c) for c in self.settings.cameras)}
        for key, name in list(self.from_config.items()):
            if key not in wanted or wanted[key] != running.get(key):
                self.from_config.pop(key)
                with contextlib.suppress(KeyError):  # removed over the API meanwhile
                    self.fleet.remove(name)
        for key, config in wanted.items():
            if key in self.from_config:
                continue
            try:
                name = self.fleet.add_config(config).name
            except StreamerError as exc:
                log.error(
                    "SIGHUP: camera %s not added: %s",
                    redact(key),
                    redact(str(exc), config.target.api_key),
                )
                continue
            self.from_config[key] = name
            self.failed_at_start.pop(name, None)  # it failed at start; it runs now
        self.settings = fresh
        log.warning("SIGHUP: config applied: %d cameras", len(self.fleet.names()))


def _config_key(config: RunConfig) -> str:
    return config.name or config.source


def _shown(error: BaseException, config: RunConfig) -> str:
    return redact(str(error), config.target.api_key)


@contextlib.contextmanager
def _signals(run: _Run) -> Iterator[None]:
    """SIGINT and SIGTERM stop every camera (outputs finalized); SIGHUP asks for a
    reload, done by the loop in ``_drive``, not inside the handler."""
    fleet = run.fleet

    def on_signal(signum: int, frame: FrameType | None) -> None:
        run.received.append(signum)
        fleet.stop(signum)

    def on_hangup(signum: int, frame: FrameType | None) -> None:
        run.reload_asked = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    if hasattr(signal, "SIGHUP"):
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, on_hangup)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _drive(run: _Run, progress: bool) -> None:
    """Run until every camera ended (or a signal), showing progress and pumping windows
    (HighGUI must run on the main thread)."""
    fleet = run.fleet
    started = time.monotonic()
    interactive = progress and sys.stderr.isatty()
    every = 0.25 if interactive else 5.0
    displays = _displays(fleet)
    last_line = last_stats = 0.0
    while not run.received:
        if fleet.wait(PUMP_INTERVAL_S if displays else 0.25) and not run.keep_running:
            break
        if run.reload_asked:
            run.reload()
        displays = _displays(fleet)  # cameras come and go (SIGHUP, the control API)
        for display in displays:
            _pump(display, fleet)
        if progress and time.monotonic() - last_line >= every:
            line = _line(run, started)
            end = "" if interactive else "\n"
            print(("\r" + line) if interactive else line, end=end, file=sys.stderr)
            last_line = time.monotonic()
        if fleet.mqtt is not None and time.monotonic() - last_stats >= STATS_INTERVAL_S:
            fleet.mqtt.publish_stats(_stats(fleet))
            last_stats = time.monotonic()
    if progress:
        print(("\r" if interactive else "") + _line(run, started), file=sys.stderr)


STATS_INTERVAL_S = 10.0  # how often streamer/stats is published


def _stats(fleet: Fleet) -> dict[str, Any]:
    """Every camera's figures, for ``streamer/stats`` (the same as the control API's)."""
    return {
        "run_id": fleet.run_id,
        "wall_time": round(time.time(), 3),
        "cameras": {
            name: {
                "state": status.source_state,
                "frames": status.frames,
                "inferred": status.ok,
                "failed": status.failed,
                "inference_fps": status.inference_fps,
                "source_fps": status.source_fps,
                "result_age_p95_ms": status.result_age_p95_ms,
            }
            for name, status in fleet.status().cameras.items()
        },
    }


def _line(run: _Run, started: float) -> str:
    cameras = run.fleet.names()
    if run.single and len(cameras) == 1:
        camera = run.fleet.camera(cameras[0])
        return _progress_line(camera.pipeline.status(), camera.total, started, camera.live)
    return _fleet_line(run.fleet)


def _displays(fleet: Fleet) -> list[DisplaySink]:
    displays = []
    for name in fleet.names():
        with_display = fleet.camera(name).display
        if with_display is not None:
            displays.append(with_display)
    return displays


def _pump(display: DisplaySink, fleet: Fleet) -> None:
    """One turn of a window's event loop; a window that breaks is an output that failed."""
    try:
        display.pump()
    except SinkError as exc:
        log.error("display output failed: %s", exc)
        for name in fleet.names():
            camera = fleet.camera(name)
            if camera.display is display:
                camera.pipeline.sink_errors.setdefault("display", exc)
                camera.pipeline.stop()


def run(
    config: RunConfig | FleetConfig,
    *,
    models_dir: Path | None = None,
    config_path: Path | None = None,
    overrides: dict[str, Any] | None = None,
    sources: list[str] | None = None,
) -> int:
    """Run every camera to its end (or a signal); return the exit code. ``overrides``
    and ``sources`` (the flags and sources given) are applied again on SIGHUP."""
    tune_threads()
    settings = config if isinstance(config, FleetConfig) else FleetConfig(config.flat(), [config])
    wide = settings.run
    if wide.ray is not None:
        from streamer.cluster_cameras import run_cluster

        path = config_path

        def reload() -> FleetConfig:
            return load_fleet(path, overrides or {}, sources or [])

        return run_cluster(
            settings,
            say=lambda line: print(line, file=sys.stderr),
            models_dir=models_dir,
            reload=reload if path is not None else None,
            deployment=Path(path).stem if path is not None else "default",
        )
    single = len(settings.cameras) == 1 and wide.web is None
    quit_run: list[_Run] = []
    mqtt = MqttPublisher(wide.mqtt, topic=wide.mqtt_topic) if wide.mqtt else None
    fleet = Fleet(
        settings.base,
        models_dir=models_dir,
        config_path=config_path,
        share_outputs=not single,
        on_note=lambda note: print(f"streamer: {note}", file=sys.stderr),
        on_quit=lambda: quit_run[0].fleet.stop() if quit_run else None,
        on_end=None if single else _said_at_once,
        mqtt=mqtt,
    )
    current = _Run(
        fleet,
        settings,
        config_path,
        overrides or {},
        sources or [],
        single=single,
        keep_running=wide.web is not None,
    )
    quit_run.append(current)
    web = None
    shared_notes: list[str] = []
    try:
        with _signals(current):
            # the control API first: its settings (bind, token) are checked, and its
            # port taken, before any camera starts
            if wide.web is not None:
                try:
                    from streamer.web import start_control_server
                except ImportError as exc:  # Starlette and uvicorn come with the server extra
                    raise ConfigError(
                        "--web needs Starlette and uvicorn: pip install 'streamer[server]'"
                    ) from exc
                preview = PreviewConfig(fps=wide.preview_fps, width=wide.preview_width)
                web = start_control_server(
                    fleet,
                    wide.web,
                    wide.web_token,
                    preview,
                    metrics_per_camera=wide.metrics_per_camera,
                )
                print(f"streamer: control API on {web.url}", file=sys.stderr)
            if mqtt is not None:  # before any camera: --mqtt-required fails the run first
                mqtt.start(required=wide.mqtt_required)
            current.start_cameras()
            _drive(current, wide.progress)
    finally:
        if web is not None:
            web.close()
        shared_notes = fleet.close()
        if mqtt is not None:
            mqtt.close()
            shared_notes.append(_mqtt_note(mqtt))
        for display in _displays(fleet):
            display.destroy()
    return _report(current, shared_notes)


def _mqtt_note(mqtt: MqttPublisher) -> str:
    note = f"mqtt: {mqtt.published} messages to {mqtt.target.shown}"
    return note + (f", {mqtt.dropped} dropped (outbox full)" if mqtt.dropped else "")


def _said_at_once(camera: Camera) -> None:
    """Several cameras: one that fails is said at once, and one removed (over the API,
    by SIGHUP) gets its summary then, since the final one no longer lists it."""
    if camera.removed:
        print(f"streamer: camera {camera.name}: removed after {camera.summary()}", file=sys.stderr)
    elif camera.error is not None:
        print(
            f"streamer: error: camera {camera.name}: {_shown(camera.error, camera.config)}",
            file=sys.stderr,
        )


def _report(run: _Run, shared_notes: list[str]) -> int:
    """The summary line(s), the errors, and the exit code."""
    fleet = run.fleet
    cameras: list[Camera] = fleet.ended()
    if run.single and len(cameras) == 1:
        camera = cameras[0]
        notes = "".join(f"; {note}" for note in shared_notes)
        print(f"streamer: {camera.summary()}{notes}", file=sys.stderr)
        if camera.error is not None and not run.received:
            print(f"streamer: error: {_shown(camera.error, camera.config)}", file=sys.stderr)
    else:
        for camera in cameras:  # their errors were said when they ended (_said_at_once)
            print(f"streamer: camera {camera.name}: {camera.summary()}", file=sys.stderr)
        for note in shared_notes:
            print(f"streamer: {note}", file=sys.stderr)
    code = fleet.exit_code()  # the signal's, else the worst camera's
    if run.received:
        return code
    return worst([code, *(exit_code(error) for error in run.failed_at_start.values())])


def run_safely(
    config: RunConfig | FleetConfig,
    *,
    models_dir: Path | None = None,
    config_path: Path | None = None,
    overrides: dict[str, Any] | None = None,
    sources: list[str] | None = None,
    debug: bool = False,
) -> int:
    """``run`` with errors turned into one line and an exit code (a traceback too with
    ``debug``; the exit code is the same either way)."""
    camera = config.cameras[0] if isinstance(config, FleetConfig) else config
    key = camera.target.api_key
    try:
        return run(
            config,
            models_dir=models_dir,
            config_path=config_path,
            overrides=overrides,
            sources=sources,
        )
    except StreamerError as exc:
        if debug:
            traceback.print_exc()
        print(f"streamer: error: {redact(str(exc), key)}", file=sys.stderr)
        return exit_code(exc)
