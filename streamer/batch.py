"""``streamer batch``: many recorded files, each processed once, over local worker
processes or a Ray cluster, all of them sharing one API budget.

::

    plan(patterns, templates, settings) ─▶ [FileJob]   files, their outputs; done ones marked
    run_batch(jobs, workers=N)           ─▶ a process pool (spawn), or Ray tasks (--ray)
        each worker: process_file(job)   ─▶ a Fleet of one camera on the file, its budget
                                            leased from the batch's LeaseBook
    the parent: progress lines, one line per file that failed, the exit code

A file is done when every output its templates name exists: outputs are written
under a temporary name and renamed into place only when the file is finished
(``streamer.outputs``), so a file interrupted halfway is redone by the next run and
a finished one is skipped. One file's failure is reported and the others go on; the
exit code is the worst file's (``streamer.exits``).
"""

from __future__ import annotations

import concurrent.futures
import glob
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.managers import BaseManager
from pathlib import Path
from typing import Any

from streamer.errors import ConfigError, StreamerError
from streamer.exits import EXIT_ERROR, EXIT_OK, exit_code, worst
from streamer.leases import LeasedBudgets, Lender, SharedBook
from streamer.outputs import check_outputs
from streamer.redaction import clean, redact

__all__ = ["FileJob", "FileResult", "plan", "process_file", "run_batch"]

log = logging.getLogger(__name__)

TEMPLATED = ("output", "jsonl", "events")  # settings that name a file per input
_FLAGS = {"output": "--output", "jsonl": "--jsonl", "events": "--events"}


@dataclass(frozen=True)
class FileJob:
    source: str
    name: str  # the camera name in its records: the file's stem
    outputs: dict[str, str]  # setting -> this file's path
    settings: dict[str, Any]  # flat run settings, outputs excluded
    done: bool = False  # every output already there: skipped
    budget_cap: float | None = None  # requests/s of the shared budget, when set


@dataclass(frozen=True)
class FileResult:
    source: str
    code: int
    frames: int = 0
    summary: str = ""
    error: str | None = None
    seconds: float = 0.0
    worker: str = ""  # host and pid (and Ray node) it ran on
    sent: int = 0  # requests sent
    started_at: float = 0.0  # wall clock (s since the epoch), for spans across machines
    rate_limited: int = 0  # 429s answered


@dataclass
class _Progress:
    total: int
    skipped: int
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    failed: int = 0
    frames: int = 0

    def line(self) -> str:
        finished = self.done + self.failed
        elapsed = time.monotonic() - self.started
        left = self.total - self.skipped - finished
        eta = "-"
        if finished and left:
            eta = f"{elapsed / finished * left:.0f} s"
        elif not left:
            eta = "0 s"
        return (
            f"batch: {finished + self.skipped}/{self.total} files ({self.skipped} done before, "
            f"{self.failed} failed), {self.frames} frames, {elapsed:.0f} s, ETA {eta}"
        )


def expand(patterns: Sequence[str]) -> list[Path]:
    """The files the patterns match (``**`` recursive), sorted, each once."""
    files: dict[Path, None] = {}
    for pattern in patterns:
        matches = (
            sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        )
        found = [Path(m) for m in matches if Path(m).is_file()]
        if not found:
            raise ConfigError(f"no file matches {clean(pattern, 120)!r}")
        files.update(dict.fromkeys(found))
    return list(files)


def _fill(template: str, path: Path) -> str:
    try:
        return template.format(stem=path.stem, name=path.name, parent=path.parent.name)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"bad output template {template!r}: use {{stem}}, {{name}} or {{parent}} ({exc})"
        ) from exc


def plan(
    files: Sequence[Path], settings: dict[str, Any], *, budget_cap: float | None = None
) -> list[FileJob]:
    """A job per file with its outputs from the templates in ``settings``; outputs
    checked before anything starts (writable, not an input, not another file's)."""
    templates = {key: settings[key] for key in TEMPLATED if settings.get(key)}
    if not templates:
        raise ConfigError("batch writes nothing: give --output, --jsonl or --events templates")
    for key, template in templates.items():
        if template == "-":
            raise ConfigError(f"{_FLAGS[key]} - (stdout) cannot take many files' records")
        if len(files) > 1 and "{" not in template:
            raise ConfigError(
                f"{_FLAGS[key]} {template} would hold every file's output: put {{stem}} in it"
            )
    base = {k: v for k, v in settings.items() if k not in TEMPLATED and k != "source"}
    jobs: list[FileJob] = []
    claimed: dict[str, Path] = {}
    for path in files:
        outputs = {key: _fill(template, path) for key, template in templates.items()}
        for out in outputs.values():
            resolved = str(Path(out).resolve())
            if resolved in claimed:
                raise ConfigError(
                    f"{path} and {claimed[resolved]} would both write {out}: "
                    "put {parent} in the template, or rename one"
                )
            claimed[resolved] = path
        for out in outputs.values():  # many files: their folders made as needed
            try:
                Path(out).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot make the folder of {out}: {exc.strerror}") from exc
        check_outputs([*files], {_FLAGS[k]: v for k, v in outputs.items()})
        done = all(Path(out).exists() for out in outputs.values())
        jobs.append(FileJob(str(path), path.stem, outputs, base, done, budget_cap))
    return jobs


