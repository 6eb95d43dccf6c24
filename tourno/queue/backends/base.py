"""The interface every queue backend implements, and the records it returns.

The worker speaks only this interface. Methods are called from two threads:
the worker's main thread (dispatch, claim, complete, release, fail) and its
monitor thread (heartbeat, rescue, maintain, hand-back, notifications). A backend must
give each thread its own connection; the database backend gets that from
peewee, whose connection state is per thread.
"""

from __future__ import annotations

import abc
import datetime as dt
import threading
from dataclasses import dataclass
from typing import Any

from tourno.queue.job import PendingJob

#: The lease backstop: a reserved job whose worker still heartbeats is only
#: taken back this long after its timeout (the worker's own watchdog acts first).
LEASE_MARGIN = 120.0
#: Dead workers' rows are kept this long (seconds) for ``queue status``, then pruned.
WORKER_ROW_TTL = 3600


class HeardDue:
    """What a thread's notification connection heard of delayed jobs: the
    earliest due time per queue, from payloads ``"QUEUE EPOCH"`` (the queue
    name, a space, the due time in epoch seconds). A payload that does not
    parse is ignored: a notification is a hint, the store has the truth."""

    def __init__(self) -> None:
        self._local = threading.local()

    def hear(self, payload: str) -> None:
        queue, _, when = payload.rpartition(" ")
        try:
            due = float(when)
        except ValueError:
            return
        heard: dict[str, float] | None = getattr(self._local, "heard", None)
        if heard is None:
            heard = self._local.heard = {}
        if queue and (queue not in heard or due < heard[queue]):
            heard[queue] = due

    def take(self) -> dict[str, float]:
        heard: dict[str, float] = getattr(self._local, "heard", None) or {}
        self._local.heard = {}
        return heard


@dataclass
class ClaimedJob:
    """A job reserved by this worker: the row as claimed."""

    id: Any
    queue: str
    payload: str
    attempts: int
    priority: int = 0


@dataclass
class QueueStats:
    queue: str
    ready: int
    delayed: int
    reserved: int
    oldest_ready_at: dt.datetime | None


@dataclass
class WorkerInfo:
    id: int
    name: str
    hostname: str
    pid: int
    queues: str
    started_at: dt.datetime
    heartbeat_at: dt.datetime
    current_job_id: Any
    jobs_done: int


