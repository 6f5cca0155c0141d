"""What trying streamer as a new user turned up: each case runs the real command against
real files and real servers on 127.0.0.1, and fails on the behaviour it guards against."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import itertools
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar

import av
import numpy as np
import pytest

from streamer.server import FaultConfig, ServerThread
from streamer.synth import Scene
from tests.helpers import (
    EMPTY_ANSWER,
    STREAMER,
    QuietHandler,
    ServerFactory,
    count_lines,
    decode,
    free_port,
    records,
    run_cli,
    start_cli,
    wait_for,
)

ServeHTTP = Callable[[type[http.server.BaseHTTPRequestHandler]], str]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_error_line(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr, done.stderr
    assert "streamer: error:" in done.stderr, done.stderr


# -- 1. never write over an input ------------------------------------------------------------


@pytest.mark.parametrize(
    "outputs",
    [
        lambda src, tmp: ["--output", str(src)],
        lambda src, tmp: ["--jsonl", str(src)],
        lambda src, tmp: ["--output", str(tmp / "same.mp4"), "--jsonl", str(tmp / "same.mp4")],
        lambda src, tmp: ["--jsonl", str(tmp / "link.mp4")],  # a hard link to the input
        lambda src, tmp: ["--output", str(tmp / "symlink.mp4")],  # a symbolic link to it
        lambda src, tmp: ["--jsonl", str(tmp / "run.yaml")],  # the config file is an input too
    ],
    ids=["output=input", "jsonl=input", "output=jsonl", "hard-link", "symlink", "config"],
)
def test_outputs_never_overwrite_an_input(
    make_clip: Callable[..., Path], tmp_path: Path, outputs: Callable[[Path, Path], list[str]]
) -> None:
    source = tmp_path / "w.mp4"
    source.write_bytes(make_clip(2).read_bytes())
    os.link(source, tmp_path / "link.mp4")
    (tmp_path / "symlink.mp4").symlink_to(source)
    config = tmp_path / "run.yaml"
    config.write_text("model: shapes/1\n")
    before = _digest(source), config.read_text()
    done = run_cli("run", str(source), "--config", str(config), *outputs(source, tmp_path))
    assert done.returncode == 2, done.stderr
    _one_error_line(done)
    assert "embedded server" not in done.stderr  # refused before anything started
    assert (_digest(source), config.read_text()) == before
    assert len(decode(source)) == 60


# -- 2. written under a temporary name, renamed when done; one writer at a time ---------------


def test_a_failed_run_never_replaces_a_good_file(
    make_clip: Callable[..., Path], start_server: ServerFactory, tmp_path: Path
) -> None:
    out, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    ok = run_cli("run", str(make_clip(1)), "--model", "shapes/1", "--output", str(out))
    assert ok.returncode == 0, ok.stderr
    good = _digest(out)
    jsonl.write_text("previous records\n")
    failing = start_server(FaultConfig(error_rate=0.5, seed=4))  # preflight passes, then 50%
    done = run_cli(
        "run", str(make_clip(1)), "--api-url", failing.url, "--model", "shapes/1",
        "--max-retries", "0", "--max-failed", "0.1", "--output", str(out), "--jsonl", str(jsonl),
    )  # fmt: skip
    assert done.returncode == 6, done.stderr
    assert _digest(out) == good  # the good video is untouched
    assert jsonl.read_text() == "previous records\n"
    assert len(decode(tmp_path / "out.partial.mp4")) == 30  # what the run made is kept aside
    assert len(records(tmp_path / "out.partial.jsonl")) == 30
    assert "partial, kept as" in done.stderr
    assert not list(tmp_path.glob(".*"))  # no temporary file or lock left


def test_a_killed_run_leaves_nothing_unreadable_and_the_next_run_takes_over(
    make_clip: Callable[..., Path], start_server: ServerFactory, tmp_path: Path
) -> None:
    slow = start_server(FaultConfig(latency_ms=100))
    out, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    args = ["--api-url", slow.url, "--model", "shapes/1", "--max-in-flight", "1"]
    process = start_cli(
        "run", str(make_clip(4)), *args, "--output", str(out), "--jsonl", str(jsonl)
    )
    try:
        wait_for(lambda: count_lines(jsonl) >= 3, what="the first records")
        # a second run writing the same file is refused while the first one lives
        second = run_cli("run", str(make_clip(1)), *args, "--output", str(out))
        assert second.returncode == 2, second.stderr
        assert "being written by another streamer run" in second.stderr
        process.kill()
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    assert not out.exists()  # no half-written MP4 at the final path
    assert not jsonl.exists()
    again = run_cli("run", str(make_clip(1)), "--model", "shapes/1", "--output", str(out))
    assert again.returncode == 0, again.stderr  # the dead run's lock is taken over
    assert len(decode(out)) == 30
    assert sorted(p.name for p in tmp_path.glob(".out.mp4*")) == []  # its lock is gone
    assert not (tmp_path / ".out.streamer-tmp.mp4").exists()


# -- 3. outputs checked before the run ---------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "name", "message"),
    [
        ("--output", "out.webm", ".mp4 .mkv .mov .avi .ts"),
        ("--output", "out.gif", ".mp4 .mkv .mov .avi .ts"),
        ("--output", "-", "cannot be '-'"),
        ("--output", "folder", "is a folder"),
        ("--jsonl", "folder", "is a folder"),
        ("--output", "missing/out.mp4", "does not exist"),
    ],
)
def test_outputs_that_cannot_be_written_are_refused_first(
    make_clip: Callable[..., Path], tmp_path: Path, flag: str, name: str, message: str
) -> None:
    (tmp_path / "folder").mkdir()
    target = name if name == "-" else str(tmp_path / name)
    done = run_cli("run", str(make_clip(1)), flag, target)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "embedded server" not in done.stderr
    _one_error_line(done)


@contextlib.contextmanager
def _tmpfs(path: Path, size: str, *options: str) -> Iterator[Path]:
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def test_a_read_only_folder_is_refused_before_the_run(
    make_clip: Callable[..., Path], tmp_path: Path
) -> None:
    with _tmpfs(tmp_path / "ro", "1m", "ro") as folder:
        done = run_cli("run", str(make_clip(1)), "--output", str(folder / "out.mp4"))
    assert done.returncode == 2, done.stderr
    assert "is not writable" in done.stderr
    assert "embedded server" not in done.stderr


# -- 4. an output that fails mid-run ------------------------------------------------------------


def test_disk_full_on_the_video_keeps_every_record_and_says_so(
    make_clip: Callable[..., Path], tmp_path: Path
) -> None:
    jsonl = tmp_path / "out.jsonl"
    clip = make_clip(6, width=1280, height=720, objects=5, seed=1)
    with _tmpfs(tmp_path / "small", "200k") as folder:
        done = run_cli(
            "run", str(clip), "--model", "shapes/1", "--every", "3",
            "--output", str(folder / "out.mp4"), "--jsonl", str(jsonl),
        )  # fmt: skip
        left = sorted(p.name for p in folder.iterdir())
    assert done.returncode == 7, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.count("video output failed") == 1  # reported once
    assert "No space left on device" in done.stderr
    assert "video: not written" in done.stderr
    assert left == []  # no unreadable MP4, no temporary file
    assert [r["frame_index"] for r in records(jsonl)] == list(range(180))  # the others go on


def test_a_closed_stdout_stops_the_run(make_clip: Callable[..., Path]) -> None:
    clip = make_clip(10)
    process = start_cli("run", str(clip), "--model", "shapes/1", "--jsonl", "-")
    assert process.stdout is not None
    first = process.stdout.readline()  # `| head -1`
    assert json.loads(first)["frame_index"] == 0
    process.stdout.close()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 7, stderr
    assert "Traceback" not in stderr
    assert "reader of the JSON lines on stdout went away" in stderr
    out = int(stderr.split(" frames out")[0].rsplit("streamer: ", 1)[-1])
    assert out < 300  # it stopped instead of inferring all 300 frames for nobody


# -- 5. failed runs are not successes ----------------------------------------------------------


def test_a_run_where_every_frame_failed_exits_6(
    make_clip: Callable[..., Path], serve_http: ServeHTTP, tmp_path: Path
) -> None:
    url = serve_http(_scripted(ok_first=1, status=400))  # the preflight passes, then 400s
    jsonl = tmp_path / "out.jsonl"
    done = run_cli(
        "run", str(make_clip(1)), "--api-url", url, "--model", "shapes/1", "--jsonl", str(jsonl)
    )  # fmt: skip
    assert done.returncode == 6, done.stderr
    assert "every one of the 30 frames sent failed" in done.stderr
    assert "30 failed" in done.stderr  # the summary counts them
    assert "scripted failure" in done.stderr  # and says why
    kept = records(tmp_path / "out.partial.jsonl")  # the records are kept, aside
    assert len(kept) == 30
    assert all(r["status"].startswith("failed: 400") for r in kept)


def test_a_recorded_run_gives_up_on_an_api_that_stays_down(
    make_clip: Callable[..., Path], serve_http: ServeHTTP, tmp_path: Path
) -> None:
    url = serve_http(_scripted(ok_first=1, status=500))
    jsonl = tmp_path / "out.jsonl"
    started = time.monotonic()
    done = run_cli(
        "run", str(make_clip(4)), "--api-url", url, "--model", "shapes/1",
        "--max-retry-wait", "2", "--jsonl", str(jsonl),
    )  # fmt: skip
    assert done.returncode == 6, done.stderr
    assert "has failed every request for" in done.stderr
    assert time.monotonic() - started < 60  # not 60 s per frame
    assert done.stderr.count("the API is failing") == 1  # one warning, not one a second
    kept = records(tmp_path / "out.partial.jsonl")
    assert kept
    assert all(r["status"].startswith("failed") for r in kept)


def test_some_failures_pass_unless_max_failed_is_exceeded(
    make_clip: Callable[..., Path], start_server: ServerFactory, tmp_path: Path
) -> None:
    server = start_server(FaultConfig(error_rate=0.2, seed=1))
    args = ["run", str(make_clip(2)), "--api-url", server.url, "--model", "shapes/1"]
    tolerant = run_cli(*args, "--max-retries", "0")
    assert tolerant.returncode == 0, tolerant.stderr
    assert " failed" in tolerant.stderr
    strict = run_cli(*args, "--max-retries", "0", "--max-failed", "0.05")
    assert strict.returncode == 6, strict.stderr
    assert "more than --max-failed 0.05" in strict.stderr


# -- 6. Retry-After past the cap ------------------------------------------------------------------


class _Scripted(QuietHandler):
    """Answers ``ok_first`` requests with no detections, then ``status`` (with
    ``headers``) forever."""

    ok_first = 0
    status = 500
    headers_out: ClassVar[dict[str, str]] = {}
    served = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.read_body()
        with self.lock:
            type(self).served += 1
            ok = self.served <= self.ok_first
        if ok:
            self.reply(200, EMPTY_ANSWER)
        else:
            self.reply(self.status, b'{"message": "scripted failure"}', headers=self.headers_out)


def _scripted(
    *, ok_first: int, status: int, headers: dict[str, str] | None = None
) -> type[_Scripted]:
    """A handler class of its own (its counter starts at 0) for one test."""
    attributes = {
        "ok_first": ok_first,
        "status": status,
        "headers_out": headers or {},
        "served": 0,
        "lock": threading.Lock(),
    }
    return type("Scripted", (_Scripted,), attributes)


@pytest.mark.parametrize("ok_first", [0, 5], ids=["at-start", "mid-run"])
def test_retry_after_past_the_cap_ends_the_run(
    make_clip: Callable[..., Path], serve_http: ServeHTTP, ok_first: int
) -> None:
    url = serve_http(_scripted(ok_first=ok_first, status=429, headers={"Retry-After": "99999"}))
    started = time.monotonic()
    done = run_cli(
        "run", str(make_clip(4)), "--api-url", url, "--model", "shapes/1",
        "--max-in-flight", "2", timeout=60,
    )  # fmt: skip
    assert done.returncode == 6, done.stderr
    assert "asked to wait 99999 s" in done.stderr
    assert "--max-retry-wait" in done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 30  # said and ended, not hung at 0 fps


# -- 7. a whole request is bounded; absurd numbers are settings errors --------------------------


class _Drip(QuietHandler):
    """Sends the headers, then one byte of the body every 0.3 s."""

    def do_POST(self) -> None:
        self.read_body()
        body = b'{"predictions": []}' + b" " * 80
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):
            for byte in body:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                time.sleep(0.3)


def test_request_timeout_bounds_the_whole_request(serve_http: ServeHTTP) -> None:
    from streamer.client import RoboflowClient, Target
    from streamer.errors import InferenceTimeout

    url = serve_http(_Drip)
    frame = Scene(width=160, height=120).render(0)
    with RoboflowClient(Target.model("drip/1", api_url=url), timeout=1.5) as client:
        started = time.monotonic()
        with pytest.raises(InferenceTimeout, match=r"within 1\.5 s"):
            client.infer(frame)
        elapsed = time.monotonic() - started
    assert elapsed < 6  # 1.5 s and some scheduling slack; the drip alone takes 30 s


@pytest.mark.parametrize(
    ("args", "yaml_text", "message"),
    [
        (["--request-timeout", "inf"], None, "finite"),
        (["--max-fps", "nan"], None, "finite"),
        (["--deadline", "1e9"], None, "at most"),
        ([], "request_timeout: .inf\n", "request_timeout must be a finite number"),
        ([], "rate_limit: .nan\n", "rate_limit must be a finite number"),
        ([], "max_retries: 100000\n", "max_retries must be at most"),
        ([], "every: 0\n", "every must be > 0"),
    ],
)
def test_non_finite_or_absurd_numbers_are_settings_errors(
    make_clip: Callable[..., Path],
    tmp_path: Path,
    args: list[str],
    yaml_text: str | None,
    message: str,
) -> None:
    extra = []
    if yaml_text is not None:
        config = tmp_path / "c.yaml"
        config.write_text(yaml_text)
        extra = ["--config", str(config)]
    done = run_cli("run", str(make_clip(1)), *args, *extra)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr


# -- 8. a source that never streams -----------------------------------------------------------


def test_a_dead_camera_is_reported_at_once_and_fails_after_connect_timeout() -> None:
    url = f"rtsp://admin:hunter2@127.0.0.1:{free_port()}/stream"
    started = time.monotonic()
    done = run_cli("run", url, "--model", "shapes/1", "--connect-timeout", "2", timeout=60)
    assert done.returncode == 3, done.stderr
    assert time.monotonic() - started < 30
    first = next(line for line in done.stderr.splitlines() if "connection refused" in line)
    assert "retrying in" in first  # said at the first failure, without --debug
    assert "no frame within 2 s" in done.stderr
    assert "hunter2" not in done.stderr
    assert "rtsp://admin:***@" in done.stderr
    assert "Traceback" not in done.stderr


class _WebPage(QuietHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/missing"):
            self.send_error(404)
            return
        page = b"<html><body>a camera's login page</body></html>"
        self.reply(200, page, content_type="text/html")


@pytest.mark.parametrize(("path", "reason"), [("/live", "not a video"), ("/missing", "404")])
def test_a_web_page_or_404_on_a_live_url_fails_with_its_reason(
    serve_http: ServeHTTP, path: str, reason: str
) -> None:
    url = serve_http(_WebPage) + path
    done = run_cli("run", url, "--model", "shapes/1", "--connect-timeout", "1.5", timeout=60)
    assert done.returncode == 3, done.stderr
    assert reason in done.stderr
    assert "Errno" not in done.stderr


class _NoRanges(http.server.SimpleHTTPRequestHandler):
    """Serves files and ignores Range requests, as simple servers do."""

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_an_http_file_that_cannot_be_read_fails_instead_of_looping(
    shared: Path, tmp_path: Path, serve_http: ServeHTTP
) -> None:
    walking = shared / "videos" / "supervision_walking.mp4"
    if not walking.is_file():
        pytest.skip(f"{walking} is not present")
    index_at_end = tmp_path / "clip.mp4"  # remuxed by PyAV: the moov atom goes last
    with av.open(str(walking)) as source, av.open(str(index_at_end), "w") as target:
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                target.mux(packet)

    class Files(_NoRanges):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)

    url = serve_http(Files) + "/clip.mp4"
    done = run_cli("run", url, "--model", "shapes/1", timeout=60)
    assert done.returncode == 3, done.stderr
    assert "range requests" in done.stderr


def test_reconnect_forever_keeps_trying_past_the_connect_timeout() -> None:
    url = f"rtsp://127.0.0.1:{free_port()}/later"
    process = start_cli(
        "--debug", "run", url, "--model", "shapes/1",
        "--connect-timeout", "0.5", "--reconnect", "forever",
    )  # fmt: skip
    try:
        stderr = process.stderr
        assert stderr is not None
        retries: list[str] = []

        def retried() -> bool:
            line = stderr.readline()
            retries.extend([line] if "retrying in" in line else [])
            return len(retries) >= 5

        # --debug logs every attempt; five attempts back off for more than 2 s, four
        # times the connect timeout: without "forever" the run would have failed by then
        wait_for(retried, what="five reconnect attempts")
        assert process.poll() is None
        assert not any("failed" in line for line in retries)
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130


# -- 9. a hostile API ---------------------------------------------------------------------------


class _Flood(QuietHandler):
    """Answers every frame with 100,000 boxes."""

    body = json.dumps(
        {
            "predictions": [
                {"x": 5, "y": 5, "width": 2, "height": 2, "confidence": 0.9, "class": "a"}
            ]
            * 100_000,
            "image": {"width": 64, "height": 64},
        }
    ).encode()

    served = 0

    def do_POST(self) -> None:
        self.read_body()
        type(self).served += 1
        first = self.served == 1  # the preflight gets a sane answer, the frames the flood
        self.reply(200, EMPTY_ANSWER if first else self.body)


def test_a_flood_of_boxes_gives_a_record_for_every_frame(
    serve_http: ServeHTTP, tmp_path: Path
) -> None:
    url = serve_http(_Flood)
    jsonl = tmp_path / "out.jsonl"
    done = run_cli(
        "run", "synthetic:?size=160x120&fps=10&seconds=1", "--api-url", url,
        "--model", "flood/1", "--max-in-flight", "2", "--jsonl", str(jsonl), timeout=120,
    )  # fmt: skip
    assert done.returncode == 6, done.stderr  # every frame failed: the API is broken
    assert "Traceback" not in done.stderr
    kept = records(tmp_path / "out.partial.jsonl")
    assert [r["frame_index"] for r in kept] == list(range(10))
    assert all("100000 predictions" in r["status"] for r in kept)


def test_deeply_nested_json_is_a_400(server: ServerThread) -> None:
    import httpx

    body = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    answer = httpx.post(
        f"{server.url}/infer/workflows/w/detect",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert answer.status_code == 400


# -- 10, 11. --show without a display; Ctrl-C with a hanging webhook --------------------------


def test_show_with_a_display_that_cannot_be_opened(make_clip: Callable[..., Path]) -> None:
    env = {**os.environ, "DISPLAY": ":99"}
    env.pop("WAYLAND_DISPLAY", None)
    done = run_cli("run", str(make_clip(1)), "--model", "shapes/1", "--show", env=env)
    assert done.returncode == 7, done.stderr  # not 134 from a Qt abort
    assert "DISPLAY=:99 cannot be opened" in done.stderr
    assert "embedded server" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


class _HangingHook(QuietHandler):
    arrived = threading.Event()
    release = threading.Event()

    def do_POST(self) -> None:
        type(self).arrived.set()
        type(self).release.wait(30)  # never answers while the test runs


def test_ctrl_c_with_a_hanging_webhook_exits_quickly(
    make_clip: Callable[..., Path], start_server: ServerFactory, serve_http: ServeHTTP
) -> None:
    arrived, release = threading.Event(), threading.Event()
    handler = type("Hook", (_HangingHook,), {"arrived": arrived, "release": release})
    hook = serve_http(handler) + "/hook"
    slow = start_server(FaultConfig(latency_ms=50))
    process = start_cli(
        "run", str(make_clip(10)), "--api-url", slow.url, "--model", "shapes/1",
        "--max-in-flight", "2", "--webhook", hook,
    )  # fmt: skip
    try:
        wait_for(arrived.is_set, what="the first webhook post")
        signalled = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
        took = time.monotonic() - signalled
    finally:
        release.set()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert took < 4.0, took  # 10.8 s before: retries and timeouts were waited out
    assert "Traceback" not in stderr
    assert "RuntimeError" not in stderr
    assert "not delivered" in stderr  # the outbox's records are counted


# -- 12, 13. rotation, and timestamps -------------------------------------------------------------


def _write(path: Path, scene: Scene, times: list[Fraction], rotation: int = 0) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = scene.width, scene.height, "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            stream.set_display_rotation(rotation)
        for index, at in enumerate(times):
            frame = av.VideoFrame.from_ndarray(scene.render(index), format="bgr24")
            frame.pts, frame.time_base = round(at * 1000), Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def test_phone_rotation_is_applied_before_inference(tmp_path: Path) -> None:
    scene = Scene(width=320, height=240, fps=30, objects=3, seed=4)
    clip = tmp_path / "phone.mp4"
    _write(clip, scene, [Fraction(i, 30) for i in range(30)], rotation=90)
    jsonl, out = tmp_path / "out.jsonl", tmp_path / "out.mp4"
    done = run_cli(
        "run", str(clip), "--model", "shapes/1", "--jsonl", str(jsonl), "--output", str(out)
    )
    assert done.returncode == 0, done.stderr
    first = decode(out)[0]
    assert (first.width, first.height) == (240, 320)  # upright, as players show it
    for record in records(jsonl)[::10]:
        found = {(d["class"], round(d["x"]), round(d["y"])) for d in record["detections"]}
        for truth in scene.truth(record["frame_index"]):
            if truth.occluded:
                continue
            x1, y1, x2, y2 = truth.box  # rotated 90 degrees counter-clockwise
            cx, cy = (y1 + y2) / 2, scene.width - (x1 + x2) / 2
            assert any(
                c == truth.class_name and abs(x - cx) < 6 and abs(y - cy) < 6 for c, x, y in found
            ), (record["frame_index"], truth, found)


def test_live_recording_at_60_fps(tmp_path: Path) -> None:
    out = tmp_path / "live.mp4"
    done = run_cli(
        "run", "synthetic:?size=320x240&fps=60&seconds=3", "--mode", "live",
        "--output", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    times = [frame.time for frame in decode(out)]
    assert len(times) > 30
    assert all(later > earlier for earlier, later in itertools.pairwise(times))


def test_variable_frame_rate_keeps_each_frames_time(tmp_path: Path) -> None:
    scene = Scene(width=320, height=240, fps=30, objects=2, seed=1)
    times = [Fraction(0)]
    for i in range(1, 40):
        times.append(times[-1] + Fraction(57 if i % 3 == 0 else 20, 1000))
    clip, out = tmp_path / "vfr.mp4", tmp_path / "out.mp4"
    _write(clip, scene, times)
    done = run_cli("run", str(clip), "--model", "shapes/1", "--output", str(out))
    assert done.returncode == 0, done.stderr
    assert [f.time for f in decode(out)] == pytest.approx([float(t) for t in times], abs=1e-3)


# -- 14. server time from the body ----------------------------------------------------------------


class _TimedBody(QuietHandler):
    """Roboflow's own server: the time in the body, no X-Processing-Time header."""

    def do_POST(self) -> None:
        self.read_body()
        self.reply(200, b'{"predictions": [], "image": {"width": 64, "height": 64}, "time": 0.042}')


