"""The claim batch: what a worker holds between its round trips to the queue.

When jobs are fast and the queue is deep, the worker claims several jobs in
one statement and deletes the ones it finished in the same statement as its
next claim (see ``worker.py``). :class:`ClaimBatch` holds that state: the
claimed jobs not yet started, the finished jobs not yet deleted, and the job
running now. The worker's main thread and its monitor thread both touch it,
so every change happens under its lock.

Finishing a job (delete, release, snooze, cancel, fail) is a typed operation
(:class:`Complete`, :class:`Release`, :class:`Snooze`, :class:`Cancel`,
:class:`Fail`) kept in :class:`PendingOps` until the backend has taken it:
nothing queued is lost while the database is down. Each write carries the
worker's unwritten metrics (``metrics.py``), taken after the job ids it deletes.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Collection
from typing import Any

from tourno.db import OUTAGE_ERRORS
from tourno.queue import workflows
from tourno.queue.backends.base import ClaimedJob, QueueBackend
from tourno.queue.exceptions import MaxAttemptsExceeded, QueueError, RetryDeadlinePassed
from tourno.queue.job import Job, backoff_delay, build_job, parse_payload, request_cancel, retry_deadline
from tourno.queue.metrics import MetricRow, MetricsBuffer

log = logging.getLogger(__name__)


def take_metrics(metrics: MetricsBuffer | None) -> list[MetricRow]:
    return metrics.take() if metrics is not None else []


def put_back_metrics(metrics: MetricsBuffer | None, rows: list[MetricRow]) -> None:
    if metrics is not None:
        metrics.put_back(rows)


@dataclasses.dataclass
class RunningJob:
    """What the worker knows about the job it is running."""

    claimed: ClaimedJob
    started: float  # time.monotonic()
    payload: dict[str, Any] | None = None
    job: Job | None = None
    timeout: float = 0.0
    max_tries: int = 1
    deadline: dt.datetime | None = None
    backoff: list[float] = dataclasses.field(default_factory=list)
    #: Whether the database counts this attempt yet (the claim counts only
    #: the batch's first job).
    attempt_saved: bool = True
    #: Set (by the monitor thread) when ``tourno queue cancel`` flagged the
    #: job: it is not retried, and not started if it has not started yet.
    cancel_requested: bool = False

    @property
    def label(self) -> str:
        name = self.payload.get("job") if self.payload else None
        return f"{name or '?'} #{self.claimed.id}"

    def load(self, tries: int, timeout: float, backoff: list[float]) -> Job:
        """Decode the payload and settle the limits this attempt runs under:
        the job's own, else the worker's (``tries``, ``timeout``, ``backoff``).
        Raises InvalidPayload."""
        payload = self.payload = parse_payload(self.claimed.payload)
        job = self.job = build_job(payload)
        self.deadline = retry_deadline(payload)
        self.max_tries = tries if payload.get("max_tries") is None else payload["max_tries"]
        self.timeout = timeout if payload.get("timeout") is None else float(payload["timeout"])
        self.backoff = payload.get("backoff") or backoff
        return job

    def refusal(self, now: dt.datetime) -> QueueError | None:
        """Why this attempt must not run at all, at wall-clock ``now``: its
        retry deadline passed, or it was claimed more often than allowed (the
        worker that ran it must have died)."""
        if self.deadline is not None:
            if now > self.deadline:
                return RetryDeadlinePassed(f"{self.label} passed its retry_until")
        elif self.max_tries > 0 and self.claimed.attempts > self.max_tries:
            return MaxAttemptsExceeded(f"{self.label} has been attempted too many times")
        return None

    def out_of_attempts(self, now: dt.datetime) -> bool:
        """After an attempt that raised: fail the job for good (True), or
        release it for a retry. ``retry_until`` wins over tries."""
        if self.deadline is not None:
            return now >= self.deadline
        return self.max_tries > 0 and self.claimed.attempts >= self.max_tries

    @property
    def max_exceptions(self) -> int | None:
        """The job's ``max_exceptions`` (None: only ``tries`` counts)."""
        return None if self.job is None else self.job.max_exceptions

    @property
    def fails_on_timeout(self) -> bool:
        """The job's ``fail_on_timeout``: a timed-out attempt is its last."""
        return bool(self.job is not None and self.job.fail_on_timeout)

    def retry_delay(self) -> float:
        return backoff_delay(self.backoff, self.claimed.attempts)


