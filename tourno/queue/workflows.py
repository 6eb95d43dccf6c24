"""Chains and batches: jobs that run one after another, or as a group with
callbacks when the group is done.

A **chain** runs its jobs in order, each once the previous one succeeded::

    chain([Fetch(id=1), Resize(id=1), Publish(id=1)]).catch(Alert(id=1)).dispatch()

Only the first job is queued; the others ride in its payload (``chain``: the
remaining links, each a queue, priority and encoded payload) and each link
queues the next when it succeeds. A link that fails for good (after its own
retries) stops the chain; the ``catch`` job (payload key ``chain_catch``) is
queued then.

A **batch** runs its jobs in any order, on any workers, and counts them in
one ``job_batches`` row::

    b = batch([Resize(id=i) for i in ids], name="thumbs").then(Done()).dispatch()

``then`` is queued once when every job succeeded, ``catch`` once at the first
failure, ``finally`` once when every job has finished. A failure cancels the
batch unless ``allow_failures()``: jobs not started yet are then skipped
(they count as processed without running), as after ``Batch.cancel()``.

Crash safety. A job's next step (the next link, the batch's counts and
callbacks) is tied to its completion, never to an event:

* database drivers: :meth:`QueueBackend.complete_step` / ``fail_step`` delete
  (or file) the job and run the step in **one transaction**: the job's row
  is deleted only by its owner, so a job rescued from a killed worker and
  run again is counted once, by the run that completes it;
* Redis: the job lives outside the database, so the step runs in a database
  transaction that first inserts a mark for the job (``job_flow_marks``,
  keyed by its uuid and retry generation) and is skipped if the mark is
  there; the job is deleted from Redis after the commit. A crash between the
  two runs the job again, and its step is not taken twice. Jobs the step
  queues go through ``queue_outbox`` (``handoff.py``), so they commit with it.

The batch row is updated with one ``UPDATE`` (the row lock orders workers
finishing at the same moment); the callbacks are decided from the counts it
leaves, and the ``fired`` bits make each callback fire once.

Plain jobs pay nothing: the worker looks for the ``chain`` / ``batch`` keys in
the payload it has decoded anyway.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid as uuidlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from tourno.db import UTC, database, open_connection, write_transaction
from tourno.queue import backends
from tourno.queue.job import Job, PendingJob
from tourno.queue.models import JobBatchRecord, JobFlowMark

#: Payload keys: the remaining links of a chain, its catch job, the batch a
#: job belongs to, the batch a callback belongs to, and how often a batch or
#: chain job was retried from failed_jobs (part of its Redis mark).
CHAIN = "chain"
CHAIN_CATCH = "chain_catch"
BATCH = "batch"
BATCH_OF = "batch_of"
RETRIES = "flow_retries"

#: Compact JSON, as the payloads are written (``job.py``).
_encode = json.JSONEncoder(separators=(",", ":")).encode

#: ``job_batches.fired`` bits.
FIRED_THEN = 1
FIRED_CATCH = 2
FIRED_FINALLY = 4


class WorkflowError(ValueError):
    """A chain or batch that cannot be dispatched as asked."""


def is_step(payload: dict[str, Any]) -> bool:
    """Whether finishing this job has a next step (a chain or batch job)."""
    return CHAIN in payload or BATCH in payload


# -- links: jobs encoded now, queued later ----------------------------------------------


def _link(job: Job, queue: str | None, now: dt.datetime) -> dict[str, Any]:
    if not isinstance(job, Job):
        raise WorkflowError(f"a chain or batch holds jobs, got {type(job).__name__}")
    p = job.pending(queue=queue, now=now)
    return {"queue": p.queue, "priority": p.priority, "payload": p.payload}


def _pending(link: dict[str, Any], extra: dict[str, Any], delay: float = 0.0) -> PendingJob:
    """A stored link as a job to push now, with ``extra`` payload keys."""
    payload = {**link["payload"], **extra}
    payload["dispatched_at"] = dt.datetime.now(UTC).isoformat()
    return PendingJob(
        queue=str(link["queue"]),
        uuid=str(payload["uuid"]),
        payload_json=_encode(payload),
        priority=int(link.get("priority") or 0),
        delay=delay,
    )


def _push(jobs: list[PendingJob]) -> list[Any]:
    return backends.current().push(jobs) if jobs else []


# -- chains ----------------------------------------------------------------------------------


class Chain:
    """Jobs run one after another (``chain([...])``)."""

    def __init__(self, jobs: Iterable[Job]) -> None:
        self.jobs = list(jobs)
        if not self.jobs:
            raise WorkflowError("a chain needs at least one job")
        for job in self.jobs:
            if not isinstance(job, Job):
                raise WorkflowError(f"a chain holds jobs, got {type(job).__name__}")
        self._catch: Job | None = None

    def catch(self, job: Job) -> Chain:
        """Queue ``job`` once if a link fails for good (the rest never runs)."""
        if not isinstance(job, Job):
            raise WorkflowError(f"catch takes a job, got {type(job).__name__}")
        self._catch = job
        return self

    def dispatch(self, *, delay: float | dt.timedelta | None = None, queue: str | None = None) -> Any:
        """Queue the first job (after ``delay``); ``queue`` applies to every
        link. Inside ``db.atomic()`` it commits with the transaction. Returns
        the first job's id."""
        now = dt.datetime.now(UTC)
        links = [_link(j, queue, now) for j in self.jobs]
        extra: dict[str, Any] = {}
        if len(links) > 1:
            extra[CHAIN] = links[1:]
        if self._catch is not None:
            extra[CHAIN_CATCH] = _link(self._catch, queue, now)
        first = self.jobs[0].pending(delay=delay, queue=queue, now=now)
        payload = {**first.payload, **extra}
        first = dataclasses.replace(first, payload_json=_encode(payload), unique_key=None, unique_for=None)
        return _push([first])[0]