def test_server_time_falls_back_to_the_body(serve_http: ServeHTTP, tmp_path: Path) -> None:
    url = serve_http(_TimedBody)
    jsonl = tmp_path / "out.jsonl"
    done = run_cli(
        "run", "synthetic:?size=160x120&fps=10&seconds=1", "--api-url", url,
        "--model", "rf/1", "--jsonl", str(jsonl),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert {r["latency_ms"]["server"] for r in records(jsonl)} == {42.0}


# -- 15. secrets -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "masked", "secret"),
    [
        ("http://alice:pa@ss%word@host/x", "http://alice:***@host/x", "ss%word"),
        ("http://TOKEN123@host/feed", "http://***@host/feed", "TOKEN123"),
        ("rtsp://admin:hunter2@10.0.0.5:554/s1", "rtsp://admin:***@10.0.0.5:554/s1", "hunter2"),
        ("https://h/v.m3u8?Token=abc&x=1", "https://h/v.m3u8?Token=***&x=1", "abc"),
        ("https://s3/v?X-Amz-Signature=f00&X-Amz-Credential=b4r", None, "f00"),
        ("https://h/p?password=p1&pwd=p2&pass=p3&secret=p4", None, "p1"),
        ("https://h/p?auth=a1&key=k1&sig=s1&apikey=k2&access_token=t1", None, "k1"),
        ("error for Bearer eyJhbGc.x.y", "error for Bearer ***", "eyJhbGc"),
    ],
)
def test_secrets_in_urls_are_masked(text: str, masked: str | None, secret: str) -> None:
    from streamer.redaction import redact

    result = redact(text)
    assert secret not in result
    if masked is not None:
        assert result == masked


