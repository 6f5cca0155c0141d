"""``streamer run --ray``: each camera in a Ray actor, a reconciler on the head.

::

    run_cluster(config)        the head: signals, SIGHUP reloads, --web, --mqtt, summary
      ClusterCameras           wanted vs running actors: start, stop, replace, adopt
        Coordinator            one actor: the budget (a LeaseBook) and the cameras' claims
        CameraActor x N        a Fleet of one camera, on whichever node Ray places it
      ClusterView              what the --web server drives (a FleetView)

A camera processes only while it holds its claim from the coordinator, so a camera is
never processed by two actors at once, even while a node is being declared dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamer.budget import BudgetStatus
from streamer.cluster import CALL_TIMEOUT_S, ActorLender, BookActor, connect, import_ray
from streamer.config import RUN_WIDE, FleetConfig, RunConfig
from streamer.errors import ConfigError, StreamerError
from streamer.exits import EXIT_ERROR, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, exit_code, worst
from streamer.fleet import CameraInfo, FleetStatus
from streamer.leases import TERM_S
from streamer.redaction import clean, redact
from streamer.sinks.preview import Preview, PreviewFrame

if TYPE_CHECKING:
    from streamer.metrics import HistogramSamples
    from streamer.mqtt import MqttPublisher

__all__ = ["CameraActor", "ClusterCameras", "ClusterView", "Coordinator", "run_cluster"]

log = logging.getLogger(__name__)

CLAIM_TERM_S = 3.0  # a camera's claim: renewed every second, lapses this long after
CLAIM_WAIT_S = 4 * CLAIM_TERM_S  # longer than any lapse: the holder is alive


@dataclass
class _Claim:
    token: str
    expires: float


class Coordinator(BookActor):
    """The run's budget and its cameras' claims, in one actor.

    A camera actor processes only while it holds its camera's claim, renewed every
    second; a new incarnation (Ray restarting the actor on another node) gets the claim
    only once the old one has lapsed, and an incarnation that cannot renew stops its
    pipeline before its claim lapses: one camera is never processed twice at once, even
    while a node is being declared dead. A restarted coordinator gives no claim for one
    term (it does not know those still held)."""

    def __init__(self, cap: float | None, term: float = TERM_S) -> None:
        super().__init__(cap if cap is not None else 1e9, term)
        self._cap = cap
        ray = import_ray()
        restarted = bool(ray.get_runtime_context().was_current_actor_reconstructed)
        self._claims: dict[str, _Claim] = {}
        self._claims_from = time.monotonic() + (CLAIM_TERM_S if restarted else 0.0)

    def cap(self) -> float | None:
        return self._cap

    def claim(self, camera: str, token: str) -> float:
        """0 when ``token`` holds ``camera``'s claim now, else seconds to try again in."""
        now = time.monotonic()
        if now < self._claims_from:
            return self._claims_from - now
        held = self._claims.get(camera)
        if held is not None and held.token != token and held.expires > now:
            return held.expires - now
        self._claims[camera] = _Claim(token, now + CLAIM_TERM_S)
        return 0.0

    def renew(self, camera: str, token: str) -> bool:
        held = self._claims.get(camera)
        if held is None or held.token != token or held.expires <= time.monotonic():
            return False
        held.expires = time.monotonic() + CLAIM_TERM_S
        return True

    def give_back(self, camera: str, token: str) -> None:
        held = self._claims.get(camera)
        if held is not None and held.token == token:
            del self._claims[camera]


