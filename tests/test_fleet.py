"""Many cameras in one process: several sources per run, one failing alone, cameras
added, paused and removed over the control API and by SIGHUP, real servers only."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamer.errors import ConfigError
from streamer.fleet import Fleet
from streamer.server import FaultConfig, ServerThread
from tests.helpers import ServerFactory, decode, free_port, records, run_cli, start_cli, wait_for
from tests.test_rtsp import RtspServer, _gst_available

LIVE = "synthetic:?size=320x240&fps=15"


class Control:
    """A ``streamer run --web`` started by a test: its control API, and its stderr read
    as it comes (so that a test can wait for a line instead of sleeping)."""

    def __init__(self, process: subprocess.Popen[str], port: int, token: str | None = None) -> None:
        self.process = process
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=30.0)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def said(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def stop(self, sig: int = signal.SIGINT) -> tuple[int, str]:
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"streamer did not stop on signal {sig}") from None
        self._reader.join(timeout=10)
        return self.process.returncode, "".join(self.lines)

    def up(self) -> bool:
        try:
            return self.http.get("/health").status_code == 200
        except httpx.TransportError:
            return False

    def cameras(self) -> dict[str, dict[str, Any]]:
        answer = self.http.get("/api/cameras")
        assert answer.status_code == 200, answer.text
        return {camera["name"]: camera for camera in answer.json()["cameras"]}

    def stats(self, name: str) -> dict[str, Any]:
        answer = self.http.get("/api/stats")
        assert answer.status_code == 200, answer.text
        cameras: dict[str, dict[str, Any]] = answer.json()["cameras"]
        return cameras.get(name, {})

    def ok(self, name: str) -> int:
        return int(self.stats(name).get("ok", 0))


@pytest.fixture
def web_run() -> Iterator[Callable[..., Control]]:
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, token: str | None = None, env: dict[str, str] | None = None) -> Any:
        port = free_port()
        process = start_cli("run", *args, "--web", f"127.0.0.1:{port}", env=env)
        started.append(process)
        control = Control(process, port, token)
        wait_for(
            lambda: control.up() or process.poll() is not None, what="the control API", timeout=60
        )
        assert process.poll() is None, "".join(control.lines)
        # the control API listens first, then the cameras start
        wait_for(lambda: control.cameras() or process.poll() is not None, what="a camera")
        return control

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_several_sources_in_one_run_each_with_every_frame_once(
    make_clip: Callable[..., Path], tmp_path: Path
) -> None:
    clip = make_clip(2, width=320, height=240, fps=15)
    done = run_cli(
        "run", str(clip), "synthetic:?size=320x240&fps=15&seconds=2",
        "--jsonl", str(tmp_path / "all.jsonl"), "--output", str(tmp_path / "{camera}.mp4"),
        "--model", "shapes/1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = records(tmp_path / "all.jsonl")
    by_camera: dict[str, list[int]] = {}
    for line in lines:
        by_camera.setdefault(line["camera"], []).append(line["frame_index"])
    name = clip.stem
    assert set(by_camera) == {name, "synthetic"}
    for indices in by_camera.values():
        assert sorted(indices) == list(range(30))  # recorded: every frame, once
    assert len({line["run_id"] for line in lines}) == 1
    assert len(decode(tmp_path / f"{name}.mp4")) == 30
    assert len(decode(tmp_path / "synthetic.mp4")) == 30
    assert f"camera {name}: 30 frames out" in done.stderr


def test_a_camera_that_fails_ends_alone_and_the_exit_code_says_so(
    make_clip: Callable[..., Path], tmp_path: Path
) -> None:
    clip = make_clip(2, width=320, height=240, fps=15)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00not a video at all" * 1000)
    done = run_cli(
        "run", str(broken), str(clip), "--jsonl", str(tmp_path / "{camera}.jsonl"),
        "--model", "shapes/1",
    )  # fmt: skip
    assert done.returncode == 3, done.stderr  # the worst camera's code: bad source
    assert len(records(tmp_path / f"{clip.stem}.jsonl")) == 30  # the other one: whole
    assert not (tmp_path / "broken.jsonl").exists()
    assert sum("error: camera broken" in line for line in done.stderr.splitlines()) == 1
    # one records file for both: the good camera's records are whole, not "partial"
    shared = run_cli(
        "run", str(broken), str(clip), "--jsonl", str(tmp_path / "all.jsonl"),
        "--model", "shapes/1",
    )  # fmt: skip
    assert shared.returncode == 3
    assert len(records(tmp_path / "all.jsonl")) == 30


def test_one_output_path_for_two_cameras_is_refused_before_anything_runs(
    make_clip: Callable[..., Path], tmp_path: Path
) -> None:
    clip = make_clip(2, width=320, height=240, fps=15)
    done = run_cli(
        "run", str(clip), LIVE, "--output", str(tmp_path / "one.mp4"), "--model", "shapes/1"
    )
    assert done.returncode == 2, done.stderr
    assert "{camera}" in done.stderr
    assert not list(tmp_path.iterdir())


def test_control_api_adds_pauses_resumes_and_removes_cameras(
    web_run: Callable[..., Control], tmp_path: Path
) -> None:
    control = web_run(LIVE, "--max-fps", "5", "--jsonl", str(tmp_path / "{camera}.jsonl"))
    assert list(control.cameras()) == ["synthetic"]
    wait_for(lambda: control.ok("synthetic") > 0, what="the first camera's results")
    wait_for(lambda: control.http.get("/ready").status_code == 200, what="ready")

    added = control.http.post("/api/cameras", json={"name": "cam2", "source": LIVE + "&seed=3"})
    assert added.status_code == 201, added.text
    assert added.json()["name"] == "cam2"
    wait_for(lambda: control.ok("cam2") > 0, what="the added camera's first result")

    # the same name twice, bad settings, unknown cameras: clear answers, nothing changes
    again = control.http.post("/api/cameras", json={"name": "cam2", "source": LIVE})
    assert again.status_code == 409
    bad = control.http.post("/api/cameras", json={"name": "x", "source": LIVE, "max_fps": -1})
    assert bad.status_code == 400
    assert "max_fps" in bad.json()["error"]
    assert control.http.delete("/api/cameras/nobody").status_code == 404
    # files to write and URLs to send to come from the run, never from a request
    for key, value in (("output", "/tmp/x.mp4"), ("webhook", "http://127.0.0.1:1/"),
                       ("api_url", "http://127.0.0.1:1/")):  # fmt: skip
        refused = control.http.post("/api/cameras", json={"source": LIVE, key: value})
        assert refused.status_code == 400
        assert key in refused.json()["error"]
    assert set(control.cameras()) == {"synthetic", "cam2"}

    paused = control.http.post("/api/cameras/cam2/pause")
    assert paused.status_code == 200
    assert paused.json()["state"] == "paused"
    wait_for(lambda: control.stats("cam2")["in_flight"] == 0, what="cam2's last answers")
    ok_paused = control.ok("cam2")
    skipped = control.stats("cam2")["skipped"].get("paused", 0)
    wait_for(
        lambda: control.stats("cam2")["skipped"].get("paused", 0) >= skipped + 10,
        what="frames read while paused",
    )
    assert control.ok("cam2") == ok_paused  # nothing sent while paused
    before = control.ok("synthetic")
    wait_for(lambda: control.ok("synthetic") > before + 3, what="the other camera going on")

    assert control.http.post("/api/cameras/cam2/resume").status_code == 200
    wait_for(lambda: control.ok("cam2") > ok_paused, what="results after resume")

    removed = control.http.delete("/api/cameras/cam2")
    assert removed.status_code == 200, removed.text
    assert "frames out" in removed.json()["summary"]
    assert list(control.cameras()) == ["synthetic"]
    assert records(tmp_path / "cam2.jsonl")  # its records were finalized on removal

    code, err = control.stop()
    assert code == 130
    assert "camera synthetic:" in err
    assert records(tmp_path / "synthetic.jsonl")


def test_a_camera_that_never_connects_is_removed_at_once(
    web_run: Callable[..., Control],
) -> None:
    control = web_run(LIVE, "--max-fps", "2")
    dead = f"rtsp://user:SECRET_PW@127.0.0.1:{free_port()}/stream"
    added = control.http.post(
        "/api/cameras",
        json={"name": "dead", "source": dead, "reconnect": "forever", "model": "shapes/1"},
    )
    assert added.status_code == 201, added.text
    assert "SECRET_PW" not in added.text
    wait_for(
        lambda: control.cameras()["dead"]["state"] in ("connecting", "reconnecting"),
        what="the dead camera trying",
    )
    assert "SECRET_PW" not in control.http.get("/api/cameras").text
    not_ready = control.http.get("/ready")  # a camera that should stream does not
    assert not_ready.status_code == 503
    assert any(problem.startswith("dead:") for problem in not_ready.json()["problems"])
    removed = control.http.delete("/api/cameras/dead")
    assert removed.status_code == 200
    assert removed.json()["removed_in_s"] < 5  # not the 10 s open timeout, not forever
    assert list(control.cameras()) == ["synthetic"]
    code, err = control.stop()
    assert code == 130
    assert "SECRET_PW" not in err


def test_the_control_api_wants_a_token_off_loopback_and_when_given(
    web_run: Callable[..., Control],
) -> None:
    open_bind = run_cli("run", LIVE, "--web", f"0.0.0.0:{free_port()}")
    assert open_bind.returncode == 2
    assert "--web-token" in open_bind.stderr

    env = {**os.environ, "STREAMER_WEB_TOKEN": "s3cret-token"}
    control = web_run(LIVE, token="s3cret-token", env=env)
    anonymous = httpx.get(f"{control.url}/api/cameras", timeout=10)
    assert anonymous.status_code == 401
    wrong = httpx.get(
        f"{control.url}/api/cameras",
        headers={"Authorization": "Bearer nope"},
        timeout=10,
    )
    assert wrong.status_code == 401
    assert httpx.get(f"{control.url}/metrics", timeout=10).status_code == 401
    assert httpx.get(f"{control.url}/health", timeout=10).status_code == 200
    assert list(control.cameras()) == ["synthetic"]
    assert control.stop(signal.SIGTERM)[0] == 143


def test_sighup_applies_the_config_difference_and_leaves_the_rest_alone(
    web_run: Callable[..., Control], tmp_path: Path
) -> None:
    config = tmp_path / "cameras.yaml"
    config.write_text(
        "max_fps: 4\n"
        "cameras:\n"
        f"  - {{name: keep, source: '{LIVE}'}}\n"
        f"  - {{name: drop, source: '{LIVE}&seed=1'}}\n"
    )
    control = web_run("--config", str(config))
    wait_for(lambda: set(control.cameras()) == {"keep", "drop"}, what="both cameras")
    wait_for(lambda: control.ok("keep") > 0, what="results")
    frames_before = control.stats("keep")["frames"]
    config.write_text(
        "max_fps: 4\n"
        "cameras:\n"
        f"  - {{name: keep, source: '{LIVE}'}}\n"
        f"  - {{name: new, source: '{LIVE}&seed=2', weight: 2}}\n"
    )
    control.process.send_signal(signal.SIGHUP)
    wait_for(lambda: set(control.cameras()) == {"keep", "new"}, what="the config applied")
    assert control.stats("keep")["frames"] >= frames_before  # not restarted
    assert control.cameras()["new"]["weight"] == 2
    wait_for(lambda: control.ok("new") > 0, what="the new camera's results")
    config.write_text("cameras: [{name: keep, source: 12: not yaml")
    control.process.send_signal(signal.SIGHUP)  # a broken config: said, and nothing changes
    wait_for(lambda: control.said("config not applied"), what="the broken config refused")
    assert set(control.cameras()) == {"keep", "new"}
    code, err = control.stop()
    assert code == 130
    assert set(control_names(err)) == {"keep", "new", "drop"}  # drop: when it was removed


def control_names(stderr: str) -> list[str]:
    return re.findall(r"camera (\w+): (?:removed after )?\d+ frames out", stderr)


# -- the Python API ------------------------------------------------------------------------------


def test_a_camera_removed_while_its_request_is_in_flight_leaves_nothing_behind(
    start_server: ServerFactory,
) -> None:
    server = start_server(FaultConfig(latency_ms=8000))  # the start-up probe waits it once
    ended: list[str] = []
    with Fleet(
        {"api_url": server.url, "model": "shapes/1", "request_timeout": 60},
        on_end=lambda camera: ended.append(camera.name),
    ) as fleet:
        fleet.add("slow", LIVE, max_fps=2)
        wait_for(lambda: fleet.status().cameras["slow"].in_flight > 0, what="a request out")
        started = time.monotonic()
        fleet.remove("slow")
        took = time.monotonic() - started
        assert took < 6  # the 8 s answer is not waited for
        assert not [t.name for t in threading.enumerate() if "-slow" in t.name]
        assert fleet.names() == []
        assert ended == ["slow"]


def test_cameras_of_one_key_share_its_budget_and_each_paces_to_its_share(
    start_server: ServerFactory,
) -> None:
    # the server answers 429 past 12 requests/s: the three cameras together stay below
    server = start_server(FaultConfig(latency_ms=50, rate_limit=12, burst=12))
    with Fleet({"api_url": server.url, "model": "shapes/1", "rate_limit": 12}) as fleet:
        for name in ("a", "b", "c"):
            fleet.add(name, LIVE)
        assert len(fleet.budgets) == 1  # one key, one host: one budget
        wait_for(
            lambda: all(fleet.status().cameras[n].ok >= 40 for n in ("a", "b", "c")),
            what="40 results per camera",
            timeout=90,
        )
        budget = next(iter(fleet.status().budgets.values()))
        assert set(budget.shares) == {"a", "b", "c"}
        assert sum(budget.shares.values()) == pytest.approx(12, rel=0.05)
        statuses = fleet.status().cameras
        assert sum(statuses[n].rate_limited for n in ("a", "b", "c")) == 0
        counts = Counter({n: statuses[n].ok for n in ("a", "b", "c")})
        # equal weights: no camera got far more than another (the budget, not the race)
        assert max(counts.values()) <= 1.5 * min(counts.values())


@pytest.mark.skipif(not _gst_available(), reason="GStreamer's RTSP server is not installed")
def test_two_rtsp_cameras_one_killed_the_other_keeps_streaming(server: ServerThread) -> None:
    first, second = RtspServer(), RtspServer()
    first.start()
    second.start()
    try:
        with Fleet(
            {"api_url": server.url, "model": "shapes/1", "max_fps": 5, "stall_timeout": 1.0}
        ) as fleet:
            fleet.add("one", first.url)
            fleet.add("two", second.url)
            wait_for(
                lambda: all(fleet.status().cameras[n].ok > 5 for n in ("one", "two")),
                what="both cameras' results",
            )
            first.kill()
            wait_for(
                lambda: fleet.camera("one").state() in ("reconnecting", "connecting"),
                what="camera one noticing",
            )
            during = fleet.status().cameras["two"].ok
            wait_for(
                lambda: fleet.status().cameras["two"].ok >= during + 15,
                what="camera two going on while one is down",
            )
            assert fleet.camera("one").state() in ("reconnecting", "connecting")
            assert fleet.camera("two").state() == "streaming"
            assert fleet.cameras()[1].inference_fps is not None
    finally:
        first.kill()
        second.kill()


def test_fleet_records_name_their_camera_and_run(tmp_path: Path, server: ServerThread) -> None:
    seen: list[tuple[str, int]] = []
    with Fleet(
        {"api_url": server.url, "model": "shapes/1", "jsonl": str(tmp_path / "all.jsonl")},
        on_prediction=lambda camera, output, detections: seen.append((camera, output.frame.index)),
    ) as fleet:
        fleet.add("x", "synthetic:?size=160x120&seconds=1")
        fleet.add("y", "synthetic:?size=160x120&seconds=1&seed=4")
        assert fleet.wait(timeout=60)
        assert fleet.exit_code() == 0
    lines = [json.loads(line) for line in (tmp_path / "all.jsonl").read_text().splitlines()]
    assert Counter(line["camera"] for line in lines) == {"x": 30, "y": 30}
    assert {line["run_id"] for line in lines} == {fleet.run_id}
    assert Counter(camera for camera, _ in seen) == {"x": 30, "y": 30}


def test_a_camera_added_again_keeps_its_first_outputs_and_inputs_are_safe(
    tmp_path: Path, server: ServerThread, make_clip: Callable[..., Path]
) -> None:
    short = "synthetic:?size=160x120&seconds=1"
    with Fleet(
        {"api_url": server.url, "model": "shapes/1", "jsonl": str(tmp_path / "{camera}.jsonl")}
    ) as fleet:
        fleet.add("x", short)
        assert fleet.wait(timeout=60)
        fleet.remove("x")
        fleet.add("x", short + "&seed=5")  # a SIGHUP change restarts a camera like this
        assert fleet.wait(timeout=60)
        clip = make_clip(1, width=160, height=120, fps=15)
        # an output over another camera's input is refused, naming it
        fleet.add("reader", str(clip))
        with pytest.raises(ConfigError, match="write over the input"):
            fleet.add(clip.stem, short, jsonl=str(clip))
        assert fleet.wait(timeout=60)
    assert len(records(tmp_path / "x.jsonl")) == 30  # the first run of x, kept
    assert len(records(tmp_path / "x-2.jsonl")) == 30


def test_the_key_never_shows_with_several_cameras(
    web_run: Callable[..., Control], start_server: ServerFactory, tmp_path: Path
) -> None:
    key = "rf_SECRET_FLEET_KEY_0123456789"
    server = start_server(api_key=key)
    control = web_run(
        LIVE, LIVE + "&seed=2", "--api-url", server.url, "--api-key", key, "--model", "shapes/1",
        "--max-fps", "3", "--jsonl", str(tmp_path / "all.jsonl"), "--rate-limit", "10",
    )  # fmt: skip
    wait_for(
        lambda: control.ok("synthetic") > 0 and control.ok("synthetic-2") > 0,
        what="both cameras' results (the key accepted)",
    )
    answers = [control.http.get(route).text for route in ("/api/cameras", "/api/stats", "/ready")]
    code, err = control.stop()
    assert code == 130
    lines = records(tmp_path / "all.jsonl")
    assert {line["camera"] for line in lines} == {"synthetic", "synthetic-2"}
    for text in [*answers, err, (tmp_path / "all.jsonl").read_text()]:
        assert key not in text
