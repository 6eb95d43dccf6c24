"""The failed-job store (``failed_jobs``) and what operators do with it.

Failed jobs always live in the database, whichever backend runs the queue;
:func:`record` is the one upsert into it (PostgreSQL's database backend has
a fast path of its own: the delete and the insert in one statement).
Jobs are addressed by their numeric id or their uuid; ``retry`` keeps the uuid
and resets the attempts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from tourno.db import UTC, bounded_count, database
from tourno.queue import backends, workflows
from tourno.queue.exceptions import InvalidPayload
from tourno.queue.job import PendingJob, build_job, job_class
from tourno.queue.models import FailedJobRecord

#: Failed jobs moved back per transaction by ``retry all``.
RETRY_CHUNK = 500


@dataclass
class RetryResult:
    retried: list[int]
    missing: list[str]
    unretryable: list[tuple[int, str]]


def job_name(record: FailedJobRecord) -> str:
    """The job's registered name, from its payload (or '?' when unreadable)."""
    try:
        payload = json.loads(record.payload)
        return str(payload.get("job") or payload.get("display_name") or "?")
    except (TypeError, ValueError, AttributeError):
        return "?"


def record(
    uuid: str,
    connection: str,
    queue: str,
    payload: str,
    exception: str,
    *,
    failed_at: dt.datetime | None = None,
    attempts: int | None = None,
) -> None:
    """File a failed job on this thread's open database connection, in the
    caller's transaction if there is one. Failing the same uuid again (a
    retried job failing again) updates its record, so a repeated call after
    an outage is harmless."""
    FailedJobRecord.insert(
        uuid=uuid,
        connection=connection,
        queue=queue,
        payload=payload,
        exception=exception,
        failed_at=failed_at or dt.datetime.now(UTC),
        attempts=attempts,
    ).on_conflict(
        conflict_target=[FailedJobRecord.uuid],
        preserve=[
            FailedJobRecord.connection,
            FailedJobRecord.queue,
            FailedJobRecord.payload,
            FailedJobRecord.exception,
            FailedJobRecord.failed_at,
            FailedJobRecord.attempts,
        ],
    ).execute()


