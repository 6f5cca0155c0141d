"""A window showing the annotated frames (cv2.imshow); q or Esc asks the pipeline to stop.

HighGUI (OpenCV's Qt backend here) must run on the main thread: Qt's widgets and
timers belong to the thread that made the application, and from any other thread
``waitKey`` stalls and the window never paints. So the sink's worker thread only
hands the newest frame over (latest wins, never a queue), and the main thread calls
``pump()`` every few milliseconds to show it and read the keyboard; ``streamer run``
does so while it waits for the pipeline. The display is checked when the sink is
made, before the run: Qt aborts the whole process (exit 134, records lost) when it
cannot open one.

Example (the Python API; ``pump`` from the main thread)::

    display = DisplaySink("camera", on_quit=pipeline.stop)
    ...
    while not pipeline.wait(0.02):
        display.pump()
    display.destroy()
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from streamer.errors import SinkError
from streamer.sinks.base import DropPolicy, Output

__all__ = ["DisplaySink", "display_problem"]

_QUIT_KEYS = (ord("q"), ord("Q"), 27)
_X11_TCP_BASE = 6000
PUMP_INTERVAL_S = 0.01  # how often the main thread should call pump()


def _x11_reachable(display: str) -> bool:
    """Whether an X server answers at ``display`` (``:0``, ``unix:1``, ``host:0.0``)."""
    host, _, rest = display.rpartition(":")
    number = rest.split(".", 1)[0]
    if not number.isdigit():
        return False
    try:
        if host in ("", "unix"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(1.0)
                path = f"/tmp/.X11-unix/X{number}"
                try:
                    sock.connect(path)
                except OSError:
                    sock.connect(f"\0{path}")  # the abstract socket, where it is used
                return True
        with socket.create_connection((host, _X11_TCP_BASE + int(number)), timeout=1.0):
            return True
    except OSError:
        return False


def display_problem() -> str | None:
    """Why no window can be opened here, or ``None`` when one can."""
    if not sys.platform.startswith("linux"):
        return None
    if os.environ.get("QT_QPA_PLATFORM", "").startswith(("offscreen", "minimal")):
        return None
    wayland = os.environ.get("WAYLAND_DISPLAY")
    if wayland:
        runtime = os.environ.get("XDG_RUNTIME_DIR", "")
        if Path(runtime, wayland).exists() or Path(wayland).is_absolute():
            return None
    display = os.environ.get("DISPLAY")
    if not display:
        return "there is none (DISPLAY is not set)"
    if not _x11_reachable(display):
        return f"DISPLAY={display[:40]} cannot be opened (no X server answers there)"
    return None


class DisplaySink:
    name = "display"
    wants_image = True
    queue_size = 8  # a window shows the newest frame; a deep queue only adds delay

    @staticmethod
    def drop_policy(live: bool) -> DropPolicy:
        return DropPolicy.DROP_OLDEST if live else DropPolicy.BLOCK

    def __init__(self, title: str, *, on_quit: Callable[[], None]) -> None:
        problem = display_problem()
        if problem is not None:
            raise SinkError(f"--show needs a display, and {problem}; use --output instead")
        self.title = title
        self._on_quit = on_quit
        self._lock = threading.Lock()
        self._latest: npt.NDArray[np.uint8] | None = None
        self._opened = False
        self.shown = 0

    # -- the sink's worker thread: no HighGUI here -------------------------------------------

    def write(self, output: Output) -> None:
        if output.image is not None:
            with self._lock:
                self._latest = output.image

    def close(self) -> None:
        """Nothing to do on the worker thread; the main thread calls ``destroy``."""

    # -- the main thread ---------------------------------------------------------------------

    def pump(self) -> None:
        """Show the newest frame (if a new one came) and handle the keyboard."""
        with self._lock:
            image, self._latest = self._latest, None
        try:
            if image is not None:
                if not self._opened:
                    cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
                    self._opened = True
                cv2.imshow(self.title, image)
                self.shown += 1
            if self._opened and (cv2.waitKey(1) & 0xFF) in _QUIT_KEYS:
                self._on_quit()
        except cv2.error as exc:
            raise SinkError(f"cannot show the window: {exc}") from exc

    def destroy(self) -> None:
        if self._opened:
            self._opened = False
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
