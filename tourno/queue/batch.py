"""The claim batch: what a worker holds between its round trips to the queue.

When jobs are fast and the queue is deep, the worker claims several jobs in
one statement and deletes the ones it finished in the same statement as its
next claim (see ``worker.py``). :class:`ClaimBatch` holds that state: the
claimed jobs not yet started, the finished jobs not yet deleted, and the job
running now. The worker's main thread and its monitor thread both touch it,
so every change happens under its lock.

Finishing a job (delete, release, fail) is a typed operation
(:class:`Complete`, :class:`Release`, :class:`Fail`) kept in
:class:`PendingOps` until the backend has taken it: nothing queued is lost
while the database is down.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any

from tourno.queue.backends.base import ClaimedJob, QueueBackend
from tourno.queue.exceptions import MaxAttemptsExceeded, QueueError, RetryDeadlinePassed
from tourno.queue.job import Job, backoff_delay, build_job, parse_payload, retry_deadline


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
        #: When the jobs in the batch were claimed (time.monotonic()).
        self.claimed_at = 0.0
        # Taken out by release_held while its round trip runs: still held.
        self._in_flight: list[Any] = []

    @property
    def running(self) -> RunningJob | None:
        return self._running

    def take_next(self) -> RunningJob | None:
        """Start the next prefetched job, if any. The claim did not charge it
        an attempt: it is counted here and written later, if it matters."""
        with self.lock:
            if not self._pending:
                return None
            claimed = self._pending.popleft()
            claimed.attempts += 1
            self._running = RunningJob(claimed, time.monotonic(), attempt_saved=False)
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

    def drain(self) -> tuple[list[Any], list[Any]]:
        """Take what is left, for leaving: the ids of finished jobs not yet
        deleted, and of claimed jobs never started."""
        with self.lock:
            done, self._done = self._done, []
            pending = [j.id for j in self._pending]
            self._pending.clear()
        return done, pending

    def held_ids(self) -> list[Any]:
        """Every job the batch holds reserved: running, claimed, finished but
        not yet deleted, and those release_held is writing right now."""
        with self.lock:
            held = [j.id for j in self._pending] + self._done + self._in_flight
            if self._running is not None:
                held.append(self._running.claimed.id)
        return held

    def release_held(self, now: float, backend: QueueBackend, worker_id: int) -> int:
        """Called by the monitor. Once the batch has been held past ``hold``
        (a slow job in it), write the pending completions and hand back the
        unstarted jobs, so that other workers can take them; once a prefetched
        job has run ``hold`` seconds, write its attempt. Returns how many jobs
        were handed back. What the backend did not take stays in the batch."""
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
                self._in_flight = done + [j.id for j in pending]
        try:
            if charge is not None:
                backend.count_attempt(worker_id, charge.id, charge.attempts)
                running.attempt_saved = True
            if done:
                backend.complete(worker_id, done)
            if pending:
                backend.hand_back(worker_id, [j.id for j in pending])
        except BaseException:
            with self.lock:
                self._done[:0] = done
                self._pending.extendleft(reversed(pending))
            raise
        finally:
            with self.lock:
                self._in_flight = []
        return len(pending)


# -- finishing a job: operations that must reach the backend ---------------------------


@dataclasses.dataclass(frozen=True)
class Complete:
    """Delete finished jobs this worker holds."""

    ids: list[Any]

    def apply(self, backend: QueueBackend, worker_id: int) -> bool:
        backend.complete(worker_id, self.ids)
        return True


@dataclasses.dataclass(frozen=True)
class Release:
    """Make a job available again after ``delay`` seconds, with its attempts."""

    job_id: Any
    delay: float
    attempts: int

    def apply(self, backend: QueueBackend, worker_id: int) -> bool:
        """False when the job was taken back (rescued) while it ran."""
        return backend.release(worker_id, self.job_id, self.delay, self.attempts)


@dataclasses.dataclass(frozen=True)
class Fail:
    """Move a job to the failed-job store."""

    job: ClaimedJob
    uuid: str
    exception: str

    @property
    def job_id(self) -> Any:
        return self.job.id

    def apply(self, backend: QueueBackend, worker_id: int) -> bool:
        """False when the job was taken back (rescued) while it ran."""
        return backend.fail(worker_id, self.job, self.uuid, self.exception)


FinishOp = Complete | Release | Fail


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
        self, backend: QueueBackend, worker_id: int, on_refused: Callable[[Release | Fail], None]
    ) -> None:
        """Apply every operation in order. An outage error propagates with
        the failed operation still first in line. ``on_refused`` hears of a
        release or failure the backend refused (its job was taken back)."""
        while self._ops:
            op = self._ops[0]
            if not op.apply(backend, worker_id) and not isinstance(op, Complete):
                on_refused(op)
            self._ops.popleft()
