"""Many cameras in one process: the shared budget, churn.

Against `streamer serve` in its own process (API latency injected, 429s past its
rate limit), with the cameras in this process as a `Fleet`:

- budget: N live synthetic cameras (small frames) sharing one key capped at R/s
  against a server limiting at R/s: 429s after the first 10 s, budget used, Jain's
  fairness index of the cameras' inference rates, every camera at its min_fps; then
  three backlogged cameras weighted 1:2:4 and the ratio of their shares;
- churn: a fleet of 8 live cameras, then C add/remove cycles of a 9th: first result
  after add (p50/p95), the 8 others' inference rate during churn against before,
  threads, open fds and RSS after against before.

Density (cameras per machine, CPU per camera against the decode floor) is
``scripts/bench_density.py``'s.

    python scripts/bench_fleet.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import threading
import time
from pathlib import Path
from typing import Any

from streamer.fleet import Fleet
from streamer.run import tune_threads
from streamer.server.runner import ServerProcess

SMALL = "synthetic:?size=160x120&fps=10"


def jain(values: list[float]) -> float:
    total = sum(values)
    squares = sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else 0.0


def _oks(fleet: Fleet) -> dict[str, int]:
    return {name: status.ok for name, status in fleet.status().cameras.items()}


def _429s(fleet: Fleet) -> int:
    return sum(status.rate_limited for status in fleet.status().cameras.values())


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _fds() -> tuple[int, int]:
    """Open descriptors: (sockets, everything else)."""
    sockets = other = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            sockets += 1
        else:
            other += 1
    return sockets, other


# -- budget -------------------------------------------------------------------------------------


def bench_budget(cameras: int, rate: float, seconds: float, min_fps: float) -> dict[str, Any]:
    with ServerProcess("--latency-ms", "200", "--rate-limit", str(rate)) as server:
        base = {"api_url": server.url, "model": "shapes/1", "rate_limit": rate, "max_in_flight": 2}
        with Fleet(base) as fleet:
            for i in range(cameras):
                fleet.add(f"cam{i:02d}", f"{SMALL}&seed={i}", min_fps=min_fps)
            time.sleep(10)  # warm-up: the AIMD cap finds the server's limit
            ok_start, errors_start, started = _oks(fleet), _429s(fleet), time.monotonic()
            time.sleep(seconds)
            ok_end, errors_end = _oks(fleet), _429s(fleet)
            elapsed = time.monotonic() - started
    rates = [(ok_end[n] - ok_start[n]) / elapsed for n in ok_start]
    return {
        "cameras": cameras,
        "rate": rate,
        "seconds": round(elapsed, 1),
        "429s_after_10s": errors_end - errors_start,
        "used": sum(rates) / rate,
        "jain": jain(rates),
        "min_camera_fps": min(rates),
        "max_camera_fps": max(rates),
        "min_fps": min_fps,
    }


def bench_weights(rate: float, seconds: float) -> dict[str, Any]:
    weights = {"w1": 1.0, "w2": 2.0, "w4": 4.0}
    with ServerProcess("--latency-ms", "200", "--rate-limit", str(rate)) as server:
        base = {"api_url": server.url, "model": "shapes/1", "rate_limit": rate}
        with Fleet(base) as fleet:
            for name, weight in weights.items():
                # 30 fps each, far more than a share: every camera always wants more
                fleet.add(name, "synthetic:?size=160x120&fps=30", weight=weight)
            time.sleep(10)
            ok_start, started = _oks(fleet), time.monotonic()
            time.sleep(seconds)
            ok_end = _oks(fleet)
            elapsed = time.monotonic() - started
    rates = {n: (ok_end[n] - ok_start[n]) / elapsed for n in weights}
    return {
        "rates": rates,
        "ratio_2_to_1": rates["w2"] / rates["w1"],
        "ratio_4_to_1": rates["w4"] / rates["w1"],
        "used": sum(rates.values()) / rate,
    }


# -- churn --------------------------------------------------------------------------------------


def bench_churn(cycles: int, window: float) -> dict[str, Any]:
    first_ok: dict[str, float] = {}
    lock = threading.Lock()

    def on_prediction(camera: str, output: Any, detections: Any) -> None:
        if camera.startswith("churn") and output.record["status"] == "ok":
            with lock:
                first_ok.setdefault(camera, time.monotonic())

    with ServerProcess("--latency-ms", "200") as server:
        base = {"api_url": server.url, "model": "shapes/1", "max_fps": 5, "max_in_flight": 2}
        with Fleet(base, on_prediction=on_prediction) as fleet:
            steady = [f"cam{i}" for i in range(8)]
            for i, name in enumerate(steady):
                fleet.add(name, f"{SMALL}&seed={i}")
            time.sleep(5)
            # one add/remove cycle first, so that lazily made parts (the shared pool,
            # the camera's first imports) are in "before" too
            fleet.add("warm", f"{SMALL}&seed=99")
            fleet.remove("warm")
            threads, fds, rss = threading.active_count(), _fds(), _rss_mb()
            ok_a, started = _oks(fleet), time.monotonic()
            time.sleep(window)
            ok_b = _oks(fleet)
            before = sum(ok_b[n] - ok_a[n] for n in steady) / (time.monotonic() - started)
            waits, removals = [], []
            churn_started = time.monotonic()
            for cycle in range(cycles):
                name = f"churn{cycle}"
                added = time.monotonic()
                fleet.add(name, f"{SMALL}&seed={cycle}")
                deadline = added + 10
                while name not in first_ok and time.monotonic() < deadline:
                    time.sleep(0.005)
                waits.append(first_ok.get(name, deadline) - added)
                removing = time.monotonic()
                fleet.remove(name)
                removals.append(time.monotonic() - removing)
            ok_c = _oks(fleet)
            during = sum(ok_c[n] - ok_b[n] for n in steady) / (time.monotonic() - churn_started)
            time.sleep(1)
            after = threading.active_count(), _fds(), _rss_mb()
    waits.sort()
    removals.sort()
    return {
        "cycles": cycles,
        "remove_p50_s": removals[len(removals) // 2],
        "remove_p95_s": removals[min(len(removals) - 1, int(len(removals) * 0.95))],
        "first_result_p50_s": waits[len(waits) // 2],
        "first_result_p95_s": waits[min(len(waits) - 1, int(len(waits) * 0.95))],
        "others_fps_before": before,
        "others_fps_during": during,
        "others_ratio": during / before if before else 0.0,
        "threads_before": threads,
        "threads_after": after[0],
        "fds_before": fds,
        "fds_after": after[1],
        "rss_before_mb": rss,
        "rss_after_mb": after[2],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--skip", nargs="*", default=[], choices=["budget", "churn"])
    args = parser.parse_args()
    tune_threads()
    quick = args.quick
    results: dict[str, Any] = {}
    if "budget" not in args.skip:
        budget = bench_budget(32, 20.0, 30 if quick else 180, min_fps=0.5)
        weights = bench_weights(21.0, 20 if quick else 60)
        results["budget"], results["weights"] = budget, weights
        print("\n### Budget: 32 cameras, one key, 20 requests/s, API 200 ms\n")
        print("| measure | value | target |")
        print("|---|---|---|")
        print(f"| 429s after the first 10 s | {budget['429s_after_10s']} | 0 |")
        print(f"| budget used | {budget['used']:.3f} | >= 0.95 |")
        print(f"| Jain's index, inference fps | {budget['jain']:.4f} | >= 0.98 |")
        print(
            f"| slowest / fastest camera, fps | {budget['min_camera_fps']:.3f} / "
            f"{budget['max_camera_fps']:.3f} | each >= min_fps {budget['min_fps']} |"
        )
        print(f"| weights 1:2:4, share ratio 2:1 | {weights['ratio_2_to_1']:.3f} | 2 +- 5% |")
        print(f"| weights 1:2:4, share ratio 4:1 | {weights['ratio_4_to_1']:.3f} | 4 +- 5% |")
        print(f"| weights run, budget used | {weights['used']:.3f} | |")
    if "churn" not in args.skip:
        churn = bench_churn(20 if quick else 200, 5 if quick else 15)
        results["churn"] = churn
        print(f"\n### Churn: {churn['cycles']} add/remove cycles beside 8 cameras\n")
        print("| measure | value | target |")
        print("|---|---|---|")
        print(
            f"| first result after add, p50 / p95 | {churn['first_result_p50_s']:.2f} s / "
            f"{churn['first_result_p95_s']:.2f} s | p95 <= 2 s |"
        )
        print(
            f"| remove (threads joined, outputs closed), p50 / p95 | {churn['remove_p50_s']:.2f} s"
            f" / {churn['remove_p95_s']:.2f} s | <= 1 s |"
        )
        print(
            f"| other cameras' inference fps, during / before | {churn['others_fps_during']:.2f}"
            f" / {churn['others_fps_before']:.2f} = {churn['others_ratio']:.3f} | >= 0.95 |"
        )
        print(
            f"| threads before / after | {churn['threads_before']} / {churn['threads_after']} "
            "| equal |"
        )
        print(
            f"| open fds (sockets + others) before / after | {sum(churn['fds_before'])} "
            f"({churn['fds_before'][0]} + {churn['fds_before'][1]}) / {sum(churn['fds_after'])} "
            f"({churn['fds_after'][0]} + {churn['fds_after'][1]}) | equal |"
        )
        print(
            f"| RSS before / after | {churn['rss_before_mb']:.0f} MB / "
            f"{churn['rss_after_mb']:.0f} MB | +20 MB at most |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
