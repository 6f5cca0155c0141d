"""``streamer run``: a RunConfig turned into a running pipeline, progress, exit codes.

Order of work: settings, outputs (writable, not over an input, locked), display and
source are checked before the embedded server starts or any frame is sent; then the
run; then the outputs are renamed into place (done, or stopped by a signal), kept
beside as ``*.partial.*`` (the run failed), or discarded (the output itself failed).

Exit codes: 0 done; 1 other error; 2 bad settings; 3 bad source; 4 key rejected
(401/403/402); 5 unknown model; 6 API unreachable or failing; 7 an output could not
be written or shown; 130 SIGINT; 143 SIGTERM.
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

import cv2
import numpy as np

from streamer._av import av
from streamer.budget import Budgets
from streamer.client import (
    DEFAULT_API_URL,
    RoboflowClient,
    Target,
    check_api_key,
    resolve_api_key,
)
from streamer.config import RunConfig
from streamer.errors import (
    AuthError,
    ConfigError,
    ConnectionFailed,
    InferenceError,
    InferenceTimeout,
    ModelNotFound,
    PlanError,
    QuotaExhausted,
    RateLimited,
    ServerError,
    SinkError,
    SourceError,
    StreamerError,
    redact,
)
from streamer.outputs import STDOUT, OutputFile, check_outputs
from streamer.pipeline import Pipeline, PipelineSettings, PipelineStatus
from streamer.render import RenderConfig
from streamer.sampler import SamplerConfig
from streamer.sender import SenderConfig
from streamer.sinks import DisplaySink, JsonLinesSink, Sink, VideoSink, WebhookSink
from streamer.sinks.display import PUMP_INTERVAL_S, display_problem
from streamer.sinks.webhook import check_webhook_url
from streamer.sources import PyAVSource, Source, SyntheticSource, Timeouts, open_source

__all__ = ["EXIT_CODES", "exit_code", "run"]

log = logging.getLogger(__name__)

ROBOFLOW_RATE_LIMIT = 20.0  # requests/s per key before the serverless API answers 429
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_SOURCE = 3
EXIT_AUTH = 4
EXIT_MODEL = 5
EXIT_API = 6
EXIT_OUTPUT = 7
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
EXIT_CODES = {
    "ok": EXIT_OK,
    "error": EXIT_ERROR,
    "usage": EXIT_USAGE,
    "source": EXIT_SOURCE,
    "auth": EXIT_AUTH,
    "model": EXIT_MODEL,
    "api": EXIT_API,
    "output": EXIT_OUTPUT,
    "sigint": EXIT_SIGINT,
    "sigterm": EXIT_SIGTERM,
}


def exit_code(error: BaseException) -> int:
    if isinstance(error, ConfigError):
        return EXIT_USAGE
    if isinstance(error, SourceError):
        return EXIT_SOURCE
    if isinstance(error, AuthError | PlanError):
        return EXIT_AUTH
    if isinstance(error, ModelNotFound):
        return EXIT_MODEL
    if isinstance(error, InferenceError):
        return EXIT_API
    if isinstance(error, SinkError):
        return EXIT_OUTPUT
    return EXIT_ERROR


@contextlib.contextmanager
def _embedded_server(models_dir: Path | None) -> Iterator[str]:
    from streamer.server import ServerConfig, ServerThread

    with ServerThread(ServerConfig(port=0, models_dir=models_dir)) as server:
        yield server.url


def _target(config: RunConfig, api_url: str, default_model: str) -> Target:
    options = {
        "confidence": config.confidence,
        "overlap": config.overlap,
        "max_side": config.max_side,
        "jpeg_quality": config.jpeg_quality,
    }
    if config.workflow:
        workspace, workflow_id = config.workflow.split("/")
        return Target.workflow(
            workspace, workflow_id, api_url=api_url, output_name=config.workflow_output, **options
        )
    return Target.model(config.model or default_model, api_url=api_url, **options)


def _rate_limit(config: RunConfig, target: Target) -> float | None:
    """The cap asked for; by default Roboflow's stated 20/s on its own hosts, none elsewhere."""
    if config.rate_limit is not None:
        return config.rate_limit
    return ROBOFLOW_RATE_LIMIT if target.host.endswith("roboflow.com") else None


