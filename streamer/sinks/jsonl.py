"""JSON lines: one record per output frame, to a file or stdout, flushed line by line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TextIO

from streamer.errors import SinkError
from streamer.sinks.base import Output

__all__ = ["JsonLinesSink"]


class JsonLinesSink:
    name = "jsonl"
    wants_image = False

    def __init__(self, target: str | Path) -> None:
        self.target = str(target)
        self._owned = self.target != "-"
        self._file: TextIO = _open(self.target) if self._owned else sys.stdout

    def write(self, output: Output) -> None:
        try:
            self._file.write(json.dumps(output.record, separators=(",", ":")) + "\n")
            if not self._owned:
                self._file.flush()
        except (OSError, ValueError) as exc:
            raise SinkError(f"cannot write JSON lines to {self.target}: {exc}") from exc

    def close(self) -> None:
        try:
            self._file.flush()
            if self._owned:
                self._file.close()
        except OSError as exc:
            raise SinkError(f"cannot finish {self.target}: {exc.strerror}") from exc


def _open(path: str) -> TextIO:
    """Line-buffered, so a reader tailing the file sees whole records as they come."""
    try:
        return open(path, "w", buffering=1, encoding="utf-8")
    except OSError as exc:
        raise SinkError(f"cannot write JSON lines to {path}: {exc.strerror}") from exc
