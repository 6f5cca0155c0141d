"""The ``streamer`` command as a user runs it: subprocesses, exit codes, output."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from streamer import __version__
from streamer.synth import Scene
from tests.helpers import FORM, STREAMER, b64, free_port, jpeg_bytes, run_cli

_run = run_cli


def test_version_and_help() -> None:
    version = _run("--version")
    assert version.returncode == 0
    assert version.stdout.strip() == f"streamer {__version__}"
    help_text = _run("--help")
    assert help_text.returncode == 0
    for command in ("run", "serve", "synth"):
        assert command in help_text.stdout
    serve_help = _run("serve", "--help").stdout
    for flag in (
        "--latency-ms",
        "--jitter-ms",
        "--error-rate",
        "--error-status",
        "--rate-limit",
        "--hang-rate",
        "--api-key",
        "--max-concurrency",
        "--models-dir",
        "--seed",
    ):
        assert flag in serve_help


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["synth", "x.mp4", "--size", "big"], "size must look like"),
        (["synth", "x.mp4", "--fps", "-3"], "must be > 0"),
        (["synth", "x.mp4", "--objects", "20"], "objects must be between"),
        (["serve", "--error-rate", "2"], "between 0 and 1"),
        (["serve", "--port", "99999"], "port must be"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [*STREAMER, *args], capture_output=True, text=True, timeout=30, cwd=tmp_path, check=False
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_port_in_use_is_a_clean_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = _run("serve", "--port", str(taken.getsockname()[1]))
    assert done.returncode == 2
    assert "cannot listen on 127.0.0.1" in done.stderr
    assert "Traceback" not in done.stderr


def test_synth_writes_video_and_truth(tmp_path: Path) -> None:
    done = _run(
        "synth",
        str(tmp_path / "a.mp4"),
        "--truth",
        str(tmp_path / "a.json"),
        "--size",
        "320x240",
        "--seconds",
        "1",
        "--fps",
        "10",
        "--objects",
        "2",
    )
    assert done.returncode == 0, done.stderr
    assert "wrote 10 frames" in done.stdout
    assert (tmp_path / "a.mp4").stat().st_size > 0
    assert (tmp_path / "a.json").stat().st_size > 0


def test_serve_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    key = "rf_TESTKEY_0123456789abcdef"
    process = subprocess.Popen(
        [
            *STREAMER,
            "serve",
            "--port",
            str(port),
            "--api-key",
            key,
            "--access-log",
            "--latency-ms",
            "5",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{url}/health", timeout=1)
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read() if process.stdout else ""
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        body = b64(jpeg_bytes(Scene(width=320, height=240, objects=2).render(0)))
        ok = httpx.post(f"{url}/shapes/1", params={"api_key": key}, content=body, headers=FORM)
        assert ok.status_code == 200
        assert len(ok.json()["predictions"]) == 2
        assert (
            httpx.post(
                f"{url}/shapes/1", params={"api_key": key + "x"}, content=body, headers=FORM
            ).status_code
            == 403
        )
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(5)
    # uvicorn shuts down gracefully, then re-raises SIGTERM: the shell sees 143
    assert process.returncode == -signal.SIGTERM
    assert "Finished server process" in output
    assert "POST /shapes/1" in output  # the access log is on ...
    assert key not in output  # ... and never shows the key
    assert "api_key=***" in output


def test_missing_weights_say_where_they_were_looked_for(tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    assert _run("synth", str(clip), "--size", "320x240", "--seconds", "1").returncode == 0
    done = _run("run", str(clip), "--models-dir", str(tmp_path), "--no-progress")
    assert done.returncode == 6
    assert f"yolox_nano.onnx not found in {tmp_path}" in done.stderr
    assert "Traceback" not in done.stderr
