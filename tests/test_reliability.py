"""Faults while running: the API dies and returns, a camera flaps, a file is corrupt,
signals at awkward moments, and the key never shows up anywhere."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from streamer.client import RoboflowClient, Target
from streamer.pipeline import Pipeline, PipelineSettings
from streamer.sender import SenderConfig
from streamer.server import FaultConfig, ServerConfig, ServerThread
from streamer.sources import open_source
from tests.helpers import (
    STREAMER,
    ServerFactory,
    count_lines,
    free_port,
    records,
    run_cli,
    wait_for,
)

KEY = "rf_RELIABILITYCANARY_77aa88bb99"
_records = records


@pytest.fixture(scope="module")
def clip(make_clip: Callable[..., Path]) -> Path:
    return make_clip(6, objects=3, seed=5)


def test_recorded_run_survives_the_api_dying_and_coming_back(clip: Path, tmp_path: Path) -> None:
    port = free_port()
    faults = FaultConfig(latency_ms=30)
    server = ServerThread(ServerConfig(port=port, faults=faults)).start()
    jsonl, out = tmp_path / "out.jsonl", tmp_path / "out.mp4"
    process = subprocess.Popen(
        [
            *STREAMER,
            "run",
            str(clip),
            "--api-url",
            f"http://127.0.0.1:{port}",
            "--model",
            "shapes/1",
            "--max-in-flight",
            "2",
            "--jsonl",
            str(jsonl),
            "--output",
            str(out),
            "--no-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: count_lines(jsonl) >= 20, what="the run under way")
        server.stop()  # the API dies mid-run ...
        time.sleep(2.0)  # the outage's length: part of the scenario, not a wait for readiness
        server = ServerThread(ServerConfig(port=port, faults=faults)).start()  # ... and comes back
        _, stderr = process.communicate(timeout=60)
    finally:
        server.stop()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    records = _records(jsonl)
    assert [r["frame_index"] for r in records] == list(range(180))  # every frame, once, in order
    statuses = [r["status"] for r in records]
    assert all(s in ("ok", "predicted") or s.startswith("failed: ") for s in statuses)
    failed = [s for s in statuses if s.startswith("failed: ")]
    assert len(failed) < 20, failed  # only frames in flight when it died; the rest waited
    assert statuses[-1] == "ok"  # it carried on after the API came back
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 180


def test_live_run_recovers_within_two_seconds_of_the_api(tmp_path: Path) -> None:
    port = free_port()
    server = ServerThread(ServerConfig(port=port, faults=FaultConfig(latency_ms=50))).start()
    outputs: list[tuple[float, str, float]] = []

    def on_prediction(output: Any, detections: Any) -> None:
        now = time.monotonic()
        outputs.append((now, output.record["status"], now - output.frame.captured_at))

    settings = PipelineSettings(
        live=True, sender=SenderConfig(max_in_flight=4, rate_limit=None, deadline=1.0)
    )
    client = RoboflowClient(
        Target.model("shapes/1", api_url=f"http://127.0.0.1:{port}"), timeout=2.0
    )
    source = open_source("synthetic:?size=320x240&fps=30")
    try:
        with client, Pipeline(source, client, settings, on_prediction=on_prediction):
            wait_for(lambda: len(outputs) >= 10, what="results before the fault")
            server.stop()
            down_at = time.monotonic()
            time.sleep(2.0)  # the outage's length
            server = ServerThread(
                ServerConfig(port=port, faults=FaultConfig(latency_ms=50))
            ).start()
            back_at = time.monotonic()
            wait_for(lambda: outputs[-1][0] > back_at + 3.0, what="results after the return")
    finally:
        server.stop()
    during = [o for o in outputs if down_at + 0.2 < o[0] < back_at]
    assert during, "failures are shown while the API is down"
    assert all(o[1] != "ok" for o in during)
    assert max(o[2] for o in during) < 1.5  # result age stays bounded during the fault
    first_ok = next(o[0] for o in outputs if o[0] > back_at and o[1] == "ok")
    assert first_ok - back_at < 2.0
    after = [o for o in outputs if o[0] > back_at + 2.0]
    assert after
    assert all(o[1] == "ok" for o in after)
    assert max(o[2] for o in after) < 0.3  # back to normal: 50 ms round trips


def test_corrupt_packets_are_skipped_and_the_run_goes_on(clip: Path, tmp_path: Path) -> None:
    ts = tmp_path / "clip.ts"
    with av.open(str(clip)) as source, av.open(str(ts), "w", format="mpegts") as target:
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is None:
                continue
            packet.stream = stream
            target.mux(packet)
    data = bytearray(ts.read_bytes())
    for offset in range(len(data) // 4, len(data) * 3 // 4, 9000):  # garbage in the middle
        data[offset : offset + 400] = bytes(400)
    corrupt = tmp_path / "corrupt.ts"
    corrupt.write_bytes(bytes(data))
    jsonl = tmp_path / "out.jsonl"
    done = subprocess.run(
        [
            *STREAMER,
            "run",
            str(corrupt),
            "--model",
            "shapes/1",
            "--jsonl",
            str(jsonl),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    records = _records(jsonl)
    assert 90 <= len(records) <= 180  # most frames decode; the damaged ones are skipped
    assert [r["frame_index"] for r in records] == list(range(len(records)))


@pytest.mark.parametrize("inherited", ["default", "ignored"])
def test_sigint_at_start_up_is_clean(inherited: str) -> None:
    # "ignored": started as a script's background job is, with SIGINT ignored (a shell
    # without job control does that); streamer still stops on it, at start-up too.
    # A source long enough (a minute of frames) that the signal lands while it runs.
    command = [*STREAMER, "run", "synthetic:?size=320x240&seconds=60", "--no-progress"]
    if inherited == "ignored":
        command = ["bash", "-c", 'trap "" INT; exec "$@"', "streamer", *command]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # interrupt as soon as the command is running (the embedded server just started,
    # the pipeline not yet): reading stderr tells when, whatever the machine's speed
    assert process.stderr is not None
    first = process.stderr.readline()
    assert "embedded server" in first, first
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=20)
    stderr = first + rest
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr


@pytest.mark.skipif(
    not Path("/usr/bin/python3").exists(), reason="no system python for the RTSP server"
)
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_while_reconnecting_stops_within_two_seconds(
    tmp_path: Path, signum: signal.Signals, code: int
) -> None:
    port = free_port()  # nothing listens: the source keeps reconnecting
    process = subprocess.Popen(
        [
            *STREAMER,
            "run",
            f"rtsp://127.0.0.1:{port}/stream",
            "--model",
            "shapes/1",
            "--jsonl",
            str(tmp_path / "x.jsonl"),
            "--no-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr_lines = process.stderr
    assert stderr_lines is not None
    # said at the first failure: it is reconnecting now
    wait_for(lambda: "connection refused" in stderr_lines.readline(), what="the first failure")
    assert process.poll() is None  # still trying, not given up
    started = time.monotonic()
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=10)
    assert time.monotonic() - started < 2.0 + 0.5
    assert process.returncode == code, stderr
    assert "Traceback" not in stderr


def test_threads_end_when_the_pipeline_closes(clip: Path, start_server: ServerFactory) -> None:
    server = start_server(FaultConfig(latency_ms=100))
    before = {t.name for t in threading.enumerate()}
    client = RoboflowClient(Target.model("shapes/1", api_url=server.url))
    pipeline = Pipeline(open_source(str(clip)), client, PipelineSettings(live=False)).start()
    wait_for(lambda: pipeline.status().outputs >= 3, what="the pipeline running")
    started = time.monotonic()
    pipeline.close()
    client.close()
    assert time.monotonic() - started < 2.0
    pipeline_threads = (
        "streamer-feed",
        "streamer-render",
        "streamer-capture",
        "streamer-sender",
        "streamer-sink",
    )

    def leftover() -> set[str]:
        alive = {t.name for t in threading.enumerate() if t.is_alive()} - before
        return {name for name in alive if name.startswith(pipeline_threads)}

    wait_for(lambda: not leftover(), timeout=2.0, what=f"threads to end: {leftover()}")


def test_the_key_appears_in_no_log_output_or_record(
    clip: Path, start_server: ServerFactory, tmp_path: Path
) -> None:
    server = start_server(FaultConfig(error_rate=0.3, seed=3), api_key=KEY)
    out, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    done = subprocess.run(
        [
            *STREAMER,
            "--debug",
            "run",
            str(clip),
            "--api-url",
            server.url,
            "--model",
            "shapes/1",
            "--api-key",
            KEY,
            "--max-retries",
            "0",
            "--output",
            str(out),
            "--jsonl",
            str(jsonl),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "api_key=***" in done.stderr  # --debug logs every request URL, masked
    wrong = subprocess.run(  # a rejected key: the one-line error must not quote it either
        [
            *STREAMER,
            "run",
            str(clip),
            "--api-url",
            server.url,
            "--model",
            "shapes/1",
            "--api-key",
            "x" + KEY,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert wrong.returncode == 4
    everything = [done.stdout, done.stderr, wrong.stdout, wrong.stderr, jsonl.read_text()]
    for text in everything:
        assert KEY not in text
    assert KEY.encode() not in out.read_bytes()


def test_webhooks_verify_tls(tmp_path: Path) -> None:
    """A webhook with a self-signed certificate is refused, counted, and never stalls the run."""
    import http.server
    import shutil
    import ssl

    from streamer.frames import Frame
    from streamer.sinks import Output, WebhookSink

    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    received: list[bytes] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, name="test-tls-hook", daemon=True)
    thread.start()
    try:
        url = f"https://127.0.0.1:{httpd.server_address[1]}/hook"
        sink = WebhookSink(url, batch_size=1, retries=0)
        frame = Frame(image=np.zeros((4, 4, 3), np.uint8), index=0)
        started = time.monotonic()
        sink.write(Output(frame=frame, image=None, record={"frame_index": 0}))
        sink.close()
        assert time.monotonic() - started < 10
    finally:
        httpd.shutdown()
        thread.join(5)
        httpd.server_close()
    assert received == []  # the certificate was not trusted, nothing was sent
    assert sink.undelivered == 1


def test_recorded_run_through_429_storms_and_hanging_requests(
    clip: Path, start_server: ServerFactory, tmp_path: Path
) -> None:
    server = start_server(
        FaultConfig(rate_limit=40, burst=4, hang_rate=0.05, latency_ms=20, seed=9)
    )
    jsonl = tmp_path / "out.jsonl"
    done = subprocess.run(
        [
            *STREAMER,
            "run",
            str(clip),
            "--api-url",
            server.url,
            "--model",
            "shapes/1",
            "--request-timeout",
            "1",
            "--rate-limit",
            "40",
            "--jsonl",
            str(jsonl),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    records = _records(jsonl)
    assert [r["frame_index"] for r in records] == list(range(180))  # all, once, in order
    statuses = [r["status"] for r in records]
    assert all(s == "ok" or s.startswith("failed: ") for s in statuses)
    assert statuses.count("ok") >= 170  # 429s waited out (Retry-After), hangs retried after 1 s


def test_plan_error_exits_4_with_a_hint(clip: Path, serve_http: Callable[..., str]) -> None:
    from tests.test_client import _EdgeHandler

    url = serve_http(_EdgeHandler)
    done = run_cli("run", str(clip), "--api-url", url, "--model", "plan/1", timeout=60)
    assert done.returncode == 4
    assert "402" in done.stderr
    assert "v2 API" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "fault",
    [
        FaultConfig(latency_ms=300, jitter_ms=250, seed=1),  # latency spikes
        FaultConfig(latency_ms=50, error_rate=0.2, seed=2),  # 20% 500s
        FaultConfig(latency_ms=50, rate_limit=5, burst=1),  # a 429 storm with Retry-After
        FaultConfig(latency_ms=50, hang_rate=0.2, seed=3),  # hanging requests
    ],
    ids=["latency-spikes", "errors", "429-storm", "hangs"],
)
def test_live_result_age_stays_bounded_through_api_faults(fault: FaultConfig) -> None:
    port = free_port()
    server = ServerThread(ServerConfig(port=port, faults=fault)).start()
    outputs: list[tuple[float, str, float]] = []

    def on_prediction(output: Any, detections: Any) -> None:
        now = time.monotonic()
        outputs.append((now, output.record["status"], now - output.frame.captured_at))

    deadline = 1.0
    settings = PipelineSettings(
        live=True,
        sender=SenderConfig(
            max_in_flight=4, rate_limit=None, deadline=deadline, request_timeout=2.0
        ),
    )
    client = RoboflowClient(
        Target.model("shapes/1", api_url=f"http://127.0.0.1:{port}"), timeout=2.0
    )
    try:
        with (
            client,
            Pipeline(
                open_source("synthetic:?size=320x240&fps=30"),
                client,
                settings,
                on_prediction=on_prediction,
            ),
        ):
            time.sleep(3.0)  # the fault's length
            server.stop()
            server = ServerThread(
                ServerConfig(port=port, faults=FaultConfig(latency_ms=50))
            ).start()
            healthy_at = time.monotonic()
            wait_for(
                lambda: bool(outputs) and outputs[-1][0] > healthy_at + 3.0,
                what="results after the fault",
            )
    finally:
        server.stop()
    during = [o for o in outputs if o[0] < healthy_at]
    assert during
    # whatever is shown during the fault is never older than the deadline allows
    assert max(o[2] for o in during) < deadline + 0.3
    settled = [o for o in outputs if o[0] > healthy_at + 2.0]
    assert settled, "results again within 2 s of the fault ending"
    assert all(o[1] == "ok" for o in settled)
    assert max(o[2] for o in settled) < 0.3


@pytest.mark.parametrize(
    ("source_id", "name"),
    [
        ("rtsp://admin:***@10.0.0.5:554/stream1", "10.0.0.5-stream1"),
        ("/videos/Holiday [1080p].mp4", "Holiday-1080p"),
        ("synthetic", "synthetic"),
        ("http://cam.local/live.m3u8?token=***", "cam.local-live.m3u8"),
    ],
)
def test_camera_names_from_sources(source_id: str, name: str) -> None:
    from streamer.pipeline import camera_name

    assert camera_name(source_id) == name


def test_thread_names_carry_the_camera(
    clip: Path, start_server: ServerFactory, tmp_path: Path
) -> None:
    from streamer.sinks import JsonLinesSink

    server = start_server(FaultConfig(latency_ms=50))
    client = RoboflowClient(Target.model("shapes/1", api_url=server.url))
    sinks = [JsonLinesSink(tmp_path / "door.jsonl")]
    settings = PipelineSettings(live=False, sender=SenderConfig(max_in_flight=2))
    with (
        client,
        Pipeline(open_source(str(clip)), client, settings, sinks=sinks, camera="door") as pipeline,
    ):
        wait_for(lambda: pipeline.status().outputs >= 1, what="the first output")
        names = {t.name for t in threading.enumerate()}
    expected = {
        "streamer-feed-door",
        "streamer-render-door",
        "streamer-sender-door-0",
        "streamer-sender-door-1",
        "streamer-sink-door-jsonl",
    }
    assert expected <= names
