"""Prometheus metrics of a running fleet, with prometheus-client, served at ``/metrics``.

Histograms are observed as results come and frames are drawn (on each camera's render
thread, a few microseconds each); counters and gauges are read from the cameras' own
counters when Prometheus scrapes, so a camera pays nothing for them. Every name starts
with ``streamer_``; labels are ``camera`` (and ``cause``, ``status``, ``error``,
``event``, ``output``, ``host`` where they apply). Each fleet has its own registry:
nothing is global.

The text costs prometheus-client about 5 us a line (10 on a loaded machine) and a
histogram is 12 lines, so by default only the two latencies an operator alerts on,
result age and round trip, are histograms per camera; the other stages are one
histogram each for the whole fleet (``per_camera=True``: every stage per camera, about
twice the lines).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    StateSetMetricFamily,
)
from prometheus_client.registry import Collector

from streamer.capture import SourceState
from streamer.frames import Result, Status

if TYPE_CHECKING:
    from streamer.fleet import FleetView

__all__ = ["CONTENT_TYPE", "FleetMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# 10 ms to 10 s: a local server answers in milliseconds, a hosted API in hundreds. Few
# buckets and no ``*_created`` series (process-wide in prometheus-client): the text
# costs about 8 us a sample to make, and a 64-camera scrape must stay under 50 ms.
_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
disable_created_metrics()  # type: ignore[no-untyped-call]
# a camera's states: its source's while it runs, then how it ended (``Camera.state``)
STATES = (*(state.value for state in SourceState), "paused", "done", "stopped", "removed")
_Stage = Callable[[str, float], None]  # observe (camera, seconds)
# each histogram's (name, help, [(sample name, labels, value)]): picklable, for Ray
HistogramSamples = list[tuple[str, str, list[tuple[str, dict[str, str], float]]]]


class FleetMetrics:
    """The fleet's registry: ``observe`` each result, ``render`` on each scrape."""

    def __init__(
        self,
        fleet: FleetView,
        *,
        per_camera: bool = False,
        remote: Callable[[], dict[str, HistogramSamples]] | None = None,
    ) -> None:
        """``remote``: the cameras run elsewhere (Ray actors) and observe their own
        histograms; this gives each camera's (``histogram_samples``), gathered at scrape."""
        self.registry = CollectorRegistry(auto_describe=True)
        self._per_camera: list[Histogram] = []
        self._histograms: list[Histogram] = []
        by_camera_names: set[str] = set()
        # a remote fleet's histograms come from its cameras: none made here
        registry = None if remote else self.registry

        def histogram(name: str, what: str, by_camera: bool) -> _Stage:
            labels = ["camera"] if by_camera else []
            metric = Histogram(name, what, labels, buckets=_BUCKETS, registry=registry)
            self._histograms.append(metric)
            if by_camera:
                by_camera_names.add(name)
            if not by_camera:
                return lambda camera, seconds: metric.observe(seconds)
            self._per_camera.append(metric)
            return lambda camera, seconds: metric.labels(camera).observe(seconds)

        self._capture_age = histogram(
            "streamer_capture_age_seconds",
            "frame capture to its submission (waiting in the sampler)",
            per_camera,
        )
        self._queue_wait = histogram(
            "streamer_queue_wait_seconds", "submitted to a sender picking it up", per_camera
        )
        self._prepare = histogram(
            "streamer_prepare_seconds", "resize, JPEG, base64 of a frame", per_camera
        )
        self._round_trip = histogram(
            "streamer_round_trip_seconds", "HTTP, all attempts and backoff", True
        )
        self._server = histogram(
            "streamer_server_seconds", "the API's own processing time", per_camera
        )
        self._render = histogram(
            "streamer_render_seconds", "drawing a frame for the image outputs", per_camera
        )
        self._age = histogram("streamer_result_age_seconds", "frame capture to its result", True)
        self.registry.register(_StatusCollector(fleet))
        if remote is not None:
            self.registry.register(_RemoteHistograms(remote, by_camera_names))

    def histogram_samples(self) -> HistogramSamples:
        """Every histogram's samples (name, help, [(sample, labels, value)]): what a
        camera in a Ray actor hands its head."""
        families = []
        for histogram in self._histograms:
            for metric in histogram.collect():
                samples = [(s.name, dict(s.labels), s.value) for s in metric.samples]
                families.append((metric.name, metric.documentation, samples))
        return families

    def observe(self, camera: str, result: Result) -> None:
        """One answered frame (ok results: the latencies of a failure say little)."""
        if result.status is not Status.OK:
            return
        timings = result.timings
        self._capture_age(camera, timings.capture_age)
        self._queue_wait(camera, timings.queue_wait)
        self._prepare(camera, timings.prepare)
        self._round_trip(camera, timings.round_trip)
        if timings.server is not None:
            self._server(camera, timings.server)
        self._age(camera, result.age)

    def rendered(self, camera: str, seconds: float) -> None:
        """One frame drawn for the image outputs."""
        self._render(camera, seconds)

    def forget(self, camera: str) -> None:
        """A camera removed: its series go with it."""
        for metric in self._per_camera:
            with contextlib.suppress(KeyError):  # never observed
                metric.remove(camera)

    def render(self) -> bytes:
        return generate_latest(self.registry)


