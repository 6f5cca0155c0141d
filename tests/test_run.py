"""`streamer run` end to end: real video in, a real server, real files out."""

from __future__ import annotations

import collections
import http.server
import json
import os
import signal
import subprocess
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest

from streamer.config import load_config, load_fleet
from streamer.errors import ConfigError
from streamer.server import FaultConfig, ServerConfig, ServerThread
from streamer.synth import Scene, write_video
from tests.helpers import (
    REPO,
    STREAMER,
    ServerFactory,
    count_lines,
    decode,
    iou,
    records,
    run_cli,
    wait_for,
)

KEY = "rf_RUNCANARY_5e4d3c2b1a0f"


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_cli("run", *args, timeout=timeout)


_records = records
_decode = decode


@pytest.fixture(scope="module")
def scene() -> Scene:
    return Scene(width=640, height=360, fps=30, objects=4, seed=2)


@pytest.fixture(scope="module")
def clip(make_clip: Callable[..., Path]) -> Path:
    return make_clip(4)  # the scene above, 4 s


def test_recorded_run_every_third_frame_keeps_one_id_per_object(
    clip: Path, scene: Scene, tmp_path: Path
) -> None:
    out, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    done = _run(
        str(clip),
        "--model",
        "shapes/1",
        "--every",
        "3",
        "--output",
        str(out),
        "--jsonl",
        str(jsonl),
    )
    assert done.returncode == 0, done.stderr
    frames = _decode(out)
    assert len(frames) == 120  # exactly the input's frames
    for i, frame in enumerate(frames):
        assert frame.time == pytest.approx(i / 30, abs=1e-3)  # the source's timing
    records = _records(jsonl)
    assert [r["frame_index"] for r in records] == list(range(120))
    statuses = collections.Counter(r["status"] for r in records)
    assert statuses == {"ok": 40, "predicted": 80}
    for record in records:
        assert set(record) >= {
            "source",
            "frame_index",
            "pts",
            "wall_time",
            "status",
            "latency_ms",
            "detections",
        }
    # every object keeps one track id for the whole clip, predicted frames included
    ids: dict[int, set[int]] = collections.defaultdict(set)
    for record in records:
        truth = scene.truth(record["frame_index"])
        assert len(record["detections"]) >= sum(1 for t in truth if not t.occluded) - 1
        for t in truth:
            if t.occluded:
                continue
            boxes = [
                (d, iou(t.box, (d["x1"], d["y1"], d["x2"], d["y2"]))) for d in record["detections"]
            ]
            match, overlap = max(boxes, key=lambda pair: pair[1])
            assert overlap > 0.5, (record["frame_index"], t)
            assert match["class"] == t.class_name
            if match["tracker_id"] >= 0:
                ids[t.object_id].add(match["tracker_id"])
    assert len(ids) == 4
    assert all(len(tracker_ids) == 1 for tracker_ids in ids.values()), ids