def process_file(job: FileJob, lender: Lender | None = None) -> FileResult:
    """One file to its end, in a worker process or a Ray task: a fleet of one camera."""
    from streamer.fleet import Fleet

    started, started_at = time.monotonic(), time.time()
    worker = f"{socket.gethostname()}:{os.getpid()}"
    budgets = None
    if lender is not None and job.budget_cap is not None:
        budgets = LeasedBudgets(lender, job.budget_cap, holder_prefix=worker)
    key = job.settings.get("api_key")
    try:
        with Fleet(
            {**job.settings, **job.outputs, "mode": "recorded"},
            budgets=budgets,
            share_outputs=False,
        ) as fleet:
            camera = fleet.add(job.name, job.source)
            fleet.wait()
        status = camera.pipeline.status()
        error = camera.error
        return FileResult(
            job.source,
            camera.code if camera.code is not None else EXIT_ERROR,
            frames=status.outputs,
            summary=redact(camera.summary(), key),
            error=redact(str(error), key) if error is not None else None,
            seconds=time.monotonic() - started,
            worker=worker,
            sent=camera.pipeline.pool.metrics().submitted,
            started_at=started_at,
            rate_limited=status.rate_limited,
        )
    except StreamerError as exc:
        return FileResult(
            job.source,
            exit_code(exc),
            error=redact(str(exc), key),
            seconds=time.monotonic() - started,
            worker=worker,
        )
    finally:
        if budgets is not None:
            budgets.close()


class _BookManager(BaseManager):
    """Serves the batch's one ``SharedBook`` to its worker processes."""


_SERVED: dict[str, SharedBook] = {}  # in the manager's process: the book it serves


def _the_book() -> SharedBook:
    return _SERVED["book"]


def _serve_book(cap: float) -> None:  # the manager's process starts with this
    _SERVED["book"] = SharedBook(cap)


_BookManager.register("book", callable=_the_book)


def _local_results(jobs: list[FileJob], workers: int, cap: float | None) -> Iterator[FileResult]:
    """Each job in a spawned process (threads and fork do not mix), at most ``workers``
    at a time, their budget leased from one book in a manager process."""
    context = multiprocessing.get_context("spawn")
    manager = None
    lender = None
    if cap is not None:
        manager = _BookManager(address=("127.0.0.1", 0), ctx=context)
        manager.start(_serve_book, (cap,))
        lender = manager.book()  # type: ignore[attr-defined]
    pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_ignore_sigint
    )
    finished = False
    try:
        futures = {pool.submit(process_file, job, lender): job for job in jobs}
        for future in concurrent.futures.as_completed(futures):
            job = futures[future]
            try:
                yield future.result()
            except Exception as exc:  # the worker process died
                yield FileResult(job.source, EXIT_ERROR, error=f"worker failed: {exc}")
        finished = True
    finally:
        # interrupted: the files being processed are left unfinished (their outputs
        # stay temporary, so a rerun does them), not waited for
        pool.shutdown(wait=finished, cancel_futures=True)
        if manager is not None:
            manager.shutdown()
        if not finished:
            for child in multiprocessing.active_children():
                child.terminate()


def _ignore_sigint() -> None:
    """Workers leave Ctrl-C to the parent, which stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_batch(
    jobs: list[FileJob],
    *,
    workers: int,
    ray_address: str | None = None,
    say: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
    progress_every: float = 2.0,
    on_result: Callable[[FileResult], None] | None = None,
) -> int:
    """Every job not done yet, ``workers`` at a time; the worst file's exit code.
    ``on_result``: each file's result as it ends."""
    todo = [job for job in jobs if not job.done]
    progress = _Progress(total=len(jobs), skipped=len(jobs) - len(todo))
    if not todo:
        say(f"batch: all {len(jobs)} files done before; nothing to do")
        return EXIT_OK
    cap = todo[0].budget_cap
    if ray_address is not None:
        from streamer.cluster import ray_results

        results = ray_results(todo, ray_address, cap)
    else:
        results = _local_results(todo, workers, cap)
    codes: list[int] = []
    shown = ""
    try:
        shown = _follow(
            results, progress, codes, say=say, every=progress_every, on_result=on_result
        )
    except KeyboardInterrupt:
        left = progress.total - progress.skipped - progress.done - progress.failed
        say(f"batch: interrupted: {left} files not finished (a rerun does them)")
        raise
    if progress.line() != shown:
        say(progress.line())
    return worst(codes) if codes else EXIT_OK


def _follow(
    results: Iterator[FileResult],
    progress: _Progress,
    codes: list[int],
    *,
    say: Callable[[str], None],
    every: float,
    on_result: Callable[[FileResult], None] | None,
) -> str:
    """Each result as it comes: counted, said if it failed; a progress line every
    ``every`` s (the first after ``every``); the last line said."""
    shown = ""
    last = time.monotonic()
    for result in results:
        if on_result is not None:
            on_result(result)
        codes.append(result.code)
        progress.frames += result.frames
        if result.code == EXIT_OK:
            progress.done += 1
            log.info("%s: %s (%s)", result.source, result.summary, result.worker)
        else:
            progress.failed += 1
            say(f"batch: error: {result.source}: {result.error or result.summary}")
        if time.monotonic() - last >= every:
            last = time.monotonic()
            shown = progress.line()
            say(shown)
    return shown
