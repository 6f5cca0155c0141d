"""Analytics against ground truth: line crossings and zone stays counted by streamer on
a synthetic clip equal what the scene's truth file says, computed here from the
objects' true boxes with plain geometry (not with streamer's or supervision's code).

The scene (640x360, 3 shapes, seed 5, 8 s) has 5 crossings of the middle line, in
both directions, and 3 complete stays in the top-left zone."""

from __future__ import annotations

import collections
import http.server
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import supervision as sv

from streamer.analytics import Analytics, LineSpec, ZoneSpec
from streamer.frames import Frame
from streamer.server import FaultConfig, ServerThread
from streamer.synth import Scene, write_video
from tests.helpers import ServerFactory, records, run_cli

FPS, SECONDS = 30, 8
CONFIG = """
lines:
  - {name: middle, points: [[0.5, 0.0], [0.5, 1.0]]}
zones:
  - {name: corner, points: [[0.0, 0.0], [0.5, 0.0], [0.5, 0.5], [0.0, 0.5]], loiter_seconds: 1.0}
"""


@pytest.fixture(scope="module")
def scene_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    folder = tmp_path_factory.mktemp("analytics")
    clip, truth = folder / "crossing.mp4", folder / "truth.json"
    scene = Scene(width=640, height=360, fps=FPS, objects=3, seed=5)
    write_video(clip, scene, seconds=SECONDS, truth_path=truth)
    return clip, json.loads(truth.read_text())


def _truth(
    doc: dict[str, Any],
) -> tuple[collections.Counter[tuple[str, str]], list[float], list[float]]:
    """Crossings of the vertical middle line by each object's bottom centre, by
    direction and class (left to right is "in": the line is drawn downwards), the
    dwell of each complete stay of that point in the top-left quarter, and how long
    the stays still open at the end had lasted."""
    width, height = doc["width"], doc["height"]
    side: dict[int, int] = {}
    inside: dict[int, int | None] = {}
    crossings: collections.Counter[tuple[str, str]] = collections.Counter()
    dwell = []
    for index, objects in enumerate(doc["frames"]):
        for obj in objects:
            x1, _, x2, y2 = obj["box"]
            x, y, key = (x1 + x2) / 2, y2, obj["object_id"]
            now = 1 if x < width / 2 else -1 if x > width / 2 else 0
            if now and side.get(key, now) != now:
                crossings["in" if now < 0 else "out", obj["class_name"]] += 1
            if now:
                side[key] = now
            entered = inside.get(key)
            if 0 <= x <= width / 2 and 0 <= y <= height / 2:
                inside[key] = index if entered is None else entered
            else:
                if entered is not None:
                    dwell.append((index - entered) / doc["fps"])
                inside[key] = None
    frames = len(doc["frames"])
    still = [(frames - entered) / doc["fps"] for entered in inside.values() if entered is not None]
    return crossings, sorted(dwell), still


def _counted(record: dict[str, Any]) -> collections.Counter[tuple[str, str]]:
    line = record["lines"]["middle"]
    return collections.Counter(
        {
            (direction, name): n
            for direction in ("in", "out")
            for name, n in line[f"{direction}_by_class"].items()
        }
    )