class CameraActor:
    """One camera's pipeline (a ``Fleet`` of one) in a Ray actor, on whichever node Ray
    placed it; Ray starts it again elsewhere if its node dies. Every incarnation writes
    its own output files (``name.<incarnation>.jsonl``): a killed one's records stay in
    its own (hidden, temporary) file, never under another's."""

    def __init__(
        self,
        name: str,
        source: str,
        settings: dict[str, Any],
        coordinator: Any,
        run_id: str,
        *,
        mqtt: tuple[str, str] | None = None,
        preview: tuple[float, int] | None = None,
    ) -> None:
        """``mqtt``: (broker URL, topic): this camera's events and counts go there on a
        connection of its own, its availability on ``<topic>/<camera>/available``.
        ``preview``: (fps, width) of the head's web view: drawn here for its viewers."""
        from streamer.fleet import Fleet
        from streamer.leases import LeasedBudgets
        from streamer.mqtt import MqttPublisher

        ray = import_ray()
        self.name = name
        self._given = (source, settings)
        self.incarnation = secrets.token_hex(3)
        self._coordinator = coordinator
        self._token = f"{self.incarnation}@{ray.get_runtime_context().get_node_id()[:8]}"
        self._wait_for_claim()
        self._claim_lost = threading.Event()
        cap = settings.get("rate_limit")
        self._budgets = (
            LeasedBudgets(ActorLender(coordinator), cap, holder_prefix=self._token)
            if cap is not None
            else None
        )
        outputs = {
            key: _per_incarnation(settings[key], self.incarnation)
            for key in ("output", "jsonl", "events")
            if settings.get(key) not in (None, "-")
        }
        self._mqtt = None
        if mqtt is not None:
            self._mqtt = MqttPublisher(
                mqtt[0],
                topic=mqtt[1],
                client_id=f"streamer-{name}-{self.incarnation}",
                available=f"{name}/available",
            ).start()
        self.fleet = Fleet(
            {**settings, **outputs},
            budgets=self._budgets,
            run_id=f"{run_id}-{self.incarnation}",
            share_outputs=False,
            mqtt=self._mqtt,
        )
        if preview is not None:
            from streamer.sinks.preview import PreviewConfig

            self.fleet.preview = PreviewConfig(fps=preview[0], width=preview[1])
        try:  # its own histograms, observed here, handed to the head with each status
            from streamer.metrics import FleetMetrics

            self.fleet.metrics = FleetMetrics(self.fleet, per_camera=True)
        except ImportError:  # prometheus-client comes with the server extra
            pass
        self.failed: dict[str, Any] | None = None
        try:
            self.camera = self.fleet.add(name, source)
        except StreamerError as exc:  # a bad source or setting: said, not retried
            key = settings.get("api_key")
            self.failed = {"state": "failed", "ended": True, "code": exit_code(exc),
                           "error": redact(str(exc), key), "summary": "not started"}  # fmt: skip
            self._coordinator.give_back.remote(self.name, self._token)
            return
        self._renewer = threading.Thread(
            target=self._renew_claim, name=f"streamer-claim-{name}", daemon=True
        )
        self._renewer.start()

    def _wait_for_claim(self) -> None:
        """Until the camera's claim is this incarnation's: an older one's lapses within
        a term; one still renewed after ``CLAIM_WAIT_S`` is another live actor's."""
        ray = import_ray()
        deadline = time.monotonic() + CLAIM_WAIT_S
        while True:
            retry_in = ray.get(
                self._coordinator.claim.remote(self.name, self._token), timeout=CALL_TIMEOUT_S
            )
            if retry_in <= 0:
                return
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"camera {self.name} is held by another live actor (two heads on one "
                    "config?): not started"
                )
            log.info("camera %s: waiting %.1f s for its claim to lapse", self.name, retry_in)
            time.sleep(min(retry_in + 0.05, CLAIM_TERM_S))

    def _renew_claim(self) -> None:
        """Every second; a claim not renewed in time stops the camera before it lapses."""
        ray = import_ray()
        renewed = time.monotonic()  # the claim lapses CLAIM_TERM_S after this, or later
        while not self.camera.ended:
            time.sleep(1.0)
            asked = time.monotonic()
            try:
                held = ray.get(self._coordinator.renew.remote(self.name, self._token), timeout=1.0)
            except Exception:  # unanswered: stop with a margin before the claim lapses
                held = time.monotonic() - renewed < CLAIM_TERM_S - 1.5
            else:
                renewed = asked if held else renewed
            if not held:
                log.warning("camera %s: its claim is lost; stopping here", self.name)
                self._claim_lost.set()
                self.fleet.stop()
                return

    def status(self) -> dict[str, Any]:
        if self.failed is not None:
            return self.failed
        status = self.camera.pipeline.status()
        (info,) = self.fleet.cameras()
        metrics = self.fleet.metrics
        preview = self.fleet.preview_of(self.name)
        return {
            "histograms": metrics.histogram_samples() if metrics is not None else [],
            "viewers": (preview.viewers, preview.connections) if preview is not None else None,
            "info": info,  # CameraInfo and PipelineStatus: what the head's --web shows
            "pipeline": status,
            "incarnation": self.incarnation,
            "node": self._token.split("@")[1],
            "state": self.camera.state(),
            "frames": status.frames,
            "ok": status.ok,
            "inference_fps": status.inference_fps,
            "ended": self.camera.ended,
            "code": self.camera.code,
            "summary": self.camera.summary() if self.camera.ended else "",
            "error": str(self.camera.error) if self.camera.error is not None else None,
        }

    def watch(self, change: int) -> None:
        """A viewer of the head's web view came (1) or left (-1)."""
        preview = self.fleet.preview_of(self.name) if self.failed is None else None
        if preview is not None:
            preview.watch(change)

    def preview_after(self, sequence: int) -> tuple[int, bytes, float] | None:
        """The newest preview JPEG if newer than ``sequence``: (sequence, JPEG, seconds
        since its frame's capture, by this machine's clock); never waits."""
        preview = self.fleet.preview_of(self.name) if self.failed is None else None
        frame = preview.newer_than(sequence) if isinstance(preview, Preview) else None
        if frame is None:
            return None
        return frame.sequence, frame.jpeg, time.monotonic() - frame.captured_at

    def settings(self) -> tuple[str, dict[str, Any]]:
        """The source and settings it was started with (a new head compares them)."""
        return self._given

    def pause(self) -> None:
        if self.failed is None:
            self.fleet.pause(self.name)

    def resume(self) -> None:
        if self.failed is None:
            self.fleet.resume(self.name)

    def stop(self) -> dict[str, Any]:
        """Stop the camera, finalize its outputs, give its claim back."""
        if self.failed is not None:
            self.fleet.close()
            self._close_mqtt()
            return self.failed
        self.fleet.close()
        self._close_mqtt()
        if self._budgets is not None:
            self._budgets.close()
        self._coordinator.give_back.remote(self.name, self._token)
        return self.status()

    def _close_mqtt(self) -> None:
        if self._mqtt is not None:
            self._mqtt.close()


