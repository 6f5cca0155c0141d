"""``/metrics`` of the --web server, parsed with prometheus_client's own parser: the
histograms and counters agree with the run's records, on a real run against the local
server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamer.fleet import Fleet
from streamer.server import ServerThread
from streamer.server.faults import FaultConfig
from streamer.web import start_control_server
from tests.helpers import ServerFactory, records, wait_for

_STAGES = ("capture_age", "queue_wait", "prepare", "round_trip", "server", "result_age")


def _samples(text: str) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append(sample)
    return found


def _value(samples: dict[str, list[Any]], name: str, **labels: str) -> float:
    matching = [s.value for s in samples[name] if labels.items() <= s.labels.items()]
    assert len(matching) == 1, (name, labels, matching)
    return float(matching[0])


def test_metrics_agree_with_the_records(
    make_clip: Callable[..., Path], server: ServerThread, tmp_path: Path
) -> None:
    clip = make_clip(2, width=320, height=240, fps=30)
    jsonl = tmp_path / "records.jsonl"
    base = {
        "api_url": server.url,
        "model": "shapes/1",
        "jsonl": str(jsonl),
        "every": 2,
    }
    with Fleet(base) as fleet:
        control = start_control_server(fleet, "127.0.0.1:0", None)
        try:
            fleet.add("clip", str(clip))
            assert fleet.wait(60)
            answer = httpx.get(f"{control.url}/metrics", timeout=10)
        finally:
            control.close()
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples = _samples(answer.text)
    lines = records(jsonl)
    ok = sum(1 for r in lines if r["status"] == "ok")
    assert ok == 30  # every second frame of 60
    # a histogram per stage, its count the inferred frames, its buckets cumulative
    for stage in _STAGES:
        name = f"streamer_{stage}_seconds"
        assert _value(samples, f"{name}_count") == ok  # one camera: the fleet's are its own
        buckets = samples[f"{name}_bucket"]
        counts = [s.value for s in sorted(buckets, key=lambda s: float(s.labels["le"]))]
        assert counts == sorted(counts)
        assert counts[-1] == ok  # le="+Inf"
    ages = [r["latency_ms"]["total"] / 1000 for r in lines if r["status"] == "ok"]
    total = _value(samples, "streamer_result_age_seconds_sum", camera="clip")
    assert abs(total - sum(ages)) < 0.01 * len(ages)  # the records' own ages, to the ms
    assert _value(samples, "streamer_frames_decoded_total", camera="clip") == 60
    assert _value(samples, "streamer_frames_sent_total", camera="clip") == 30
    assert _value(samples, "streamer_results_total", camera="clip", status="ok") == ok
    assert _value(samples, "streamer_results_total", camera="clip", status="predicted") == 30
    assert (
        _value(samples, "streamer_camera_state", camera="clip", streamer_camera_state="done") == 1
    )


def test_the_shared_budget_is_shown_per_host_and_camera(server: ServerThread) -> None:
    base = {"api_url": server.url, "model": "shapes/1", "rate_limit": 8, "max_fps": 5}
    with Fleet(base) as fleet:
        control = start_control_server(fleet, "127.0.0.1:0", None)
        try:
            camera = fleet.add("live", "synthetic:?size=160x120&fps=10")
            wait_for(lambda: camera.pipeline.status().ok >= 5, what="results")
            samples = _samples(httpx.get(f"{control.url}/metrics", timeout=10).text)
        finally:
            control.close()
    sent = _value(samples, "streamer_frames_sent_total", camera="live")
    granted = _value(samples, "streamer_budget_granted_total", camera="live")
    assert 5 <= granted <= sent  # a slot for every request sent, at most one being sent
    assert _value(samples, "streamer_budget_rate") == 8
    assert _value(samples, "streamer_budget_calls_per_minute") == granted
    assert _value(samples, "streamer_budget_tokens") in (0, 1)
    assert _value(samples, "streamer_budget_share", camera="live") > 0
    assert _value(samples, "streamer_budget_waiting", camera="live") >= 0


@pytest.mark.parametrize("per_camera", [False, True], ids=["default", "per-camera"])
def test_every_stage_error_and_event_is_counted(
    make_clip: Callable[..., Path],
    start_server: ServerFactory,
    tmp_path: Path,
    per_camera: bool,
) -> None:
    """Stage histograms (per camera, or the fleet's), render time, failed requests by
    class and analytics events by type, against a server failing 20 % of requests."""
    server = start_server(FaultConfig(error_rate=0.2, seed=3))
    clip = make_clip(2, width=320, height=240, fps=15)
    jsonl, events = tmp_path / "records.jsonl", tmp_path / "events.jsonl"
    base = {
        "api_url": server.url,
        "model": "shapes/1",
        "jsonl": str(jsonl),
        "events": str(events),
        "output": str(tmp_path / "out.mp4"),
        "max_retries": 8,
    }
    with Fleet(base) as fleet:
        control = start_control_server(fleet, "127.0.0.1:0", None, metrics_per_camera=per_camera)
        try:
            fleet.add("clip", str(clip))
            assert fleet.wait(60)
            samples = _samples(httpx.get(f"{control.url}/metrics", timeout=10).text)
        finally:
            control.close()
    lines = records(jsonl)
    assert [r["status"] for r in lines] == ["ok"] * 30  # every failure retried
    for stage in _STAGES:
        name = f"streamer_{stage}_seconds_count"
        by_camera = per_camera or stage in ("round_trip", "result_age")
        assert _value(samples, name, **({"camera": "clip"} if by_camera else {})) == 30
        assert all(("camera" in s.labels) == by_camera for s in samples[name])
    drawn = _value(samples, "streamer_render_seconds_count")  # every frame, into the video
    assert drawn == 30
    retries = _value(samples, "streamer_retries_total", camera="clip")
    assert retries > 0
    # each 500 is one failed attempt, and each was retried
    assert _value(samples, "streamer_errors_total", camera="clip", error="ServerError") == retries
    kinds: dict[str, int] = {}
    for event in records(events):
        kinds[str(event["event"])] = kinds.get(str(event["event"]), 0) + 1
    assert kinds.get("track_new", 0) > 0
    for kind, count in kinds.items():
        assert _value(samples, "streamer_events_total", camera="clip", event=kind) == count
