"""Webhook: POST JSON batches of records, with retries and a bounded outbox."""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

import httpx

from streamer.errors import ConfigError
from streamer.redaction import install_log_redaction, redact
from streamer.sinks.base import DropPolicy, Output

__all__ = ["WebhookSink"]

log = logging.getLogger(__name__)

_LAST_TRY_S = 1.0  # once interrupted: one short attempt for what is left, then give up


def check_webhook_url(url: str) -> httpx.URL:
    """The URL parsed, or a ``ConfigError`` that does not show its credentials."""
    try:
        parsed = httpx.URL(url)
        port = parsed.port  # httpx checks the port's range while parsing
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise ConfigError(f"webhook URL {redact(url)[:200]!r} is not valid: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"webhook URL must be http(s)://..., got {redact(url)[:200]!r}")
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"webhook URL port must be 1..65535, got {port}")
    return parsed


class WebhookSink:
    """Batches records (and/or analytics events) and POSTs them as a JSON array; TLS is
    verified. An event is told from a record by its ``event`` key.

    The outbox holds at most ``outbox`` items: when the endpoint is down longer than
    that, the oldest are dropped and counted, and the pipeline never waits.
    """

    name = "webhook"
    wants_image = False
    queue_size = 64

    @staticmethod
    def drop_policy(live: bool) -> DropPolicy:
        """Keep what is queued: the outbox already bounds and counts what is lost."""
        return DropPolicy.DROP_NEWEST

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = 20,
        interval: float = 1.0,
        outbox: int = 1000,
        retries: int = 3,
        timeout: float = 5.0,
        records: bool = True,
        events: bool = False,
    ) -> None:
        """``records``, ``events``: what is posted (the pipeline makes analytics events
        only for a sink that wants them)."""
        check_webhook_url(url)
        self.url = url
        self.records = records
        self.events = events
        self.batch_size = batch_size
        self.interval = interval
        self.retries = retries
        self._outbox: collections.deque[dict[str, Any]] = collections.deque(maxlen=outbox)
        self._last_post = time.monotonic()
        self._interrupted = threading.Event()
        self.dropped = 0
        self.posted = 0
        install_log_redaction("httpx")
        self._http = httpx.Client(timeout=timeout, verify=True)

    @property
    def undelivered(self) -> int:
        """Records that never reached the endpoint: dropped from the outbox, or left in it."""
        return self.dropped + len(self._outbox)

    def write(self, output: Output) -> None:
        items = [output.record] if self.records and output.record else []
        if self.events:
            items.extend(output.events)
        for item in items:
            if len(self._outbox) == self._outbox.maxlen:
                self.dropped += 1
            self._outbox.append(item)
        if len(self._outbox) >= self.batch_size:
            self._post()

    def idle(self) -> None:
        if self._outbox and time.monotonic() - self._last_post >= self.interval:
            self._post()

    def interrupt(self) -> None:
        """From any thread: stop retrying; ``close`` makes one short last attempt."""
        self._interrupted.set()

    def _post(self, *, timeout: float | None = None) -> None:
        batch = list(self._outbox)[: self.batch_size * 5]
        self._last_post = time.monotonic()
        retries = 0 if self._interrupted.is_set() else self.retries
        reason = "not sent"
        for attempt in range(retries + 1):
            try:
                response = self._http.post(
                    self.url, json=batch, timeout=timeout if timeout else httpx.USE_CLIENT_DEFAULT
                )
                if response.status_code < 300:
                    for _ in batch:
                        self._outbox.popleft()
                    self.posted += len(batch)
                    return
                reason = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
            if attempt < retries and self._interrupted.wait(min(2.0, 0.2 * 2**attempt)):
                break
        log.warning(
            "webhook %s: %s; %d records kept for later",
            redact(self.url)[:200],
            reason,
            len(self._outbox),
        )

    def close(self) -> None:
        try:
            while self._outbox:
                left = len(self._outbox)
                self._post(timeout=_LAST_TRY_S if self._interrupted.is_set() else None)
                if len(self._outbox) >= left or self._interrupted.is_set():
                    break
            if self._outbox:
                log.warning("webhook: %d records could not be delivered", self.undelivered)
        finally:
            self._http.close()