def _per_incarnation(path: str, incarnation: str) -> str:
    folder, _, name = path.rpartition("/")
    stem, dot, suffix = name.rpartition(".")
    named = f"{stem}.{incarnation}.{suffix}" if dot else f"{name}.{incarnation}"
    return f"{folder}/{named}" if folder else named


class ClusterCameras:
    """The head's side: each camera of the config in a Ray actor, spread over the nodes
    by the CPUs each declares (``ray_cpus``); a reconciler keeps the actors equal to the
    cameras wanted."""

    def __init__(
        self,
        address: str,
        cap: float | None,
        run_id: str,
        mqtt: tuple[str, str] | None = None,
        *,
        deployment: str | None = None,
    ) -> None:
        """``deployment``: the cameras' actors are detached and named after it, so they
        outlive this process; a head started again with the same one adopts them (a
        camera whose settings are unchanged keeps running, untouched)."""
        ray = import_ray()
        connect(address)
        self.run_id = run_id
        self.mqtt = mqtt
        self.preview: tuple[float, int] | None = None  # set by the web view: (fps, width)
        self.cap = cap
        self.deployment = deployment
        self._swept = deployment is None
        options: dict[str, Any] = {"num_cpus": 0, "max_restarts": -1, "max_task_retries": -1}
        if deployment is not None:
            options.update(
                name=f"streamer-{deployment}-coordinator", lifetime="detached", get_if_exists=True
            )
        # one call at a time: the book and the claims need no lock
        self.coordinator: Any = ray.remote(Coordinator).options(**options).remote(cap)
        if deployment is not None and ray.get(self.coordinator.cap.remote()) != cap:
            ray.kill(self.coordinator)  # another budget now: a new book (and claims)
            self.coordinator = ray.remote(Coordinator).options(**options).remote(cap)
        self._wanted: dict[str, tuple[str, dict[str, Any]]] = {}
        self._started: dict[str, tuple[str, dict[str, Any]]] = {}  # what each runs with
        self._actors: dict[str, Any] = {}
        self.results: dict[str, dict[str, Any]] = {}
        self.reports: dict[str, dict[str, Any]] = {}  # each camera's last status
        # the run's loop reconciles; the --web server's threads add, remove and read
        self.lock = threading.RLock()

    def want(self, name: str, source: str, settings: dict[str, Any]) -> None:
        with self.lock:
            self._wanted[name] = (source, settings)

    def unwant(self, name: str) -> None:
        with self.lock:
            self._wanted.pop(name, None)

    def actor(self, name: str) -> Any:
        with self.lock:
            return self._actors[name]

    def want_only(self, cameras: dict[str, tuple[str, dict[str, Any]]]) -> None:
        """These cameras and no others (a reload): changed ones are replaced."""
        for name in [n for n in self._wanted if n not in cameras]:
            self.unwant(name)
        for name, (source, settings) in cameras.items():
            self.want(name, source, settings)

    def reconcile(self) -> None:
        """Start the cameras wanted and not running; stop those running and not wanted,
        and those whose settings changed (started again with the new ones)."""
        with self.lock:
            self._reconcile()

    def _actor_name(self, camera: str) -> str:
        if self.deployment is not None:
            return f"streamer-{self.deployment}-cam-{camera}"
        return f"streamer-{self.run_id}-{camera}"

    def _sweep(self) -> None:
        """Once: stop the deployment's actors that no camera wanted now is (the config
        changed while no head ran)."""
        ray = import_ray()
        self._swept = True
        prefix = self._actor_name("")
        for actor_name in ray.util.list_named_actors():
            camera = actor_name.removeprefix(prefix)
            if actor_name.startswith(prefix) and camera not in self._wanted:
                self._actors[camera] = ray.get_actor(actor_name)
                self.results[camera] = self._stop(camera)
                log.warning("camera %s: stopped (no longer in the config)", camera)

    def _adopt(self, name: str, wanted: tuple[str, dict[str, Any]]) -> bool:
        """A running actor of this camera (from a head before this one) kept if its
        settings are the ones wanted, else stopped; ``True`` if kept."""
        ray = import_ray()
        try:
            actor = ray.get_actor(self._actor_name(name))
        except ValueError:
            return False  # none
        try:
            running = ray.get(actor.settings.remote(), timeout=CALL_TIMEOUT_S)
        except Exception:
            running = wanted  # restarting elsewhere: its settings are the ones it had
        self._actors[name] = actor
        self._started[name] = (running[0], running[1])
        if self._started[name] == wanted:
            log.warning("camera %s: adopted (running on from the head before)", name)
            return True
        self.results[name] = self._stop(name)
        del self.results[name]
        return False

    def _reconcile(self) -> None:
        ray = import_ray()
        if not self._swept:
            self._sweep()
        for name in [n for n in self._actors if self._started.get(n) != self._wanted.get(n)]:
            self.results[name] = self._stop(name)
            if name in self._wanted:
                del self.results[name]  # replaced: its new incarnation reports
        for name, (source, settings) in self._wanted.items():
            if name in self.results and self._started.get(name) != (source, settings):
                del self.results[name]  # ended before, changed since: run it again
            if name not in self._actors and name not in self.results:
                if self.deployment is not None and self._adopt(name, (source, settings)):
                    continue
                self._started[name] = (source, settings)
                self._actors[name] = (
                    ray.remote(CameraActor)
                    .options(
                        # Ray refuses a second live actor of one name: one more guard
                        # against a camera processed twice
                        name=self._actor_name(name),
                        lifetime="detached" if self.deployment is not None else None,
                        num_cpus=float(settings.get("ray_cpus", 0.25)),
                        max_restarts=-1,
                        max_task_retries=-1,
                        max_concurrency=4,
                        scheduling_strategy="SPREAD",
                    )
                    .remote(
                        name,
                        source,
                        settings,
                        self.coordinator,
                        self.run_id,
                        mqtt=self.mqtt,
                        preview=self.preview,
                    )
                )

    def statuses(self, timeout: float = CALL_TIMEOUT_S) -> dict[str, dict[str, Any]]:
        """Each running camera's status (``None`` values while it is being restarted)."""
        ray = import_ray()
        with self.lock:
            calls = {name: actor.status.remote() for name, actor in self._actors.items()}
        if not calls:
            return {}
        # one wait for all: cameras being restarted do not hold the others' answers up
        ready, _ = ray.wait(list(calls.values()), num_returns=len(calls), timeout=timeout)
        answered = set(ready)
        found: dict[str, dict[str, Any]] = {}
        for name, call in calls.items():
            if call not in answered:
                found[name] = {"state": "restarting (no answer)", "ended": False}
                continue
            try:
                found[name] = ray.get(call, timeout=timeout)
            except ray.exceptions.ActorDiedError as exc:  # for good: it will not restart
                key = self._started.get(name, ("", {}))[1].get("api_key")
                found[name] = {"state": "failed", "ended": True, "code": EXIT_ERROR,
                               "error": redact(clean(str(exc), 300), key)}  # fmt: skip
            except Exception as exc:  # its node died, it is starting again elsewhere
                found[name] = {"state": f"restarting ({type(exc).__name__})", "ended": False}
        with self.lock:
            self.reports.update({n: s for n, s in found.items() if n in self._actors})
        return found

    def settle_ended(self, statuses: dict[str, dict[str, Any]]) -> None:
        with self.lock:
            self._settle_ended(statuses)

    def _settle_ended(self, statuses: dict[str, dict[str, Any]]) -> None:
        for name, status in statuses.items():
            if status.get("ended") and name in self._actors:
                result = self._stop(name)
                self.results[name] = status if status.get("state") == "failed" else result

    def _stop(self, name: str) -> dict[str, Any]:
        ray = import_ray()
        actor = self._actors.pop(name)
        try:
            result: dict[str, Any] = ray.get(actor.stop.remote(), timeout=60)
        except Exception as exc:
            result = {"ended": True, "code": EXIT_ERROR, "error": f"stop: {type(exc).__name__}"}
        ray.kill(actor)
        if self.deployment is not None:  # its name free again before another takes it
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    ray.get_actor(self._actor_name(name))
                except ValueError:
                    break
                time.sleep(0.1)
        return result

    @property
    def running(self) -> list[str]:
        with self.lock:
            return list(self._actors)

    @property
    def wanted(self) -> dict[str, tuple[str, dict[str, Any]]]:
        with self.lock:
            return dict(self._wanted)

    def close(self) -> None:
        ray = import_ray()
        with self.lock:
            for name in list(self._actors):
                self.results[name] = self._stop(name)
            if self.coordinator is not None:
                ray.kill(self.coordinator)
                self.coordinator = None