def chain(jobs: Iterable[Job]) -> Chain:
    """Jobs that run one after another, each once the previous succeeded."""
    return Chain(jobs)


def _chain_next(payload: dict[str, Any]) -> list[PendingJob]:
    rest = payload.get(CHAIN) or []
    if not rest:
        return []
    extra: dict[str, Any] = {}
    if len(rest) > 1:
        extra[CHAIN] = rest[1:]
    if payload.get(CHAIN_CATCH):
        extra[CHAIN_CATCH] = payload[CHAIN_CATCH]
    return [_pending(rest[0], extra)]


# -- batches: the stored row ---------------------------------------------------------------


@dataclasses.dataclass
class Batch:
    """A batch as its row stands (``Batch.find``; ``fresh()`` reads it again)."""

    id: str
    name: str
    total: int
    pending: int
    failed: int
    processed: int
    fired: int
    options: dict[str, Any]
    created_at: dt.datetime
    finished_at: dt.datetime | None
    cancelled_at: dt.datetime | None

    @classmethod
    def _of(cls, rec: JobBatchRecord) -> Batch:
        try:
            options = json.loads(rec.options or "{}")
        except ValueError:
            options = {}
        return cls(
            id=rec.id,
            name=rec.name,
            total=rec.total,
            pending=rec.pending,
            failed=rec.failed,
            processed=rec.processed,
            fired=rec.fired,
            options=options if isinstance(options, dict) else {},
            created_at=rec.created_at,
            finished_at=rec.finished_at,
            cancelled_at=rec.cancelled_at,
        )

    @classmethod
    def find(cls, batch_id: str) -> Batch | None:
        if database.is_closed():
            open_connection()
        rec = JobBatchRecord.get_or_none(JobBatchRecord.id == str(batch_id))
        return None if rec is None else cls._of(rec)

    def fresh(self) -> Batch:
        found = Batch.find(self.id)
        if found is None:
            raise LookupError(f"batch {self.id} no longer exists (pruned?)")
        return found

    @property
    def finished(self) -> bool:
        """Every job has finished (succeeded, failed or was skipped)."""
        return self.pending <= 0

    @property
    def cancelled(self) -> bool:
        return self.cancelled_at is not None

    @property
    def allow_failures(self) -> bool:
        return bool(self.options.get("allow_failures"))

    @property
    def progress(self) -> int:
        """Percent of the jobs that have finished."""
        return 100 if self.total <= 0 else int(100 * (self.total - self.pending) / self.total)

    def cancel(self) -> bool:
        """Stop the jobs not started yet (they are skipped); running ones
        finish. Returns whether this call cancelled it."""
        if database.is_closed():
            open_connection()
        n = (
            JobBatchRecord.update(cancelled_at=dt.datetime.now(UTC))
            .where((JobBatchRecord.id == self.id) & JobBatchRecord.cancelled_at.is_null())
            .execute()
        )
        return n > 0

    def add(self, jobs: Iterable[Job]) -> list[Any]:
        """Add jobs to this batch while it runs (from one of its jobs, say):
        they count towards its total. Returns their ids."""
        now = dt.datetime.now(UTC)
        links = [_link(j, None, now) for j in jobs]
        if not links:
            return []
        with database.atomic():
            n = (
                JobBatchRecord.update(
                    total=JobBatchRecord.total + len(links),
                    pending=JobBatchRecord.pending + len(links),
                )
                .where((JobBatchRecord.id == self.id) & (JobBatchRecord.pending > 0))
                .execute()
            )
            if n == 0:
                raise WorkflowError(f"batch {self.id} has finished (or does not exist): no jobs can be added")
            return _push([_pending(link, {BATCH: self.id}) for link in links])

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "total": self.total,
            "pending": self.pending,
            "processed": self.processed,
            "failed": self.failed,
            "progress": self.progress,
            "allow_failures": self.allow_failures,
            "created_at": self.created_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "cancelled_at": self.cancelled_at.isoformat() if self.cancelled_at else None,
            "callbacks": [k for k in ("then", "catch", "finally") if self.options.get(k)],
        }


