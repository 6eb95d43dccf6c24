"""Mail: email_suppressions and the mail_rate token bucket."""

import peewee

from tourno.db import TimestampField

# Frozen copy of tourno.mail.models.CHECKS at this migration.
CHECKS = {
    "email_suppressions_reason_check": (
        "email_suppressions",
        "reason IN ('hard_bounce', 'unsubscribe', 'complaint', 'manual')",
    ),
    "mail_rate_tokens_check": ("mail_rate", "tokens >= 0"),
}


def up(migrator, db):
    class Base(peewee.Model):
        class Meta:
            database = db
            legacy_table_names = False

    class EmailSuppression(Base):
        address = peewee.CharField(max_length=320, primary_key=True)
        reason = peewee.CharField(max_length=32)
        detail = peewee.TextField(null=True)
        created_at = TimestampField()

        class Meta:
            table_name = "email_suppressions"

    class MailRate(Base):
        name = peewee.CharField(max_length=64, primary_key=True)
        tokens = peewee.DoubleField()
        updated_at = TimestampField()

        class Meta:
            table_name = "mail_rate"

    db.create_tables([EmailSuppression, MailRate])
    if isinstance(db, peewee.PostgresqlDatabase):
        for name, (table, expression) in CHECKS.items():
            db.execute_sql(f"ALTER TABLE {table} ADD CONSTRAINT {name} CHECK ({expression})")


def down(migrator, db):
    for table in ("mail_rate", "email_suppressions"):
        db.execute_sql(f"DROP TABLE IF EXISTS {table}")