def exception_summary(traceback_text: str) -> str:
    """The line that names the exception a stored traceback ends with
    (``ValueError: bad input``), skipping the frames and any chained ones."""
    lines = [ln for ln in (traceback_text or "").strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    # The final exception starts at the first unindented line after the
    # last indented one (the frames and their source lines are indented).
    last_indented = max((i for i, ln in enumerate(lines) if ln[:1].isspace()), default=-1)
    if last_indented + 1 < len(lines):
        return lines[last_indented + 1].strip()
    return lines[-1].strip()


def count(queue: str | None = None, cap: int | None = None) -> int:
    """Failed jobs (of ``queue``); with ``cap``, exact up to it and estimated
    above (``db.bounded_count``: a dashboard must not scan 100,000 rows)."""
    query = FailedJobRecord.select(FailedJobRecord.id)
    if queue:
        query = query.where(FailedJobRecord.queue == queue)
    if cap is not None:
        return bounded_count(query, cap=cap)
    return query.count()


def newest(limit: int | None = None, queue: str | None = None) -> Iterator[FailedJobRecord]:
    """Failed jobs, newest first, streamed (the table can be large)."""
    query = FailedJobRecord.select().order_by(FailedJobRecord.failed_at.desc(), FailedJobRecord.id.desc())
    if queue:
        query = query.where(FailedJobRecord.queue == queue)
    if limit:
        query = query.limit(limit)
    return query.iterator()


def find(ident: str) -> FailedJobRecord | None:
    ident = ident.strip()
    if ident.isdigit():
        return FailedJobRecord.get_or_none(FailedJobRecord.id == int(ident))
    return FailedJobRecord.get_or_none(FailedJobRecord.uuid == ident)


def _requeue(records: list[FailedJobRecord]) -> tuple[list[int], list[tuple[int, str]]]:
    """Push failed jobs back and delete their records, in one transaction."""
    pending: list[PendingJob] = []
    moved: list[int] = []
    refused: list[tuple[int, str]] = []
    # Chain and batch jobs (workflows.py): the batch counts them pending again.
    steps: dict[int, dict[str, Any]] = {}
    now = dt.datetime.now(UTC)
    backend = backends.current()
    for rec in records:
        if (rec.connection or "database") != backend.connection_name:
            refused.append(
                (
                    rec.id,
                    f"it failed on the {rec.connection!r} connection but this process queues on "
                    f"{backend.connection_name!r}; retry it with TOURNO_QUEUE_CONNECTION={rec.connection}",
                )
            )
            continue
        try:
            payload = json.loads(rec.payload)
            if not isinstance(payload, dict):
                raise ValueError("not a JSON object")
        except (TypeError, ValueError) as exc:
            refused.append((rec.id, f"payload is not a JSON object ({exc}); forget it instead"))
            continue
        try:
            cls = job_class(str(payload.get("job")))
        except InvalidPayload:
            cls = None  # pushed back as is; the worker files it again, saying why
        if payload.get("retry_until") is not None:
            # A fresh window, as Laravel recomputes retryUntil on retry.
            seconds = cls.retry_until if cls is not None else None
            payload["retry_until"] = (
                (now + dt.timedelta(seconds=float(seconds))).isoformat() if seconds else None
            )
        if workflows.is_step(payload):
            steps[rec.id] = workflows.for_retry(payload)
        job = PendingJob.from_payload(rec.queue, payload)
        if cls is not None:
            # Back as it was dispatched: the class's priority and unique key
            # (a dispatch(priority=...) override is not in the payload).
            try:
                unique_key = build_job(payload)._unique_key()
            except (InvalidPayload, TypeError, ValueError):
                unique_key = None
            job = dataclasses.replace(
                job,
                priority=cls.priority,
                unique_key=unique_key,
                unique_for=cls.unique_for if unique_key else None,
            )
        pending.append(job)
        moved.append(rec.id)
    if not pending:
        return moved, refused
    if backend.requeues_in_database or steps:
        # The jobs and the deletions commit together (on Redis, batch and
        # chain jobs go through queue_outbox so that the batch's counts
        # commit with them; a taken unique key is not seen then).
        with database.atomic():
            ids = backend.push(pending)
            _keep_refused(moved, ids, refused)
            if moved:
                FailedJobRecord.delete().where(FailedJobRecord.id.in_(moved)).execute()
                workflows.requeued([steps[i] for i in moved if i in steps])
    else:
        # Another store (Redis) cannot join the transaction: push first, outside
        # any transaction (so a unique key taken is known now), then delete
        # the records. A crash in between leaves a record of a requeued job
        # (retrying it again runs the job twice), never a job lost.
        ids = backend.push(pending)
        _keep_refused(moved, ids, refused)
        if moved:
            FailedJobRecord.delete().where(FailedJobRecord.id.in_(moved)).execute()
    return moved, refused


def _keep_refused(moved: list[int], ids: list[Any], refused: list[tuple[int, str]]) -> None:
    """A unique job whose key a pending job holds stays failed."""
    for rec_id, job_id in zip(list(moved), ids, strict=True):
        if job_id is None:
            moved.remove(rec_id)
            refused.append((rec_id, "a job with the same unique key is pending; retry it later"))


def retry(idents: Iterable[str]) -> RetryResult:
    records: list[FailedJobRecord] = []
    missing: list[str] = []
    seen: set[int] = set()
    for ident in idents:
        rec = find(ident)
        if rec is None:
            missing.append(ident)
        elif rec.id not in seen:
            seen.add(rec.id)
            records.append(rec)
    moved, refused = _requeue(records)
    return RetryResult(moved, missing, refused)


def retry_all(queue: str | None = None, progress: Callable[[int], None] | None = None) -> RetryResult:
    """Retry every failed job (of one queue), oldest first, in chunks so that
    memory stays flat however many there are."""
    result = RetryResult([], [], [])
    last_id = 0
    while True:
        query = FailedJobRecord.select().where(FailedJobRecord.id > last_id)
        if queue:
            query = query.where(FailedJobRecord.queue == queue)
        chunk = list(query.order_by(FailedJobRecord.id).limit(RETRY_CHUNK))
        if not chunk:
            return result
        last_id = chunk[-1].id
        moved, refused = _requeue(chunk)
        result.retried += moved
        result.unretryable += refused
        if progress is not None:
            progress(len(chunk))


def forget(ident: str) -> bool:
    rec = find(ident)
    if rec is None:
        return False
    return FailedJobRecord.delete().where(FailedJobRecord.id == rec.id).execute() > 0


def flush(hours: float | None = None) -> int:
    """Delete all failed jobs, or those that failed at least ``hours`` ago."""
    query = FailedJobRecord.delete()
    if hours is not None:
        cutoff = dt.datetime.now(UTC) - dt.timedelta(hours=hours)
        query = query.where(FailedJobRecord.failed_at <= cutoff)
    return query.execute()


def prune(hours: float) -> int:
    """Delete failed jobs older than ``hours`` (strictly), in chunks."""
    cutoff = dt.datetime.now(UTC) - dt.timedelta(hours=hours)
    total = 0
    while True:
        ids = [
            r.id
            for r in FailedJobRecord.select(FailedJobRecord.id)
            .where(FailedJobRecord.failed_at < cutoff)
            .limit(1000)
        ]
        if not ids:
            return total
        total += FailedJobRecord.delete().where(FailedJobRecord.id.in_(ids)).execute()
