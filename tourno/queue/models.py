"""The queue's tables. The engine's hot statements are written out in
``backends/database.py``; these models serve the CLI, the migrations and the
schema check.
"""

from __future__ import annotations

import peewee

from tourno.db import BaseModel, JSONField, SerialField, TimestampField


class JobRecord(BaseModel):
    """A job waiting, delayed or running. Finished jobs are deleted, failed
    ones move to ``failed_jobs``, so this table stays small."""

    id = SerialField()
    queue = peewee.CharField(max_length=255)
    payload = JSONField()
    # Lower runs first; ties run in dispatch order.
    priority = peewee.IntegerField(default=0)
    attempts = peewee.IntegerField(default=0)
    available_at = TimestampField()
    reserved_at = TimestampField(null=True)
    reserved_by = peewee.BigIntegerField(null=True)
    lease_expires_at = TimestampField(null=True)
    unique_key = peewee.TextField(null=True)
    created_at = TimestampField()
    #: Set by ``tourno queue cancel`` on a running job (``queue/control.py``).
    cancel_requested_at = TimestampField(null=True)

    class Meta:
        table_name = "jobs"


# The claim reads ready rows of one queue in (priority, id) order; the index
# holds only unreserved rows so running jobs never slow it down.
JobRecord.add_index(
    JobRecord.queue,
    JobRecord.priority,
    JobRecord.id,
    where=JobRecord.reserved_at.is_null(),
    name="jobs_ready_idx",
)
# Unique jobs: a second dispatch with the same key is ON CONFLICT DO NOTHING.
JobRecord.add_index(
    JobRecord.unique_key,
    unique=True,
    where=JobRecord.unique_key.is_null(False),
    name="jobs_unique_key_idx",
)
# Crash recovery scans reserved rows only.
JobRecord.add_index(
    JobRecord.reserved_by,
    where=JobRecord.reserved_at.is_null(False),
    name="jobs_reserved_idx",
)
# Cancelled jobs waiting for their worker or for the sweep: normally none.
JobRecord.add_index(
    JobRecord.id,
    where=JobRecord.cancel_requested_at.is_null(False),
    name="jobs_cancel_requested_idx",
)


class FailedJobRecord(BaseModel):
    id = SerialField()
    uuid = peewee.CharField(max_length=36, unique=True)
    connection = peewee.TextField()
    queue = peewee.TextField()
    # Text, not JSON: a payload that failed because it is not JSON is kept as is.
    payload = peewee.TextField()
    exception = peewee.TextField()
    failed_at = TimestampField(index=True)

    class Meta:
        table_name = "failed_jobs"


class WorkerRecord(BaseModel):
    """One row per running ``tourno work`` process, kept fresh by its heartbeat."""

    id = SerialField()
    name = peewee.TextField()
    hostname = peewee.TextField()
    pid = peewee.IntegerField()
    queues = peewee.TextField()
    started_at = TimestampField()
    heartbeat_at = TimestampField(index=True)
    current_job_id = peewee.BigIntegerField(null=True)
    jobs_done = peewee.BigIntegerField(default=0)

    class Meta:
        table_name = "workers"


class QueueSignal(BaseModel):
    """Named instants the workers watch, e.g. ``restart``."""

    name = peewee.CharField(max_length=64, primary_key=True)
    value = TimestampField()

    class Meta:
        table_name = "queue_signals"


class QueuePause(BaseModel):
    """A paused queue: it keeps taking dispatches, and no worker claims from
    it until ``tourno queue resume`` deletes the row (``queue/pauses.py``)."""

    queue = peewee.CharField(max_length=255, primary_key=True)
    paused_at = TimestampField()

    class Meta:
        table_name = "queue_pauses"


class OutboxRecord(BaseModel):
    """A job dispatched to Redis inside a database transaction, not yet
    handed to Redis: written with the caller's rows, deleted once pushed
    (``tourno/queue/handoff.py`` explains the hand-off)."""

    id = SerialField()
    uuid = peewee.TextField()
    # The Redis job id taken at dispatch; None when Redis was unreachable then.
    job_id = peewee.BigIntegerField(null=True)
    queue = peewee.CharField(max_length=255)
    payload = peewee.TextField()
    priority = peewee.IntegerField(default=0)
    available_at = TimestampField()
    unique_key = peewee.TextField(null=True)
    unique_for = peewee.DoubleField(null=True)
    created_at = TimestampField()

    class Meta:
        table_name = "queue_outbox"


class LockRecord(BaseModel):
    """A key held by a running job (``WithoutOverlapping``): one row per key.

    The holder is a worker id. A row whose worker stopped heartbeating, or
    whose ``expires_at`` passed, is free: the next taker overwrites it, so a
    key held by a dead worker frees itself when its heartbeat goes stale.
    """

    key = peewee.TextField(primary_key=True)
    worker_id = peewee.BigIntegerField()
    job_id = peewee.TextField(null=True)
    acquired_at = TimestampField()
    expires_at = TimestampField(null=True)

    class Meta:
        table_name = "queue_locks"


MODELS = [JobRecord, FailedJobRecord, WorkerRecord, QueueSignal, OutboxRecord, LockRecord, QueuePause]