class PendingBatch:
    """A batch being put together (``batch([...])``), not yet dispatched."""

    def __init__(self, jobs: Iterable[Job], name: str = "") -> None:
        self.jobs = list(jobs)
        for job in self.jobs:
            if not isinstance(job, Job):
                raise WorkflowError(f"a batch holds jobs, got {type(job).__name__}")
        self.name = str(name or "")
        self._callbacks: dict[str, Job] = {}
        self._allow_failures = False

    def _callback(self, kind: str, job: Job) -> PendingBatch:
        if not isinstance(job, Job):
            raise WorkflowError(f"{kind} takes a job, got {type(job).__name__}")
        self._callbacks[kind] = job
        return self

    def then(self, job: Job) -> PendingBatch:
        """Queue ``job`` once, when every job of the batch has succeeded."""
        return self._callback("then", job)

    def catch(self, job: Job) -> PendingBatch:
        """Queue ``job`` once, at the batch's first failure."""
        return self._callback("catch", job)

    def finally_(self, job: Job) -> PendingBatch:
        """Queue ``job`` once, when every job has finished (failed or not)."""
        return self._callback("finally", job)

    def allow_failures(self, allow: bool = True) -> PendingBatch:
        """A failed job does not cancel the batch: the others still run."""
        self._allow_failures = bool(allow)
        return self

    def dispatch(self, *, queue: str | None = None) -> Batch:
        """Create the batch row and queue its jobs in one transaction (inside
        ``db.atomic()``, the caller's). Returns the batch."""
        now = dt.datetime.now(UTC)
        batch_id = str(uuidlib.uuid4())
        links = [_link(j, queue, now) for j in self.jobs]
        options: dict[str, Any] = {k: _link(j, queue, now) for k, j in self._callbacks.items()}
        options["allow_failures"] = self._allow_failures
        if database.is_closed():
            open_connection()
        with database.atomic():
            JobBatchRecord.insert(
                id=batch_id,
                name=self.name,
                total=len(links),
                pending=len(links),
                options=_encode(options),
                created_at=now,
            ).execute()
            if links:
                _push([_pending(link, {BATCH: batch_id}) for link in links])
            else:
                # Nothing to wait for: done at once.
                _push(_settle(batch_id))
        found = Batch.find(batch_id)
        assert found is not None
        return found


