"""Running the local server: in the foreground (``streamer serve``) or in a thread.

Example, embedding it (tests, the demo, ``streamer run`` without an API URL)::

    with ServerThread(ServerConfig(port=0)) as server:
        print(server.url)  # http://127.0.0.1:<free port>
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from types import TracebackType
from typing import Any

from streamer.errors import ConfigError, StreamerError
from streamer.redaction import install_log_redaction
from streamer.server.app import InferenceService, ServerConfig, create_app
from streamer.server.models import ModelRegistry

__all__ = [
    "ServerProcess",
    "ServerThread",
    "UvicornThread",
    "bind_socket",
    "is_loopback",
    "serve",
]

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket (``ConfigError`` naming the address when it is taken)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit this. Without it every response waits ~40 ms: the
    # body segment sits behind Nagle until the client's delayed ACK arrives.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _uvicorn(app: Any, *, access_log: bool = False) -> Any:
    """uvicorn serving ``app``: no lifespan, no log config of its own, keys masked."""
    import uvicorn

    install_log_redaction("uvicorn.access", "uvicorn.error")
    config = uvicorn.Config(
        app,
        lifespan="off",
        access_log=access_log,
        log_config=None,
        timeout_graceful_shutdown=1,
        timeout_keep_alive=30,
    )
    return uvicorn.Server(config)


class UvicornThread:
    """An ASGI app served by uvicorn on a named background thread, from a socket bound
    here (so the port is known, and taken, before ``start``). ``name`` may hold
    ``{port}``."""

    def __init__(
        self, app: Any, host: str, port: int, *, name: str, access_log: bool = False
    ) -> None:
        self._socket = bind_socket(host, port)
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        self._server = _uvicorn(app, access_log=access_log)
        self._thread = threading.Thread(
            target=self._run, name=name.format(port=self.port), daemon=True
        )
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _run(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # reported by start(), the thread must not die silently
            self._error = exc
            log.exception("%s failed", self._thread.name)

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._server.started:
            if self._error is not None or not self._thread.is_alive():
                raise StreamerError(f"{self._thread.name} failed to start: {self._error}")
            if time.monotonic() > deadline:
                raise StreamerError(f"{self._thread.name} did not start within 10 s")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(_STOP_TIMEOUT_S)
        if self._thread.is_alive():
            log.warning("%s did not stop within %.0f s", self._thread.name, _STOP_TIMEOUT_S)
        self._socket.close()


class ServerThread:
    """The server on a background thread, bound before ``start`` returns."""

    def __init__(
        self,
        config: ServerConfig | None = None,
        *,
        registry: ModelRegistry | None = None,
        access_log: bool = False,
    ) -> None:
        self.config = config or ServerConfig(port=0)
        app = create_app(self.config, registry)
        self.service: InferenceService = app.state.service
        self._thread = UvicornThread(
            app,
            self.config.host,
            self.config.port,
            name="streamer-server-{port}",
            access_log=access_log,
        )
        self.port = self._thread.port

    @property
    def url(self) -> str:
        return self._thread.url

    def start(self) -> ServerThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.service.close()
        self._thread.stop()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve(config: ServerConfig, *, access_log: bool = False) -> None:
    """Serve in the foreground until SIGINT/SIGTERM."""
    sock = bind_socket(config.host, config.port)
    log.info("serving on http://%s:%d", config.host, sock.getsockname()[1])
    app = create_app(config, None)
    server, service = _uvicorn(app, access_log=access_log), app.state.service
    try:
        server.run(sockets=[sock])
    finally:
        service.close()
        sock.close()


class ServerProcess:
    """``streamer serve`` in a child process (its own GIL and CPU), on a free port.

    For benchmarks and soak runs, where the client's CPU must be measured apart::

        with ServerProcess("--latency-ms", "200") as server:
            print(server.url)
    """

    def __init__(self, *serve_args: str, start_timeout: float = 30.0) -> None:
        import subprocess
        import sys

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "streamer.cli", "serve", "--port", str(port), *serve_args]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._wait_healthy(start_timeout)

    def _wait_healthy(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while True:
            try:
                httpx.get(f"{self.url}/health", timeout=1)
                return
            except httpx.TransportError as exc:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise StreamerError(f"streamer serve did not start at {self.url}") from exc
                time.sleep(0.1)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(_STOP_TIMEOUT_S)
            except Exception:
                self.process.kill()
                self.process.wait(_STOP_TIMEOUT_S)

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
