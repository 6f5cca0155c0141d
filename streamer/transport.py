"""An httpx transport that bounds a whole request, not each socket operation.

httpx's timeouts apply to each connect, write and read: a server that drips one
byte every half second never trips a 2 s read timeout and holds the request for as
long as it likes. Here every socket operation of a request made inside
``request_deadline(at)`` waits at most until ``at`` (monotonic), and one that starts
after it raises httpcore's own timeout, which httpx turns into ``httpx.ReadTimeout``
(or ``ConnectTimeout``/``WriteTimeout``) as usual.

The deadline is per thread: each sender thread makes one request at a time, and a
kept-alive connection used by several threads reads whichever deadline the thread
using it set.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import time
import typing
from collections.abc import Iterator

import httpcore
import httpx

__all__ = ["DeadlineTransport", "request_deadline"]

_local = threading.local()


@contextlib.contextmanager
def request_deadline(at: float | None) -> Iterator[None]:
    """Socket operations on this thread end by ``at`` (``time.monotonic()``)."""
    previous = getattr(_local, "at", None)
    _local.at = at
    try:
        yield
    finally:
        _local.at = previous


def _bounded(timeout: float | None, error: type[Exception]) -> float | None:
    at: float | None = getattr(_local, "at", None)
    if at is None:
        return timeout
    left = at - time.monotonic()
    if left <= 0:
        raise error("the request's deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _bounded(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> typing.Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_tcp(host, port, bounded, local_address, socket_options)
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        bounded = _bounded(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._backend.connect_unix_socket(path, bounded, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class DeadlineTransport(httpx.HTTPTransport):
    """``httpx.HTTPTransport`` whose requests honour ``request_deadline``.

    httpcore takes the network backend only in its pool's constructor, which
    httpx builds itself; the backend is wrapped in place (tests/test_client.py
    checks that a dripping server is cut off at the deadline, so a change in
    httpcore that undid this would fail there).
    """

    def __init__(self, **kwargs: typing.Any) -> None:
        super().__init__(**kwargs)
        pool = self._pool
        backend = getattr(pool, "_network_backend", None)
        if backend is None:
            raise RuntimeError("httpcore's pool has no network backend to wrap")
        pool._network_backend = _DeadlineBackend(backend)
