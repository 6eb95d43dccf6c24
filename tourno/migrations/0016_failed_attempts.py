"""``failed_jobs.attempts``: how many attempts the job had used when it
failed for good, for ``tourno queue failed`` and ``queue show``. Empty for
jobs that failed before this column existed."""


def up(migrator, db):
    db.execute_sql("ALTER TABLE failed_jobs ADD COLUMN attempts INTEGER")


def down(migrator, db):
    db.execute_sql("ALTER TABLE failed_jobs DROP COLUMN attempts")
