"""The scheduler: schedule_runs (one row per dispatched task and slot, unique)
and job_runs (one row per run of a periodic job)."""

import peewee

from tourno.db import SerialField, TimestampField


def up(migrator, db):
    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class ScheduleRun(Base):
        id = SerialField()
        task = peewee.CharField(max_length=64)
        slot = TimestampField()
        job_id = peewee.BigIntegerField(null=True)
        job_uuid = peewee.CharField(max_length=36, null=True)
        dispatched_at = TimestampField()
        host = peewee.TextField()

        class Meta:
            table_name = "schedule_runs"
            indexes = ((("task", "slot"), True),)

    class JobRun(Base):
        id = SerialField()
        job = peewee.CharField(max_length=64)
        started_at = TimestampField()
        finished_at = TimestampField(null=True)
        seen = peewee.IntegerField()
        changed = peewee.IntegerField()
        failed = peewee.IntegerField()
        skipped = peewee.BooleanField()
        duration_ms = peewee.IntegerField(null=True)
        error = peewee.TextField(null=True)
        host = peewee.TextField()
        pid = peewee.IntegerField()

        class Meta:
            table_name = "job_runs"
            indexes = ((("job", "started_at"), False),)

    db.create_tables([ScheduleRun, JobRun])


def down(migrator, db):
    for table in ("job_runs", "schedule_runs"):
        db.execute_sql(f"DROP TABLE IF EXISTS {table}")
