"""Throughput and latency of `streamer serve`, against the same models called in-process.

Starts `streamer serve` in a child process (so client and server do not share a GIL),
then for each model and concurrency sends requests from that many threads over one
keep-alive httpx.Client for a fixed time. The baseline, measured in the same run, is
the model called directly from the same number of threads: the ratio is what the
HTTP layer (decode, routing, JSON) costs.

    python scripts/bench_server.py [--seconds 5] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import httpx
import numpy as np

from streamer.server.decode import decode_image_bytes
from streamer.server.models import InferenceParams, Model, builtin_registry
from streamer.server.runner import ServerProcess
from streamer.synth import Scene

REPO = Path(__file__).resolve().parent.parent
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _hammer(call: Callable[[], None], threads: int, seconds: float) -> list[float]:
    """Run ``call`` from ``threads`` threads for ``seconds``; return each call's latency."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker() -> None:
        mine = []
        while time.perf_counter() < stop:
            started = time.perf_counter()
            call()
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=worker, name=f"bench-{i}") for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(seconds + 30)
    return latencies


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def _measure(
    url: str, model: Model, model_id: str, jpeg: bytes, *, threads: int, seconds: float
) -> dict[str, object]:
    body = base64.b64encode(jpeg)
    image = decode_image_bytes(jpeg)
    params = InferenceParams()
    limits = httpx.Limits(max_connections=threads, max_keepalive_connections=threads)
    with httpx.Client(base_url=url, limits=limits, timeout=30) as client:

        def post() -> None:
            client.post(f"/{model_id}", content=body, headers=FORM).raise_for_status()

        post()  # warm up: load the model, open a connection
        served = _hammer(post, threads, seconds)

    def direct_call() -> None:
        model.infer(image, params)

    direct = _hammer(direct_call, threads, seconds)
    served_rps = len(served) / seconds
    direct_rps = len(direct) / seconds
    return {
        "model": model_id,
        "concurrency": threads,
        "requests_per_s": round(served_rps, 1),
        "p50_ms": round(_percentile(served, 50), 1),
        "p95_ms": round(_percentile(served, 95), 1),
        "p99_ms": round(_percentile(served, 99), 1),
        "in_process_per_s": round(direct_rps, 1),
        "in_process_p50_ms": round(_percentile(direct, 50), 1),
        "ratio": round(served_rps / direct_rps, 2) if direct_rps else None,
    }


COLUMNS = (
    ("model", "model"),
    ("concurrency", "concurrency"),
    ("requests_per_s", "req/s"),
    ("p50_ms", "p50 ms"),
    ("p95_ms", "p95 ms"),
    ("p99_ms", "p99 ms"),
    ("in_process_per_s", "in-process /s"),
    ("in_process_p50_ms", "in-process p50 ms"),
    ("ratio", "ratio"),
)


def _print_table(rows: list[dict[str, object]], seconds: float) -> None:
    print(
        f"\nstreamer serve on this machine ({os.cpu_count()} cores), {seconds:g} s per row; "
        "ratio = served / in-process requests per second\n"
    )
    print("| " + " | ".join(title for _, title in COLUMNS) + " |")
    print("| --- " + "| ---: " * (len(COLUMNS) - 1) + "|")
    for row in rows:
        print("| " + " | ".join(str(row[key]) for key, _ in COLUMNS) + " |")
    ratios = [float(str(r["ratio"])) for r in rows if r["ratio"] is not None]
    if ratios:
        print(f"\nmedian ratio served/in-process: {statistics.median(ratios):.2f}")


def main() -> int:
    shared = REPO.parent / "shared"
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--quick", action="store_true", help="1.5 s per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--models-dir", type=Path, default=shared / "models")
    parser.add_argument("--image", type=Path, default=shared / "images" / "rfinf_crowd.jpg")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    seconds = 1.5 if args.quick else args.seconds

    frame = Scene(width=640, height=360, objects=5, seed=0).render(0)
    shapes_jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()
    cases: list[tuple[str, bytes]] = [("shapes/1", shapes_jpeg)]
    if (args.models_dir / "yolox_nano.onnx").is_file() and args.image.is_file():
        cases.insert(0, ("coco/1", args.image.read_bytes()))
    else:
        print(
            f"coco/1 skipped: no weights in {args.models_dir} or no {args.image}", file=sys.stderr
        )

    registry = builtin_registry(args.models_dir)
    with ServerProcess("--models-dir", str(args.models_dir)) as server:
        rows = [
            _measure(
                server.url, registry.get(model_id), model_id, jpeg, threads=threads, seconds=seconds
            )
            for model_id, jpeg in cases
            for threads in args.concurrency
        ]
    _print_table(rows, seconds)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