class ClaimBatch:
    """The jobs of the last claim that have not run yet, the finished ones
    whose deletion waits for the next round trip, and the running job."""

    def __init__(self, hold: float) -> None:
        #: A batch held longer than this gives its unstarted jobs back.
        self.hold = hold
        self.lock = threading.Lock()
        self._pending: collections.deque[ClaimedJob] = collections.deque()
        self._done: list[Any] = []
        self._running: RunningJob | None = None
        #: Ids of prefetched jobs that were cancelled before they started.
        self._cancelled: set[Any] = set()
        #: When the jobs in the batch were claimed (time.monotonic()).
        self.claimed_at = 0.0
        # Taken out by release_held while its round trip runs: still held.
        self._in_flight: list[Any] = []

    @property
    def running(self) -> RunningJob | None:
        return self._running

    def take_next(self, skip: Collection[str] = ()) -> RunningJob | None:
        """Start the next prefetched job, if any, leaving those of the queues
        in ``skip`` (paused since the claim: the monitor hands them back).
        The claim did not charge it an attempt: it is counted here and
        written later, if it matters."""
        with self.lock:
            claimed = next((j for j in self._pending if j.queue not in skip), None)
            if claimed is None:
                return None
            self._pending.remove(claimed)
            claimed.attempts += 1
            self._running = RunningJob(claimed, time.monotonic(), attempt_saved=False)
            if self._cancelled:
                self._running.cancel_requested = claimed.id in self._cancelled
                self._cancelled.discard(claimed.id)
            return self._running

    def take_done(self) -> list[Any]:
        """The finished jobs' ids, for the next claim to delete."""
        with self.lock:
            done, self._done = self._done, []
        return done

    def put_back_done(self, done: list[Any]) -> None:
        """A claim that would have deleted ``done`` did not happen."""
        if done:
            with self.lock:
                self._done[:0] = done

    def start(self, jobs: list[ClaimedJob]) -> RunningJob:
        """A claim returned ``jobs``: run the first, keep the others."""
        with self.lock:
            self.claimed_at = time.monotonic()
            self._pending.extend(jobs[1:])
            self._running = RunningJob(jobs[0], time.monotonic())
            return self._running

    def finish(self, job_id: Any, *, write_now: bool) -> list[Any]:
        """The running job succeeded. Its deletion waits for the next claim,
        unless ``write_now``: then every finished id is returned to delete now."""
        with self.lock:
            self._done.append(job_id)
            self._running = None
            if not write_now:
                return []
            done, self._done = self._done, []
            return done

    def stop_running(self) -> None:
        """The running job ended without success (released or failed)."""
        with self.lock:
            self._running = None

    def request_cancel(self, ids: list[Any]) -> list[Any]:
        """Called by the monitor: ``tourno queue cancel`` flagged these jobs.
        The running one is told (its ``cancel_requested()`` turns true); a
        prefetched one will not be started. Returns the ids this batch holds
        that it had not heard of yet."""
        with self.lock:
            new: list[Any] = []
            running = self._running
            pending = {j.id for j in self._pending}
            for job_id in ids:
                if running is not None and running.claimed.id == job_id:
                    if not running.cancel_requested:
                        running.cancel_requested = True
                        new.append(job_id)
                    # The job may still be loading: then the worker sees the
                    # flag on RunningJob before it calls handle().
                    if running.job is not None:
                        request_cancel(running.job)
                elif job_id in pending and job_id not in self._cancelled:
                    self._cancelled.add(job_id)
                    new.append(job_id)
            return new

    def drain(self) -> tuple[list[Any], list[Any]]:
        """Take what is left, for leaving: the ids of finished jobs not yet
        deleted, and of claimed jobs never started."""
        with self.lock:
            done, self._done = self._done, []
            pending = [j.id for j in self._pending]
            self._pending.clear()
            self._cancelled.clear()
        return done, pending

    def held_ids(self) -> list[Any]:
        """Every job the batch holds reserved: running, claimed, finished but
        not yet deleted, and those release_held is writing right now."""
        with self.lock:
            held = [j.id for j in self._pending] + self._done + self._in_flight
            if self._running is not None:
                held.append(self._running.claimed.id)
        return held

    def release_held(
        self, now: float, backend: QueueBackend, worker_id: int, metrics: MetricsBuffer | None = None
    ) -> int:
        """Called by the monitor. Once the batch has been held past ``hold``
        (a slow job in it), write the pending completions and hand back the
        unstarted jobs, so that other workers can take them; once a prefetched
        job has run ``hold`` seconds, write its attempt. Returns how many jobs
        were handed back. What the backend did not take stays in the batch.
        The completions carry ``metrics``' counts, taken after the ids."""
        with self.lock:
            running = self._running
            if running is None:
                return 0
            charge = None
            if not running.attempt_saved and now - running.started >= self.hold:
                charge = running.claimed
            held = now - self.claimed_at >= self.hold and bool(self._done or self._pending)
            if charge is None and not held:
                return 0
            done: list[Any] = []
            pending: list[ClaimedJob] = []
            if held:
                done, self._done = self._done, []
                pending = list(self._pending)
                self._pending.clear()
                # Handed back with their flag set: the sweep deletes them.
                self._cancelled.clear()
                self._in_flight = done + [j.id for j in pending]
        rows: list[MetricRow] = []
        try:
            if charge is not None:
                backend.count_attempt(worker_id, charge.id, charge.attempts)
                running.attempt_saved = True
            if done:
                rows = take_metrics(metrics)
                backend.complete(worker_id, done, rows)
                rows = []
            if pending:
                backend.hand_back(worker_id, [j.id for j in pending])
        except BaseException:
            put_back_metrics(metrics, rows)
            with self.lock:
                self._done[:0] = done
                self._pending.extendleft(reversed(pending))
            raise
        finally:
            with self.lock:
                self._in_flight = []
        return len(pending)

    def hand_back_queues(self, queues: Collection[str], backend: QueueBackend, worker_id: int) -> int:
        """Called by the monitor when ``queues`` are paused: hand back the
        prefetched jobs of those queues, which must not run here now. Returns
        how many; on an error they stay in the batch (and are not started)."""
        if not queues:
            return 0
        with self.lock:
            give = [j for j in self._pending if j.queue in queues]
            if not give:
                return 0
            self._pending = collections.deque(j for j in self._pending if j.queue not in queues)
        try:
            backend.hand_back(worker_id, [j.id for j in give])
        except BaseException:
            with self.lock:
                self._pending.extendleft(reversed(give))
            raise
        return len(give)


