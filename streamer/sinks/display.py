"""A window showing the annotated frames (cv2.imshow); q or Esc asks the pipeline to stop."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import cv2

from streamer.errors import SinkError
from streamer.sinks.base import Output

__all__ = ["DisplaySink", "display_available"]

_QUIT_KEYS = (ord("q"), ord("Q"), 27)


def display_available() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class DisplaySink:
    name = "display"
    wants_image = True

    def __init__(self, title: str, *, on_quit: Callable[[], None]) -> None:
        if not display_available():
            raise SinkError(
                "--show needs a display, and there is none (DISPLAY is not set); use --output"
            )
        self.title = title
        self._on_quit = on_quit
        self._opened = False

    def write(self, output: Output) -> None:
        if output.image is None:
            return
        try:
            if not self._opened:
                cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
                self._opened = True
            cv2.imshow(self.title, output.image)
            if (cv2.waitKey(1) & 0xFF) in _QUIT_KEYS:
                self._on_quit()
        except cv2.error as exc:
            raise SinkError(f"cannot show the window: {exc}") from exc

    def close(self) -> None:
        if self._opened:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