def _run(
    clip: Path, tmp_path: Path, *args: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    config = tmp_path / "analytics.yaml"
    config.write_text(CONFIG)
    jsonl, events = tmp_path / "records.jsonl", tmp_path / "events.jsonl"
    done = run_cli(
        "run", str(clip), "--model", "shapes/1", "--config", str(config),
        "--jsonl", str(jsonl), "--events", str(events), *args,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return records(jsonl), records(events)


def test_recorded_counts_and_dwell_equal_the_truth(
    scene_clip: tuple[Path, dict[str, Any]], server: ServerThread, tmp_path: Path
) -> None:
    clip, doc = scene_clip
    crossings, dwell, still = _truth(doc)
    assert sum(crossings.values()) == 5  # the scene as described
    assert len(dwell) == 3
    snapshots = tmp_path / "snapshots"
    lines, events = _run(clip, tmp_path, "--api-url", server.url, "--snapshots", str(snapshots))
    assert len(lines) == FPS * SECONDS
    assert _counted(lines[-1]) == crossings
    crossed = [e for e in events if e["event"] == "line_cross"]
    assert collections.Counter((e["direction"], e["class"]) for e in crossed) == crossings
    assert [e["count"] for e in crossed if e["direction"] == "out"] == list(
        range(1, 1 + sum(n for (d, _), n in crossings.items() if d == "out"))
    )
    # stays: the same number, each as long as the truth's to a frame or two (inertia 2
    # confirms entry and exit one frame late alike)
    stays = sorted(e["dwell_s"] for e in events if e["event"] == "zone_exit" and "reason" not in e)
    assert stays == pytest.approx(dwell, abs=2 / FPS)
    assert lines[-1]["zones"]["corner"]["entries"] >= len(dwell)
    loitered = [e for e in events if e["event"] == "loitering"]
    assert not any(abs(d - 1.0) < 0.1 for d in dwell + still)  # none a borderline case
    assert len(loitered) == sum(1 for d in dwell + still if d > 1.0)
    # every event is whole and unique; every track that began ended
    assert len({e["event_id"] for e in events}) == len(events)
    assert all({"camera", "run_id", "frame_index", "pts", "wall_time"} <= set(e) for e in events)
    started = {e["track_id"] for e in events if e["event"] == "track_new"}
    ended = [e["track_id"] for e in events if e["event"] == "track_end"]
    assert started
    assert sorted(ended) == sorted(started)
    # each ended track's best frame, a real JPEG of the frame's size, in the folder
    shots = [Path(e["snapshot"]) for e in events if e["event"] == "track_end"]
    assert len(shots) == len(ended)
    assert {p.parent for p in shots} == {snapshots}
    image = cv2.imread(str(shots[0]))
    assert image is not None
    assert image.shape == (360, 640, 3)


def test_the_webhook_gets_the_events_when_asked(
    scene_clip: tuple[Path, dict[str, Any]],
    server: ServerThread,
    serve_http: Callable[..., str],
    tmp_path: Path,
) -> None:
    received: list[dict[str, Any]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.extend(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    clip, _ = scene_clip
    hook = serve_http(Hook) + "/hook"
    _, events = _run(
        clip, tmp_path, "--api-url", server.url, "--webhook", hook, "--webhook-payload", "events"
    )
    assert [e["event_id"] for e in received] == [e["event_id"] for e in events]


def test_every_third_frame_inferred_loses_and_doubles_no_crossing(
    scene_clip: tuple[Path, dict[str, Any]], server: ServerThread, tmp_path: Path
) -> None:
    clip, doc = scene_clip
    crossings, _, _ = _truth(doc)
    lines, events = _run(clip, tmp_path, "--api-url", server.url, "--every", "3")
    assert len(lines) == FPS * SECONDS
    assert sum(1 for r in lines if r["status"] == "predicted") == FPS * SECONDS * 2 // 3
    assert _counted(lines[-1]) == crossings
    assert sum(1 for e in events if e["event"] == "line_cross") == sum(crossings.values())


def test_live_at_200_ms_counts_within_one_of_the_truth(
    scene_clip: tuple[Path, dict[str, Any]], start_server: ServerFactory, tmp_path: Path
) -> None:
    clip, doc = scene_clip
    crossings, _, _ = _truth(doc)
    server = start_server(FaultConfig(latency_ms=200))
    lines, _ = _run(
        clip, tmp_path, "--api-url", server.url, "--mode", "live", "--max-in-flight", "4"
    )
    counted = _counted(lines[-1])
    for direction in ("in", "out"):
        truth = sum(n for (d, _), n in crossings.items() if d == direction)
        got = sum(n for (d, _), n in counted.items() if d == direction)
        assert abs(got - truth) <= 1, (direction, got, truth)


@pytest.mark.parametrize(
    ("config", "error"),
    [
        ("zones: [{name: a, points: [[0.1, 0.1], [0.2, 0.2]]}]", "zone 'a': a zone needs 3"),
        ("lines: [{name: d, points: [[0.5, 0.1], [0.5, 0.1]]}]", "line 'd': its two points"),
        ("lines: [{name: d, points: [[0.5, 0.1], [1.5, 0.1]]}]", "line 'd': coordinates must"),
        ("lines: [{name: d, points: [[0.5, 0.1], [0.6, 0.1]], inertia: 0}]", "inertia must be"),
        ("zones: [{name: a, points: [[0, 0], [9, 0], [9, 9]], anchor: x}]", "anchor must be"),
        ("lines: [{points: [[0.5, 0.1], [0.6, 0.1]]}]", "line 1 needs a name"),
    ],
)
def test_bad_lines_and_zones_are_refused_in_one_line(
    config: str, error: str, tmp_path: Path
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(config)
    done = run_cli("run", "synthetic:?seconds=1", "--config", str(path))
    assert done.returncode == 2
    assert error in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


def _detections(boxes: list[tuple[float, float, float, float]], ids: list[int]) -> sv.Detections:
    return sv.Detections(
        xyxy=np.array(boxes, dtype=np.float32).reshape(-1, 4),
        confidence=np.full(len(boxes), 0.9, dtype=np.float32),
        class_id=np.zeros(len(boxes), dtype=int),
        tracker_id=np.array(ids, dtype=int),
        data={"class_name": np.array(["person"] * len(boxes), dtype=object)},
    )


def test_jitter_across_a_line_is_not_counted_and_a_long_stay_loiters() -> None:
    analytics = Analytics(
        [LineSpec(name="door", start=(0.5, 0.0), end=(0.5, 1.0))],
        [ZoneSpec(name="all", points=((0, 0), (1, 0), (1, 1), (0, 1)), loiter_seconds=2.0)],
        size=(100, 100),
        camera="cam",
        run_id="run",
    )
    events = []
    # one frame over the line and back, again and again: inertia 2 counts nothing
    for index, x in enumerate([40, 40, 60, 40, 60, 40, 40, 60, 60, 60]):
        frame = Frame(image=np.zeros((4, 4, 3), np.uint8), index=index, pts=index * 0.5)
        events += analytics.update(_detections([(x - 5, 40, x + 5, 50)], [7]), frame, index * 0.5)
    kinds = [e["event"] for e in events]
    assert kinds.count("line_cross") == 1  # only the last run of 3 frames on the right
    assert analytics.counts()["lines"]["door"]["in"] == 1
    assert kinds.count("loitering") == 1  # once per stay, after 2 s
    assert kinds.count("zone_enter") == 1
    end = analytics.finish(frame, 5.0)
    assert [e["event"] for e in end] == ["zone_exit", "track_end"]
    assert end[0]["dwell_s"] == pytest.approx(4.0)


def test_a_class_filter_naming_a_class_never_seen_is_reported(
    scene_clip: tuple[Path, dict[str, Any]], server: ServerThread, tmp_path: Path
) -> None:
    clip, _ = scene_clip
    config = tmp_path / "typo.yaml"
    config.write_text("lines: [{name: door, points: [[0.5, 0.0], [0.5, 1.0]], classes: [circel]}]")
    done = run_cli(
        "run", str(clip), "--model", "shapes/1", "--api-url", server.url, "--config", str(config)
    )
    assert done.returncode == 0, done.stderr  # a warning, not an error: it may come later
    assert "line door: class 'circel' was never detected" in done.stderr