# -- finishing a job: operations that must reach the backend ---------------------------


@dataclasses.dataclass(frozen=True)
class Complete:
    """Delete finished jobs this worker holds."""

    ids: list[Any]

    def apply(self, backend: QueueBackend, worker_id: int, metrics: list[MetricRow]) -> bool:
        backend.complete(worker_id, self.ids, metrics)
        return True


@dataclasses.dataclass(frozen=True)
class Release:
    """Make a job available again after ``delay`` seconds, with its attempts."""

    job_id: Any
    delay: float
    attempts: int
    #: The attempt ended in an exception the job raised (``max_exceptions``).
    exception: bool = False

    def apply(self, backend: QueueBackend, worker_id: int, metrics: list[MetricRow]) -> bool:
        """False when the job was taken back (rescued) while it ran."""
        return backend.release(worker_id, self.job_id, self.delay, self.attempts, metrics, self.exception)


@dataclasses.dataclass(frozen=True)
class Fail:
    """Move a job to the failed-job store."""

    job: ClaimedJob
    uuid: str
    exception: str
    #: The payload of a chain or batch job: its failure has a next step.
    step_payload: dict[str, Any] | None = None

    @property
    def job_id(self) -> Any:
        return self.job.id

    def apply(self, backend: QueueBackend, worker_id: int, metrics: list[MetricRow]) -> bool:
        """False when the job was taken back (rescued) while it ran."""
        if self.step_payload is not None:
            step = workflows.after_failure(self.step_payload)
            try:
                return backend.fail_step(worker_id, self.job, self.uuid, self.exception, step, metrics)
            except Exception as exc:
                _raise_outage(exc, backend)
                log.exception(
                    "job #%s: its chain or batch step failed; failing it without the step", self.job.id
                )
        return backend.fail(worker_id, self.job, self.uuid, self.exception, metrics)


