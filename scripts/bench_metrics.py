"""How long a Prometheus scrape of ``/metrics`` takes with many cameras running.

64 live synthetic cameras (160x120, 5 fps, 1 inference a second each) against
``streamer serve`` in its own process, the ``--web`` server in this one; 20 scrapes
over HTTP, timed from the request to the last byte. Beside it, in the same run,
``/api/stats`` (the JSON of the same figures) as the baseline; then the same with
``--metrics-per-camera`` (every stage's histogram per camera).

    python scripts/bench_metrics.py [--cameras 64] [--scrapes 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import httpx

from streamer.fleet import Fleet
from streamer.run import tune_threads
from streamer.server.runner import ServerProcess
from streamer.web import start_control_server


def timed(client: httpx.Client, path: str, scrapes: int) -> tuple[list[float], int, int]:
    times, size, lines = [], 0, 0
    for _ in range(scrapes):
        started = time.perf_counter()
        answer = client.get(path)
        times.append(time.perf_counter() - started)
        size = len(answer.content)
        lines = answer.content.count(b"\n")
        answer.raise_for_status()
    return times, size, lines


def scrape_times(
    server_url: str, cameras: int, scrapes: int, per_camera: bool
) -> dict[str, tuple[list[float], int, int]]:
    """A fleet of ``cameras`` live synthetic cameras; scrape times once all answer."""
    base = {"api_url": server_url, "model": "shapes/1", "mode": "live", "max_fps": 1}
    with Fleet(base) as fleet:
        control = start_control_server(fleet, "127.0.0.1:0", None, metrics_per_camera=per_camera)
        try:
            for i in range(cameras):
                fleet.add(f"cam{i}", "synthetic:?size=160x120&fps=5")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # until every camera has answers
                if all(s.ok >= 2 for s in fleet.status().cameras.values()):
                    break
                time.sleep(0.2)
            with httpx.Client(base_url=control.url, timeout=30) as client:
                return {
                    "/api/stats (baseline)": timed(client, "/api/stats", scrapes),
                    "/metrics" + (" --metrics-per-camera" if per_camera else ""): timed(
                        client, "/metrics", scrapes
                    ),
                }
        finally:
            control.close()
            fleet.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, default=64)
    parser.add_argument("--scrapes", type=int, default=20)
    args = parser.parse_args()
    tune_threads()
    print(f"\n### Scrape time, {args.cameras} live cameras, {args.scrapes} scrapes\n")
    print("| fleet | route | p50 ms | max ms | bytes | lines | target |")
    print("|---|---|---:|---:|---:|---:|---|")
    with ServerProcess("--latency-ms", "50") as server:
        for per_camera in (False, True):
            rows = scrape_times(server.url, args.cameras, args.scrapes, per_camera)
            for route, (times, size, lines) in rows.items():
                target = "<= 50 ms" if route.startswith("/metrics") else ""
                print(
                    f"| {'per-camera stages' if per_camera else 'default'} | {route} "
                    f"| {statistics.median(times) * 1000:.1f} | {max(times) * 1000:.1f} "
                    f"| {size} | {lines} | {target} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
