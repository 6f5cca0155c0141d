"""JSON lines: one record per output frame (or, as the events output, one analytics
event a line), to a file or stdout, flushed line by line.

A file is written under a temporary name and renamed into place when finished
(``streamer.outputs``); a write that fails (disk full) is cut back to the last whole
line, so every line of what is kept parses.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import TextIO

from streamer.errors import SinkError
from streamer.outputs import STDOUT, OutputFile
from streamer.sinks.base import Output

__all__ = ["JsonLinesSink"]


class JsonLinesSink:
    wants_image = False

    def __init__(self, target: str | Path | OutputFile, *, events: bool = False) -> None:
        """``target``: a path (claimed here, committed on close), ``-`` for stdout, or an
        ``OutputFile`` claimed by the caller, who then commits it. ``events``: write the
        outputs' analytics events, not their records."""
        self.events = events
        self.name = "events" if events else "jsonl"
        self._claim: OutputFile | None = None
        self._owns_claim = False
        if isinstance(target, OutputFile):
            self._claim = target
        elif str(target) != STDOUT:
            self._claim = OutputFile.claim(target)
            self._owns_claim = True
        self.target = str(self._claim.target) if self._claim is not None else STDOUT
        self._file: TextIO = _open(self._claim) if self._claim is not None else sys.stdout
        self._good = 0  # bytes of whole lines written
        self.lines = 0
        self.failed = False

    def write(self, output: Output) -> None:
        items = output.events if self.events else [output.record] if output.record else []
        if not items:
            return
        line = "".join(json.dumps(item, separators=(",", ":")) + "\n" for item in items)
        try:
            self._file.write(line)
            if self._claim is None:
                self._file.flush()
        except BrokenPipeError as exc:
            self.failed = True
            _silence_stdout()
            raise SinkError("the reader of the JSON lines on stdout went away") from exc
        except (OSError, ValueError) as exc:
            self.failed = True
            self._cut_to_whole_lines()
            reason = getattr(exc, "strerror", None) or str(exc)
            raise SinkError(f"cannot write JSON lines to {self.target}: {reason}") from exc
        self._good += len(line.encode())
        self.lines += len(items)

    def _cut_to_whole_lines(self) -> None:
        if self._claim is None:
            return
        with contextlib.suppress(OSError, ValueError):
            self._file.close()
        with contextlib.suppress(OSError):
            os.truncate(self._claim.temp, self._good)

    def close(self) -> None:
        try:
            if self._claim is None:
                if not self.failed:
                    self._file.flush()
                return
            if not self._file.closed:
                self._file.close()
        except BrokenPipeError:
            _silence_stdout()
        except OSError as exc:
            self.failed = True
            self._cut_to_whole_lines()
            if self._owns_claim:
                self._claim.keep_partial()  # type: ignore[union-attr]
            raise SinkError(f"cannot finish {self.target}: {exc.strerror}") from exc
        if self._owns_claim and self._claim is not None:
            if self.failed:
                self._claim.keep_partial()
            else:
                self._claim.commit()


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's final flush
    does not print a traceback (as the Python docs advise for SIGPIPE)."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _open(claim: OutputFile) -> TextIO:
    """Line-buffered, so a reader tailing the file sees whole records as they come."""
    try:
        return open(claim.temp, "w", buffering=1, encoding="utf-8")
    except OSError as exc:
        claim.release()
        raise SinkError(f"cannot write JSON lines to {claim.target}: {exc.strerror}") from exc
