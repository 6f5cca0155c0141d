"""What counting costs per frame: 10 lines, 10 zones, 30 tracks moving across them.

Beside it, in the same run, the tracker's own update on the same detections (the
baseline every camera pays already) and the analytics without lines or zones (track
lifecycle only).

    python scripts/bench_analytics.py [--frames 3000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import supervision as sv

from streamer.analytics import Analytics, LineSpec, ZoneSpec
from streamer.frames import Frame
from streamer.tracking import Tracking

WIDTH, HEIGHT, FPS, TRACKS = 1280, 720, 25.0, 30


def scene(frames: int) -> list[sv.Detections]:
    """30 boxes walking straight at their own speed, wrapping round the frame."""
    rng = np.random.default_rng(1)
    start = rng.uniform([0, 0], [WIDTH, HEIGHT], size=(TRACKS, 2))
    speed = rng.uniform(-120, 120, size=(TRACKS, 2)) / FPS
    out = []
    for index in range(frames):
        centre = (start + speed * index) % [WIDTH, HEIGHT]
        half = np.array([20.0, 50.0])  # a 40x100 px person
        boxes = np.hstack([centre - half, centre + half]).astype(np.float32)
        out.append(
            sv.Detections(
                xyxy=boxes,
                confidence=np.full(TRACKS, 0.9, dtype=np.float32),
                class_id=np.zeros(TRACKS, dtype=int),
                data={"class_name": np.array(["person"] * TRACKS, dtype=object)},
            )
        )
    return out


def specs() -> tuple[list[LineSpec], list[ZoneSpec]]:
    lines = [
        LineSpec(name=f"line{i}", start=(0.05 + 0.09 * i, 0.1), end=(0.05 + 0.09 * i, 0.9))
        for i in range(10)
    ]
    zones = [
        ZoneSpec(
            name=f"zone{i}",
            points=((0.1 * i, 0.2), (0.1 * i + 0.09, 0.2), (0.1 * i + 0.09, 0.8), (0.1 * i, 0.8)),
            loiter_seconds=3.0,
        )
        for i in range(10)
    ]
    return lines, zones


def per_frame_ms(
    tracked: list[sv.Detections], lines: list[LineSpec], zones: list[ZoneSpec]
) -> float:
    analytics = Analytics(
        lines, zones, size=(WIDTH, HEIGHT), camera="bench", run_id="bench", lifecycle=True
    )
    image = np.zeros((2, 2, 3), dtype=np.uint8)
    started = time.process_time()
    for index, detections in enumerate(tracked):
        frame = Frame(image=image, index=index, pts=index / FPS)
        analytics.update(detections, frame, index / FPS)
    return (time.process_time() - started) / len(tracked) * 1000


def tracker_ms(raw: list[sv.Detections]) -> tuple[float, list[sv.Detections]]:
    tracking = Tracking(FPS)
    started = time.process_time()
    tracked = [tracking.update(d, i / FPS) for i, d in enumerate(raw)]
    return (time.process_time() - started) / len(raw) * 1000, tracked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    raw = scene(args.frames)
    lines, zones = specs()
    rows: dict[str, list[float]] = {"tracker": [], "lifecycle": [], "counting": []}
    for _ in range(args.rounds):
        cost, tracked = tracker_ms(raw)
        rows["tracker"].append(cost)
        rows["lifecycle"].append(per_frame_ms(tracked, [], []))
        rows["counting"].append(per_frame_ms(tracked, lines, zones))
    ids = {int(t) for d in tracked for t in (d.tracker_id if d.tracker_id is not None else [])}
    print(
        f"\n### Analytics cost per frame: {TRACKS} tracks ({len(ids)} ids over the run), "
        f"{args.frames} frames, median of {args.rounds} rounds\n"
    )
    print("| stage | CPU ms per frame | ratio to the tracker | target |")
    print("|---|---:|---:|---|")
    tracker = statistics.median(rows["tracker"])
    labels = {
        "tracker": "ByteTrack update (baseline, paid already)",
        "lifecycle": "analytics, no lines or zones (track events)",
        "counting": "analytics, 10 lines + 10 zones",
    }
    for key, label in labels.items():
        value = statistics.median(rows[key])
        target = "<= 0.5 ms" if key == "counting" else ""
        print(f"| {label} | {value:.3f} | {value / tracker:.2f} | {target} |")


if __name__ == "__main__":
    main()