def run_cluster(
    config: FleetConfig,
    *,
    say: Callable[[str], None],
    models_dir: Path | None = None,
    reload: Callable[[], FleetConfig] | None = None,
    deployment: str = "default",
) -> int:
    """``streamer run --ray``: every camera of ``config`` in its own actor until each has
    ended (recorded files) or a signal; the worst camera's exit code. SIGHUP calls
    ``reload`` and starts, stops or replaces only the cameras whose settings changed
    (a broken config is said and changes nothing)."""
    from streamer.pipeline import new_run_id

    wide = config.run
    assert wide.ray is not None
    stopping, hup = threading.Event(), threading.Event()
    received: list[int] = []
    with contextlib.ExitStack() as stack:
        _handle_signals(stack, stopping, received, hup if reload is not None else None)
        wanted = _Wanted(wide.ray, stack, models_dir, say)
        cameras = wanted.of(config)
        caps = {settings.get("rate_limit") for _, settings in cameras.values()}
        if len(caps) > 1:
            raise ConfigError("--ray: every camera shares one --rate-limit budget; give one")
        mqtt = _start_mqtt(config, stack)
        fleet = ClusterCameras(
            wide.ray,
            caps.pop(),
            new_run_id(),
            (wide.mqtt, wide.mqtt_topic) if wide.mqtt else None,
            # a cluster of its own dies with this process: nothing to outlive it
            deployment=None if wide.ray == "local" else deployment,
        )
        stack.callback(fleet.close)
        if wide.web is not None:  # before any camera: its bind and token are checked
            fleet.preview = (wide.preview_fps, wide.preview_width)  # drawn in the actors
            _start_web(ClusterView(fleet, config.base, wanted), config, stack, say)
        fleet.want_only(cameras)
        last_line = 0.0
        while not stopping.is_set():
            if hup.is_set() and reload is not None:
                hup.clear()
                try:
                    fleet.want_only(wanted.of(reload()))
                    say(f"streamer: SIGHUP: config applied: {len(fleet.wanted)} cameras")
                except StreamerError as exc:
                    say(f"streamer: SIGHUP: config not applied: {redact(clean(str(exc), 300))}")
            fleet.reconcile()
            statuses = fleet.statuses()
            fleet.settle_ended(statuses)
            if not fleet.running and not hup.is_set() and wide.web is None:
                break  # every camera ended (files done, or none left in the config)
            if time.monotonic() - last_line >= 5.0:
                if wide.progress:
                    say("ray: " + "; ".join(_camera_line(n, s) for n, s in statuses.items()))
                if mqtt is not None:
                    mqtt.publish_stats({n: _stats(s) for n, s in statuses.items()})
                last_line = time.monotonic()
            stopping.wait(1.0)
        fleet.close()
        codes = _report(fleet, say)
    if received:
        return EXIT_SIGINT if received[0] == signal.SIGINT else EXIT_SIGTERM
    return worst(codes) if codes else EXIT_OK


