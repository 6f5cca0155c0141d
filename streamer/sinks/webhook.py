"""Webhook: POST JSON batches of records, with retries and a bounded outbox."""

from __future__ import annotations

import collections
import logging
import time
from typing import Any

import httpx

from streamer.errors import ConfigError
from streamer.redaction import install_log_redaction, redact
from streamer.sinks.base import Output

__all__ = ["WebhookSink"]

log = logging.getLogger(__name__)


class WebhookSink:
    """Batches records and POSTs them as a JSON array; TLS is verified.

    The outbox holds at most ``outbox`` records: when the endpoint is down longer
    than that, the oldest are dropped and counted, and the pipeline never waits.
    """

    name = "webhook"
    wants_image = False

    def __init__(
        self,
        url: str,
        *,
        batch_size: int = 20,
        interval: float = 1.0,
        outbox: int = 1000,
        retries: int = 3,
        timeout: float = 5.0,
    ) -> None:
        parsed = httpx.URL(url)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ConfigError(f"webhook URL must be http(s)://..., got {redact(url)!r}")
        self.url = url
        self.batch_size = batch_size
        self.interval = interval
        self.retries = retries
        self._outbox: collections.deque[dict[str, Any]] = collections.deque(maxlen=outbox)
        self._last_post = time.monotonic()
        self.dropped = 0
        self.posted = 0
        install_log_redaction("httpx")
        self._http = httpx.Client(timeout=timeout, verify=True)

    def write(self, output: Output) -> None:
        if len(self._outbox) == self._outbox.maxlen:
            self.dropped += 1
        self._outbox.append(output.record)
        if len(self._outbox) >= self.batch_size:
            self._post()

    def idle(self) -> None:
        if self._outbox and time.monotonic() - self._last_post >= self.interval:
            self._post()

    def _post(self) -> None:
        batch = list(self._outbox)[: self.batch_size * 5]
        self._last_post = time.monotonic()
        for attempt in range(self.retries + 1):
            try:
                response = self._http.post(self.url, json=batch)
                if response.status_code < 300:
                    for _ in batch:
                        self._outbox.popleft()
                    self.posted += len(batch)
                    return
                reason = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                reason = type(exc).__name__
            if attempt < self.retries:
                time.sleep(min(2.0, 0.2 * 2**attempt))
        log.warning(
            "webhook %s: %s; %d records kept for later", redact(self.url), reason, len(self._outbox)
        )

    def close(self) -> None:
        if self._outbox:
            self._post()
        if self._outbox:
            self.dropped += len(self._outbox)
            log.warning("webhook: %d records could not be delivered", len(self._outbox))
        self._http.close()
