"""The sink contract, and the worker that runs each sink behind its own bounded queue."""

from __future__ import annotations

import collections
import enum
import logging
import threading
from collections.abc import Callable
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
    """One output frame: the annotated image (if any sink needs it), its record, and the
    analytics events it caused. At the end of a run, the events of the tracks still
    open come in an output with no record (``record`` empty: nothing to write)."""

    frame: Frame
    image: npt.NDArray[np.uint8] | None
    record: dict[str, Any]
    source_fps: float | None = None
    events: tuple[dict[str, Any], ...] = ()


class Sink(Protocol):
    """An output. ``write`` and ``close`` run on the sink's own worker thread, never
    anywhere else (GUI toolkits and HTTP clients stay on the thread that made them).

    Optional, looked up by name: ``queue_size`` (outputs buffered for it, 64),
    ``drop_policy(live) -> DropPolicy`` (what happens when its queue is full: by
    default live keeps the newest, recorded waits), ``idle()`` (on the worker thread,
    every half second with nothing to write), ``interrupt()`` (from any thread:
    stop waiting on retries, the run is being stopped) and ``max_width`` (an image
    output that shows frames no wider than this: with only such outputs, frames are
    drawn at that size, not the source's).
    """

    name: str
    wants_image: bool

    def write(self, output: Output) -> None: ...

    def close(self) -> None: ...


class DropPolicy(enum.Enum):
    BLOCK = "block"  # never lose an output: the renderer waits (recorded video, JSON lines)
    DROP_OLDEST = "drop-oldest"  # keep the newest (live window, live video)
    DROP_NEWEST = "drop-newest"  # keep what is queued (webhook outbox)


class SinkWorker:
    """Runs ``sink`` on thread ``streamer-sink-<name>``; ``put`` never blocks forever.

    A sink that fails is reported once (``on_failure``, on the worker thread) and
    gets nothing more; the other sinks are not affected.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        capacity: int = 64,
        policy: DropPolicy = DropPolicy.BLOCK,
        on_failure: Callable[[SinkWorker], None] | None = None,
        thread_name: str | None = None,
    ) -> None:
        self.sink = sink
        self.policy = policy
        self.capacity = capacity
        self._on_failure = on_failure
        self._items: collections.deque[Output] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._closed = False
        self.dropped = 0
        self.written = 0
        self.error: SinkError | None = None
        self._thread = threading.Thread(
            target=self._run, name=thread_name or f"streamer-sink-{sink.name}", daemon=True
        )

    def start(self) -> SinkWorker:
        self._thread.start()
        return self

    @property
    def failed(self) -> bool:
        return self.error is not None

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
                        "%s output: queue full for %.0f s, output dropped", self.sink.name, timeout
                    )
                    return False
                if self.error is not None:
                    self.dropped += 1
                    return False
            self._items.append(output)
            self._cond.notify_all()
            return True

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    if not self._items and not self._closing:
                        self._cond.wait(_IDLE_S)
                    if not self._items and self._closing:
                        return
                    output = self._items.popleft() if self._items else None
                    self._cond.notify_all()
                if output is None:
                    # outside the lock: a webhook's idle post may take seconds, and ``put``
                    # from the render thread must not wait for it
                    idle = getattr(self.sink, "idle", None)
                    if callable(idle) and self.error is None:
                        self._call(idle)
                    continue
                if self.error is None:
                    self._call(self.sink.write, output)
                    if self.error is None:
                        self.written += 1
                else:
                    self.dropped += 1
        finally:
            self._finish()

    def _finish(self) -> None:
        """Close the sink on its own thread (files finalized, windows destroyed there)."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
        self._call(self.sink.close)

    def _call(self, method: Any, *args: Any) -> None:
        try:
            method(*args)
        except Exception as exc:  # a bug in a sink must not take down the pipeline
            error = (
                exc
                if isinstance(exc, SinkError)
                else SinkError(f"{self.sink.name}: {type(exc).__name__}: {exc}")
            )
            with self._cond:
                first = self.error is None
                self.error = self.error or error
                self._cond.notify_all()
            if not first:
                return
            if isinstance(exc, SinkError):
                log.error("%s output failed: %s", self.sink.name, exc)
            else:
                log.error("%s output failed", self.sink.name, exc_info=exc)
            if self._on_failure is not None:
                try:
                    self._on_failure(self)
                except Exception:
                    log.exception("sink failure callback failed")

    def wants_frame(self) -> bool:
        """Whether the sink would use a frame drawn now (``wants_frame()`` where it has
        one: a preview nobody watches wants none); drawing is skipped when no sink does."""
        asked = getattr(self.sink, "wants_frame", None)
        return bool(asked()) if callable(asked) and self.error is None else self.error is None

    @property
    def interruptible(self) -> bool:
        """The sink waits on something outside (a network peer) that it can stop waiting on."""
        return callable(getattr(self.sink, "interrupt", None))

    @property
    def finished(self) -> bool:
        """The sink was closed (or its thread never ran): its file may be moved."""
        return self._closed and not self._thread.is_alive()

    def begin_close(self, *, interrupt: bool = False) -> None:
        """Ask the worker to write what is queued and close the sink; returns at once.

        ``interrupt``: the run is being stopped; the sink stops retrying (a webhook
        makes one short last attempt) so that shutdown takes seconds, not minutes.
        """
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        stop = getattr(self.sink, "interrupt", None)
        if interrupt and callable(stop):
            stop()
        if self._thread.ident is None:
            self._finish()  # never started: close here, nothing else will

    def join(self, timeout: float) -> None:
        if self._thread.ident is None:
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("%s output did not finish within %.1f s", self.sink.name, timeout)

    def close(self, timeout: float = 10.0, *, interrupt: bool = False) -> None:
        """Write what is queued, then close the sink, within ``timeout``."""
        self.begin_close(interrupt=interrupt)
        self.join(timeout)