def _handle_signals(
    stack: contextlib.ExitStack,
    stopping: threading.Event,
    received: list[int],
    hup: threading.Event | None,
) -> None:
    """SIGINT and SIGTERM end the run (``received``); SIGHUP sets ``hup``; the previous
    handlers come back when ``stack`` closes."""

    def on_signal(signum: int, frame: object) -> None:
        received.append(signum)
        stopping.set()

    handlers: dict[int, Any] = {signal.SIGINT: on_signal, signal.SIGTERM: on_signal}
    if hup is not None:
        handlers[signal.SIGHUP] = lambda signum, frame: hup.set()
    previous = {s: signal.signal(s, h) for s, h in handlers.items()}
    stack.callback(lambda: [signal.signal(s, h) for s, h in previous.items()])


def _start_mqtt(config: FleetConfig, stack: contextlib.ExitStack) -> MqttPublisher | None:
    """The head's own connection: ``<topic>/available`` and ``<topic>/stats``."""
    wide = config.run
    if not wide.mqtt:
        return None
    from streamer.mqtt import MqttPublisher

    mqtt = MqttPublisher(wide.mqtt, topic=wide.mqtt_topic)
    mqtt.start(required=wide.mqtt_required)
    stack.callback(mqtt.close)
    return mqtt


def _stats(status: dict[str, Any]) -> dict[str, Any]:
    """A camera's figures for ``<topic>/stats``, as the run's loop last gathered them."""
    keep = ("state", "node", "incarnation", "frames", "ok", "inference_fps", "error")
    return {k: status[k] for k in keep if k in status}


