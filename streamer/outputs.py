"""Output files: checked before the run, claimed with a lock, written under a temporary
name and renamed into place only when finished.

::

    check_outputs(inputs, {"--output": "out.mp4", "--jsonl": "out.jsonl"})  # before anything
    claim = OutputFile.claim("out.mp4")     # .out.mp4.lock (exclusive create, holds the pid)
    ... write claim.temp ...                # .out.streamer-tmp.mp4, beside the target
    claim.commit()                          # rename onto out.mp4: a reader never sees half a file
    claim.keep_partial()                    # a failed run: out.partial.mp4, out.mp4 untouched
    claim.discard()                         # nothing worth keeping (e.g. disk full mid-video)

A killed run leaves only the hidden temporary file and a stale lock (taken over by
the next run once its pid is gone); the file at the final path is always either the
previous good one or a finished new one.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from streamer.errors import ConfigError

__all__ = ["VIDEO_SUFFIXES", "OutputFile", "check_outputs"]

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".ts")  # containers that take H.264
STDOUT = "-"


def _describe_os_error(exc: OSError) -> str:
    if exc.errno == errno.ENAMETOOLONG:
        return "file name too long"
    return exc.strerror or type(exc).__name__


def _same_file(a: Path, b: Path) -> bool:
    """The same path once resolved, or the same inode (a hard link)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@dataclass(frozen=True)
class _Names:
    target: Path
    temp: Path
    partial: Path
    lock: Path


def _names(path: str | Path) -> _Names:
    target = Path(path)
    folder, stem, suffix = target.parent, target.stem, target.suffix
    return _Names(
        target=target,
        temp=folder / f".{stem}.streamer-tmp{suffix}",  # suffix kept: FFmpeg picks the format by it
        partial=folder / f"{stem}.partial{suffix}",
        lock=folder / f".{target.name}.lock",
    )


def _check_one(flag: str, path: str, inputs: Iterable[Path]) -> None:
    names = _names(path)
    target = names.target
    if target.is_dir():
        raise ConfigError(f"{flag} {path} is a folder; give a file name")
    folder = target.parent
    if not folder.is_dir():
        raise ConfigError(f"{flag} {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: folder {folder} is not writable")
    for candidate in (names.target, names.temp, names.partial):
        for source in inputs:
            if source.exists() and _same_file(candidate, source):
                raise ConfigError(
                    f"{flag} {path} would write over the input {source}; choose another name"
                )


def check_outputs(inputs: Iterable[str | Path], outputs: Mapping[str, str | None]) -> None:
    """Refuse, before anything is opened, outputs that cannot be written or would destroy
    an input (the source, the config file) or another output.

    ``outputs`` maps a flag (``--output``, ``--jsonl``, ``--events``) to its path;
    ``None`` is unset. ``--jsonl`` or ``--events`` may be ``-`` (stdout), not both.
    ``--output`` must be a container for H.264.
    """
    sources = [Path(p) for p in inputs]
    given = {flag: path for flag, path in outputs.items() if path is not None}
    to_stdout = [flag for flag, path in given.items() if path == STDOUT]
    if len(to_stdout) > 1:
        raise ConfigError(f"{to_stdout[0]} and {to_stdout[1]} cannot both go to stdout ('-')")
    for flag, path in given.items():
        if not path.strip():
            raise ConfigError(f"{flag} needs a file name")
        if path == STDOUT:
            if flag in ("--jsonl", "--events"):
                continue
            raise ConfigError(f"{flag} cannot be '-' (stdout); give a file name")
        if Path(path).is_dir():
            raise ConfigError(f"{flag} {path} is a folder; give a file name")
        if flag == "--output" and Path(path).suffix.lower() not in VIDEO_SUFFIXES:
            raise ConfigError(
                f"--output {path}: the video is H.264, which needs one of "
                f"{' '.join(VIDEO_SUFFIXES)} (not {Path(path).suffix or 'no extension'})"
            )
        _check_one(flag, path, sources)
    files = [(flag, Path(path)) for flag, path in given.items() if path != STDOUT]
    for i, (flag_a, a) in enumerate(files):
        for flag_b, b in files[i + 1 :]:
            if _same_file(a, b):
                raise ConfigError(f"{flag_a} and {flag_b} name the same file {a}; give two names")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


class OutputFile:
    """One output claimed for this process: a lock beside it and a temporary name to write."""

    def __init__(self, names: _Names) -> None:
        self._names = names
        self.target = names.target
        self.temp = names.temp
        self.partial = names.partial
        self._released = False

    @classmethod
    def claim(cls, path: str | Path) -> OutputFile:
        """Take the lock on ``path``; ``ConfigError`` if another live run holds it."""
        names = _names(path)
        for _ in range(3):
            try:
                fd = os.open(names.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _read_pid(names.lock)
                if holder is not None and holder != os.getpid() and _pid_alive(holder):
                    raise ConfigError(
                        f"{path} is being written by another streamer run (pid {holder}); "
                        f"wait for it or remove {names.lock} if that run is gone"
                    ) from None
                with contextlib.suppress(FileNotFoundError):
                    names.lock.unlink()  # left by a run that was killed
                continue
            except OSError as exc:
                raise ConfigError(f"cannot write {path}: {_describe_os_error(exc)}") from exc
            with os.fdopen(fd, "w") as lock:
                lock.write(f"{os.getpid()}\n")
            with contextlib.suppress(FileNotFoundError):
                names.temp.unlink()  # a killed run's leftovers
            return cls(names)
        raise ConfigError(f"cannot lock {path}: {names.lock} keeps reappearing")

    @property
    def written(self) -> bool:
        return self.temp.exists()

    def commit(self) -> Path | None:
        """Move the finished file onto the target; ``None`` if nothing was written."""
        try:
            if not self.written:
                return None
            os.replace(self.temp, self.target)
            return self.target
        finally:
            self.release()

    def keep_partial(self) -> Path | None:
        """A failed run: keep what was written beside the target, never over it."""
        try:
            if not self.written:
                return None
            if self.temp.stat().st_size == 0:  # nothing worth keeping
                self.temp.unlink()
                return None
            os.replace(self.temp, self.partial)
            return self.partial
        finally:
            self.release()

    def discard(self) -> None:
        try:
            with contextlib.suppress(FileNotFoundError):
                self.temp.unlink()
        finally:
            self.release()

    def release(self) -> None:
        if not self._released:
            self._released = True
            with contextlib.suppress(FileNotFoundError):
                self._names.lock.unlink()


def _read_pid(lock: Path) -> int | None:
    try:
        return int(lock.read_text().strip() or "0")
    except (OSError, ValueError):
        return None
