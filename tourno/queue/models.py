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
    #: Attempts that ended in an exception the job raised (``Job.max_exceptions``).
    exceptions = peewee.IntegerField(default=0, constraints=[peewee.SQL("DEFAULT 0")])
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
# An idle worker sleeps until the first waiting job of its queues is due
# (QueueBackend.next_due): one probe per queue, however many jobs are delayed.
JobRecord.add_index(
    JobRecord.queue,
    JobRecord.available_at,
    where=JobRecord.reserved_at.is_null(),
    name="jobs_due_idx",
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
    #: Attempts used when it failed for good (None: filed before this was kept).
    attempts = peewee.IntegerField(null=True)

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


class QueueMetric(BaseModel):
    """What the workers did with one job class on one queue in one minute
    (``tourno/queue/metrics.py`` explains how it is written).

    ``succeeded`` counts attempts that returned (Prometheus's "processed");
    ``failed`` attempts that moved the job to failed_jobs; ``released``
    attempts that raised and were put back for a retry; ``snoozed`` and
    ``cancelled`` jobs that asked to run later or were cancelled. ``runs`` is
    how many attempts the runtime and wait sums cover: runtime is the
    seconds ``handle()`` took, wait the seconds from when the job became
    available to when it started. The row whose minute is the epoch
    (1970-01-01) holds the totals of the minutes pruned after the retention.
    """

    id = SerialField()
    minute = TimestampField()
    queue = peewee.CharField(max_length=255)
    job = peewee.TextField()
    shard = peewee.IntegerField(default=0)
    succeeded = peewee.BigIntegerField(default=0)
    failed = peewee.BigIntegerField(default=0)
    released = peewee.BigIntegerField(default=0)
    snoozed = peewee.BigIntegerField(default=0)
    cancelled = peewee.BigIntegerField(default=0)
    runs = peewee.BigIntegerField(default=0)
    runtime_sum = peewee.DoubleField(default=0.0)
    runtime_max = peewee.DoubleField(default=0.0)
    wait_sum = peewee.DoubleField(default=0.0)
    wait_max = peewee.DoubleField(default=0.0)

    class Meta:
        table_name = "queue_metrics"


# The upsert's conflict target; minute first, for the window reads and the prune.
QueueMetric.add_index(
    QueueMetric.minute,
    QueueMetric.queue,
    QueueMetric.job,
    QueueMetric.shard,
    unique=True,
    name="queue_metrics_key_idx",
)


class JobBatchRecord(BaseModel):
    """A batch of jobs (``tourno.queue.workflows``). ``pending`` jobs have not
    finished yet; ``processed`` succeeded (or were skipped after a cancel);
    ``failed`` failed for good. ``fired`` is a bit set of the callbacks
    already dispatched (1 then, 2 catch, 4 finally): each runs once.
    ``options`` is JSON: the callbacks' payloads and ``allow_failures``."""

    id = peewee.CharField(max_length=36, primary_key=True)
    name = peewee.TextField(default="")
    total = peewee.IntegerField(default=0)
    pending = peewee.IntegerField(default=0)
    failed = peewee.IntegerField(default=0)
    processed = peewee.IntegerField(default=0)
    fired = peewee.IntegerField(default=0)
    options = peewee.TextField(default="{}")
    created_at = TimestampField(index=True)
    finished_at = TimestampField(null=True)
    cancelled_at = TimestampField(null=True)

    class Meta:
        table_name = "job_batches"


class JobFlowMark(BaseModel):
    """A chain or batch job whose outcome was counted, on a queue outside
    the database (Redis): its next step and its completion cannot share one
    transaction, so the step is made idempotent: ``key`` is the job's uuid
    and retry generation (``uuid:N``)."""

    key = peewee.TextField(primary_key=True)
    marked_at = TimestampField(index=True)

    class Meta:
        table_name = "job_flow_marks"


MODELS = [
    JobRecord,
    FailedJobRecord,
    WorkerRecord,
    QueueSignal,
    OutboxRecord,
    LockRecord,
    QueuePause,
    QueueMetric,
    JobBatchRecord,
    JobFlowMark,
]
