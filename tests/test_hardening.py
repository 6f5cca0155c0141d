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
import pytest

from streamer.server import FaultConfig, ServerThread
from streamer.synth import Scene
from tests.helpers import (
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


class _Scripted(http.server.BaseHTTPRequestHandler):
    """Answers ``ok_first`` requests with no detections, then ``status`` (with
    ``headers``) forever."""

    ok_first = 0
    status = 500
    headers_out: ClassVar[dict[str, str]] = {}
    served = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.lock:
            type(self).served += 1
            ok = self.served <= self.ok_first
        body = (
            b'{"predictions": [], "image": {"width": 64, "height": 64}}'
            if ok
            else b'{"message": "scripted failure"}'
        )
        self.send_response(200 if ok else self.status)
        for name, value in ({} if ok else self.headers_out).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


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


class _Drip(http.server.BaseHTTPRequestHandler):
    """Sends the headers, then one byte of the body every 0.3 s."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
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

    def log_message(self, format: str, *args: object) -> None:
        pass


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


class _WebPage(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.startswith("/missing"):
            self.send_error(404)
            return
        body = b"<html><body>a camera's login page</body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


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
        "run", url, "--model", "shapes/1", "--connect-timeout", "0.5", "--reconnect", "forever"
    )
    try:
        stderr = process.stderr
        assert stderr is not None
        wait_for(lambda: "connection refused" in stderr.readline(), what="a failure")
        time.sleep(3.0)  # six connect timeouts: it would have failed by now without forever
        assert process.poll() is None
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130


# -- 9. a hostile API ---------------------------------------------------------------------------


class _Flood(http.server.BaseHTTPRequestHandler):
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
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).served += 1
        first = self.served == 1  # the preflight gets a sane answer, the frames the flood
        body = b'{"predictions": [], "image": {"width": 64, "height": 64}}' if first else self.body
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


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


class _HangingHook(http.server.BaseHTTPRequestHandler):
    arrived = threading.Event()
    release = threading.Event()

    def do_POST(self) -> None:
        type(self).arrived.set()
        type(self).release.wait(30)  # never answers while the test runs

    def log_message(self, format: str, *args: object) -> None:
        pass


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


class _TimedBody(http.server.BaseHTTPRequestHandler):
    """Roboflow's own server: the time in the body, no X-Processing-Time header."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"predictions": [], "image": {"width": 64, "height": 64}, "time": 0.042}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_server_time_falls_back_to_the_body(serve_http: ServeHTTP, tmp_path: Path) -> None:
    url = serve_http(_TimedBody)
    jsonl = tmp_path / "out.jsonl"
    done = run_cli(
        "run", "synthetic:?size=160x120&fps=10&seconds=1", "--api-url", url,
        "--model", "rf/1", "--jsonl", str(jsonl),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert {r["latency_ms"]["server"] for r in records(jsonl)} == {42.0}
