"""Queue control: a job's cancel flag.

``jobs.cancel_requested_at`` is set by ``tourno queue cancel`` on a job that
is running; its worker stops it at the end of its attempt instead of
retrying it. The partial index holds only flagged rows (normally none), so
the monitors' sweep of flagged jobs that went back to the queue reads an
empty index instead of the table."""

from tourno.db import TimestampField


def up(migrator, db):
    migrator.migrate(migrator.add_column("jobs", "cancel_requested_at", TimestampField(null=True)))
    db.execute_sql(
        "CREATE INDEX IF NOT EXISTS jobs_cancel_requested_idx ON jobs (id) "
        "WHERE cancel_requested_at IS NOT NULL"
    )


def down(migrator, db):
    db.execute_sql("DROP INDEX IF EXISTS jobs_cancel_requested_idx")
    migrator.migrate(migrator.drop_column("jobs", "cancel_requested_at"))
