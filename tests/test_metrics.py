"""``/metrics`` of the --web server, parsed with prometheus_client's own parser: the
histograms and counters agree with the run's records, on a real run against the local
server."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from streamer.fleet import Fleet
from streamer.server import ServerThread
from streamer.web import start_control_server
from tests.helpers import records


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
    base = {"api_url": server.url, "model": "shapes/1", "jsonl": str(jsonl), "every": 2}
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
    for stage in ("queue_wait", "prepare", "round_trip", "server", "result_age"):
        name = f"streamer_{stage}_seconds"
        assert _value(samples, f"{name}_count", camera="clip") == ok
        buckets = [s for s in samples[f"{name}_bucket"] if s.labels["camera"] == "clip"]
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
