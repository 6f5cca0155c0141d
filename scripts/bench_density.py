"""Cost per camera against the decode floor, and live rendering at the source's rate.

Against `streamer serve --latency-ms 200` in its own process, the cameras in this
process as a `Fleet`:

- density: K live 720p 25 fps cameras at 5 inference fps each (2 in flight), as
  files played live (supervision_walking.mp4, paced at its own rate) and as
  synthetic scenes (the renderer stands in for the decoder), beside a loop that only
  decodes (renders) the same K streams at their rate in the same run: the floor.
  Per K: CPU per camera (cores), the floor's, their ratio, inference fps per camera
  (slowest, mean), result age p95 (the worst camera's), frames not sent by cause per
  camera-second, and whether K is sustained (every camera >= 0.95 of 5 fps, age p95
  <= L + 60 ms).
- live render: one file played live, 5 inference fps, the API at 400 ms (``coco/1``,
  YOLOX-nano: ~20 people tracked and drawn, when ../shared has its weights, else
  ``shapes/1``), `output` set: output frames against source frames over the whole
  clip, output timestamps against the source's, and CPU per source frame with the
  output against without.

    python scripts/bench_density.py [--quick] [--counts 1 4 8 16] [--skip files synthetic render]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import threading
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path
from typing import Any

from streamer._av import av
from streamer.fleet import Fleet
from streamer.pipeline import PipelineStatus
from streamer.run import tune_threads
from streamer.server.runner import ServerProcess
from streamer.synth import Scene

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("STREAMER_SHARED_DIR", REPO.parent / "shared"))
WALKING = SHARED / "videos" / "supervision_walking.mp4"
SYNTHETIC = "synthetic:?size=1280x720&fps=25"
LATENCY_S = 0.2
WANTED_FPS = 5.0
WARM_S = 3.0
WINDOW_S = 9.0  # the clip lasts 13.6 s: measured from 3 s in, when every camera streams


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the floor -------------------------------------------------------------------------------


def _decode_paced(stop: threading.Event) -> None:
    """Decode the clip at its own rate, again and again; the YUV pictures are dropped."""
    while not stop.is_set():
        with av.open(str(WALKING)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "SLICE"  # as streamer reads live sources
            fps = float(stream.average_rate or 25)
            start = time.monotonic()
            for index, _ in enumerate(container.decode(stream)):
                wait = start + index / fps - time.monotonic()
                if wait > 0 and stop.wait(wait):
                    return


def _render_paced(stop: threading.Event) -> None:
    """Render the synthetic scene at 25 fps into one reused buffer, as its source does."""
    scene = Scene(width=1280, height=720, fps=25)
    buffer = None
    start = time.monotonic()
    index = 0
    while not stop.is_set():
        buffer = scene.render(index, buffer)
        index += 1
        wait = start + index / scene.fps - time.monotonic()
        if wait > 0 and stop.wait(wait):
            return


def floor(kind: str, streams: int, seconds: float) -> float:
    """CPU seconds per second for ``streams`` paced decodes (renders): the floor."""
    target = _decode_paced if kind == "files" else _render_paced
    stop = threading.Event()
    threads = [threading.Thread(target=target, args=(stop,), daemon=True) for _ in range(streams)]
    for thread in threads:
        thread.start()
    time.sleep(WARM_S)
    cpu, started = _cpu(), time.monotonic()
    time.sleep(seconds)
    used = (_cpu() - cpu) / (time.monotonic() - started)
    stop.set()
    for thread in threads:
        thread.join(5)
    return used


# -- the cameras ------------------------------------------------------------------------------


def _not_sent(status: PipelineStatus) -> Counter[str]:
    causes: Counter[str] = Counter(status.skipped)
    causes["capture"] += status.dropped_capture  # overwritten before the sampler saw it
    return causes


def cameras(kind: str, count: int, api_url: str) -> dict[str, Any]:
    source = str(WALKING) if kind == "files" else SYNTHETIC
    base = {
        "api_url": api_url,
        "model": "shapes/1",
        "mode": "live",
        "max_fps": WANTED_FPS,
        "max_in_flight": 2,
    }
    with Fleet(base) as fleet:
        for i in range(count):
            fleet.add(f"cam{i}", source)
        time.sleep(WARM_S)
        before, cpu, started = fleet.status().cameras, _cpu(), time.monotonic()
        time.sleep(WINDOW_S)
        after = fleet.status().cameras
        elapsed = time.monotonic() - started
        used = (_cpu() - cpu) / elapsed
        fleet.stop()
    rates = [(after[name].ok - before[name].ok) / elapsed for name in before]
    ages = [after[name].result_age_p95_ms or 0.0 for name in before]
    not_sent: Counter[str] = Counter()
    for name in before:
        not_sent.update(_not_sent(after[name]))
        not_sent.subtract(_not_sent(before[name]))
    per_camera_second = {cause: n / (elapsed * count) for cause, n in sorted(not_sent.items()) if n}
    return {
        "cpu": used,
        "min_fps": min(rates),
        "mean_fps": statistics.mean(rates),
        "age_p95_ms": max(ages),
        "not_sent_per_camera_s": per_camera_second,
    }


def bench_density(kind: str, counts: list[int], rounds: int, api_url: str) -> list[dict[str, Any]]:
    rows = []
    for count in counts:
        runs = [cameras(kind, count, api_url) for _ in range(rounds)]
        floors = [floor(kind, count, WINDOW_S) for _ in range(rounds)]
        cpu, base = statistics.median(r["cpu"] for r in runs), statistics.median(floors)
        slowest = statistics.median(r["min_fps"] for r in runs)
        age = statistics.median(r["age_p95_ms"] for r in runs)
        causes: dict[str, float] = {}
        for run in runs:
            for cause, rate in run["not_sent_per_camera_s"].items():
                causes[cause] = causes.get(cause, 0.0) + rate / len(runs)
        rows.append(
            {
                "kind": kind,
                "cameras": count,
                "cpu_per_camera": cpu / count,
                "floor_per_camera": base / count,
                "ratio_to_floor": cpu / base if base else 0.0,
                "min_inference_fps": slowest,
                "mean_inference_fps": statistics.median(r["mean_fps"] for r in runs),
                "age_p95_ms": age,
                "not_sent_per_camera_s": causes,
                "sustained": slowest >= 0.95 * WANTED_FPS and age <= LATENCY_S * 1000 + 60,
            }
        )
    return rows


# -- live render ------------------------------------------------------------------------------


def _times(path: Path) -> list[Fraction]:
    with av.open(str(path)) as container:
        return [
            Fraction(frame.pts or 0) * Fraction(frame.time_base or 0)
            for frame in container.decode(video=0)
        ]


def live_render(api_url: str, model: str, folder: Path, *, output: bool) -> dict[str, Any]:
    """One file played live to its end, ``output`` or not: CPU per source frame over
    the whole clip (imports and the server excluded: they happened before)."""
    base: dict[str, Any] = {
        "api_url": api_url,
        "model": model,
        "mode": "live",
        "max_fps": WANTED_FPS,
    }
    video = folder / "live.mp4"
    if output:
        base["output"] = str(video)
    video.unlink(missing_ok=True)
    with Fleet(base) as fleet:
        cpu, started = _cpu(), time.monotonic()
        camera = fleet.add("cam", str(WALKING))
        fleet.wait(60)
        elapsed = time.monotonic() - started
        used = _cpu() - cpu
        status = camera.pipeline.status()
    row: dict[str, Any] = {
        "output": output,
        "source_frames": status.frames,
        "results": status.ok,
        "cpu_ms_per_source_frame": used / status.frames * 1000,
        "cores": used / elapsed,
    }
    if output:
        source, written = _times(WALKING), _times(video)
        row["output_frames"] = len(written)
        row["output_fps"] = (len(written) - 1) / float(written[-1] - written[0])
        row["source_fps"] = (len(source) - 1) / float(source[-1] - source[0])
        row["same_timestamps"] = written == [t - source[0] for t in source]
        # (getattr: the same script measures the code from before drawing every frame)
        row["drawn"] = getattr(status, "drawn", None)
        row["draw_dropped"] = getattr(status, "draw_dropped", None)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs (a smoke test)")
    parser.add_argument("--counts", nargs="*", type=int, help="camera counts (1 4 8 16)")
    parser.add_argument("--rounds", type=int, help="rounds per count (median; 3)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["files", "synthetic", "render"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not WALKING.exists():
        parser.error(f"{WALKING} is missing: set STREAMER_SHARED_DIR to the shared folder")
    tune_threads()
    counts = args.counts or ([1, 4] if args.quick else [1, 4, 8, 16])
    rounds = args.rounds or (1 if args.quick else 3)
    results: dict[str, Any] = {}
    with ServerProcess("--latency-ms", str(round(LATENCY_S * 1000))) as server:
        for kind in ("files", "synthetic"):
            if kind in args.skip:
                continue
            rows = bench_density(kind, counts, rounds, server.url)
            results[kind] = rows
            print(
                f"\n### Density, {kind}: 720p 25 fps live, {WANTED_FPS:g} inference fps each, "
                f"API {LATENCY_S * 1000:.0f} ms (median of {rounds})\n"
            )
            print("| cameras | CPU per camera | floor per camera | ratio to floor | above the floor "
                  "| slowest / mean fps | age p95 | not sent per camera-second | sustained |")  # fmt: skip
            print("|---|---|---|---|---|---|---|---|---|")
            for row in rows:
                causes = ", ".join(
                    f"{cause} {rate:.1f}" for cause, rate in row["not_sent_per_camera_s"].items()
                )
                print(
                    f"| {row['cameras']} | {row['cpu_per_camera']:.3f} | "
                    f"{row['floor_per_camera']:.3f} | {row['ratio_to_floor']:.2f} | "
                    f"{(row['cpu_per_camera'] - row['floor_per_camera']) * 1000:.1f} ms/s | "
                    f"{row['min_inference_fps']:.2f} / {row['mean_inference_fps']:.2f} | "
                    f"{row['age_p95_ms']:.0f} ms | {causes} | "
                    f"{'yes' if row['sustained'] else 'no'} |"
                )
            sustained = [row["cameras"] for row in rows if row["sustained"]]
            print(f"\nlargest K sustained ({kind}): {max(sustained) if sustained else 'none'}")
    if "render" not in args.skip:
        models = SHARED / "models"
        model = "coco/1" if (models / "yolox_nano.onnx").exists() else "shapes/1"
        serve = ["--latency-ms", "400", "--models-dir", str(models)]
        with ServerProcess(*serve) as server, tempfile.TemporaryDirectory() as tmp:
            runs = 1 if args.quick else 3
            folder = Path(tmp)
            plain = [live_render(server.url, model, folder, output=False) for _ in range(runs)]
            drawn = [live_render(server.url, model, folder, output=True) for _ in range(runs)]
        results["render"] = {"without": plain, "with": drawn}
        last = drawn[-1]
        cost = statistics.median(r["cpu_ms_per_source_frame"] for r in drawn)
        bare = statistics.median(r["cpu_ms_per_source_frame"] for r in plain)
        print(
            f"\n### Live render: one 720p 25 fps file played live, {model}, "
            f"{WANTED_FPS:g} inference fps, API 400 ms (median of {runs})\n"
        )
        print("| measure | value | target |")
        print("|---|---|---|")
        print(
            f"| output / source frames | {last['output_frames']} / {last['source_frames']} "
            "| equal |"
        )
        print(
            f"| output / source fps | {last['output_fps']:.2f} / {last['source_fps']:.2f} | equal |"
        )
        print(f"| output timestamps = source's | {last['same_timestamps']} | yes |")
        print(f"| results (inferred frames) | {last['results']} | |")
        print(
            f"| CPU per source frame, with / without output | {cost:.2f} ms / {bare:.2f} ms "
            f"= {cost / bare:.2f} | |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
