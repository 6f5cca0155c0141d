"""The sink contract, and the worker that runs each sink behind its own bounded queue."""

from __future__ import annotations

import collections
import enum
import logging
import threading
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from streamer.errors import SinkError
from streamer.frames import Frame

__all__ = ["DropPolicy", "Output", "Sink", "SinkWorker"]

log = logging.getLogger(__name__)

_IDLE_S = 0.5


@dataclass(frozen=True)
class Output:
    """One output frame: the annotated image (if any sink needs it) and its record."""

    frame: Frame
    image: npt.NDArray[np.uint8] | None
    record: dict[str, Any]
    source_fps: float | None = None


class Sink(Protocol):
    name: str
    wants_image: bool

    def write(self, output: Output) -> None: ...

    def close(self) -> None: ...


class DropPolicy(enum.Enum):
    BLOCK = "block"  # never lose an output: the renderer waits (recorded video, JSON lines)
    DROP_OLDEST = "drop-oldest"  # keep the newest (live window, live video)
    DROP_NEWEST = "drop-newest"  # keep what is queued (webhook outbox)


class SinkWorker:
    """Runs ``sink`` on thread ``streamer-sink-<name>``; ``put`` never blocks forever."""

    def __init__(
        self, sink: Sink, *, capacity: int = 64, policy: DropPolicy = DropPolicy.BLOCK
    ) -> None:
        self.sink = sink
        self.policy = policy
        self.capacity = capacity
        self._items: collections.deque[Output] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self.dropped = 0
        self.written = 0
        self.error: SinkError | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"streamer-sink-{sink.name}", daemon=True
        )
        self._thread.start()

    def put(self, output: Output, timeout: float = 10.0) -> bool:
        """Queue ``output``; ``False`` if it was dropped (policy, failure or timeout)."""
        with self._cond:
            if self.error is not None or self._closing:
                self.dropped += 1
                return False
            if len(self._items) >= self.capacity:
                if self.policy is DropPolicy.DROP_NEWEST:
                    self.dropped += 1
                    return False
                if self.policy is DropPolicy.DROP_OLDEST:
                    self._items.popleft()
                    self.dropped += 1
                elif not self._cond.wait_for(
                    lambda: len(self._items) < self.capacity or self.error is not None, timeout
                ):
                    self.dropped += 1
                    log.warning(
                        "sink %s: queue full for %.0f s, output dropped", self.sink.name, timeout
                    )
                    return False
            self._items.append(output)
            self._cond.notify_all()
            return True

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._items and not self._closing:
                    self._cond.wait(_IDLE_S)
                if not self._items:
                    if self._closing:
                        return
                    idle = getattr(self.sink, "idle", None)
                    if callable(idle):
                        self._call(idle)
                    continue
                output = self._items.popleft()
                self._cond.notify_all()
            if self.error is None:
                self._call(self.sink.write, output)
                if self.error is None:
                    self.written += 1

    def _call(self, method: Any, *args: Any) -> None:
        try:
            method(*args)
        except SinkError as exc:
            with self._cond:
                self.error = exc
                self._cond.notify_all()
            log.error("sink %s failed: %s", self.sink.name, exc)
        except Exception as exc:  # a bug in a sink must not take down the pipeline
            with self._cond:
                self.error = SinkError(f"{self.sink.name}: {type(exc).__name__}: {exc}")
                self._cond.notify_all()
            log.exception("sink %s failed", self.sink.name)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then close the sink (finalize files), within ``timeout``."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("sink %s did not drain within %.0f s", self.sink.name, timeout)
        try:
            self.sink.close()
        except SinkError as exc:
            self.error = self.error or exc
            log.error("sink %s failed to close: %s", self.sink.name, exc)