def _start_web(
    view: ClusterView,
    config: FleetConfig,
    stack: contextlib.ExitStack,
    say: Callable[[str], None],
) -> None:
    from streamer.sinks.preview import PreviewConfig
    from streamer.web import start_control_server

    wide = config.run
    assert wide.web is not None
    web = start_control_server(
        view,
        wide.web,
        wide.web_token,
        PreviewConfig(fps=wide.preview_fps, width=wide.preview_width),
        metrics_per_camera=wide.metrics_per_camera,
    )
    stack.callback(web.close)
    say(f"streamer: control API on {web.url}")


def _report(fleet: ClusterCameras, say: Callable[[str], None]) -> list[int]:
    """Each camera's summary line; their exit codes."""
    codes = []
    for name, result in sorted(fleet.results.items()):
        line = f"streamer: camera {name}: {result.get('summary') or result.get('state')}"
        say(line + (f"; error: {result['error']}" if result.get("error") else ""))
        codes.append(int(result.get("code") or 0))
    return codes


class _Wanted:
    """Cameras from a config, with the embedded server's URL where they need one
    (started once, on first need; only with ``--ray local``)."""

    def __init__(
        self,
        address: str,
        stack: contextlib.ExitStack,
        models_dir: Path | None,
        say: Callable[[str], None],
    ) -> None:
        self._address = address
        self._stack = stack
        self._models_dir = models_dir
        self._say = say
        self._server_url: str | None = None

    def of(self, config: FleetConfig) -> dict[str, tuple[str, dict[str, Any]]]:
        if config.run.ray != self._address:
            raise ConfigError("--ray cannot change while running")
        cameras = _cameras_of(config)
        for _, settings in cameras.values():
            self.fill_in(settings)
        return cameras

    def fill_in(self, settings: dict[str, Any]) -> None:
        """The embedded server's URL where no API is given."""
        if settings.get("api_url") is None and settings.get("api_key") is None:
            settings["api_url"] = self._embedded_url()

    def _embedded_url(self) -> str:
        if self._server_url is None:
            if self._address != "local":
                raise ConfigError(
                    "--ray across machines needs --api-url (an inference server every node "
                    "reaches); the embedded one listens on 127.0.0.1 of this machine"
                )
            from streamer.server import ServerConfig, ServerThread

            server = self._stack.enter_context(
                ServerThread(ServerConfig(port=0, models_dir=self._models_dir))
            )
            self._server_url = server.url
            self._say(f"streamer: no API URL or key: using the embedded server at {server.url}")
        return self._server_url


