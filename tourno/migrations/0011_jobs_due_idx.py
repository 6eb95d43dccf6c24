"""An index for idle workers: each looks up the first waiting job of its
queues by ``available_at`` (``QueueBackend.next_due``) and sleeps until it is
due, so delayed and backed-off jobs start on time instead of at the next
``--sleep`` poll. Partial like ``jobs_ready_idx``: reserved rows never enter it."""


def up(migrator, db):
    db.execute_sql(
        "CREATE INDEX IF NOT EXISTS jobs_due_idx ON jobs (queue, available_at) WHERE reserved_at IS NULL"
    )


def down(migrator, db):
    db.execute_sql("DROP INDEX IF EXISTS jobs_due_idx")
