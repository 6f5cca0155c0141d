"""The one exception tree of streamer.

::

    StreamerError
    ├── ConfigError (ValueError)        bad settings or arguments
    ├── SourceError                      a video source cannot be opened or read
    ├── ModelError                       model weights missing, corrupt or unloadable
    ├── InferenceError                   a request to an inference API failed
    │   ├── AuthError                    401/403: key missing or not allowed
    │   ├── PlanError                    402: the model needs the v2 API or a plan upgrade
    │   ├── ModelNotFound                404: unknown model or version
    │   ├── RequestTooLarge              413: request over the route's size limit
    │   ├── RateLimited                  429: carries ``retry_after`` seconds
    │   │   └── QuotaExhausted           429 asking to wait longer than we may (--max-retry-wait)
    │   ├── ServerError                  5xx
    │   ├── InferenceTimeout (TimeoutError)
    │   ├── ConnectionFailed (ConnectionError)
    │   ├── ApiUnavailable               every request failed for longer than the run waits
    │   └── BadResponse                  malformed JSON, an HTML page, a redirect, absurd sizes
    └── SinkError                        an output could not be written

Foreign errors (httpx, av, onnxruntime) are translated at one boundary each with
``raise ... from exc``; messages never contain an API key (see ``redact``).
"""

from __future__ import annotations

from streamer.redaction import redact

__all__ = [
    "ApiUnavailable",
    "AuthError",
    "BadResponse",
    "ConfigError",
    "ConnectionFailed",
    "InferenceError",
    "InferenceTimeout",
    "ModelError",
    "ModelNotFound",
    "PlanError",
    "QuotaExhausted",
    "RateLimited",
    "RequestTooLarge",
    "ServerError",
    "SinkError",
    "SourceError",
    "StreamerError",
    "redact",
]


class StreamerError(Exception):
    """Base of every error streamer raises on purpose."""


class ConfigError(StreamerError, ValueError):
    """A setting or argument is invalid."""


class SourceError(StreamerError):
    """A video source cannot be opened or read."""


class ModelError(StreamerError):
    """Model weights are missing, corrupt or cannot be loaded."""


class SinkError(StreamerError):
    """An output (video file, JSON lines, webhook) could not be written."""


class InferenceError(StreamerError):
    """A request to an inference API failed.

    ``status`` is the HTTP status when there was a response, else ``None``.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuthError(InferenceError):
    """401/403: the API key is missing or may not use this model."""


class PlanError(InferenceError):
    """402: the model is only served by the v2 API or needs a plan upgrade."""


class ModelNotFound(InferenceError):
    """404: unknown model or version."""


class RequestTooLarge(InferenceError):
    """413: the request exceeds the route's size limit."""


class RateLimited(InferenceError):
    """429: too many requests; retry after ``retry_after`` seconds when known."""

    def __init__(
        self, message: str, *, status: int | None = 429, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class QuotaExhausted(RateLimited):
    """429 with a ``Retry-After`` longer than the run may wait: the API is exhausted."""


class ServerError(InferenceError):
    """5xx from the inference server."""


class InferenceTimeout(InferenceError, TimeoutError):
    """No answer within the request timeout."""


class ConnectionFailed(InferenceError, ConnectionError):
    """The inference server could not be reached."""


class ApiUnavailable(InferenceError):
    """The API failed every request for longer than a recorded run waits for it."""


class BadResponse(InferenceError):
    """The server answered with something that is not the expected JSON."""
