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
from dataclasses import dataclass
from typing import Any

from tourno.queue.job import PendingJob

#: The lease backstop: a reserved job whose worker still heartbeats is only
#: taken back this long after its timeout (the worker's own watchdog acts first).
LEASE_MARGIN = 120.0
#: Dead workers' rows are kept this long (seconds) for ``queue status``, then pruned.
WORKER_ROW_TTL = 3600
#: The notification sent on the dispatch channel when a queue is paused or
#: resumed, so that every worker's monitor reloads the paused set at once. A
#: queue of this name could never be served: ``--queue`` splits on commas.
PAUSES_CHANGED = "pauses,changed"


@dataclass
class ClaimedJob:
    """A job reserved by this worker: the row as claimed."""

    id: Any
    queue: str
    payload: str
    attempts: int
    priority: int = 0


@dataclass(frozen=True)
class BucketState:
    """A token bucket after one operation (``QueueBackend.bucket``)."""

    #: Whether the operation took a token (only ``take`` does).
    granted: bool
    #: Tokens left after the operation.
    tokens: float
    #: Seconds until a whole token is there (0 when one is).
    wait: float


@dataclass
class CancelledJob:
    """A job that ``cancel`` found (or the sweep deleted): the row as it was."""

    id: Any
    queue: str
    payload: str
    #: True: it was running, and its worker was asked to stop it; False: it
    #: was waiting or delayed, and is gone.
    running: bool = False


def cancel_notice(worker_id: Any) -> str:
    """What :meth:`QueueBackend.wait_for_notifications` puts in its answer
    when a job worker ``worker_id`` holds was cancelled. No queue name holds
    a NUL (neither PostgreSQL text nor a NOTIFY payload can), so it never
    matches a queue."""
    return f"\0cancel:{worker_id}"


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
    def snooze(self, worker_id: int, job_id: Any, delay: float, attempts: int) -> bool:
        """Make a job this worker holds available again after ``delay``
        seconds, recording exactly ``attempts`` (unlike :meth:`release`,
        which never lowers the count): the worker passes the claimed attempts
        minus one, so the snoozed attempt is not spent. False when the job
        was taken back."""

    @abc.abstractmethod
    def count_attempt(self, worker_id: int, job_id: Any, attempts: int) -> bool:
        """Record that a prefetched job this worker holds has used ``attempts``."""

    @abc.abstractmethod
    def hand_back(self, worker_id: int, ids: list[Any]) -> int:
        """Return claimed-but-never-started jobs (the claim did not charge them)."""

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
    def cancel_requests(self, worker_id: int) -> list[Any]:
        """The ids of the jobs this worker holds that ``cancel`` flagged."""

    @abc.abstractmethod
    def sweep_cancelled(self) -> list[CancelledJob]:
        """Delete flagged jobs that are no longer reserved (released, handed
        back or rescued before their worker heard of the cancel; claims skip
        them) and return them. Run by every monitor, each heartbeat interval."""

    @abc.abstractmethod
    def listen(self) -> None:
        """Start receiving dispatch notifications (and cancel notices) on
        this thread's connection."""

    @abc.abstractmethod
    def wait_for_notifications(self, timeout: float) -> set[str]:
        """Block up to ``timeout`` seconds; return the queues that got jobs,
        and :func:`cancel_notice` of each worker a cancel concerned."""

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

    # -- middleware stores (tourno.queue.middleware) ----------------------------

    @abc.abstractmethod
    def bucket(self, name: str, rate: float, burst: float, op: str) -> BucketState:
        """The token bucket ``name`` (``rate`` tokens a second, at most
        ``burst``), shared by every worker on every host: ``op`` is ``take``
        (one token, if there is one), ``peek`` or ``fill`` (to ``burst``)."""

    @abc.abstractmethod
    def acquire_lock(
        self, key: str, worker_id: int, job_id: Any, stale_after: float, expire_after: float | None
    ) -> bool:
        """Hold ``key`` for this worker unless another live worker holds it.
        A holder whose heartbeat is older than ``stale_after`` seconds (a
        dead worker), or whose hold is older than ``expire_after``, holds
        nothing: its key is taken over."""

    @abc.abstractmethod
    def release_locks(self, worker_id: int, key: str | None = None) -> int:
        """Let go of ``key`` (or of every key) this worker holds; returns how many."""

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

    @abc.abstractmethod
    def cancel(self, ids: list[int], uuids: list[str]) -> list[CancelledJob]:
        """Cancel the jobs with these ids or payload uuids, atomically per job:
        a waiting or delayed one is deleted; a reserved one is flagged (its
        worker stops it when its attempt ends, and is notified where the
        backend can). Returns each job found, once; a job found twice (by id
        and uuid) is one entry."""

    # -- pauses (``tourno queue pause``; ``queue/pauses.py`` is the entry point) -----

    @abc.abstractmethod
    def pause(self, queues: list[str]) -> list[str]:
        """Stop workers claiming from ``queues`` (dispatches still go in);
        returns the queues that were not paused already. Sends
        :data:`PAUSES_CHANGED` when it paused any."""

    @abc.abstractmethod
    def resume(self, queues: list[str]) -> list[str]:
        """Let workers claim from ``queues`` again; returns the queues that
        were paused. Sends :data:`PAUSES_CHANGED` when it resumed any."""

    @abc.abstractmethod
    def paused(self) -> dict[str, dt.datetime]:
        """Every paused queue and when it was paused, by the store's clock."""
