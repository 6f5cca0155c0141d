"""One camera: its settings turned into a source, a client, claimed outputs and a
pipeline, and, when it ends, its outputs settled and its exit code decided.

``Fleet`` builds cameras with these pieces and runs many at once; nothing here knows
about other cameras.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamer._av import av
from streamer.client import RoboflowClient, Target
from streamer.config import RunConfig
from streamer.errors import (
    ConnectionFailed,
    InferenceError,
    InferenceTimeout,
    QuotaExhausted,
    RateLimited,
    ServerError,
    SinkError,
    StreamerError,
)
from streamer.exits import EXIT_API, EXIT_OK, EXIT_OUTPUT, EXIT_SIGINT, EXIT_SIGTERM, exit_code
from streamer.outputs import STDOUT, OutputFile
from streamer.pipeline import Pipeline, PipelineSettings
from streamer.render import RenderConfig
from streamer.sampler import SamplerConfig
from streamer.sender import SenderConfig
from streamer.sinks import DisplaySink, Sink, WebhookSink
from streamer.sinks.preview import Preview
from streamer.sources import PyAVSource, Source, SyntheticSource

__all__ = [
    "Camera",
    "Outputs",
    "inputs_of",
    "pipeline_settings",
    "preflight",
    "rate_limit",
    "target_for",
    "total_frames",
]

log = logging.getLogger(__name__)

ROBOFLOW_RATE_LIMIT = 20.0  # requests/s per key before the serverless API answers 429


def target_for(config: RunConfig, api_url: str, default_model: str) -> Target:
    options = {
        "confidence": config.target.confidence,
        "overlap": config.target.overlap,
        "max_side": config.target.max_side,
        "jpeg_quality": config.target.jpeg_quality,
    }
    if config.target.workflow:
        workspace, workflow_id = config.target.workflow.split("/")
        return Target.workflow(
            workspace,
            workflow_id,
            api_url=api_url,
            output_name=config.target.workflow_output,
            **options,
        )
    return Target.model(config.target.model or default_model, api_url=api_url, **options)


def rate_limit(config: RunConfig, target: Target) -> float | None:
    """The cap asked for; by default Roboflow's stated 20/s on its own hosts, none elsewhere."""
    if config.sender.rate_limit is not None:
        return config.sender.rate_limit
    return ROBOFLOW_RATE_LIMIT if target.host.endswith("roboflow.com") else None


def preflight(client: RoboflowClient, *, max_retry_wait: float, attempts: int = 3) -> None:
    """A small request before the run: a wrong key, model or URL fails here, in one line.

    Transient answers (5xx, 429) are retried a few times: one bad answer at start-up
    is no reason to refuse a long run. A 429 asking to wait past ``max_retry_wait``
    is no transient answer: the quota is spent.
    """
    probe = np.full((64, 64, 3), 40, dtype=np.uint8)
    for attempt in range(1, attempts + 1):
        try:
            client.infer(probe, timeout=min(client.timeout, 15.0))
            return
        except RateLimited as exc:
            if exc.retry_after is not None and exc.retry_after > max_retry_wait:
                raise QuotaExhausted(
                    f"the API asked to wait {exc.retry_after:.0f} s before the next request "
                    f"(Retry-After), more than the {max_retry_wait:g} s allowed "
                    "(--max-retry-wait): its quota looks spent",
                    retry_after=exc.retry_after,
                ) from exc
            if attempt == attempts:
                raise ServerError(
                    f"the API cannot serve {client.target.name}: {exc}", status=exc.status
                ) from exc
            time.sleep(min(max_retry_wait, max(0.2 * attempt, exc.retry_after or 0.0)))
        except ServerError as exc:
            if attempt == attempts:
                raise ServerError(
                    f"the API cannot serve {client.target.name}: {exc}", status=exc.status
                ) from exc
            time.sleep(0.2 * attempt)
        except (ConnectionFailed, InferenceTimeout) as exc:
            raise type(exc)(f"{exc} (is the API URL right and the server up?)") from exc


def pipeline_settings(config: RunConfig, live: bool, target: Target) -> PipelineSettings:
    return PipelineSettings(
        live=live,
        sampler=SamplerConfig(
            live=live,
            max_fps=config.sampler.max_fps,
            stride=config.sampler.every,
            motion_threshold=config.sampler.motion_threshold,
        ),
        sender=SenderConfig(
            max_in_flight=config.sender.max_in_flight,
            request_timeout=config.sender.request_timeout,
            deadline=config.sender.deadline if live else None,
            max_retries=config.sender.max_retries,
            rate_limit=rate_limit(config, target),
            max_retry_wait=config.sender.max_retry_wait,
            outage_wait=config.sender.max_retry_wait,
        ),
        stall_timeout=config.capture.stall_timeout,
        connect_timeout=None
        if config.capture.reconnect == "forever"
        else config.capture.connect_timeout,
        render=RenderConfig(hud=config.outputs.hud),
        render_fps=config.outputs.render_fps,
        lines=config.analytics.lines,
        zones=config.analytics.zones,
        update_interval=config.analytics.update_interval,
        snapshots=Path(config.outputs.snapshots) if config.outputs.snapshots else None,
        weight=config.sampler.weight,
        min_fps=config.sampler.min_fps,
    )