class QueueBackend(abc.ABC):
    #: The name stored in ``failed_jobs.connection``.
    connection_name: str = "database"
    #: Errors of the backend's own store that mean "it went away": the worker
    #: treats them like a database outage (reconnect with backoff, lose nothing).
    connection_errors: tuple[type[BaseException], ...] = ()
    #: Whether the jobs live in the database itself, so that ``push`` inside a
    #: database transaction commits with it and reports a taken unique key at
    #: once: retrying a failed job then pushes it and deletes its record in one
    #: transaction. Otherwise the retry pushes first and deletes after.
    requeues_in_database: bool = False

    # -- producer side -------------------------------------------------------

    @abc.abstractmethod
    def push(self, jobs: list[PendingJob]) -> list[Any]:
        """Insert jobs; return their ids in order (None where a unique job was
        already pending). Inside an open transaction the jobs commit with it."""

    # -- worker side ---------------------------------------------------------

    @abc.abstractmethod
    def register_worker(
        self, name: str, hostname: str, pid: int, queues: list[str]
    ) -> tuple[int, dt.datetime]:
        """Create this worker's row; returns (worker id, start time by the server's clock)."""

    @abc.abstractmethod
    def heartbeat(self, worker_id: int, info: dict[str, Any]) -> dt.datetime | None:
        """Refresh (or re-create) the worker row; returns the last restart signal time."""

    @abc.abstractmethod
    def unregister_worker(self, worker_id: int) -> None: ...

    @abc.abstractmethod
    def claim(
        self, worker_id: int, queue: str, limit: int, done: list[Any], default_timeout: float
    ) -> list[ClaimedJob]:
        """Delete the finished jobs in ``done`` and reserve up to ``limit``
        ready jobs of ``queue``, in one round trip where the backend can.
        Only the first job (in priority, id order) is charged an attempt: the
        worker counts the others' when it starts them."""

    @abc.abstractmethod
    def complete(self, worker_id: int, ids: list[Any]) -> int:
        """Delete finished jobs this worker holds; returns how many it held."""

    @abc.abstractmethod
    def release(self, worker_id: int, job_id: Any, delay: float, attempts: int | None = None) -> bool:
        """Make a job this worker holds available again after ``delay`` seconds,
        recording that it has used ``attempts`` attempts when given."""

    @abc.abstractmethod
    def count_attempt(self, worker_id: int, job_id: Any, attempts: int) -> bool:
        """Record that a prefetched job this worker holds has used ``attempts``."""

    @abc.abstractmethod
    def hand_back(self, worker_id: int, ids: list[Any]) -> int:
        """Return claimed-but-never-started jobs (the claim did not charge them)."""

    @abc.abstractmethod
    def release_unheld(self, worker_id: int, held: list[Any]) -> int:
        """After a reconnect: make every job reserved by ``worker_id`` that is
        not in ``held`` ready again, and return how many there were.

        Such jobs come from a claim that committed on the server while its
        reply was lost with the connection (a proxy restart, a NAT timeout,
        Redis killed between executing and replying): the worker never saw
        them, and its heartbeat keeps the rescue away until their lease ends.
        The claim charged an attempt to its first job (in priority, id order)
        that no one used: it is given back. The caller guarantees that no
        claim of this worker is in flight and that ``held`` names every job
        it still holds (running, claimed, finished but not yet deleted, or
        waiting in its pending operations), so at most one claim's jobs are
        found; the database groups them by their claim time all the same."""

    @abc.abstractmethod
    def fail(self, worker_id: int, job: ClaimedJob, uuid: str, exception: str) -> bool:
        """Move a job this worker holds to the failed-job store."""

    @abc.abstractmethod
    def rescue(self, stale_after: float) -> list[tuple[Any, Any]]:
        """Release jobs held by workers whose heartbeat is stale (or whose lease
        ran out); returns (job id, former worker id) pairs."""

    def maintain(self) -> None:
        """Housekeeping of the backend's own, called by every worker's monitor
        right after :meth:`rescue`, each heartbeat interval (for Redis: relay
        jobs left in ``queue_outbox``). An error it raises is handled like
        one from :meth:`rescue`: the monitor logs it and reconnects. The
        default does nothing."""
        return None

    @abc.abstractmethod
    def listen(self) -> None:
        """Start receiving dispatch notifications on this thread's connection."""

    @abc.abstractmethod
    def wait_for_notifications(self, timeout: float) -> set[str]:
        """Block up to ``timeout`` seconds; return the queues that got jobs."""

    @abc.abstractmethod
    def next_due(self, queues: list[str]) -> float | None:
        """Seconds until the earliest waiting job of ``queues`` is available
        (0 when one already is), by the store's clock; None when they hold no
        waiting job. An idle worker sleeps until then instead of a whole
        ``--sleep``: one cheap indexed look-up per queue, never a scan."""

    def heard_due(self) -> dict[str, float]:
        """The delayed jobs (dispatched or released with a delay) announced
        on this thread's notification connection since the last call: queue
        -> the earliest due time heard of, in epoch seconds by the store's
        clock. The monitor passes them to an idle worker, which then looks
        again with :meth:`next_due` if one is due before it would wake. The
        default hears nothing."""
        return {}

    def vacuum(self) -> bool:
        """Reclaim the space of finished jobs now, if the store needs it and
        no other worker is doing it; returns whether it ran."""
        return False

    def ping(self) -> None:
        """Check the backend's own store is reachable (raise one of
        ``connection_errors`` if not); the database is checked elsewhere."""
        return None

    @abc.abstractmethod
    def close_thread_connection(self) -> None:
        """Close the calling thread's connection, ignoring errors."""

    # -- operations ------------------------------------------------------------

    @abc.abstractmethod
    def stats(self) -> list[QueueStats]: ...

    @abc.abstractmethod
    def workers(self, stale_after: float) -> list[WorkerInfo]:
        """Workers whose heartbeat is fresh."""

    @abc.abstractmethod
    def clear(self, queue: str | None) -> int:
        """Delete waiting and delayed jobs (running ones finish)."""

    @abc.abstractmethod
    def signal_restart(self) -> dt.datetime: ...
