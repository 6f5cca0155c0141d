"""An httpx transport that bounds a whole request, not each socket operation.

httpx's timeouts apply to each connect, write and read: a server that drips one
byte every half second never trips a 2 s read timeout and holds the request for as
long as it likes. Here every socket operation of a request made inside
``request_deadline(at)`` waits at most until ``at`` (monotonic), and one that starts
after it raises httpcore's own timeout, which httpx turns into ``httpx.ReadTimeout``
(or ``ConnectTimeout``/``WriteTimeout``) as usual.

The deadline is per thread: each sender thread makes one request at a time, and a
kept-alive connection used by several threads reads whichever deadline the thread
using it set. ``abandon`` (an event) ends a request early from another thread: a
camera removed while its request is in flight does not wait for the answer.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
import typing
from collections.abc import Iterator

import httpcore
import httpx

__all__ = ["DeadlineTransport", "SharedTransport", "request_deadline"]

_local = threading.local()


_ABANDON_POLL_S = 0.2  # how often a read looks at its abandon event


@contextlib.contextmanager
def request_deadline(at: float | None, abandon: threading.Event | None = None) -> Iterator[None]:
    """Socket operations on this thread end by ``at`` (``time.monotonic()``), or soon
    after ``abandon`` is set."""
    previous = getattr(_local, "at", None), getattr(_local, "abandon", None)
    _local.at, _local.abandon = at, abandon
    try:
        yield
    finally:
        _local.at, _local.abandon = previous


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
        abandon: threading.Event | None = getattr(_local, "abandon", None)
        if abandon is None:
            return self._stream.read(max_bytes, _bounded(timeout, httpcore.ReadTimeout))
        # waiting in short steps: a timed-out recv consumed nothing, so trying again is safe
        while True:
            if abandon.is_set():
                raise httpcore.ReadTimeout("the request was abandoned")
            bounded = _bounded(timeout, httpcore.ReadTimeout)
            step = _ABANDON_POLL_S if bounded is None else min(bounded, _ABANDON_POLL_S)
            try:
                return self._stream.read(max_bytes, step)
            except httpcore.ReadTimeout:
                if bounded is not None and bounded <= _ABANDON_POLL_S:
                    raise

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


class SharedTransport(httpx.BaseTransport):
    """One connection pool lent to several clients (every camera sending to one host):
    closing a client leaves the pool open for the others; its owner closes it.

    Its ``max_connections`` bounds the requests in flight to the host, all cameras
    together: a request beyond it waits for a connection to come free.
    """

    def __init__(self, max_connections: int) -> None:
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._pool = DeadlineTransport(
            limits=limits, socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._pool.handle_request(request)

    def borrow(self) -> httpx.BaseTransport:
        """A view of the pool whose ``close`` does nothing (for one client)."""
        return _Borrowed(self)

    def close(self) -> None:
        self._pool.close()


class _Borrowed(httpx.BaseTransport):
    def __init__(self, shared: SharedTransport) -> None:
        self._shared = shared

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._shared.handle_request(request)

    def close(self) -> None:
        """The pool is the owner's to close."""
