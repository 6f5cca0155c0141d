"""Event latency over MQTT: from an event's making (on the render thread, once its
result is in) to a subscriber on loopback, at 500 events/s.

Mosquitto (Debian ``mosquitto``) on a free 127.0.0.1 port. The events go the way a
camera's go: ``Output`` -> the camera's sink worker queue -> ``MqttPublisher`` (paho's
outbox and network thread) -> the broker -> a paho subscriber, 20 events a frame at 25
frames/s. The baseline, in the same run: bare paho publishing the same payloads at the
same rate. What the issue asks: p99 <= 50 ms above the result's own age, i.e. this
path's p99 <= 50 ms.

    python scripts/bench_mqtt.py [--seconds 20]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from streamer.frames import Frame
from streamer.mqtt import MqttPublisher
from streamer.sinks.base import DropPolicy, Output, SinkWorker

RATE, PER_FRAME = 500, 20


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Collector:
    def __init__(self, port: int, topic: str) -> None:
        self.latencies: list[float] = []
        self.ready = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{topic}")
        self.client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = self._received
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.ready.wait(10)

    def _received(self, client: Any, userdata: Any, message: paho.MQTTMessage) -> None:
        sent = json.loads(message.payload)["made_at"]
        self.latencies.append(time.time() - sent)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _event(index: int) -> dict[str, Any]:
    return {"event": "line_cross", "event_id": f"bench-{index}", "camera": "bench",
            "line": "door", "direction": "in", "track_id": index % 30, "made_at": time.time()}  # fmt: skip


def through_streamer(port: int, seconds: float) -> list[float]:
    collector = Collector(port, "streamer/events")
    publisher = MqttPublisher(f"mqtt://127.0.0.1:{port}").start(required=True)
    sink = publisher.for_camera("bench")
    worker = SinkWorker(sink, capacity=256, policy=DropPolicy.BLOCK, thread_name="bench-sink")
    worker.start()
    image = np.zeros((2, 2, 3), dtype=np.uint8)
    frames = int(seconds * RATE / PER_FRAME)
    for index in _paced(frames):
        events = tuple(_event(index * PER_FRAME + i) for i in range(PER_FRAME))
        worker.put(
            Output(frame=Frame(image=image, index=index), image=None, record={}, events=events)
        )
    _drain(collector, frames * PER_FRAME)
    worker.close(timeout=10)
    publisher.close()
    collector.close()
    return collector.latencies


def bare_paho(port: int, seconds: float) -> list[float]:
    collector = Collector(port, "bare/events")
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-bare")
    client.connect("127.0.0.1", port)
    client.loop_start()
    frames = int(seconds * RATE / PER_FRAME)
    for index in _paced(frames):
        for i in range(PER_FRAME):
            client.publish("bare/events", json.dumps(_event(index * PER_FRAME + i)), qos=1)
    _drain(collector, frames * PER_FRAME)
    client.loop_stop()
    client.disconnect()
    collector.close()
    return collector.latencies


def _paced(frames: int) -> Iterator[int]:
    """Frame indices, each when its time comes (PER_FRAME events a frame at RATE)."""
    start = time.monotonic()
    for index in range(frames):
        wait = start + index * PER_FRAME / RATE - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        yield index


def _drain(collector: Collector, expected: int) -> None:
    deadline = time.monotonic() + 30
    while len(collector.latencies) < expected and time.monotonic() < deadline:
        time.sleep(0.05)


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(mosquitto).exists():
        parser.error("mosquitto is not installed (Debian package mosquitto)")
    port = _port()
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "mosquitto.conf"
        config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        broker = subprocess.Popen([mosquitto, "-c", str(config)], stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    time.sleep(0.05)
            rows = {"bare paho (baseline)": bare_paho(port, args.seconds)}
            rows["streamer: sink worker + MqttPublisher"] = through_streamer(port, args.seconds)
        finally:
            broker.terminate()
            broker.wait(10)
    expected = int(args.seconds * RATE / PER_FRAME) * PER_FRAME
    print(f"\n### MQTT event latency, {RATE} events/s ({PER_FRAME} a frame at "
          f"{RATE // PER_FRAME} fps), {args.seconds:g} s, loopback\n")  # fmt: skip
    print("| path | received | p50 ms | p99 ms | max ms | target |")
    print("|---|---:|---:|---:|---:|---|")
    for label, values in rows.items():
        target = "p99 <= 50 ms" if label.startswith("streamer") else ""
        print(
            f"| {label} | {len(values)} / {expected} | {statistics.median(values) * 1000:.1f} | "
            f"{_pct(values, 0.99):.1f} | {max(values) * 1000:.1f} | {target} |"
        )


if __name__ == "__main__":
    main()
