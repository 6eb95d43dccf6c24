"""queue_metrics: per-minute counters of finished jobs by queue and job
class, written by the workers with their claims (``tourno/queue/metrics.py``)."""

import peewee

from tourno.db import SerialField, TimestampField


def up(migrator, db):
    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class QueueMetric(Base):
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

    QueueMetric.add_index(
        QueueMetric.minute,
        QueueMetric.queue,
        QueueMetric.job,
        QueueMetric.shard,
        unique=True,
        name="queue_metrics_key_idx",
    )
    db.create_tables([QueueMetric])


def down(migrator, db):
    db.execute_sql("DROP TABLE IF EXISTS queue_metrics")
