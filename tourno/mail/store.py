"""Every statement on ``email_outbox``: writing mail in the caller's transaction
(:func:`enqueue_email`) and, for the drain, claiming, finishing and reaping rows."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tourno import db as tdb
from tourno.accounts.models import User
from tourno.mail.models import EmailOutbox, EmailPriority


def enqueue_email(
    *,
    dedupe_key: str,
    to_email: str,
    template: str,
    context: dict[str, Any],
    user: User | None = None,
    priority: EmailPriority = EmailPriority.NORMAL,
    available_at: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> None:
    """Write one email to the outbox in the caller's transaction. A second
    write with the same ``dedupe_key`` is a no-op, so a retried change never
    mails twice."""
    now = now or tdb.utcnow()
    EmailOutbox.insert(
        dedupe_key=dedupe_key,
        to_email=to_email,
        template=template,
        context=context,
        user=user,
        priority=int(priority),
        available_at=available_at or now,
        created_at=now,
    ).on_conflict_ignore().execute()