def _cameras_of(config: FleetConfig) -> dict[str, tuple[str, dict[str, Any]]]:
    """Each camera's name, source and settings; what --ray cannot do refused first."""
    return dict(_entry(camera) for camera in config.cameras)


def _entry(camera: RunConfig) -> tuple[str, tuple[str, dict[str, Any]]]:
    from streamer.pipeline import camera_name

    if camera.outputs.show:
        raise ConfigError("--show with --ray: the cameras run on other machines, no window")
    flat = camera.flat()
    source = str(flat.pop("source"))
    name = str(flat.pop("name", None) or camera_name(source))
    # an actor's working folder is not this one: files by their absolute path
    if Path(source).exists():
        source = str(Path(source).resolve())
    for key in ("output", "jsonl", "events", "snapshots"):
        if flat.get(key) not in (None, "-"):
            flat[key] = str(Path(flat[key]).absolute())
    return name, (source, {k: v for k, v in flat.items() if k not in RUN_WIDE})


def _by_camera(status: BudgetStatus) -> BudgetStatus:
    """The book's holders (``incarnation@node/camera``) summed by camera."""

    def summed(values: dict[str, Any]) -> dict[str, Any]:
        cameras: dict[str, Any] = {}
        for holder, value in values.items():
            camera = holder.rsplit("/", 1)[-1]
            cameras[camera] = cameras.get(camera, 0) + value
        return cameras

    return dataclasses.replace(
        status,
        shares=summed(status.shares),
        granted=summed(status.granted),
        waiting=summed(status.waiting),
    )


class _RemotePreview:
    """A camera's preview in its actor, for the head's MJPEG route: viewers are counted
    there (so frames are drawn for them), the newest JPEG fetched every half interval."""

    def __init__(self, cameras: ClusterCameras, name: str, interval: float) -> None:
        self._cameras = cameras
        self._name = name
        self._interval = interval

    @property
    def closed(self) -> bool:
        return self._name not in self._cameras.running

    def _seen(self) -> tuple[int, int]:
        with self._cameras.lock:
            seen = self._cameras.reports.get(self._name, {}).get("viewers")
        return seen if seen is not None else (0, 0)

    @property
    def viewers(self) -> int:
        return self._seen()[0]

    @property
    def connections(self) -> int:
        return self._seen()[1]

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        actor = self._cameras.actor(self._name)
        actor.watch.remote(1)
        try:
            yield
        finally:
            actor.watch.remote(-1)

    async def next_after(self, sequence: int, timeout: float) -> PreviewFrame | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.closed and loop.time() < deadline:
            try:
                call = self._cameras.actor(self._name).preview_after.remote(sequence)
                got = await asyncio.wait_for(asyncio.wrap_future(call.future()), CALL_TIMEOUT_S)
            except Exception as exc:  # restarting, or gone: the route looks at closed
                log.debug("preview of %s: %s", self._name, type(exc).__name__)
                got = None
            if got is not None:
                number, jpeg, age = got
                return PreviewFrame(number, jpeg, time.monotonic() - age)
            await asyncio.sleep(self._interval / 2)
        return None


class _Removed:
    def __init__(self, result: dict[str, Any]) -> None:
        self._result = result

    def summary(self) -> str:
        return str(self._result.get("summary") or self._result.get("state") or "")