def test_rejected_arguments_are_named_but_never_shown(make_clip: Callable[..., Path]) -> None:
    typo = run_cli("run", str(make_clip(1)), "--apikey", "rf_SECRET_TYPO_VALUE")
    assert typo.returncode == 2
    assert "--apikey" in typo.stderr
    assert "rf_SECRET_TYPO_VALUE" not in typo.stderr
    # sources come first: one after an option is a stray value (perhaps a secret)
    two = run_cli("run", "rtsp://a:pw1@h/1", "--max-fps", "1", "rtsp://b:SECOND_PASSWORD@h/2")
    assert two.returncode == 2
    assert "SECOND_PASSWORD" not in two.stderr
    assert "1 unexpected value" in two.stderr
    assert "ROBOFLOW_API_KEY" in run_cli("run", "--help").stdout


class _KeyRecorder(QuietHandler):
    seen: ClassVar[list[tuple[str, str]]] = []

    def do_POST(self) -> None:
        self.read_body()
        self.seen.append((self.path, self.headers.get("Authorization", "")))
        self.reply(200, EMPTY_ANSWER)


@pytest.mark.parametrize(
    ("transport", "in_query", "in_header"),
    [("query", True, False), ("header", False, True), ("both", True, True)],
)
def test_the_key_travels_as_asked(
    serve_http: ServeHTTP, transport: str, in_query: bool, in_header: bool
) -> None:
    key = "rf_TRANSPORT_KEY_1"
    seen: list[tuple[str, str]] = []
    url = serve_http(type("Keys", (_KeyRecorder,), {"seen": seen}))
    done = run_cli(
        "run", "synthetic:?size=160x120&fps=10&seconds=0.5", "--api-url", url, "--model", "m/1",
        "--api-key", key, "--api-key-transport", transport,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert seen
    for path, authorization in seen:
        assert (f"api_key={key}" in path) is in_query
        assert (authorization == f"Bearer {key}") is in_header


def test_header_key_is_accepted_by_streamer_serve(
    make_clip: Callable[..., Path], start_server: ServerFactory
) -> None:
    guarded = start_server(api_key="rf_HEADER_ONLY")
    done = run_cli(
        "run", str(make_clip(1)), "--api-url", guarded.url, "--model", "shapes/1",
        "--api-key-transport", "header", env={**os.environ, "ROBOFLOW_API_KEY": "rf_HEADER_ONLY"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_credentials_in_a_source_url_never_reach_records_or_the_terminal(
    make_clip: Callable[..., Path], serve_http: ServeHTTP, tmp_path: Path
) -> None:
    folder = make_clip(1).parent

    class Files(_NoRanges):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)

    base = serve_http(Files).replace("http://", "http://USERTOKEN42@")
    name = make_clip(1).name
    jsonl = tmp_path / "out.jsonl"
    done = run_cli(
        "run", f"{base}/{name}?sig=SIGSECRET42", "--model", "shapes/1", "--jsonl", str(jsonl)
    )
    assert done.returncode == 0, done.stderr
    kept = records(jsonl)
    assert len(kept) == 30
    text = jsonl.read_text() + done.stderr
    assert "USERTOKEN42" not in text
    assert "SIGSECRET42" not in text
    assert kept[0]["source"].startswith("http://***@127.0.0.1:")


# -- 16. text from servers is made safe; pages and redirects are named ------------------------


class _Odd(QuietHandler):
    def do_POST(self) -> None:
        self.read_body()
        if self.path.startswith("/page/"):
            self.reply(404, b"<!DOCTYPE html><html>Not here</html>", content_type="text/html")
        elif self.path.startswith("/moved/"):
            location = "https://elsewhere.example/api?api_key=LEAKED"
            self.reply(301, headers={"Location": location})
        else:
            message = "\x1b[31mred\x1b]0;pwned\x07\nsecond line\r\x1b[2J" + "x" * 5000
            self.reply(500, json.dumps({"message": message}).encode())


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("page/1", "answered 404 with an HTML page (is --api-url a Roboflow-compatible"),
        ("moved/1", "answered 301, a redirect to https://elsewhere.example/api?api_key=***"),
        ("nasty/1", "the API cannot serve nasty/1: 500"),
    ],
)
def test_odd_answers_are_named_and_printed_safely(
    make_clip: Callable[..., Path], serve_http: ServeHTTP, model: str, message: str
) -> None:
    url = serve_http(_Odd)
    done = run_cli("run", str(make_clip(1)), "--api-url", url, "--model", model)
    assert done.returncode == 6, done.stderr  # not 5 (unknown model), not a traceback
    assert message in done.stderr
    assert "\x1b" not in done.stderr
    assert "\x07" not in done.stderr
    assert "LEAKED" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert len(done.stderr) < 600