def test_failed_frames_are_recorded_and_the_run_completes(
    clip: Path, start_server: ServerFactory, tmp_path: Path
) -> None:
    server = start_server(FaultConfig(error_rate=0.2, seed=1))
    out, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    done = _run(
        str(clip), "--api-url", server.url, "--model", "shapes/1", "--max-retries", "0",
        "--output", str(out), "--jsonl", str(jsonl),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = _records(jsonl)
    assert [r["frame_index"] for r in records] == list(range(120))
    failed = [r for r in records if r["status"].startswith("failed: ")]
    # the preflight request takes the first number of the fault schedule
    assert 18 <= len(failed) <= 30
    assert all("500" in r["status"] for r in failed)
    assert all(r["detections"] or r["frame_index"] < 3 for r in failed)  # tracker fills them
    assert len(_decode(out)) == 120


def test_sigint_mid_run_leaves_a_playable_video(scene: Scene, tmp_path: Path) -> None:
    long_clip = tmp_path / "long.mp4"
    write_video(long_clip, scene, seconds=10)
    with ServerThread(ServerConfig(port=0, faults=FaultConfig(latency_ms=150))) as server:
        out, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
        process = subprocess.Popen(
            [*STREAMER, "run", str(long_clip), "--api-url", server.url, "--model", "shapes/1",
             "--max-in-flight", "2", "--output", str(out), "--jsonl", str(jsonl), "--no-progress"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        wait_for(lambda: count_lines(jsonl) >= 10, what="the run under way")
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=15)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    frames = _decode(out)
    records = _records(jsonl)  # every line parses
    assert 5 < len(frames) < 300
    assert len(records) == len(frames)


def test_sigterm_exits_143(clip: Path, tmp_path: Path) -> None:
    with ServerThread(ServerConfig(port=0, faults=FaultConfig(latency_ms=300))) as server:
        process = subprocess.Popen(
            [*STREAMER, "run", str(clip), "--api-url", server.url, "--model", "shapes/1",
             "--max-in-flight", "1", "--jsonl", str(tmp_path / "x.jsonl"), "--no-progress"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        wait_for(lambda: count_lines(tmp_path / "x.jsonl") >= 2, what="the run under way")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=15)
    assert process.returncode == 143, stderr
    assert _records(tmp_path / "x.jsonl")


def test_live_mode_shows_only_fresh_results(clip: Path, tmp_path: Path) -> None:
    jsonl = tmp_path / "live.jsonl"
    with ServerThread(ServerConfig(port=0, faults=FaultConfig(latency_ms=100))) as server:
        done = _run(
            str(clip), "--mode", "live", "--api-url", server.url, "--model", "shapes/1",
            "--max-in-flight", "4", "--jsonl", str(jsonl), "--output", str(tmp_path / "live.mp4"),
        )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = _records(jsonl)
    indices = [r["frame_index"] for r in records]
    assert indices == sorted(set(indices))  # newest first, never an older one after it
    # 4 s at 30 fps, 4 in flight at 100 ms: about 40 results/s would be the pool's
    # ceiling, the sampler spreads sends over the latency, the clip lasts 4 s
    assert 20 <= len(records) <= 120
    assert all(r["status"] == "ok" for r in records)
    assert all(r["latency_ms"]["round_trip"] >= 100 for r in records)
    assert len(_decode(tmp_path / "live.mp4")) == 120  # every source frame drawn


def test_jsonl_to_stdout_and_the_synthetic_default(tmp_path: Path) -> None:
    done = _run("synthetic:?size=320x240&fps=10&seconds=1", "--jsonl", "-")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(records) == 10
    assert records[0]["source"] == "synthetic"
    assert {d["class"] for r in records for d in r["detections"]} <= {
        "circle",
        "square",
        "triangle",
    }
    assert "embedded server" in done.stderr


def test_webhook_receives_every_record(clip: Path, serve_http: Callable[..., str]) -> None:
    received: list[list[dict[str, Any]]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    hook = serve_http(Hook) + "/hook"
    done = _run(str(clip), "--model", "shapes/1", "--every", "4", "--webhook", hook)
    assert done.returncode == 0, done.stderr
    indices = sorted(r["frame_index"] for batch in received for r in batch)
    assert indices == list(range(120))
    assert len(received) >= 6  # batches, not one request per frame


def test_ntsc_rate_is_kept_exactly(tmp_path: Path) -> None:
    source = tmp_path / "ntsc.mp4"
    write_video(source, Scene(width=320, height=240, fps=30000 / 1001, objects=2), seconds=3)
    out = tmp_path / "out.mp4"
    done = _run(str(source), "--model", "shapes/1", "--output", str(out))
    assert done.returncode == 0, done.stderr
    with av.open(str(source)) as a, av.open(str(out)) as b:
        assert b.streams.video[0].average_rate == Fraction(30000, 1001)
        times_in = [f.time for f in a.decode(video=0)]
        times_out = [f.time for f in b.decode(video=0)]
    assert times_out == pytest.approx(times_in, abs=1e-3)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["/nope/missing.mp4"], 3, "no such file"),
        (["ftp://x/y.mp4"], 2, "unsupported source scheme"),
        (["synthetic:", "--mode", "sideways"], 2, "choose one of live, recorded"),
        (["synthetic:", "--max-in-flight", "0"], 2, "max_in_flight must be > 0"),
        (["synthetic:", "--max-fps", "-3"], 2, "must be > 0"),
        (["synthetic:", "--max-side", "100000"], 2, "max_side must be at most"),
    ],
)
def test_bad_input_exits_with_one_line(args: list[str], code: int, message: str) -> None:
    done = _run(*args)
    assert done.returncode == code, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_directory_and_non_video_sources(tmp_path: Path) -> None:
    done = _run(str(tmp_path))
    assert done.returncode == 3
    assert "no images" in done.stderr
    text = tmp_path / "notes.txt"
    text.write_text("not a video")
    done = _run(str(text), "--jsonl", str(tmp_path / "x.jsonl"))
    assert done.returncode == 3, done.stderr
    assert "cannot open" in done.stderr
    assert "Traceback" not in done.stderr


def test_api_errors_have_their_own_exit_codes(clip: Path, start_server: ServerFactory) -> None:
    guarded = start_server(api_key="the-real-key")
    wrong_key = _run(str(clip), "--api-url", guarded.url, "--model", "shapes/1", "--api-key", KEY)
    assert wrong_key.returncode == 4
    assert "403" in wrong_key.stderr
    assert KEY not in wrong_key.stderr + wrong_key.stdout
    unknown = _run(
        str(clip), "--api-url", guarded.url, "--model", "nope/9", "--api-key", "the-real-key"
    )
    assert unknown.returncode == 5
    assert "nope/9" in unknown.stderr
    unreachable = _run(
        str(clip),
        "--api-url",
        "http://127.0.0.1:9",
        "--model",
        "shapes/1",
        "--request-timeout",
        "2",
    )
    assert unreachable.returncode == 6
    assert "cannot reach 127.0.0.1" in unreachable.stderr
    remote_without_model = _run(str(clip), "--api-url", guarded.url)
    assert remote_without_model.returncode == 2
    for done in (wrong_key, unknown, unreachable, remote_without_model):
        assert "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_show_without_a_display_says_so(clip: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    done = subprocess.run(
        [*STREAMER, "run", str(clip), "--model", "shapes/1", "--show", "--no-progress"],
        capture_output=True, text=True, timeout=60, check=False,
        env=env,
    )  # fmt: skip
    assert done.returncode == 7
    assert "needs a display" in done.stderr


