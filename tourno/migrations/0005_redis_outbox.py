"""queue_outbox: jobs dispatched to Redis inside a database transaction,
kept until they are handed to Redis (the Redis backend's durable hand-off)."""

import peewee

from tourno.db import SerialField, TimestampField


def up(migrator, db):
    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class OutboxRecord(Base):
        id = SerialField()
        uuid = peewee.TextField()
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

    db.create_tables([OutboxRecord])


def down(migrator, db):
    db.execute_sql("DROP TABLE IF EXISTS queue_outbox")
