"""The mail package's own tables: suppressed addresses and the global token bucket."""

from __future__ import annotations

import enum

import peewee

from tourno.db import BaseModel, TimestampField, utcnow


class SuppressionReason(enum.StrEnum):
    HARD_BOUNCE = "hard_bounce"
    UNSUBSCRIBE = "unsubscribe"
    COMPLAINT = "complaint"
    MANUAL = "manual"


class EmailSuppression(BaseModel):
    """An address Tourno never mails again (stored lower-cased)."""

    address = peewee.CharField(max_length=320, primary_key=True)
    reason = peewee.CharField(max_length=32)
    # What the server said, for a human deciding whether to lift it.
    detail = peewee.TextField(null=True)
    created_at = TimestampField(default=utcnow)

    class Meta:
        table_name = "email_suppressions"


class MailRate(BaseModel):
    """One token bucket per row, shared by every drain on every server.

    ``tokens`` is what was left at ``updated_at``; a drain refills it for the
    time since, takes what it needs and writes both back under the row lock.
    """

    name = peewee.CharField(max_length=64, primary_key=True)
    tokens = peewee.DoubleField()
    updated_at = TimestampField()

    class Meta:
        table_name = "mail_rate"


MODELS = [EmailSuppression, MailRate]

# CHECK constraints of the PostgreSQL schema; the migration keeps a frozen copy.
CHECKS: dict[str, tuple[str, str]] = {
    "email_suppressions_reason_check": (
        "email_suppressions",
        f"reason IN ({', '.join(repr(r.value) for r in SuppressionReason)})",
    ),
    "mail_rate_tokens_check": ("mail_rate", "tokens >= 0"),
}