def batch(jobs: Iterable[Job], name: str = "") -> PendingBatch:
    """Jobs that run as a group, with callbacks when it is done."""
    return PendingBatch(jobs, name)


# -- batches: counting outcomes (in the completing job's transaction) ----------------------------


def _settle(batch_id: str, failed_now: bool = False) -> list[PendingJob]:
    """After the counts of ``batch_id`` changed in this transaction (its row
    is locked by that UPDATE): decide the callbacks due, mark them fired,
    and return them to queue in the same transaction."""
    rec = JobBatchRecord.get_or_none(JobBatchRecord.id == batch_id)
    if rec is None:
        return []  # pruned: nothing to do
    b = Batch._of(rec)
    fire: list[str] = []
    fired = b.fired
    changes: dict[Any, Any] = {}
    if failed_now and not fired & FIRED_CATCH:
        fire.append("catch")
        fired |= FIRED_CATCH
    if failed_now and not b.allow_failures and b.cancelled_at is None:
        changes[JobBatchRecord.cancelled_at] = b.cancelled_at = dt.datetime.now(UTC)
    if b.pending <= 0:
        if not fired & FIRED_THEN and b.failed == 0 and b.cancelled_at is None:
            fire.append("then")
            fired |= FIRED_THEN
        if not fired & FIRED_FINALLY:
            fire.append("finally")
            fired |= FIRED_FINALLY
            changes[JobBatchRecord.finished_at] = dt.datetime.now(UTC)
    if fired != b.fired:
        changes[JobBatchRecord.fired] = fired
    if changes:
        JobBatchRecord.update(changes).where(JobBatchRecord.id == batch_id).execute()
    return [_pending(b.options[k], {BATCH_OF: batch_id}) for k in fire if b.options.get(k)]


def _count(batch_id: str, *, succeeded: bool) -> list[PendingJob]:
    # One UPDATE: its row lock orders workers that finish at the same moment,
    # and each sees the counts the one before it left.
    if succeeded:
        change = {
            JobBatchRecord.pending: JobBatchRecord.pending - 1,
            JobBatchRecord.processed: JobBatchRecord.processed + 1,
        }
    else:
        change = {
            JobBatchRecord.pending: JobBatchRecord.pending - 1,
            JobBatchRecord.failed: JobBatchRecord.failed + 1,
        }
    if JobBatchRecord.update(change).where(JobBatchRecord.id == batch_id).execute() == 0:
        return []
    return _settle(batch_id, failed_now=not succeeded)


def _mark(payload: dict[str, Any]) -> bool:
    """Redis only: record that this run of the job was counted; False when
    an earlier run already was (the job ran again after a crash)."""
    key = f"{payload.get('uuid')}:{payload.get(RETRIES, 0)}"
    p = database.param
    cursor = database.execute_sql(
        f"INSERT INTO job_flow_marks (key, marked_at) VALUES ({p}, {p}) ON CONFLICT (key) DO NOTHING",
        (key, JobFlowMark.marked_at.db_value(dt.datetime.now(UTC))),
    )
    return bool(cursor.rowcount)


def _once(payload: dict[str, Any]) -> bool:
    """Whether this completion's step must run: always on the database
    drivers (the job's guarded delete is in the same transaction), once per
    mark elsewhere."""
    return backends.current().requeues_in_database or _mark(payload)