class ClusterView:
    """The ``--web`` server's view of cameras on a Ray cluster (``FleetView``): their
    states and figures as the run's loop last gathered them, cameras added and removed
    through the reconciler. No previews (the frames are on other machines) and no
    latency histograms (observed where the results are)."""

    def __init__(self, cameras: ClusterCameras, base: dict[str, Any], wanted: _Wanted) -> None:
        self._cameras = cameras
        self._base = base
        self._wanted = wanted
        self.run_id = cameras.run_id
        self.metrics: Any = None
        self.preview: Any = None

    def add(self, name: str | None = None, source: str | None = None, **overrides: Any) -> Any:
        from streamer.config import camera_config

        entry = {**overrides, "source": source}
        if name is not None:
            entry["name"] = name
        config = camera_config(self._base, entry, " (over HTTP)", None)
        name, (source_id, settings) = _entry(config)
        self._wanted.fill_in(settings)
        with self._cameras.lock:
            if name in self._cameras.wanted or name in self._cameras.running:
                raise ConfigError(f"a camera named {name!r} exists already")
            self._cameras.want(name, source_id, settings)
            self._cameras.reconcile()
        return config

    def remove(self, name: str) -> _Removed:
        with self._cameras.lock:
            if name not in self._cameras.wanted:
                raise KeyError(name)
            self._cameras.unwant(name)
            self._cameras.reconcile()
            return _Removed(self._cameras.results.get(name, {}))

    def pause(self, name: str) -> None:
        import_ray().get(self._cameras.actor(name).pause.remote(), timeout=CALL_TIMEOUT_S)
        self._cameras.statuses()  # the answer shows the new state

    def resume(self, name: str) -> None:
        import_ray().get(self._cameras.actor(name).resume.remote(), timeout=CALL_TIMEOUT_S)
        self._cameras.statuses()

    def names(self) -> list[str]:
        return list(self._cameras.wanted)

    def states(self) -> dict[str, str]:
        return {info.name: info.state for info in self.cameras()}  # from the loop's reports

    def cameras(self) -> list[CameraInfo]:
        with self._cameras.lock:
            wanted = self._cameras.wanted
            reports = dict(self._cameras.reports)
        infos = []
        for name, (source, settings) in wanted.items():
            report = reports.get(name, {})
            info = report.get("info")
            if info is None:  # not started yet, or being started again elsewhere
                info = CameraInfo(
                    name=name, source=redact(source), state=report.get("state", "starting"),
                    live=settings.get("mode") == "live", weight=settings.get("weight", 1.0),
                    min_fps=settings.get("min_fps", 0.0), share=None, source_fps=None,
                    inference_fps=None, last_error=report.get("error"),
                    exit_code=report.get("code"),
                )  # fmt: skip
            infos.append(info)
        return infos

    def status(self) -> FleetStatus:
        with self._cameras.lock:
            wanted = self._cameras.wanted
            reports = {
                n: r["pipeline"]
                for n, r in self._cameras.reports.items()
                if "pipeline" in r and n in wanted
            }
            coordinator = self._cameras.coordinator
            cap = self._cameras.cap
        budgets = {}
        if coordinator is not None and cap is not None:
            try:
                budgets["cluster"] = _by_camera(ActorLender(coordinator).status())
            except Exception as exc:
                log.debug("budget status: %s", exc)
        return FleetStatus(run_id=self.run_id, cameras=reports, budgets=budgets)

    def preview_of(self, name: str) -> _RemotePreview | None:
        if self._cameras.preview is None or name not in self._cameras.running:
            return None
        return _RemotePreview(self._cameras, name, 1.0 / self.preview.fps if self.preview else 0.1)

    def histograms(self) -> dict[str, HistogramSamples]:
        """Each camera's histograms, as the run's loop last gathered them."""
        with self._cameras.lock:
            wanted = self._cameras.wanted
            return {
                n: r["histograms"]
                for n, r in self._cameras.reports.items()
                if "histograms" in r and n in wanted
            }


def _camera_line(name: str, status: dict[str, Any]) -> str:
    if "frames" not in status:
        return f"{name} {status.get('state')}"
    fps = status.get("inference_fps")
    shown = f"{fps:.1f}/s" if fps else "-"
    return f"{name} {status['state']} on {status['node']} ({status['ok']} ok, {shown})"
