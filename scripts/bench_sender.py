"""Achieved requests/s of SenderPool against the ideal N/L, beside Roboflow's SDK.

For each injected latency L, `streamer serve --latency-ms L` runs in a child process
(shapes/1). In the same run, against the same server:
- streamer: a SenderPool with N in flight, fed whenever a slot is free (rate cap off:
  the ideal is N/L);
- SDK loop: `InferenceHTTPClient.infer` once per frame in a loop, as Roboflow's docs show;
- SDK concurrent: the SDK with `max_concurrent_requests=N`, N frames per call.
The SDK runs from .venv-sdk (scripts/sdk-venv.sh); without it those columns are empty.

    python scripts/bench_sender.py [--seconds 5] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from streamer.client import RoboflowClient, Target
from streamer.frames import Frame
from streamer.sender import SenderConfig, SenderPool
from streamer.server.runner import ServerProcess
from streamer.synth import Scene

REPO = Path(__file__).resolve().parent.parent
SDK_PYTHON = REPO / ".venv-sdk" / "bin" / "python"
MODEL = "shapes/1"


def _streamer_rate(url: str, in_flight: int, seconds: float) -> float:
    image = Scene(width=640, height=360, objects=3, seed=0).render(0)
    client = RoboflowClient(Target.model(MODEL, api_url=url), max_connections=in_flight)
    config = SenderConfig(max_in_flight=in_flight, rate_limit=None)
    free = threading.Semaphore(0)  # released per answer: the feeder wakes only when a slot frees
    with client, SenderPool(client, config, on_result=lambda _: free.release()) as pool:
        for i in range(in_flight):  # warm up: open the connections
            pool.submit(Frame(image=image, index=i), deadline=None)
        while pool.in_flight:
            time.sleep(0.005)
        # Every frame submitted in the window is waited for, and the rate is frames over
        # the time to the last answer: counting answers inside a fixed window would
        # miss up to N frames still in flight at its end.
        before = pool.metrics().ok
        started = time.monotonic()
        index = in_flight
        while time.monotonic() - started < seconds:
            if pool.free_slots:
                pool.submit(Frame(image=image, index=index))
                index += 1
            else:
                free.acquire(timeout=0.05)
        while pool.in_flight:
            time.sleep(0.001)
        return (pool.metrics().ok - before) / (time.monotonic() - started)


def _sdk_rate(url: str, concurrency: int, seconds: float) -> float | None:
    if not SDK_PYTHON.exists():
        return None
    worker = Path(__file__).with_name("sdk_bench_worker.py")
    done = subprocess.run(
        [str(SDK_PYTHON), str(worker), url, MODEL, str(seconds), str(concurrency)],
        capture_output=True,
        text=True,
        timeout=seconds + 120,
        check=False,
    )
    if done.returncode != 0:
        print(f"SDK worker failed: {done.stderr[-500:]}", file=sys.stderr)
        return None
    result = json.loads(done.stdout)
    return float(result["frames"]) / float(result["seconds"])


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument(
        "--quick", action="store_true", help="L in {50, 200}, N in {1, 8}, 2 s each"
    )
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    latencies = [50, 200] if args.quick else [50, 200, 400]
    in_flights = [1, 8] if args.quick else [1, 4, 8, 16]
    seconds = 2.0 if args.quick else args.seconds
    rows = []
    for latency_ms in latencies:
        with ServerProcess("--latency-ms", str(latency_ms)) as server:
            url = server.url
            sdk_loop = _sdk_rate(url, 0, seconds)
            for n in in_flights:
                ideal = n / (latency_ms / 1000)
                ours = _streamer_rate(url, n, seconds)
                sdk_concurrent = _sdk_rate(url, n, seconds)
                rows.append(
                    {
                        "latency_ms": latency_ms,
                        "in_flight": n,
                        "ideal_per_s": ideal,
                        "streamer_per_s": ours,
                        "streamer_vs_ideal": ours / ideal,
                        "sdk_loop_per_s": sdk_loop,
                        "streamer_vs_sdk_loop": ours / sdk_loop if sdk_loop else None,
                        "sdk_concurrent_per_s": sdk_concurrent,
                    }
                )
    print(f"\nshapes/1 on `streamer serve --latency-ms L`, {seconds:g} s per cell, requests/s\n")
    print(
        "| L ms | N | ideal N/L | streamer | streamer/ideal | SDK loop | streamer/SDK loop "
        "| SDK max_concurrent_requests=N |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['latency_ms']} | {r['in_flight']} | {r['ideal_per_s']:.1f} "
            f"| {r['streamer_per_s']:.1f} "
            f"| {r['streamer_vs_ideal']:.2f} | {_fmt(r['sdk_loop_per_s'])} "
            f"| {_fmt(r['streamer_vs_sdk_loop'], 2)} | {_fmt(r['sdk_concurrent_per_s'])} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