@dataclasses.dataclass(frozen=True)
class CompleteStep:
    """Delete a finished chain or batch job with its next step (the next
    link, the batch's counts) in the same write (``workflows.py``); never
    batched with the next claim as a plain job's deletion is."""

    job_id: Any
    payload: dict[str, Any]

    def apply(self, backend: QueueBackend, worker_id: int, metrics: list[MetricRow]) -> bool:
        """False when the job was taken back (rescued) while it ran. A step
        that raises (not an outage: a bug, a damaged payload) is logged and
        the job completed without it, rather than run again and again."""
        try:
            return backend.complete_step(
                worker_id, self.job_id, workflows.after_success(self.payload), metrics
            )
        except Exception as exc:
            _raise_outage(exc, backend)
            log.exception(
                "job #%s: its chain or batch step failed; completing it without the step", self.job_id
            )
        return backend.complete(worker_id, [self.job_id], metrics) > 0


def _raise_outage(exc: Exception, backend: QueueBackend) -> None:
    """Re-raise ``exc`` if it is an outage (the operation waits and is
    tried again); anything else a chain or batch step raised is a bug or a
    damaged payload, and trying again would not help."""
    if isinstance(exc, OUTAGE_ERRORS + tuple(backend.connection_errors)):
        raise exc


@dataclasses.dataclass(frozen=True)
class Snooze:
    """Make a job available again after ``delay`` seconds with exactly
    ``attempts`` used: the snoozed attempt is given back."""

    job_id: Any
    delay: float
    attempts: int

    def apply(self, backend: QueueBackend, worker_id: int, metrics: list[MetricRow]) -> bool:
        """False when the job was taken back (rescued) while it ran."""
        return backend.snooze(worker_id, self.job_id, self.delay, self.attempts, metrics)


@dataclasses.dataclass(frozen=True)
class Cancel:
    """Delete a cancelled job this worker holds, at once (not batched with
    the next claim as a success is): it is neither retried nor failed."""

    job_id: Any

    def apply(self, backend: QueueBackend, worker_id: int, metrics: list[MetricRow]) -> bool:
        """False when the job was taken back (rescued) while it ran."""
        return backend.complete(worker_id, [self.job_id], metrics) > 0


FinishOp = Complete | Release | Snooze | Cancel | Fail | CompleteStep
#: The operations on one job that the backend can refuse (the job was taken back).
JobOp = Release | Snooze | Cancel | Fail | CompleteStep


class PendingOps:
    """Finishing operations in order, each kept until the backend took it."""

    def __init__(self) -> None:
        self._ops: collections.deque[FinishOp] = collections.deque()

    def __len__(self) -> int:
        return len(self._ops)

    def add(self, op: FinishOp) -> None:
        self._ops.append(op)

    def job_ids(self) -> list[Any]:
        """The jobs the waiting operations name: still reserved by the worker."""
        ids: list[Any] = []
        for op in self._ops:
            if isinstance(op, Complete):
                ids += op.ids
            else:
                ids.append(op.job_id)
        return ids

    def flush(
        self,
        backend: QueueBackend,
        worker_id: int,
        on_refused: Callable[[JobOp], None],
        metrics: MetricsBuffer | None = None,
    ) -> None:
        """Apply every operation in order, each carrying the counts in
        ``metrics`` at that moment. An outage error propagates with the failed
        operation still first in line (and its counts back in ``metrics``).
        ``on_refused`` hears of an operation on one job that the backend
        refused (its job was taken back)."""
        while self._ops:
            op = self._ops[0]
            rows = take_metrics(metrics)
            try:
                applied = op.apply(backend, worker_id, rows)
            except BaseException:
                put_back_metrics(metrics, rows)
                raise
            if not applied and not isinstance(op, Complete):
                on_refused(op)
            self._ops.popleft()
