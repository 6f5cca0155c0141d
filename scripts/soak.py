"""Soak: a long live run, sampling the client's RSS, threads, open files and result age.

A synthetic 1280x720 30 fps source, `streamer serve --latency-ms 200` in a child
process, N=8 in flight, JSON lines written (so a sink runs too). Every --every
seconds it samples the process; at the end it prints the growth and writes a CSV
and, with --plot, a PNG. Not a CI test: 30 minutes by default.

    python scripts/soak.py [--minutes 30] [--every 10] [--csv soak.csv] [--plot docs/soak.png]
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from streamer.client import RoboflowClient, Target
from streamer.pipeline import Pipeline, PipelineSettings
from streamer.run import tune_threads
from streamer.sender import SenderConfig
from streamer.server.runner import ServerProcess
from streamer.sinks import JsonLinesSink
from streamer.sources import open_source


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--latency-ms", type=int, default=200)
    parser.add_argument("--in-flight", type=int, default=8)
    parser.add_argument("--csv", type=Path, default=Path("soak.csv"))
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    tune_threads()
    server = ServerProcess("--latency-ms", str(args.latency_ms))
    url = server.url
    ages: list[float] = []
    lock = threading.Lock()

    def on_prediction(output: Any, detections: Any) -> None:
        with lock:
            ages.append((time.monotonic() - output.frame.captured_at) * 1000)

    rows: list[dict[str, float]] = []
    settings = PipelineSettings(
        live=True, sender=SenderConfig(max_in_flight=args.in_flight, rate_limit=None, deadline=2.0)
    )
    started = time.monotonic()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="streamer-soak-") as tmp,
            RoboflowClient(
                Target.model("shapes/1", api_url=url), max_connections=args.in_flight
            ) as client,
        ):
            source = open_source("synthetic:?size=1280x720&fps=30")
            sinks = [JsonLinesSink(Path(tmp) / "soak.jsonl")]
            with Pipeline(
                source, client, settings, sinks=sinks, on_prediction=on_prediction
            ) as pipeline:
                while time.monotonic() - started < args.minutes * 60:
                    time.sleep(args.every)
                    with lock:
                        window, ages[:] = list(ages), []
                    status = pipeline.status()
                    usage = resource.getrusage(resource.RUSAGE_SELF)
                    row = {
                        "t_s": round(time.monotonic() - started, 1),
                        "rss_mb": round(_rss_mb(), 1),
                        "threads": threading.active_count(),
                        "fds": _fds(),
                        "results_per_s": round(len(window) / args.every, 2),
                        "age_p50_ms": round(statistics.median(window), 1)
                        if window
                        else float("nan"),
                        "age_p95_ms": round(sorted(window)[int(0.95 * len(window))], 1)
                        if window
                        else float("nan"),
                        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
                        "failed": status.failed,
                        "stale": status.stale,
                    }
                    rows.append(row)
                    print(", ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    finally:
        server.close()
    with args.csv.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    _summary(rows)
    if args.plot:
        _plot(rows, args.plot)
    return 0


def _summary(rows: list[dict[str, float]]) -> None:
    # growth: the last minute against the first minute after warm-up
    per_minute = max(1, int(60 / (rows[1]["t_s"] - rows[0]["t_s"]))) if len(rows) > 1 else 1
    early = rows[per_minute : 2 * per_minute] or rows[:1]
    late = rows[-per_minute:]

    def mean(key: str, part: list[dict[str, float]]) -> float:
        return statistics.fmean(r[key] for r in part)

    print("\n| measure | first minute (after warm-up) | last minute | growth |")
    print("| --- | ---: | ---: | ---: |")
    for key in ("rss_mb", "threads", "fds", "results_per_s", "age_p50_ms", "age_p95_ms"):
        a, b = mean(key, early), mean(key, late)
        growth = f"{(b - a) / a * 100:+.1f}%" if a else "-"
        print(f"| {key} | {a:.1f} | {b:.1f} | {growth} |")


def _plot(rows: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [r["t_s"] / 60 for r in rows]
    fig, axes = plt.subplots(4, 1, figsize=(8, 9), sharex=True)
    for axis, key, label in (
        (axes[0], "rss_mb", "RSS (MB)"),
        (axes[1], "threads", "threads / open files"),
        (axes[2], "age_p95_ms", "result age (ms)"),
        (axes[3], "results_per_s", "results per second"),
    ):
        axis.plot(minutes, [r[key] for r in rows], label=key)
        axis.set_ylabel(label)
    axes[1].plot(minutes, [r["fds"] for r in rows], label="fds")
    axes[1].legend()
    axes[2].plot(minutes, [r["age_p50_ms"] for r in rows], label="age_p50_ms")
    axes[2].legend()
    axes[3].set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


if __name__ == "__main__":
    sys.exit(main())