# -- 17. words, not errno numbers or library noise --------------------------------------------


def test_ffmpeg_errors_and_broken_images_are_said_in_words(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a video")
    done = run_cli("run", str(notes))
    assert done.returncode == 3
    assert "not a video file, or corrupt" in done.stderr
    assert "Errno" not in done.stderr
    images = tmp_path / "images"
    images.mkdir()
    scene = Scene(width=160, height=120)
    for index in range(3):
        import cv2

        ok, data = cv2.imencode(".jpg", scene.render(index))
        assert ok
        raw = data.tobytes()
        (images / f"{index:03d}.jpg").write_bytes(raw if index else raw[: len(raw) // 2])
    jsonl = tmp_path / "images.jsonl"
    done = run_cli("run", str(images), "--model", "shapes/1", "--jsonl", str(jsonl))
    assert done.returncode == 0, done.stderr  # a corrupt first image is skipped like any other
    assert len(records(jsonl)) == 2
    assert "skipped an unreadable or truncated image" in done.stderr
    assert "JPEG" not in done.stderr  # libjpeg's own "Premature end of JPEG file"


# -- 18, 19, 20, 21. smaller defects ----------------------------------------------------------


def test_a_file_name_with_glob_characters_is_a_file(
    make_clip: Callable[..., Path], tmp_path: Path
) -> None:
    holiday = tmp_path / "Holiday [1080p] *?.mp4"
    holiday.write_bytes(make_clip(1).read_bytes())
    jsonl = tmp_path / "out.jsonl"
    done = run_cli("run", str(holiday), "--model", "shapes/1", "--jsonl", str(jsonl))
    assert done.returncode == 0, done.stderr
    assert len(records(jsonl)) == 30


def _one_x_one(path: Path) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=10)
        stream.width, stream.height, stream.pix_fmt = 1, 1, "yuv444p"
        for index in range(3):
            pixel = np.full((1, 1, 3), 90, np.uint8)
            frame = av.VideoFrame.from_ndarray(pixel, format="bgr24").reformat(format="yuv444p")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.mark.parametrize(
    ("make_args", "code", "message"),
    [
        (lambda tmp: ["run", str(tmp / ("a" * 300 + ".mp4"))], 3, "File name too long"),
        (lambda tmp: ["run", "synthetic:?seconds=nan"], 2, "synthetic seconds"),
        (lambda tmp: ["run", "synthetic:?seconds=-1"], 2, "synthetic seconds"),
        (lambda tmp: ["run", "synthetic:", "--model="], 2, "model must not be empty"),
        (lambda tmp: ["run", "synthetic:", "--model", "coco/1?x=1#f"], 2, "project/version"),
        (lambda tmp: ["run", "synthetic:", "--webhook", "http://h:99999/x"], 2, "port"),
        (lambda tmp: ["run", "synthetic:", "--model", "shapes/1", "--api-key", "k" * 100_000], 2,
         "does not look like"),
        (lambda tmp: ["synth", str(tmp / "out.xyz")], 2, "needs one of .mp4"),
        (lambda tmp: ["run", str(_one_x_one(tmp / "1x1.mkv")), "--model", "shapes/1",
                      "--output", str(tmp / "o.mp4")], 7, "1x1 frames are too small"),
    ],
    ids=["long-name", "nan-seconds", "negative-seconds", "empty-model", "model-query",
         "webhook-port", "huge-key", "synth-xyz", "1x1"],
)  # fmt: skip
def test_odd_inputs_get_one_line_and_their_exit_code(
    tmp_path: Path, make_args: Callable[[Path], list[str]], code: int, message: str
) -> None:
    done = run_cli(*make_args(tmp_path))
    assert done.returncode == code, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert "k" * 300 not in done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert 1 <= len(errors) <= 2
    assert all(len(line) < 500 for line in errors)


def test_invalid_utf8_config_and_long_values_are_one_line(tmp_path: Path) -> None:
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"source: synthetic:\nmodel: \xff\xfe\n")
    done = run_cli("run", "--config", str(binary))
    assert done.returncode == 2
    assert "not UTF-8" in done.stderr
    long_value = tmp_path / "long.yaml"
    long_value.write_text(f'source: "synthetic:"\nmax_in_flight: "{"x" * 10_000}"\n')
    done = run_cli("run", "--config", str(long_value))
    assert done.returncode == 2
    assert "max_in_flight must be an integer" in done.stderr
    assert len(done.stderr) < 400


def test_debug_keeps_the_exit_codes(
    make_clip: Callable[..., Path], start_server: ServerFactory
) -> None:
    guarded = start_server(api_key="the-real-key")
    done = run_cli(
        "--debug", "run", str(make_clip(1)), "--api-url", guarded.url, "--model", "shapes/1",
        "--api-key", "rf_WRONG_DEBUG_KEY",
    )  # fmt: skip
    assert done.returncode == 4, done.stderr
    assert "Traceback" in done.stderr  # --debug shows it, and still exits 4
    assert "rf_WRONG_DEBUG_KEY" not in done.stderr


def test_synth_says_the_size_it_wrote(tmp_path: Path) -> None:
    done = run_cli("synth", str(tmp_path / "odd.mp4"), "--size", "321x241", "--seconds", "0.2")
    assert done.returncode == 0, done.stderr
    assert "320x240" in done.stdout
    assert "cut from 321x241" in done.stdout


def test_a_truncated_file_says_how_much_was_read(
    make_clip: Callable[..., Path], tmp_path: Path
) -> None:
    whole = make_clip(4).read_bytes()
    # PyAV writes the index last: move it first (faststart) so that cutting the end
    # loses frames, not the index
    faststart = tmp_path / "fast.mp4"
    with (
        av.open(str(make_clip(4))) as source,
        av.open(str(faststart), "w", options={"movflags": "faststart"}) as target,
    ):
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                target.mux(packet)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(faststart.read_bytes()[: len(whole) // 2])
    jsonl = tmp_path / "cut.jsonl"
    done = run_cli("run", str(cut), "--model", "shapes/1", "--jsonl", str(jsonl))
    assert done.returncode == 0, done.stderr
    read = len(records(jsonl))
    assert 0 < read < 120
    assert f"read {read} of the 120 frames the file declares" in done.stderr


def test_a_relative_source_in_a_config_is_relative_to_the_config(
    make_clip: Callable[..., Path], tmp_path: Path
) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "clip.mp4").write_bytes(make_clip(1).read_bytes())
    (folder / "run.yaml").write_text("source: clip.mp4\nmodel: shapes/1\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(
        [*STREAMER, "run", "--config", str(folder / "run.yaml"), "--no-progress"],
        capture_output=True, text=True, timeout=120, check=False, cwd=elsewhere,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_progress_never_shows_an_infinite_eta() -> None:
    from streamer.pipeline import PipelineStatus
    from streamer.run import _progress_line

    status = PipelineStatus(
        source_state="streaming", frames=0, outputs=0, ok=0, predicted=0, failed=0, stale=0,
        late=0, dropped_capture=0, skipped={}, sink_drops={}, source_fps=None,
        inference_fps=None, latency_p50_ms=None, latency_p95_ms=None, breaker="closed", rate=None,
    )  # fmt: skip
    line = _progress_line(status, total=100, started=time.monotonic() + 10, live=False)
    assert "inf" not in line
    assert "ETA -" in line


def test_serve_says_serving_only_once_it_listens(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = run_cli(
            "serve", "--port", str(port), "--models-dir", str(tmp_path / "nope"), timeout=60
        )
    assert done.returncode == 2, done.stderr
    assert "cannot listen" in done.stderr
    assert "serving on" not in done.stderr
    assert "does not exist" in done.stderr  # the missing --models-dir is said too


def test_run_help_explains_flags_and_exit_codes() -> None:
    text = " ".join(run_cli("run", "--help").stdout.split())
    assert "exit codes:" in text
    for code in ("0 done", "3 bad source", "6 API unreachable", "7 an output", "130"):
        assert code in text
    assert "--no-hud no figures drawn" in text
    assert "--no-progress no progress line" in text
    assert "live or recorded" in text
    assert "1 to 100 is a percentage (1 = 1%), below 1 a fraction (0.99 = 99%)" in text


@pytest.fixture
def x_display() -> Iterator[str]:
    """A real X server (Xvfb) on a free display number; its DISPLAY."""
    import shutil

    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (Debian package xvfb; .ci/run installs it)")
    number = next(n for n in range(90, 200) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    server = subprocess.Popen(
        ["Xvfb", f":{number}", "-nolisten", "tcp", "-screen", "0", "1280x800x24"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: Path(f"/tmp/.X11-unix/X{number}").exists(), what="Xvfb to listen")
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(10)


def test_show_draws_a_window_on_a_real_display(
    make_clip: Callable[..., Path], x_display: str
) -> None:
    """The window runs on the main thread, with OpenCV loaded before PyAV: either
    mistake livelocks Qt's xcb at 100% CPU, unkillable by SIGTERM."""
    env = {**os.environ, "DISPLAY": x_display}
    done = run_cli(
        "run", str(make_clip(2)), "--model", "shapes/1", "--show", env=env, timeout=90
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "60 frames out" in done.stderr
    noise = [line for line in done.stderr.splitlines() if not line.startswith("streamer: ")]
    assert noise == []  # no Qt chatter on the terminal


def test_a_sink_busy_in_idle_never_stalls_the_renderer() -> None:
    """A webhook posting from ``idle`` (seconds against a slow endpoint) must not hold the
    queue's lock: ``put`` from the render thread returns at once."""
    from streamer.frames import Frame
    from streamer.sinks import Output, SinkWorker
    from streamer.sinks.base import DropPolicy

    release = threading.Event()
    in_idle = threading.Event()

    class SlowPeer:  # a sink at the edge: only its idle call is slow
        name = "slow"
        wants_image = False

        def write(self, output: Output) -> None:
            pass

        def idle(self) -> None:
            in_idle.set()
            release.wait(30)

        def close(self) -> None:
            pass

    worker = SinkWorker(SlowPeer(), capacity=4, policy=DropPolicy.DROP_NEWEST).start()
    try:
        assert in_idle.wait(10)
        frame = Frame(image=np.zeros((2, 2, 3), np.uint8), index=0)
        started = time.monotonic()
        assert worker.put(Output(frame=frame, image=None, record={}))
        assert time.monotonic() - started < 1.0  # not blocked behind the idle call
    finally:
        release.set()
        worker.close(timeout=10)
    assert worker.finished