def test_configs_load_and_unknown_keys_are_named(tmp_path: Path) -> None:
    for path in sorted((REPO / "configs").glob("*.yaml")):
        fleet = load_fleet(path, {"source": "synthetic:"})
        assert all(config.source for config in fleet.cameras)
    cameras = load_fleet(REPO / "configs" / "cameras.yaml", {}).cameras
    assert [c.name for c in cameras] == ["walking", "shapes"]
    assert cameras[0].sampler.weight == 2
    assert cameras[0].sampler.max_fps == cameras[1].sampler.max_fps == 5  # top level: all
    assert cameras[1].target.model == "shapes/1"  # a camera's own key wins
    assert Path(cameras[0].source).is_absolute()  # relative to the config file
    bad = tmp_path / "bad.yaml"
    bad.write_text('source: "synthetic:"\nmax_in_fligth: 4\n')
    with pytest.raises(ConfigError, match="unknown setting 'max_in_fligth'"):
        load_config(bad, {})
    wrong_type = tmp_path / "wrong.yaml"
    wrong_type.write_text('source: "synthetic:"\nmax_in_flight: lots\n')
    with pytest.raises(ConfigError, match="max_in_flight must be an integer"):
        load_config(wrong_type, {})
    flags_win = load_config(REPO / "configs" / "recorded.yaml", {"source": "x.mp4", "every": 5})
    assert flags_win.sampler.every == 5
    assert flags_win.outputs.output == "annotated.mp4"
    done = _run("synthetic:", "--config", str(bad))
    assert done.returncode == 2
    assert "max_in_fligth" in done.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("source: synthetic:\n")
    done = _run("--config", str(broken))
    assert done.returncode == 2
    assert "not valid YAML (line 1)" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_walking_clip_with_coco(models_dir: Path, shared: Path, tmp_path: Path) -> None:
    clip = shared / "videos" / "supervision_walking.mp4"
    if not clip.is_file():
        pytest.skip(f"{clip} is not present")
    out, jsonl = tmp_path / "walking.mp4", tmp_path / "walking.jsonl"
    done = subprocess.run(
        [*STREAMER, "run", str(clip), "--models-dir", str(models_dir), "--every", "3",
         "--output", str(out), "--jsonl", str(jsonl), "--no-progress"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = _records(jsonl)
    assert len(records) == 341
    assert len(_decode(out)) == 341
    people = [
        sum(1 for d in r["detections"] if d["class"] == "person")
        for r in records
        if r["status"] == "ok"
    ]
    assert sorted(people)[len(people) // 2] >= 8  # the median frame has a crowd
    tracks = {d["tracker_id"] for r in records for d in r["detections"] if d["tracker_id"] >= 0}
    assert 10 <= len(tracks) <= 120  # people tracked, not a new id per frame


def test_settings_are_one_tree_and_every_leaf_is_a_flag_and_a_key(tmp_path: Path) -> None:
    from streamer.config import RunConfig, settings_fields

    help_text = " ".join(run_cli("run", "--help").stdout.split())
    for item in settings_fields():
        if item.name == "source" or item.metadata.get("config_only"):
            continue  # SOURCE, positional; lines and zones: config files only
        flag = item.metadata.get("flag") or "--" + item.name.replace("_", "-")
        assert flag in help_text, flag
    assert "long side of uploaded frames in pixels (640)" in help_text  # the field's default
    assert "--rate-limit RATE_LIMIT requests/s cap per API key" in help_text
    config = load_config(None, {"source": "synthetic:", "max_fps": 3.0, "min_fps": 1.0})
    assert (config.sampler.max_fps, config.sampler.min_fps) == (3.0, 1.0)
    assert config.sender.max_in_flight == 8
    assert RunConfig.from_flat(config.flat()) == config
    # a run-wide setting inside one camera is refused, naming it
    wide = tmp_path / "wide.yaml"
    wide.write_text("cameras:\n  - {source: 'synthetic:', web: '127.0.0.1:1'}\n")
    with pytest.raises(ConfigError, match="web is a setting of the whole run"):
        load_fleet(wide, {})
    named = tmp_path / "named.yaml"
    named.write_text("cameras:\n  - {source: 'synthetic:', name: 'no spaces please'}\n")
    with pytest.raises(ConfigError, match="camera name must be"):
        load_fleet(named, {})