# counters read from the cameras at each scrape: name (after streamer_), help, labels
_COUNTERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("frames_decoded", "frames decoded", ()),
    ("frames_sent", "frames sent for inference", ()),
    ("frames_skipped", "frames not sent, by cause", ("cause",)),
    ("results", "frames by what became of them (predicted: not sent)", ("status",)),
    ("retries", "requests sent again", ()),
    ("rate_limited", "429 answers", ()),
    ("reconnects", "source reconnections", ()),
    ("frames_drawn", "live frames drawn for the image outputs", ()),
    ("output_dropped", "outputs an output did not take", ("output",)),
    ("errors", "failed requests (each attempt) and frames failed unsent, by class", ("error",)),
    ("events", "analytics events, by type", ("event",)),
    ("preview_viewers", "viewers who opened the camera's preview", ()),
)
_GAUGES: tuple[tuple[str, str], ...] = (
    ("in_flight", "requests in flight"),
    ("source_fps", "frames decoded per second"),
    ("inference_fps", "answers per second"),
    ("preview_watching", "viewers watching the camera's preview now"),
)


class _StatusCollector(Collector):
    """Counters and gauges read from the cameras' status when Prometheus scrapes."""

    def __init__(self, fleet: FleetView) -> None:
        self._fleet = fleet

    def describe(self) -> list[Any]:
        return []  # no fixed set of series: cameras come and go

    def collect(self) -> Iterator[Any]:
        status = self._fleet.status()
        counters = {
            key: CounterMetricFamily(f"streamer_{key}", what, labels=["camera", *extra])
            for key, what, extra in _COUNTERS
        }
        gauges = {
            key: GaugeMetricFamily(f"streamer_{key}", what, labels=["camera"])
            for key, what in _GAUGES
        }
        state = StateSetMetricFamily(
            "streamer_camera_state", "the camera's state", labels=["camera"]
        )
        states = self._fleet.states()  # not cameras(): a second status of every camera
        for camera, s in status.cameras.items():
            if camera not in states:
                continue  # removed since the status was taken
            counters["frames_decoded"].add_metric([camera], s.frames)
            counters["frames_sent"].add_metric([camera], s.sent)
            for cause, count in sorted(s.skipped.items()):
                counters["frames_skipped"].add_metric([camera, cause], count)
            counters["frames_skipped"].add_metric([camera, "capture"], s.dropped_capture)
            for name, count in (
                ("ok", s.ok),
                ("failed", s.failed),
                ("stale", s.stale),
                ("predicted", s.predicted),
            ):
                counters["results"].add_metric([camera, name], count)
            counters["retries"].add_metric([camera], s.retries)
            counters["rate_limited"].add_metric([camera], s.rate_limited)
            counters["reconnects"].add_metric([camera], s.reconnects)
            counters["frames_drawn"].add_metric([camera], s.drawn)
            for output, dropped in sorted(s.sink_drops.items()):
                counters["output_dropped"].add_metric([camera, output], dropped)
            for error, count in sorted(s.errors.items()):
                counters["errors"].add_metric([camera, error], count)
            for event, count in sorted(s.events.items()):
                counters["events"].add_metric([camera, event], count)
            preview = self._fleet.preview_of(camera)
            if preview is not None:
                counters["preview_viewers"].add_metric([camera], preview.connections)
                gauges["preview_watching"].add_metric([camera], preview.viewers)
            gauges["in_flight"].add_metric([camera], s.in_flight)
            gauges["source_fps"].add_metric([camera], s.source_fps or 0.0)
            gauges["inference_fps"].add_metric([camera], s.inference_fps or 0.0)
            now = states[camera]
            state.add_metric([camera], {name: name == now for name in STATES})
        budget_rate = GaugeMetricFamily(
            "streamer_budget_rate", "requests/s the key may send now", labels=["host"]
        )
        budget_calls = GaugeMetricFamily(
            "streamer_budget_calls_per_minute", "requests in the last minute", labels=["host"]
        )
        budget_tokens = GaugeMetricFamily(
            "streamer_budget_tokens",
            "sends that could go now without waiting (the budget spaces them: 0 or 1)",
            labels=["host"],
        )
        budget_share = GaugeMetricFamily(
            "streamer_budget_share", "requests/s a camera may count on", labels=["host", "camera"]
        )
        budget_waiting = GaugeMetricFamily(
            "streamer_budget_waiting",
            "a camera's requests waiting for a send slot",
            labels=["host", "camera"],
        )
        budget_granted = CounterMetricFamily(
            "streamer_budget_granted", "send slots a camera was given", labels=["host", "camera"]
        )
        for host, budget in status.budgets.items():
            budget_rate.add_metric([host], budget.rate)
            budget_calls.add_metric([host], budget.calls_per_minute)
            budget_tokens.add_metric([host], budget.tokens)
            for camera, share in budget.shares.items():
                budget_share.add_metric([host, camera], share)
                budget_waiting.add_metric([host, camera], budget.waiting.get(camera, 0))
                budget_granted.add_metric([host, camera], budget.granted.get(camera, 0))
        yield from counters.values()
        yield from gauges.values()
        yield state
        yield from (
            budget_rate,
            budget_calls,
            budget_tokens,
            budget_share,
            budget_waiting,
            budget_granted,
        )


class _RemoteHistograms(Collector):
    """The histograms cameras in Ray actors observed, as the run's loop last gathered
    them: per camera for ``by_camera`` families, summed over the cameras for the others."""

    def __init__(
        self, gathered: Callable[[], dict[str, HistogramSamples]], by_camera: set[str]
    ) -> None:
        self._gathered = gathered
        self._by_camera = by_camera

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        merged: dict[str, Metric] = {}
        summed: dict[tuple[str, str, tuple[tuple[str, str], ...]], float] = {}
        for families in self._gathered().values():
            for name, documentation, samples in families:
                metric = merged.setdefault(name, Metric(name, documentation, "histogram"))
                for sample, labels, value in samples:
                    if name in self._by_camera:
                        metric.add_sample(sample, labels, value)
                    else:
                        rest = tuple(sorted((k, v) for k, v in labels.items() if k != "camera"))
                        key = (name, sample, rest)
                        summed[key] = summed.get(key, 0.0) + value
        for (name, sample, rest), value in summed.items():
            merged[name].add_sample(sample, dict(rest), value)
        yield from merged.values()
