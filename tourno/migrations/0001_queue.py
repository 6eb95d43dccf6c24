"""The job queue: jobs, failed_jobs, workers, queue_signals."""

import peewee

from tourno.db import JSONField, SerialField, TimestampField


def up(migrator, db):
    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class JobRecord(Base):
        id = SerialField()
        queue = peewee.CharField(max_length=255)
        payload = JSONField()
        priority = peewee.IntegerField(default=0)
        attempts = peewee.IntegerField(default=0)
        available_at = TimestampField()
        reserved_at = TimestampField(null=True)
        reserved_by = peewee.BigIntegerField(null=True)
        lease_expires_at = TimestampField(null=True)
        unique_key = peewee.TextField(null=True)
        created_at = TimestampField()

        class Meta:
            table_name = "jobs"

    JobRecord.add_index(
        JobRecord.queue,
        JobRecord.priority,
        JobRecord.id,
        where=JobRecord.reserved_at.is_null(),
        name="jobs_ready_idx",
    )
    JobRecord.add_index(
        JobRecord.unique_key,
        unique=True,
        where=JobRecord.unique_key.is_null(False),
        name="jobs_unique_key_idx",
    )
    JobRecord.add_index(
        JobRecord.reserved_by,
        where=JobRecord.reserved_at.is_null(False),
        name="jobs_reserved_idx",
    )

    class FailedJobRecord(Base):
        id = SerialField()
        uuid = peewee.CharField(max_length=36, unique=True)
        connection = peewee.TextField()
        queue = peewee.TextField()
        payload = peewee.TextField()
        exception = peewee.TextField()
        failed_at = TimestampField(index=True)

        class Meta:
            table_name = "failed_jobs"

    class WorkerRecord(Base):
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

    class QueueSignal(Base):
        name = peewee.CharField(max_length=64, primary_key=True)
        value = TimestampField()

        class Meta:
            table_name = "queue_signals"

    db.create_tables([JobRecord, FailedJobRecord, WorkerRecord, QueueSignal])
    if isinstance(db, peewee.PostgresqlDatabase):
        # jobs is a hot table of short-lived rows: vacuum it early and often
        # so dead tuples never pile up under the claim index.
        db.execute_sql(
            "ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.01, "
            "autovacuum_vacuum_threshold = 1000, autovacuum_vacuum_cost_delay = 0, "
            "autovacuum_analyze_scale_factor = 0.02)"
        )
        db.execute_sql("ALTER TABLE jobs ADD CONSTRAINT jobs_attempts_check CHECK (attempts >= 0)")


def down(migrator, db):
    for table in ("queue_signals", "workers", "failed_jobs", "jobs"):
        db.execute_sql(f"DROP TABLE IF EXISTS {table}")