def total_frames(source: Source) -> int | None:
    """Frames a recorded source holds, when its container says (for progress)."""
    if isinstance(source, SyntheticSource):
        return None if source.seconds is None else round(source.seconds * source.scene.fps)
    path = getattr(source, "uri", None)
    if source.is_live or not isinstance(path, str):
        return None
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            if stream.duration and stream.time_base and stream.average_rate:
                return round(float(stream.duration * stream.time_base * stream.average_rate))
    except (av.FFmpegError, OSError, IndexError):
        return None
    return None


def inputs_of(source: Source, config_path: Path | None) -> list[Path]:
    """Files the camera reads, which no output may overwrite."""
    inputs = [config_path] if config_path is not None else []
    if isinstance(source, PyAVSource) and not source.is_live and "://" not in source.uri:
        inputs.append(Path(source.uri))
    return inputs


def _short(error: BaseException) -> str:
    text = str(error)
    return text.split(": ", 1)[-1] if text.startswith("cannot ") else text


@dataclass
class Outputs:
    """One camera's output files: claimed before it starts, settled after it ends."""

    video: OutputFile | None = None
    jsonl: OutputFile | None = None
    events: OutputFile | None = None
    sinks: dict[str, Sink] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what became of each, for the summary

    def claim(self, video: str | None, jsonl: str | None, events: str | None = None) -> None:
        try:
            if video:
                self.video = OutputFile.claim(video)
            if jsonl and jsonl != STDOUT:
                self.jsonl = OutputFile.claim(jsonl)
            if events and events != STDOUT:
                self.events = OutputFile.claim(events)
        except StreamerError:
            self.release()
            raise

    def settle(self, keep: bool, errors: dict[str, SinkError], unfinished: set[str]) -> None:
        """``keep``: the camera ended as asked (done, removed or stopped by a signal). A
        sink still writing (``unfinished``) keeps its temporary file where it is: moving
        it now would let the rename race the last writes."""
        for name in sorted(unfinished):
            claim = getattr(self, name, None) if name in ("video", "jsonl", "events") else None
            if isinstance(claim, OutputFile):
                self.notes.append(f"{name}: not finished in time (left in {claim.temp})")
                claim.release()
                setattr(self, name, None)
        if self.video is not None:
            video, self.video = self.video, None
            if "video" in errors:
                video.discard()  # an unfinished MP4 cannot be played
                self.notes.append(f"video: not written ({_short(errors['video'])})")
            elif keep:
                done = video.commit()
                self.notes.append(f"video: {done}" if done else "video: not written (no frames)")
            else:
                kept = video.keep_partial()
                if kept:
                    self.notes.append(f"video: partial, kept as {kept} ({video.target} untouched)")
        jsonl, events, self.jsonl, self.events = self.jsonl, self.events, None, None
        self._settle_lines("jsonl", "records", jsonl, keep, errors)
        self._settle_lines("events", "events", events, keep, errors)
        webhook = self.sinks.get("webhook")
        if isinstance(webhook, WebhookSink):
            what = " and ".join(
                kind
                for kind, on in (("records", webhook.records), ("events", webhook.events))
                if on
            )
            note = f"webhook: {webhook.posted} {what} posted"
            if webhook.undelivered:
                note += f", {webhook.undelivered} not delivered"
            self.notes.append(note)

    def _settle_lines(
        self,
        name: str,
        label: str,
        claim: OutputFile | None,
        keep: bool,
        errors: dict[str, SinkError],
    ) -> None:
        """A JSON lines file: committed, or kept aside as partial (it parses line by line)."""
        if claim is None:
            if name in errors:
                self.notes.append(f"{label}: stopped ({_short(errors[name])})")
            return
        if name in errors or not keep:
            kept = claim.keep_partial()
            why = f" after: {_short(errors[name])}" if name in errors else ""
            if kept:
                self.notes.append(
                    f"{label}: partial, kept as {kept} ({claim.target} untouched){why}"
                )
            else:
                self.notes.append(f"{label}: not written{why}")
        else:
            self.notes.append(f"{label}: {claim.commit()}")

    def release(self) -> None:
        """After an error before or during the run: keep whatever was written, aside."""
        for claim in (self.video, self.jsonl, self.events):
            if claim is not None:
                claim.keep_partial()
        self.video = self.jsonl = self.events = None


