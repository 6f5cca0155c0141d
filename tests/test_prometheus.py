"""A real Prometheus (Debian's ``prometheus``, which ``.ci/run`` installs; skipped with a
reason without it) scrapes ``/metrics`` of a running fleet on 127.0.0.1 every 0.5 s:
the target is up, and what Prometheus stored agrees with the cameras' own counters."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamer.fleet import Fleet
from streamer.web import ControlServer
from tests.helpers import free_port, wait_for

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus is not installed (Debian package prometheus)"
)


@pytest.fixture
def prometheus(web: tuple[Fleet, ControlServer], tmp_path: Path) -> Iterator[tuple[str, Fleet]]:
    """Prometheus on a free loopback port, scraping the fleet's --web server."""
    fleet, control = web
    target = control.url.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 500ms, scrape_timeout: 400ms}\n"
        "scrape_configs:\n"
        "  - job_name: streamer\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n"
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url, process), timeout=60, what="Prometheus to be ready")
        yield url, fleet
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log.close()


def _ready(url: str, process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"prometheus exited with {process.returncode}")
    try:
        return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _query(url: str, promql: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5).json()
    assert answer["status"] == "success", answer
    return list(answer["data"]["result"])


def _target_up(url: str) -> bool:
    targets = httpx.get(f"{url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
    if targets and targets[0]["lastError"]:
        raise AssertionError(f"scrape failed: {targets[0]['lastError']}")
    return bool(targets) and targets[0]["health"] == "up"


def test_prometheus_scrapes_the_fleet(prometheus: tuple[str, Fleet]) -> None:
    url, fleet = prometheus
    camera = fleet.add("door", "synthetic:?size=160x120&fps=10")
    wait_for(lambda: camera.pipeline.status().ok >= 3, what="results")
    wait_for(lambda: _target_up(url), timeout=30, what="the scrape target to be up")
    # a scrape after the third result: Prometheus holds at least those answers
    wait_for(
        lambda: _query(url, 'streamer_results_total{camera="door",status="ok"} >= 3'),
        timeout=30,
        what="three ok results in Prometheus",
    )
    stored = _query(url, 'streamer_result_age_seconds_count{camera="door"}')
    assert len(stored) == 1
    assert float(stored[0]["value"][1]) >= 3
    assert float(stored[0]["value"][1]) <= camera.pipeline.status().ok
    # a quantile from the stored buckets (a Grafana panel would take their rate)
    p95 = _query(url, 'histogram_quantile(0.95, streamer_result_age_seconds_bucket{camera="door"})')
    assert p95
    assert 0 < float(p95[0]["value"][1]) < 10
    state = _query(url, 'streamer_camera_state{camera="door",streamer_camera_state="streaming"}')
    assert float(state[0]["value"][1]) == 1
    assert _query(url, "streamer_budget_rate")
