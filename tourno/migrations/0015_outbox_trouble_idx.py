"""An index over the outbox's troubled rows (failed, dead, suppressed): the
dashboard's mail page lists the newest of them and counts each status, and
without it both read the whole outbox, which holds every mail ever sent.
Partial: sent and pending rows, nearly all of them, never enter it."""


def up(migrator, db):
    db.execute_sql(
        "CREATE INDEX IF NOT EXISTS email_outbox_trouble_idx ON email_outbox (id) "
        "WHERE status IN ('failed', 'dead', 'suppressed')"
    )


def down(migrator, db):
    db.execute_sql("DROP INDEX IF EXISTS email_outbox_trouble_idx")
