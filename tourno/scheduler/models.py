"""The scheduler's tables: one row per dispatched (task, slot), and one row
per run of a periodic job.

``schedule_runs`` is what makes any number of schedulers safe: the row and the
job are written in one transaction, and the unique (task, slot) index lets
only one of them in. ``job_runs`` is the periodic jobs' own record: what each
run saw, changed and failed on, for ``tourno schedule list``.
"""

from __future__ import annotations

import peewee

from tourno.db import BaseModel, SerialField, TimestampField, utcnow


class ScheduleRun(BaseModel):
    id = SerialField()
    task = peewee.CharField(max_length=64)
    # The slot this dispatch stands for: the minute the task's cron expression
    # fired, in UTC whatever the task's timezone.
    slot = TimestampField()
    # The job as dispatched: its queue id (None when an identical unique job
    # was still pending) and its uuid.
    job_id = peewee.BigIntegerField(null=True)
    job_uuid = peewee.CharField(max_length=36, null=True)
    dispatched_at = TimestampField(default=utcnow)
    host = peewee.TextField()

    class Meta:
        table_name = "schedule_runs"
        indexes = ((("task", "slot"), True),)


class JobRun(BaseModel):
    id = SerialField()
    job = peewee.CharField(max_length=64)
    started_at = TimestampField(default=utcnow)
    # NULL while running, or when the process died mid-run.
    finished_at = TimestampField(null=True)
    seen = peewee.IntegerField(default=0)
    changed = peewee.IntegerField(default=0)
    # Items whose service raised: logged, left for a human or the next tick.
    failed = peewee.IntegerField(default=0)
    # Another instance of the same job held the lock: this run did nothing.
    skipped = peewee.BooleanField(default=False)
    duration_ms = peewee.IntegerField(null=True)
    error = peewee.TextField(null=True)
    host = peewee.TextField()
    pid = peewee.IntegerField()

    class Meta:
        table_name = "job_runs"
        indexes = ((("job", "started_at"), False),)


#: Rows of both tables older than this are deleted as new ones are written,
#: so the tables stay small (about 2,000 job runs a day with the defaults).
RETENTION_DAYS = 30

MODELS = [ScheduleRun, JobRun]
