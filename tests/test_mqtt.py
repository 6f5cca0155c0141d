"""Events and counts over MQTT, against a real Mosquitto broker on a free 127.0.0.1 port
(Debian's ``mosquitto``, which ``.ci/run`` installs; skipped with a reason without it).

A paho subscriber with a persistent session (QoS 1) receives every event the run
writes to its events file, in order, also when the broker is stopped for 3 s and
started again mid-run; retained counts are there for a subscriber that comes later;
the last will says ``offline`` when the process is killed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from streamer.server import FaultConfig
from streamer.synth import Scene, write_video
from tests.helpers import ServerFactory, free_port, records, run_cli, start_cli, wait_for

MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto",) if Path(p).exists()), None
)
pytestmark = pytest.mark.skipif(
    MOSQUITTO is None, reason="mosquitto is not installed (Debian package mosquitto)"
)
CONFIG = """
lines:
  - {name: middle, points: [[0.5, 0.0], [0.5, 1.0]]}
zones:
  - {name: corner, points: [[0.0, 0.0], [0.5, 0.0], [0.5, 0.5], [0.0, 0.5]]}
"""


class Broker:
    """Mosquitto on 127.0.0.1:port, persisting sessions in ``folder`` across restarts."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.folder = folder
        self.config = folder / "mosquitto.conf"
        # as root, mosquitto drops to user "mosquitto", who cannot write the sessions into
        # pytest's private temp folder: it keeps root's rights here (tests only)
        user = "user root\n" if os.geteuid() == 0 else ""
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n{user}"
            f"persistence true\npersistence_location {folder}/\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert MOSQUITTO is not None
        log = (self.folder / "mosquitto.log").open("ab")
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
        )
        wait_for(self._listening, timeout=20, what="mosquitto listening")

    def _listening(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: mosquitto saves its sessions first
            self.process.wait(timeout=10)
            log = (self.folder / "mosquitto.log").read_text()
            assert "Error saving" not in log, log  # else the sessions were lost, not ours


class Subscriber:
    """A paho client with a persistent session, collecting what it receives."""

    def __init__(self, port: int, topic: str, client_id: str) -> None:
        self.messages: list[tuple[str, str, bool]] = []
        self._lock = threading.Lock()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False
        )
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        self.subscribed = threading.Event()
        self.client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._received
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _received(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, message.payload.decode(), message.retain))

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(p) for t, p, _ in self.messages if t.endswith("/events")]

    def latest(self) -> dict[str, str]:
        with self._lock:
            return {topic: payload for topic, payload, _ in self.messages}

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    running = Broker(tmp_path)
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mqtt") / "crossing.mp4"
    write_video(path, Scene(width=640, height=360, fps=30, objects=3, seed=5), seconds=8)
    return path


def test_every_event_arrives_in_order_across_a_broker_restart(
    broker: Broker, clip: Path, start_server: ServerFactory, tmp_path: Path
) -> None:
    config = tmp_path / "analytics.yaml"
    config.write_text(CONFIG)
    subscriber = Subscriber(broker.port, "streamer/events", "test-events")
    wait_for(subscriber.subscribed.is_set, what="the subscription")
    server = start_server(FaultConfig(latency_ms=40))  # about 10 s for the 240 frames
    events = tmp_path / "events.jsonl"
    process = start_cli(
        "run", str(clip), "--model", "shapes/1", "--api-url", server.url, "--max-in-flight", "1",
        "--config", str(config), "--events", str(events), "--mqtt", f"mqtt://127.0.0.1:{broker.port}",
    )  # fmt: skip
    try:
        wait_for(lambda: len(subscriber.events()) >= 3, what="the first events")
        broker.stop()
        before = len(subscriber.events())
        process_alive = process.poll() is None
        threading.Event().wait(3.0)  # the outage itself (3 s), not a wait for readiness
        broker.start()
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert process_alive  # the broker went away mid-run, not after it
    written = records(events)
    assert before < len(written)
    wanted = {e["event_id"] for e in written}
    wait_for(lambda: wanted <= {e["event_id"] for e in subscriber.events()}, what="every event")
    received = subscriber.events()
    subscriber.close()
    # QoS 1 is at least once: a message in flight when the broker went may come twice
    # (``event_id`` tells); none is lost, and they come in the order they were made
    ids = list(dict.fromkeys(e["event_id"] for e in received))
    assert ids == [e["event_id"] for e in written]
    assert "went away" in stderr  # said once, credentials-free
    assert stderr.count("went away") == 1


