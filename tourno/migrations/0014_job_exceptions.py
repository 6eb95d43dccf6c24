"""``jobs.exceptions``: how many of a job's attempts ended in an exception the
job raised (a timeout, a worker that died, a snooze do not count). A job
class's ``max_exceptions`` fails the job for good at that count, whatever
``tries`` allows (Laravel's ``$maxExceptions`` next to ``$tries``). A constant
default: on PostgreSQL 11+ the column is added without rewriting the table."""


def up(migrator, db):
    # A default in the database: the engine's inserts (hand-written in
    # backends/database.py) do not name the column.
    db.execute_sql("ALTER TABLE jobs ADD COLUMN exceptions INTEGER NOT NULL DEFAULT 0")


def down(migrator, db):
    db.execute_sql("ALTER TABLE jobs DROP COLUMN exceptions")
