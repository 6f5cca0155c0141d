"""Analytics events and counts to an MQTT broker, with paho-mqtt: one connection for the
whole run, shared by every camera.

Topics (``streamer`` is ``--mqtt-topic``'s default), in the shape Frigate users know:

=====================================  ==========================================  ======
``streamer/available``                 ``online`` / ``offline`` (the last will)   retained
``streamer/events``                    every analytics event, JSON                QoS 1
``streamer/<camera>/<line>/in``, ``/out``  the line's count that way                retained
``streamer/<camera>/<zone>/<class>``   the zone's occupancy by class, and ``all``  retained
``streamer/<camera>/status``           ``streaming``, ``ended``                   retained
``streamer/stats``                     every camera's figures, every 10 s, JSON
=====================================  ==========================================  ======

Publishing never blocks a camera: paho queues what it cannot send yet (the broker is
down or slow) in a bounded outbox, in order, and sends it when the connection is back;
QoS 1 messages not acknowledged are sent again. When the outbox is full, messages are
dropped and counted. The broker URL's credentials never appear in logs or errors.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from streamer.errors import ConfigError, SinkError
from streamer.redaction import redact
from streamer.sinks.base import Output

__all__ = ["MqttPublisher", "MqttTarget", "parse_mqtt_url"]

log = logging.getLogger(__name__)

_QOS = 1


@dataclass(frozen=True)
class MqttTarget:
    host: str
    port: int
    tls: bool
    username: str | None
    password: str | None

    @property
    def shown(self) -> str:
        """Where, without the credentials."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_mqtt_url(url: str) -> MqttTarget:
    """``mqtt://[user:pass@]host[:1883]`` or ``mqtts://…[:8883]``; ``ConfigError`` in one
    line, credentials masked, when it is not one."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"--mqtt {redact(url)}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(
            f"--mqtt must look like mqtt://[user:pass@]host[:port], got {redact(url)}"
        )
    if parts.path not in ("", "/"):
        raise ConfigError(
            f"--mqtt {redact(url)}: no path is expected (topics come from --mqtt-topic)"
        )
    tls = scheme == "mqtts"
    return MqttTarget(
        host=parts.hostname,
        port=port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


class MqttPublisher:
    """The run's connection to the broker; ``for_camera`` gives each camera its sink."""

    def __init__(
        self,
        url: str,
        *,
        topic: str = "streamer",
        outbox: int = 10_000,
        client_id: str | None = None,
        available: str = "available",
    ) -> None:
        """``available``: the topic (under ``topic``) saying ``online``/``offline``, the
        last will's; a camera in a Ray actor has its own (``<camera>/available``)."""
        self.target = parse_mqtt_url(url)
        self.topic = topic.strip("/") or "streamer"
        if any(c in self.topic for c in "+#"):
            raise ConfigError(f"--mqtt-topic must not contain + or #, got {self.topic!r}")
        try:
            socket.getaddrinfo(self.target.host, self.target.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ConfigError(
                f"--mqtt {self.target.shown}: the host does not resolve ({exc.strerror or exc})"
            ) from exc
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"streamer-{int(time.time() * 1000) % 10**9}",
        )
        if self.target.username is not None:
            self._client.username_pw_set(self.target.username, self.target.password)
        if self.target.tls:
            self._client.tls_set(cert_reqs=ssl.CERT_REQUIRED)
        self._available = f"{self.topic}/{available}"
        self._client.will_set(self._available, "offline", qos=_QOS, retain=True)
        self._client.max_queued_messages_set(outbox)
        self._client.reconnect_delay_set(min_delay=1, max_delay=5)
        self._client.on_connect = self._connected
        self._client.on_disconnect = self._disconnected
        self._lock = threading.Lock()
        self._up = threading.Event()
        self._refused: str | None = None
        self._warned = False
        self._closing = False
        self._started = False
        self._retained: dict[str, str] = {}  # topic -> the payload last published
        self._zone_classes: dict[tuple[str, str], set[str]] = {}  # (camera, zone) -> seen
        self.published = 0
        self.dropped = 0

    # -- connection ------------------------------------------------------------------------

    def start(self, *, required: bool = False, timeout: float = 5.0) -> MqttPublisher:
        """Connect in the background (paho's network thread); ``required``: wait for the
        broker up to ``timeout`` s and raise ``SinkError`` if it does not answer."""
        self._client.connect_async(self.target.host, self.target.port, keepalive=30)
        self._client.loop_start()
        self._started = True
        if required and not self._up.wait(timeout):
            self._client.loop_stop()
            self._started = False
            why = self._refused or f"no answer within {timeout:g} s"
            raise SinkError(f"cannot reach the MQTT broker at {self.target.shown}: {why}")
        return self

    def _connected(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            self._refused = str(reason)
            log.warning("MQTT broker %s refused the connection: %s", self.target.shown, reason)
            return
        self._up.set()
        self._warned = False
        log.info("connected to the MQTT broker at %s", self.target.shown)
        client.publish(self._available, "online", qos=_QOS, retain=True)

    def _disconnected(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._up.clear()
        if not self._warned and not self._closing:
            self._warned = True
            log.warning(
                "MQTT broker %s went away (%s): reconnecting; events wait in the outbox",
                self.target.shown,
                reason,
            )

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    # -- publishing ------------------------------------------------------------------------

    def publish(self, topic: str, payload: str, *, retain: bool = False) -> None:
        """Queue one message; never blocks. A full outbox drops it (counted)."""
        if retain:
            with self._lock:
                if self._retained.get(topic) == payload:
                    return  # unchanged: the broker has it
                self._retained[topic] = payload
        info = self._client.publish(topic, payload, qos=_QOS, retain=retain)
        with self._lock:
            if info.rc == paho.MQTT_ERR_QUEUE_SIZE:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning("MQTT outbox full: %d messages dropped so far", self.dropped)
            else:
                self.published += 1

    def publish_events(self, events: tuple[dict[str, Any], ...]) -> None:
        for event in events:
            self.publish(f"{self.topic}/events", json.dumps(event, separators=(",", ":")))

    def publish_counts(self, camera: str, record: Mapping[str, Any]) -> None:
        for line, counts in record.get("lines", {}).items():
            for direction in ("in", "out"):
                self.publish(
                    f"{self.topic}/{camera}/{line}/{direction}", str(counts[direction]), retain=True
                )
        for zone, counts in record.get("zones", {}).items():
            self.publish(f"{self.topic}/{camera}/{zone}/all", str(counts["occupancy"]), retain=True)
            # every class once seen in the zone: one that left is published as 0
            seen = self._zone_classes.setdefault((camera, zone), set())
            seen.update(counts["by_class"])
            for name in sorted(seen):
                value = str(counts["by_class"].get(name, 0))
                self.publish(f"{self.topic}/{camera}/{zone}/{name}", value, retain=True)

    def publish_stats(self, stats: Mapping[str, Any]) -> None:
        self.publish(f"{self.topic}/stats", json.dumps(stats, separators=(",", ":")))

    def for_camera(self, camera: str) -> _MqttCameraSink:
        return _MqttCameraSink(self, camera)

    def close(self, timeout: float = 5.0) -> None:
        """Say ``offline``, send what is queued (waiting up to ``timeout`` s for a broker
        that is away), disconnect."""
        if not self._started:
            return
        self._started = False
        self._closing = True
        deadline = time.monotonic() + timeout
        info = self._client.publish(self._available, "offline", qos=_QOS, retain=True)
        # a broker that is back within the time still gets what waits in the outbox; the
        # last message goes after everything queued before it: waiting for it flushes all
        if self._up.wait(timeout):
            with contextlib.suppress(RuntimeError, ValueError):  # full queue, connection gone
                info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        delivered = False
        with contextlib.suppress(RuntimeError, ValueError):  # raises when never connected
            delivered = info.is_published()
        if not delivered:
            unsent = len(getattr(self._client, "_out_messages", {}))
            if unsent:
                log.warning("MQTT: %d messages not delivered before the end", unsent)
        self._client.disconnect()
        self._client.loop_stop()


class _MqttCameraSink:
    """One camera's events and counts to the run's broker connection (a ``Sink``)."""

    name = "mqtt"
    wants_image = False
    events = True  # the pipeline makes analytics events for it
    queue_size = 256

    def __init__(self, publisher: MqttPublisher, camera: str) -> None:
        self._publisher = publisher
        self._camera = camera
        self._started = False

    def write(self, output: Output) -> None:
        publisher = self._publisher
        if not self._started:
            self._started = True
            publisher.publish(f"{publisher.topic}/{self._camera}/status", "streaming", retain=True)
        publisher.publish_events(output.events)
        if output.record:
            publisher.publish_counts(self._camera, output.record)

    def close(self) -> None:
        publisher = self._publisher
        publisher.publish(f"{publisher.topic}/{self._camera}/status", "ended", retain=True)