def test_retained_counts_reach_a_late_subscriber(
    broker: Broker, clip: Path, server: Any, tmp_path: Path
) -> None:
    config = tmp_path / "analytics.yaml"
    config.write_text(CONFIG)
    jsonl = tmp_path / "records.jsonl"
    stats = Subscriber(broker.port, "shop/stats", "stats")
    wait_for(stats.subscribed.is_set, what="the stats subscription")
    done = run_cli(
        "run", str(clip), "--model", "shapes/1", "--api-url", server.url, "--config", str(config),
        "--jsonl", str(jsonl), "--mqtt", f"mqtt://127.0.0.1:{broker.port}", "--mqtt-topic", "shop",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    last = records(jsonl)[-1]
    wait_for(lambda: "shop/stats" in stats.latest(), what="the run's stats")
    figures = json.loads(stats.latest()["shop/stats"])
    stats.close()
    assert "crossing" in figures["cameras"]
    late = Subscriber(broker.port, "shop/#", "late")
    wait_for(lambda: "shop/crossing/middle/in" in late.latest(), what="retained counts")
    wait_for(lambda: "shop/crossing/status" in late.latest(), what="retained status")
    got = late.latest()
    late.close()
    middle, corner = last["lines"]["middle"], last["zones"]["corner"]
    assert got["shop/crossing/middle/in"] == str(middle["in"])
    assert got["shop/crossing/middle/out"] == str(middle["out"])
    assert got["shop/crossing/corner/all"] == str(corner["occupancy"])
    for name, count in corner["by_class"].items():
        assert got[f"shop/crossing/corner/{name}"] == str(count)
    assert got["shop/crossing/status"] == "ended"
    assert got["shop/available"] == "offline"  # said on the way out
    assert all(retained for _, _, retained in late.messages)


def test_the_last_will_says_offline_when_the_process_is_killed(broker: Broker) -> None:
    watcher = Subscriber(broker.port, "streamer/available", "watcher")
    process = start_cli(
        "run", "synthetic:?size=160x120&fps=5", "--mqtt", f"mqtt://127.0.0.1:{broker.port}",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: watcher.latest().get("streamer/available") == "online", what="online")
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        wait_for(lambda: watcher.latest().get("streamer/available") == "offline", what="the will")
    finally:
        if process.poll() is None:
            process.kill()
        watcher.close()


def test_an_unreachable_broker_is_retried_or_fails_the_run_when_required(
    tmp_path: Path,
) -> None:
    closed = free_port()
    url = f"mqtt://user:s3cret-pw@127.0.0.1:{closed}"
    done = run_cli("run", "synthetic:?size=160x120&fps=10&seconds=1", "--mqtt", url)
    assert done.returncode == 0, done.stderr  # events wait in the outbox; the run goes on
    required = run_cli(
        "run", "synthetic:?size=160x120&fps=10&seconds=1", "--mqtt", url, "--mqtt-required"
    )
    assert required.returncode == 7
    assert "cannot reach the MQTT broker at mqtt://127.0.0.1" in required.stderr
    for output in (done.stderr, required.stderr):
        assert "s3cret-pw" not in output
        assert "Traceback" not in output


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("http://127.0.0.1:1883", "--mqtt must look like mqtt://"),
        ("mqtt://no-such-host.invalid:1883", "the host does not resolve"),
        ("mqtt://127.0.0.1:1883/topic", "no path is expected"),
    ],
)
def test_bad_mqtt_urls_are_refused_in_one_line(url: str, error: str) -> None:
    done = run_cli("run", "synthetic:?seconds=1", "--mqtt", url)
    assert done.returncode == 2
    assert error in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
