"""The token bucket table gets a neutral name (``mail_rate`` -> ``rate_buckets``:
the queue's rate-limiting middleware shares it with the mail drains), and
``queue_locks`` holds the keys of ``WithoutOverlapping`` jobs."""

import peewee

from tourno.db import TimestampField


def up(migrator, db):
    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class LockRecord(Base):
        key = peewee.TextField(primary_key=True)
        worker_id = peewee.BigIntegerField()
        job_id = peewee.TextField(null=True)
        acquired_at = TimestampField()
        expires_at = TimestampField(null=True)

        class Meta:
            table_name = "queue_locks"

    db.execute_sql("ALTER TABLE mail_rate RENAME TO rate_buckets")
    if isinstance(db, peewee.PostgresqlDatabase):
        db.execute_sql(
            "ALTER TABLE rate_buckets RENAME CONSTRAINT mail_rate_tokens_check TO rate_buckets_tokens_check"
        )
        db.execute_sql("ALTER INDEX mail_rate_pkey RENAME TO rate_buckets_pkey")
    db.create_tables([LockRecord])


def down(migrator, db):
    db.execute_sql("DROP TABLE IF EXISTS queue_locks")
    db.execute_sql("ALTER TABLE rate_buckets RENAME TO mail_rate")
    if isinstance(db, peewee.PostgresqlDatabase):
        db.execute_sql(
            "ALTER TABLE mail_rate RENAME CONSTRAINT rate_buckets_tokens_check TO mail_rate_tokens_check"
        )
        db.execute_sql("ALTER INDEX rate_buckets_pkey RENAME TO mail_rate_pkey")