def _preflight(client: RoboflowClient, *, max_retry_wait: float, attempts: int = 3) -> None:
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


@dataclass
class _Outputs:
    """The run's output files: claimed before the run, settled after it."""

    video: OutputFile | None = None
    jsonl: OutputFile | None = None
    sinks: dict[str, Sink] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what became of each, for the summary

    def claim(self, config: RunConfig) -> None:
        if config.output:
            self.video = OutputFile.claim(config.output)
        if config.jsonl and config.jsonl != STDOUT:
            self.jsonl = OutputFile.claim(config.jsonl)

    def settle(self, keep: bool, errors: dict[str, SinkError], unfinished: set[str]) -> None:
        """``keep``: the run ended as asked (done or stopped by a signal). A sink still
        writing (``unfinished``) keeps its temporary file where it is: moving it now
        would let the rename race the last writes."""
        for name in sorted(unfinished):
            claim = self.video if name == "video" else self.jsonl if name == "jsonl" else None
            if claim is not None:
                self.notes.append(f"{name}: not finished in time (left in {claim.temp})")
                claim.release()
                if name == "video":
                    self.video = None
                else:
                    self.jsonl = None
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
        if self.jsonl is not None:
            jsonl, self.jsonl = self.jsonl, None
            if "jsonl" in errors or not keep:
                kept = jsonl.keep_partial()
                why = f" after: {_short(errors['jsonl'])}" if "jsonl" in errors else ""
                if kept:
                    self.notes.append(
                        f"records: partial, kept as {kept} ({jsonl.target} untouched){why}"
                    )
                else:
                    self.notes.append(f"records: not written{why}")
            else:
                done = jsonl.commit()
                self.notes.append(f"records: {done}")
        elif "jsonl" in errors:
            self.notes.append(f"records: stopped ({_short(errors['jsonl'])})")
        webhook = self.sinks.get("webhook")
        if isinstance(webhook, WebhookSink):
            note = f"webhook: {webhook.posted} records posted"
            if webhook.undelivered:
                note += f", {webhook.undelivered} not delivered"
            self.notes.append(note)

    def release(self) -> None:
        """After an error before or during the run: keep whatever was written, aside."""
        for claim in (self.video, self.jsonl):
            if claim is not None:
                claim.keep_partial()
        self.video = self.jsonl = None


def _short(error: BaseException) -> str:
    text = str(error)
    return text.split(": ", 1)[-1] if text.startswith("cannot ") else text


def _sinks(
    config: RunConfig, live: bool, pipeline_stop: list[Pipeline], outputs: _Outputs
) -> list[Sink]:
    sinks: list[Sink] = []
    if outputs.video is not None:
        sinks.append(VideoSink(outputs.video, live=live))
    if config.jsonl:
        sinks.append(JsonLinesSink(outputs.jsonl if outputs.jsonl is not None else STDOUT))
    if config.webhook:
        sinks.append(WebhookSink(config.webhook))
    if config.show:
        sinks.append(
            DisplaySink(
                "streamer", on_quit=lambda: pipeline_stop[0].stop() if pipeline_stop else None
            )
        )
    outputs.sinks = {sink.name: sink for sink in sinks}
    return sinks


