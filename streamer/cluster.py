"""Ray: the batch's files as tasks over a cluster, and its one budget as an actor.

Ray is optional (``pip install 'streamer[cluster]'``); this module imports it lazily so
the core never needs it. The cameras on a cluster are ``streamer.cluster_cameras``.

::

    connect("local" | "auto" | "host:port")
    BookActor (named per run, num_cpus=0, restarted on another node if its own dies:
               lends nothing for one term after a restart) ◀── ActorLender in each task
    ray_results(jobs) ── one task per file (num_cpus per file, retried on a node's death)
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from streamer.budget import BudgetStatus
from streamer.errors import ConfigError
from streamer.exits import EXIT_ERROR
from streamer.leases import TERM_S, Lease, LeaseBook
from streamer.redaction import clean

if TYPE_CHECKING:
    from streamer.batch import FileJob, FileResult

__all__ = ["ActorLender", "BookActor", "connect", "ray_results"]

log = logging.getLogger(__name__)

NAMESPACE = "streamer"
CALL_TIMEOUT_S = 2.0
FILE_CPUS = 0.5  # a recorded file's pipeline: decode and send, about half a core


def import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ConfigError("--ray needs Ray: pip install 'streamer[cluster]'") from exc
    return ray


def connect(address: str) -> None:
    """Join the cluster at ``address`` (``auto``: the one ``ray start`` made on this
    machine), or start one in this process (``local``, bound to 127.0.0.1)."""
    if address == "local" and "ray" not in sys.modules:
        # Ray binds the machine's routable address unless told this machine is the
        # whole cluster; it reads this when imported
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = import_ray()
    if ray.is_initialized():
        return
    try:
        if address == "local":
            ray.init(
                address="local",  # a new instance even if 'ray start' left one's address
                include_dashboard=False,
                log_to_driver=False,
                namespace=NAMESPACE,
                logging_level=logging.WARNING,
            )
        else:
            ray.init(
                address=address,
                log_to_driver=False,
                namespace=NAMESPACE,
                logging_level=logging.WARNING,
            )
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"--ray {clean(address, 80)}: {clean(str(exc), 200)}") from exc


class BookActor:
    """A ``LeaseBook`` as a Ray actor: one call at a time, so no lock."""

    def __init__(self, cap: float, term: float = TERM_S) -> None:
        ray = import_ray()
        restarted = bool(ray.get_runtime_context().was_current_actor_reconstructed)
        self._book = LeaseBook(cap, term=term, restarted=restarted)

    def lease(
        self, holder: str, *, weight: float, min_fps: float, demand: float, sent: int
    ) -> Lease:
        return self._book.lease(holder, weight=weight, min_fps=min_fps, demand=demand, sent=sent)

    def release(self, holder: str) -> None:
        self._book.release(holder)

    def rate_limited(self, retry_after: float | None) -> None:
        self._book.rate_limited(retry_after)

    def status(self) -> BudgetStatus:
        return self._book.status()


class ActorLender:
    """A ``Lender`` over a ``BookActor``: leases wait at most ``timeout``; releases and
    429 reports are sent without waiting."""

    def __init__(self, actor: Any, timeout: float = CALL_TIMEOUT_S) -> None:
        self._actor = actor
        self._timeout = timeout

    def lease(
        self, holder: str, *, weight: float, min_fps: float, demand: float, sent: int
    ) -> Lease:
        ray = import_ray()
        call = self._actor.lease.remote(
            holder, weight=weight, min_fps=min_fps, demand=demand, sent=sent
        )
        lease: Lease = ray.get(call, timeout=self._timeout)
        return lease

    def release(self, holder: str) -> None:
        self._actor.release.remote(holder)

    def rate_limited(self, retry_after: float | None) -> None:
        self._actor.rate_limited.remote(retry_after)

    def status(self) -> BudgetStatus:
        status: BudgetStatus = import_ray().get(self._actor.status.remote(), timeout=self._timeout)
        return status


def book_actor(cap: float, name: str | None = None) -> Any:
    """The budget's actor: restarted elsewhere if its node dies."""
    ray = import_ray()
    return (
        ray.remote(BookActor)
        .options(
            name=name or f"streamer-budget-{secrets.token_hex(4)}",
            namespace=NAMESPACE,
            num_cpus=0,
            max_restarts=-1,
            max_task_retries=-1,
            get_if_exists=True,
        )
        .remote(cap)
    )


def _process_on_ray(job: FileJob, actor: Any) -> FileResult:
    from streamer.batch import process_file

    lender = ActorLender(actor) if actor is not None else None
    result = process_file(job, lender)
    node = import_ray().get_runtime_context().get_node_id()[:8]
    return dataclasses.replace(result, worker=f"{result.worker} node {node}")


def ray_results(jobs: list[FileJob], address: str, cap: float | None) -> Iterator[FileResult]:
    """Each job as a task on the cluster (retried if its node dies: its outputs are
    only renamed into place when finished, so a retry starts clean), as they end."""
    from streamer.batch import FileResult

    ray = import_ray()
    connect(address)
    actor = book_actor(cap) if cap is not None else None
    task = ray.remote(_process_on_ray).options(num_cpus=FILE_CPUS, max_retries=3)
    pending = {task.remote(job, actor): job for job in jobs}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=5.0)
            for ref in ready:
                job = pending.pop(ref)
                try:
                    yield ray.get(ref)
                except Exception as exc:  # the task could not be run (retries spent)
                    yield FileResult(
                        job.source, EXIT_ERROR, error=f"Ray task failed: {type(exc).__name__}"
                    )
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if actor is not None:
            ray.kill(actor)
