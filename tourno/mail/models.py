"""The mail package's tables: the outbox every change writes its mail to and
suppressed addresses (the drains' token bucket is a row of
``tourno.buckets``)."""

from __future__ import annotations

import enum

import peewee

from tourno.accounts.models import User
from tourno.db import BaseModel, EnumField, JSONField, SerialField, TimestampField, utcnow


class EmailStatus(enum.StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    DEAD = "dead"
    SUPPRESSED = "suppressed"


class EmailPriority(enum.IntEnum):
    """Lower is sent first: transactional mail before bulk."""

    URGENT = 0
    HIGH = 1
    NORMAL = 5
    BULK = 9


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


class EmailOutbox(BaseModel):
    """One email to send, written in the transaction of the change that causes
    it. ``dedupe_key`` makes writing it idempotent (``ON CONFLICT DO NOTHING``);
    the mail package owns the sending side."""

    id = SerialField()
    dedupe_key = peewee.CharField(max_length=255, unique=True)
    user = peewee.ForeignKeyField(User, null=True, backref="+", on_delete="SET NULL", index=False)
    user_id: int | None  # the column, for type checkers (peewee adds it)
    to_email = peewee.CharField(max_length=320)
    template = peewee.CharField(max_length=64)
    context = JSONField(default=dict)
    priority = peewee.SmallIntegerField(default=int(EmailPriority.NORMAL))
    status = EnumField(EmailStatus, default=EmailStatus.PENDING)
    attempts = peewee.IntegerField(default=0)
    available_at = TimestampField(default=utcnow)
    locked_at = TimestampField(null=True)
    locked_by = peewee.CharField(max_length=255, null=True)
    sent_at = TimestampField(null=True)
    last_error = peewee.TextField(null=True)
    provider_message_id = peewee.CharField(max_length=255, null=True)
    created_at = TimestampField(default=utcnow)

    class Meta:
        table_name = "email_outbox"


# The drain: pending rows by priority, then due time.
EmailOutbox.add_index(
    EmailOutbox.priority,
    EmailOutbox.available_at,
    where=EmailOutbox.status == EmailStatus.PENDING,
    name="email_outbox_due_idx",
)
# The reaper: rows a dead drain left in 'sending'.
EmailOutbox.add_index(
    EmailOutbox.locked_at, where=EmailOutbox.status == EmailStatus.SENDING, name="email_outbox_sending_idx"
)
# The rolling daily cap counts recent sends.
EmailOutbox.add_index(
    EmailOutbox.sent_at, where=EmailOutbox.status == EmailStatus.SENT, name="email_outbox_sent_at_idx"
)
# The dashboard's mail page: the newest troubled rows, and their counts.
EmailOutbox.add_index(
    EmailOutbox.id,
    where=EmailOutbox.status.in_([EmailStatus.FAILED, EmailStatus.DEAD, EmailStatus.SUPPRESSED]),
    name="email_outbox_trouble_idx",
)


MODELS = [EmailOutbox, EmailSuppression]

# CHECK constraints of the PostgreSQL schema; the migration keeps a frozen copy.
CHECKS: dict[str, tuple[str, str]] = {
    "email_suppressions_reason_check": (
        "email_suppressions",
        f"reason IN ({', '.join(repr(r.value) for r in SuppressionReason)})",
    ),
    "email_outbox_status_check": (
        "email_outbox",
        f"status IN ({', '.join(repr(s.value) for s in EmailStatus)})",
    ),
    "email_outbox_priority_check": ("email_outbox", "priority BETWEEN 0 AND 9"),
}