def _total_frames(source: Source) -> int | None:
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

    def f(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    dropped = status.dropped_capture + sum(status.skipped.values())
    return (
        f"{status.source_state}  source {f(status.source_fps)} fps  "
        f"inference {f(status.inference_fps)} fps  latency p50 {f(status.latency_p50_ms)} ms  "
        f"dropped {dropped}  failed {status.failed}  stale {status.stale}"
    )


def _settings(config: RunConfig, live: bool, target: Target) -> PipelineSettings:
    return PipelineSettings(
        live=live,
        sampler=SamplerConfig(
            live=live,
            max_fps=config.max_fps,
            stride=config.every,
            motion_threshold=config.motion_threshold,
        ),
        sender=SenderConfig(
            max_in_flight=config.max_in_flight,
            request_timeout=config.request_timeout,
            deadline=config.deadline if live else None,
            max_retries=config.max_retries,
            rate_limit=_rate_limit(config, target),
            max_retry_wait=config.max_retry_wait,
            outage_wait=config.max_retry_wait,
        ),
        stall_timeout=config.stall_timeout,
        connect_timeout=None if config.reconnect == "forever" else config.connect_timeout,
        render=RenderConfig(hud=config.hud),
    )


def _drive(
    pipeline: Pipeline,
    config: RunConfig,
    total: int | None,
    live: bool,
    display: DisplaySink | None = None,
) -> list[int]:
    """Run the pipeline to its end, showing progress; the signals received, if any.

    A window (``display``) is driven from here: HighGUI must run on the main thread.
    """
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        pipeline.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    started = time.monotonic()
    interactive = config.progress and sys.stderr.isatty()
    every = 0.25 if interactive else 5.0
    try:
        pipeline.start()
        last_line = 0.0
        while not pipeline.wait(PUMP_INTERVAL_S if display is not None else 0.25):
            if display is not None:
                _pump(display, pipeline)
            if config.progress and time.monotonic() - last_line >= every:
                line = _progress_line(pipeline.status(), total, started, live)
                end = "" if interactive else "\n"
                print(("\r" + line) if interactive else line, end=end, file=sys.stderr)
                last_line = time.monotonic()
    finally:
        pipeline.close()  # the video is finalized and the lines flushed, whatever happened
        if display is not None:
            display.destroy()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if config.progress:
        line = _progress_line(pipeline.status(), total, started, live)
        print(("\r" if interactive else "") + line, file=sys.stderr)
    return received


def _pump(display: DisplaySink, pipeline: Pipeline) -> None:
    """One turn of the window's event loop; a window that breaks is an output that failed."""
    try:
        display.pump()
    except SinkError as exc:
        log.error("display output failed: %s", exc)
        pipeline.sink_errors.setdefault("display", exc)
        pipeline.stop()


def tune_threads() -> None:
    """One OpenCV thread per call: the pipeline already runs resizes and encodes on
    several threads at once, and OpenCV's own pool only adds hand-offs and spinning
    on top (JPEG preparation of a 720p frame: 1.1 ms of CPU with it, 0.66 without).
    """
    cv2.setNumThreads(1)


def _inputs(config: RunConfig, source: Source, config_path: Path | None) -> list[Path]:
    """Files the run reads, which no output may overwrite."""
    inputs = [config_path] if config_path is not None else []
    if isinstance(source, PyAVSource) and not source.is_live and "://" not in source.uri:
        inputs.append(Path(source.uri))
    return inputs


def _failure_error(pipeline: Pipeline, config: RunConfig) -> InferenceError | None:
    """An API failure that fails the run: every frame sent failed, or more than
    ``max_failed`` of them."""
    sender = pipeline.pool.metrics()
    sent = sender.ok + sender.failed + sender.stale
    if not sender.failed or not sent:
        return None
    reasons = pipeline.failure_reasons.most_common(1)
    why = f"; most often: {reasons[0][0]} ({reasons[0][1]}x)" if reasons else ""
    if sender.ok == 0 and sender.failed + sender.stale == sent:
        return InferenceError(f"every one of the {sent} frames sent failed{why}")
    if sender.failed / sent > config.max_failed:
        return InferenceError(
            f"{sender.failed} of the {sent} frames sent failed, more than --max-failed "
            f"{config.max_failed:g} allows{why}"
        )
    return None


def _summary(pipeline: Pipeline, elapsed: float, outputs: _Outputs) -> str:
    status = pipeline.status()
    notes = "".join(f"; {note}" for note in outputs.notes)
    return (
        f"streamer: {status.outputs} frames out ({status.ok} inferred, "
        f"{status.predicted} predicted, {status.failed} failed, {status.stale} stale) "
        f"in {elapsed:.1f} s{notes}"
    )


def run(
    config: RunConfig, *, models_dir: Path | None = None, config_path: Path | None = None
) -> int:
    """Run to the end of the source or a signal; return the exit code."""
    tune_threads()
    source = open_source(config.source, timeouts=Timeouts(open=10.0, read=config.stall_timeout))
    check_outputs(
        _inputs(config, source, config_path), {"--output": config.output, "--jsonl": config.jsonl}
    )
    if config.webhook:
        check_webhook_url(config.webhook)
    if config.show and (problem := display_problem()) is not None:
        raise SinkError(f"--show needs a display, and {problem}; use --output instead")
    if not source.is_live:
        source.open().close()  # a file that cannot be read is said so first, in one line
    live = config.mode == "live" if config.mode is not None else source.is_live
    api_key = resolve_api_key(config.api_key)
    embedded = config.api_url is None and api_key is None
    default_model = "shapes/1" if isinstance(source, SyntheticSource) else "coco/1"
    if not embedded and not (config.model or config.workflow):
        raise ConfigError(
            "give --model project/version or --workflow workspace/id for a remote API"
        )
    outputs = _Outputs()
    with contextlib.ExitStack() as stack:
        api_url = config.api_url or DEFAULT_API_URL
        target = _target(config, api_url, default_model)  # settings checked before the server
        check_api_key(api_key)
        outputs.claim(config)
        stack.callback(outputs.release)
        if embedded:
            api_url = stack.enter_context(_embedded_server(models_dir))
            print(
                f"streamer: no API URL or key: using the embedded server at {api_url}",
                file=sys.stderr,
            )
            target = _target(config, api_url, default_model)
        client = stack.enter_context(
            RoboflowClient(
                target,
                api_key,
                timeout=config.request_timeout,
                max_connections=config.max_in_flight,
                key_transport=config.api_key_transport,
            )
        )
        _preflight(client, max_retry_wait=config.max_retry_wait)
        holder: list[Pipeline] = []
        sinks = _sinks(config, live, holder, outputs)
        rate = _rate_limit(config, target)
        budget = Budgets().for_key(client.api_key_fingerprint, target.host, rate) if rate else None
        pipeline = Pipeline(
            source, client, _settings(config, live, target), sinks=sinks, budget=budget
        )
        holder.append(pipeline)
        started = time.monotonic()
        display = outputs.sinks.get("display")
        received = _drive(
            pipeline,
            config,
            _total_frames(source),
            live,
            display if isinstance(display, DisplaySink) else None,
        )
        code, error = _outcome(pipeline, config, received)
        # outputs that did not fail themselves are whole after a signal or another output failed
        outputs.settle(
            code in (EXIT_OK, EXIT_OUTPUT, EXIT_SIGINT, EXIT_SIGTERM),
            pipeline.sink_errors,
            pipeline.unfinished_sinks,
        )
        print(_summary(pipeline, time.monotonic() - started, outputs), file=sys.stderr)
        if error is not None:
            print(f"streamer: error: {redact(str(error), api_key)}", file=sys.stderr)
        return code
    return EXIT_ERROR  # not reached: the block returns or raises


def _outcome(
    pipeline: Pipeline, config: RunConfig, received: list[int]
) -> tuple[int, StreamerError | None]:
    """The exit code of a finished run, and the error to print (if any)."""
    if received:
        return (EXIT_SIGINT if received[0] == signal.SIGINT else EXIT_SIGTERM), None
    if pipeline.error is not None:
        return exit_code(pipeline.error), pipeline.error
    failure = _failure_error(pipeline, config)
    if failure is not None:
        return EXIT_API, failure
    if pipeline.sink_errors:
        names = ", ".join(sorted(pipeline.sink_errors))
        return EXIT_OUTPUT, SinkError(f"an output failed ({names}); see above")
    return EXIT_OK, None


def run_safely(
    config: RunConfig,
    *,
    models_dir: Path | None = None,
    config_path: Path | None = None,
    debug: bool = False,
) -> int:
    """``run`` with errors turned into one line and an exit code (a traceback too with
    ``debug``; the exit code is the same either way)."""
    try:
        return run(config, models_dir=models_dir, config_path=config_path)
    except StreamerError as exc:
        if debug:
            traceback.print_exc()
        print(f"streamer: error: {redact(str(exc), config.api_key)}", file=sys.stderr)
        return exit_code(exc)