class Camera:
    """One camera of a fleet: its settings, source, client, outputs and pipeline."""

    def __init__(
        self,
        name: str,
        config: RunConfig,
        *,
        source: Source,
        live: bool,
        client: RoboflowClient,
        outputs: Outputs,
        pipeline: Pipeline,
        total: int | None,
    ) -> None:
        self.name = name
        self.config = config
        self.source = source
        self.live = live
        self.client = client
        self.outputs = outputs
        self.pipeline = pipeline
        self.total = total
        self.started = time.monotonic()
        self.ended_at: float | None = None
        self.code: int | None = None
        self.error: StreamerError | None = None
        self.removed = False
        self._lock = threading.Lock()

    @property
    def ended(self) -> bool:
        return self.code is not None

    @property
    def preview(self) -> Preview | None:
        """The web view's preview of this camera (when ``--web`` serves one)."""
        sink = self.outputs.sinks.get("preview")
        return sink if isinstance(sink, Preview) else None

    @property
    def display(self) -> DisplaySink | None:
        sink = self.outputs.sinks.get("display")
        return sink if isinstance(sink, DisplaySink) else None

    def state(self) -> str:
        if self.code is not None:
            if self.removed:
                return "removed"
            if self.code in (EXIT_SIGINT, EXIT_SIGTERM):
                return "stopped"
            return "done" if self.code == EXIT_OK else "failed"
        if self.pipeline.paused:
            return "paused"
        return self.pipeline.capture.metrics().state

    def finish(self, received: int | None = None) -> None:
        """Close the pipeline and settle the outputs (any thread; once)."""
        with self._lock:
            if self.code is not None:
                return
            self.pipeline.close()
            code, error = self._outcome(received)
            # outputs that did not fail themselves are whole after a stop or when another
            # output failed
            self.outputs.settle(
                code in (EXIT_OK, EXIT_OUTPUT, EXIT_SIGINT, EXIT_SIGTERM),
                self.pipeline.sink_errors,
                self.pipeline.unfinished_sinks,
            )
            self.client.close()
            self.error = error
            self.ended_at = time.monotonic()
            self.code = code

    def _outcome(self, received: int | None) -> tuple[int, StreamerError | None]:
        pipeline = self.pipeline
        if received is not None:
            return (EXIT_SIGINT if received == signal.SIGINT else EXIT_SIGTERM), None
        if self.removed:
            return EXIT_OK, None
        if pipeline.error is not None:
            return exit_code(pipeline.error), pipeline.error
        failure = self._failure_error()
        if failure is not None:
            return EXIT_API, failure
        if pipeline.sink_errors:
            names = ", ".join(sorted(pipeline.sink_errors))
            return EXIT_OUTPUT, SinkError(f"an output failed ({names}); see above")
        return EXIT_OK, None

    def _failure_error(self) -> InferenceError | None:
        """An API failure that fails the camera: every frame sent failed, or more than
        ``max_failed`` of them."""
        sender = self.pipeline.pool.metrics()
        sent = sender.ok + sender.failed + sender.stale
        if not sender.failed or not sent:
            return None
        reasons = self.pipeline.failure_reasons.most_common(1)
        why = f"; most often: {reasons[0][0]} ({reasons[0][1]}x)" if reasons else ""
        if sender.ok == 0 and sender.failed + sender.stale == sent:
            return InferenceError(f"every one of the {sent} frames sent failed{why}")
        if sender.failed / sent > self.config.sender.max_failed:
            return InferenceError(
                f"{sender.failed} of the {sent} frames sent failed, more than --max-failed "
                f"{self.config.sender.max_failed:g} allows{why}"
            )
        return None

    def summary(self) -> str:
        status = self.pipeline.status()
        elapsed = (self.ended_at or time.monotonic()) - self.started
        notes = "".join(f"; {note}" for note in self.outputs.notes)
        drawn = ""
        if status.drawn or status.draw_dropped:
            behind = f", {status.draw_dropped} not (drawing fell behind)"
            drawn = f"; {status.drawn} drawn{behind if status.draw_dropped else ''}"
        drawn += "".join(
            f"; {dropped} not written to the {sink} output"
            for sink, dropped in status.sink_drops.items()
            if dropped
        )
        return (
            f"{status.outputs} frames out ({status.ok} inferred, "
            f"{status.predicted} predicted, {status.failed} failed, {status.stale} stale) "
            f"in {elapsed:.1f} s{drawn}{notes}"
        )
