"""job_batches: one row per batch of jobs (``tourno.queue.workflows``), its
counts and callbacks; job_flow_marks: the chain and batch jobs whose outcome
was counted, where the queue lives outside the database (Redis), so that a
job run again after a crash is not counted twice."""

import peewee

from tourno.db import TimestampField


def up(migrator, db):
    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class JobBatch(Base):
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

    class JobFlowMark(Base):
        key = peewee.TextField(primary_key=True)
        marked_at = TimestampField(index=True)

        class Meta:
            table_name = "job_flow_marks"

    db.create_tables([JobBatch, JobFlowMark])


def down(migrator, db):
    db.execute_sql("DROP TABLE IF EXISTS job_flow_marks")
    db.execute_sql("DROP TABLE IF EXISTS job_batches")
