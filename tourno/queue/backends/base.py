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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tourno.queue.job import PendingJob
from tourno.queue.metrics import Counts, MetricRow

#: What :meth:`Backend.rescue` hands its ``announce``: (job id, former worker id) pairs.
RescueAnnounce = Callable[[list[tuple[Any, Any]]], None]

#: The lease backstop: a reserved job whose worker still heartbeats is only
#: taken back this long after its timeout (the worker's own watchdog acts first).
LEASE_MARGIN = 120.0
#: Dead workers' rows are kept this long (seconds) for ``queue status``, then pruned.
WORKER_ROW_TTL = 3600
#: The notification sent on the dispatch channel when a queue is paused or
#: resumed, so that every worker's monitor reloads the paused set at once. A
#: queue of this name could never be served: ``--queue`` splits on commas.
PAUSES_CHANGED = "pauses,changed"


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
    #: When the job became available (epoch seconds, the store's clock): the
    #: start of its wait, for the metrics. None if the backend does not say.
    available_at: float | None = None


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

    # The write methods below take ``metrics``: counts to add to the
    # persisted metrics in the same round trip and transaction as the write
    # (``tourno/queue/metrics.py`` says why).

    @abc.abstractmethod
    def claim(
        self,
        worker_id: int,
        queue: str,
        limit: int,
        done: list[Any],
        default_timeout: float,
        metrics: Sequence[MetricRow] = (),
    ) -> list[ClaimedJob]:
        """Delete the finished jobs in ``done`` and reserve up to ``limit``
        ready jobs of ``queue``, in one round trip where the backend can.
        Only the first job (in priority, id order) is charged an attempt: the
        worker counts the others' when it starts them."""

    @abc.abstractmethod
    def complete(self, worker_id: int, ids: list[Any], metrics: Sequence[MetricRow] = ()) -> int:
        """Delete finished jobs this worker holds; returns how many it held."""

    @abc.abstractmethod
    def release(
        self,
        worker_id: int,
        job_id: Any,
        delay: float,
        attempts: int | None = None,
        metrics: Sequence[MetricRow] = (),
        exception: bool = False,
    ) -> bool:
        """Make a job this worker holds available again after ``delay`` seconds,
        recording that it has used ``attempts`` attempts when given, and with
        ``exception`` that the attempt ended in an exception the job raised
        (counted for :meth:`exceptions`)."""

    @abc.abstractmethod
    def exceptions(self, job_id: Any) -> int:
        """How many of the job's attempts so far ended in an exception it
        raised (its releases with ``exception``); 0 for an unknown job. Read
        only for jobs that declare ``max_exceptions``, when one raises."""

    @abc.abstractmethod
    def snooze(
        self, worker_id: int, job_id: Any, delay: float, attempts: int, metrics: Sequence[MetricRow] = ()
    ) -> bool:
        """Make a job this worker holds available again after ``delay``
        seconds, recording exactly ``attempts`` (unlike :meth:`release`,
        which never lowers the count): the worker passes the claimed attempts
        minus one, so the snoozed attempt is not spent. Announced like a
        release (ready, or due at its time), and carries ``metrics`` like
        one. False when the job was taken back."""

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
    def fail(
        self, worker_id: int, job: ClaimedJob, uuid: str, exception: str, metrics: Sequence[MetricRow] = ()
    ) -> bool:
        """Move a job this worker holds to the failed-job store."""

    # A chain or batch job's completion has a next step (``workflows.py``):
    # the next link, the batch's counts and callbacks. These two tie the step
    # to the completion so that a crash neither loses it nor takes it twice.

    def complete_step(
        self, worker_id: int, job_id: Any, step: Callable[[], None], metrics: Sequence[MetricRow] = ()
    ) -> bool:
        """Delete a finished job this worker holds and run ``step`` (database
        writes and dispatches) with it: in the same transaction where the jobs
        live in the database; otherwise ``step`` commits first and is
        idempotent per job (``workflows._mark``). False when the job was
        taken back."""
        raise NotImplementedError(f"{type(self).__name__} does not run chains or batches")

    def fail_step(
        self,
        worker_id: int,
        job: ClaimedJob,
        uuid: str,
        exception: str,
        step: Callable[[], None],
        metrics: Sequence[MetricRow] = (),
    ) -> bool:
        """:meth:`fail`, with ``step`` tied to it as :meth:`complete_step` does."""
        raise NotImplementedError(f"{type(self).__name__} does not run chains or batches")

    @abc.abstractmethod
    def read_metrics(self, since: int | None) -> list[MetricRow]:
        """The persisted counts summed per (queue, job): from minute ``since``
        (epoch seconds) on, or all time (the pruned totals included) for None."""

    @abc.abstractmethod
    def read_metric_minutes(self, first: int, last: int, queue: str | None = None) -> dict[int, Counts]:
        """The persisted counts summed per minute over every job (of
        ``queue``, or of all queues), for the minutes ``first`` to ``last``
        (epoch seconds, both included), in one round trip. Minutes with no
        counts are left out; ``metrics.series`` fills them in."""

    def prune_metrics(self, retention_days: float) -> int:
        """Fold the minutes older than the retention into the totals; returns
        how many minute rows went. Stores that expire them on their own
        (Redis) do nothing."""
        return 0

    @abc.abstractmethod
    def rescue(self, stale_after: float, announce: RescueAnnounce | None = None) -> list[tuple[Any, Any]]:
        """Release jobs held by workers whose heartbeat is stale (or whose lease
        ran out); returns (job id, former worker id) pairs.

        ``announce``, when given, is called with those pairs *before* any of
        the jobs can be claimed again (inside the rescue's transaction on the
        database drivers, between the take-over and the hand-back on Redis),
        so that ``job.rescued`` comes before the next ``job.started`` of the
        same job, as ``job.dispatched`` comes before the first. It must be
        quick: the rescued rows stay locked while it runs."""

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
    def stats(self, cap: int | None = None) -> list[QueueStats]:
        """Ready, delayed and reserved jobs and the oldest ready job, per
        queue. With ``cap``, a store whose counts read the rows (PostgreSQL)
        counts each up to the cap and estimates above it (``db.Count``), so
        a page that refreshes every few seconds stays cheap at a million jobs."""

    @abc.abstractmethod
    def workers(self, stale_after: float) -> list[WorkerInfo]:
        """Workers whose heartbeat is fresh."""

    @abc.abstractmethod
    def clear(self, queue: str | None) -> int:
        """Delete waiting and delayed jobs (running ones finish)."""

    @abc.abstractmethod
    def signal_restart(self) -> dt.datetime: ...

    def write_metrics(self, metrics: Sequence[MetricRow]) -> None:
        """Add counts that no job operation carries (a cancel from the CLI or
        the dashboard) to the persisted metrics: a completion of no jobs."""
        if metrics:
            self.complete(0, [], metrics)

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