def after_success(payload: dict[str, Any]) -> Callable[[], None]:
    """The step of a chain or batch job that succeeded, for
    :meth:`QueueBackend.complete_step` to run in the completion's transaction."""

    def step() -> None:
        if not _once(payload):
            return
        jobs = _chain_next(payload)
        if payload.get(BATCH):
            jobs += _count(str(payload[BATCH]), succeeded=True)
        _push(jobs)

    return step


def after_failure(payload: dict[str, Any]) -> Callable[[], None]:
    """The step of a chain or batch job that failed for good: the chain's
    catch, the batch's counts and callbacks."""

    def step() -> None:
        if not _once(payload):
            return
        jobs: list[PendingJob] = []
        if payload.get(CHAIN_CATCH):
            jobs.append(_pending(payload[CHAIN_CATCH], {}))
        if payload.get(BATCH):
            jobs += _count(str(payload[BATCH]), succeeded=False)
        _push(jobs)

    return step


def after_cancel(payload: Any) -> None:
    """A batch job deleted by ``tourno queue cancel`` (waiting, or stopped
    when its attempt ended, or swept): counted as failed, so the batch still
    finishes (``catch`` and ``finally`` run; ``then`` does not, a job of it
    never succeeded) instead of waiting for it forever. A cancelled chain
    link ends its chain without its ``catch`` (the operator stopped it).
    Its own transaction: the cancel's delete has committed (a crash between
    leaves the batch pending, as before this existed). ``payload`` is the
    decoded payload or its stored text; anything else is ignored."""
    if isinstance(payload, (str, bytes)):
        try:
            payload = json.loads(payload)
        except ValueError:
            return
    if not isinstance(payload, dict) or not payload.get(BATCH):
        return
    with write_transaction():
        if _once(payload):
            _push(_count(str(payload[BATCH]), succeeded=False))


# -- in the worker ---------------------------------------------------------------------------------


def attach(job: Job, payload: dict[str, Any]) -> bool:
    """Give a batch job (or a batch's callback) its ``batch``; returns True
    when the job's batch was cancelled, so that it is skipped."""
    batch_id = payload.get(BATCH) or payload.get(BATCH_OF)
    if not batch_id:
        return False
    object.__setattr__(job, "_batch_id", str(batch_id))
    if not payload.get(BATCH):
        return False
    rec = JobBatchRecord.select(JobBatchRecord.cancelled_at).where(JobBatchRecord.id == str(batch_id)).first()
    return rec is not None and rec.cancelled_at is not None


def requeued(payloads: Sequence[dict[str, Any]]) -> None:
    """Failed batch jobs were queued again (``tourno queue retry``), in the
    caller's transaction: each is pending again instead of failed."""
    for payload in payloads:
        if payload.get(BATCH):
            JobBatchRecord.update(pending=JobBatchRecord.pending + 1, failed=JobBatchRecord.failed - 1).where(
                (JobBatchRecord.id == str(payload[BATCH])) & (JobBatchRecord.failed > 0)
            ).execute()


def for_retry(payload: dict[str, Any]) -> dict[str, Any]:
    """A failed chain or batch job's payload, to queue again: a new retry
    generation, so that its next outcome is counted."""
    if is_step(payload):
        payload[RETRIES] = int(payload.get(RETRIES) or 0) + 1
    return payload


# -- operations (tourno queue batches / batch / prune-batches) -------------------------------------


def newest(limit: int | None = None) -> list[Batch]:
    query = JobBatchRecord.select().order_by(JobBatchRecord.created_at.desc(), JobBatchRecord.id)
    if limit:
        query = query.limit(limit)
    return [Batch._of(r) for r in query]


def prune(hours: float) -> int:
    """Delete batches that finished more than ``hours`` ago, and the Redis
    marks as old; returns how many batches went."""
    cutoff = dt.datetime.now(UTC) - dt.timedelta(hours=hours)
    with write_transaction():
        n = JobBatchRecord.delete().where(JobBatchRecord.finished_at < cutoff).execute()
        JobFlowMark.delete().where(JobFlowMark.marked_at < cutoff).execute()
    return int(n)
