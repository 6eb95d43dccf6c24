"""An index for the mail reaper, which looks for rows a dead drain left in
``sending``: without it every drain read the whole outbox (463 ms at 1.37 M
rows in bench/scale.py). Completed matches also lose their ``warn_at`` (it
only mattered while the match was open), so the planner's estimates for the
warning scan stay about open matches."""


def up(migrator, db):
    db.execute_sql(
        "CREATE INDEX IF NOT EXISTS email_outbox_sending_idx ON email_outbox (locked_at) "
        "WHERE status = 'sending'"
    )
    db.execute_sql("UPDATE matches SET warn_at = NULL WHERE state = 'complete' AND warn_at IS NOT NULL")


def down(migrator, db):
    db.execute_sql("DROP INDEX IF EXISTS email_outbox_sending_idx")
