"""Every statement on ``email_outbox`` and ``email_suppressions``.

Writing mail in the caller's transaction (:func:`enqueue_email`) and, for the
drain: claiming due rows, recording each outcome (guarded by ``locked_by``),
releasing rows untried, reaping rows of a drain that died, the suppression
list, and the counts ``tourno mail status`` shows.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import peewee

from tourno import db as tdb
from tourno.accounts.models import User
from tourno.buckets import TokenBucket
from tourno.config import Settings
from tourno.db import database
from tourno.mail.models import EmailOutbox, EmailPriority, EmailStatus, EmailSuppression, SuppressionReason
from tourno.mail.templates import is_bulk
from tourno.mail.unsubscribe import normalize_address

log = logging.getLogger(__name__)

#: The token bucket every drain paces with (``TOURNO_MAIL_RATE``).
MAIL_BUCKET = "mail"
#: A row in `sending` for longer than this belongs to a drain that died.
REAP_AFTER = dt.timedelta(minutes=10)


def outbox_row(
    *,
    dedupe_key: str,
    to_email: str,
    template: str,
    context: dict[str, Any],
    user: User | None = None,
    priority: EmailPriority = EmailPriority.NORMAL,
    available_at: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """One ``email_outbox`` row, ready for :func:`enqueue_emails`."""
    now = now or tdb.utcnow()
    return {
        "dedupe_key": dedupe_key,
        "user": user.id if user is not None else None,
        "to_email": to_email,
        "template": template,
        "context": context,
        "priority": int(priority),
        "status": EmailStatus.PENDING,
        "attempts": 0,
        "available_at": available_at or now,
        "created_at": now,
    }


def enqueue_emails(rows: list[dict[str, Any]], chunk: int = 1000) -> None:
    """Write outbox rows (from :func:`outbox_row`) in the caller's
    transaction, ``chunk`` rows per statement. A row whose ``dedupe_key`` is
    already there is skipped, so a retried change never mails twice."""
    for batch in peewee.chunked(rows, chunk):
        EmailOutbox.insert_many(batch).on_conflict_ignore().execute()


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
    """Write one email to the outbox in the caller's transaction (see
    :func:`enqueue_emails`)."""
    enqueue_emails(
        [
            outbox_row(
                dedupe_key=dedupe_key,
                to_email=to_email,
                template=template,
                context=context,
                user=user,
                priority=priority,
                available_at=available_at,
                now=now,
            )
        ]
    )


@dataclass
class Claimed:
    """An outbox row a drain has claimed: what it needs to build and send it."""

    id: int
    dedupe_key: str
    user_id: int | None
    to_email: str
    template: str
    context: Any
    priority: int
    attempts: int


# -- claiming ------------------------------------------------------------------------------

# tourno_mail_claim (PostgreSQL): take up to :limit due rows in send order and
# mark them ours, in one statement. FOR UPDATE SKIP LOCKED makes concurrent
# drains step over each other's rows instead of waiting on them or taking
# them twice; the subquery's LIMIT keeps the UPDATE from touching more rows.
# `status = 'pending'` is written literally so the planner uses the partial
# index email_outbox_due_idx (priority, available_at) WHERE status = 'pending'.
# The attempt is counted here, so a message that kills its drain every time
# still ends up dead rather than looping.
_CLAIM_PG = """
    UPDATE email_outbox
    SET status = 'sending', locked_at = %(now)s, locked_by = %(me)s, attempts = attempts + 1
    WHERE id IN (
        SELECT id FROM email_outbox
        WHERE status = 'pending' AND available_at <= %(now)s
        ORDER BY priority, available_at
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    )
    RETURNING id, dedupe_key, user_id, to_email, template, context, priority, attempts, available_at
"""


def _daily_room(now: dt.datetime, cap: int, bucket: TokenBucket) -> int:
    """How many more messages the rolling 24 h cap allows. Messages being sent
    right now count too, and the caller holds the bucket row's lock, so two
    drains cannot both spend the last of the cap."""
    bucket.lock(now)
    since = now - dt.timedelta(hours=24)
    sent = (
        EmailOutbox.select()
        .where((EmailOutbox.status == EmailStatus.SENT) & (EmailOutbox.sent_at > since))
        .count()
    )
    sending = EmailOutbox.select().where(EmailOutbox.status == EmailStatus.SENDING).count()
    return max(0, cap - sent - sending)


def claim(
    me: str, limit: int, now: dt.datetime, *, daily_cap: int = 0, bucket: TokenBucket | None = None
) -> list[Claimed]:
    """Claim up to ``limit`` due rows for drain ``me``, committed before return.
    With a ``daily_cap``, the row lock of ``bucket`` (the drains' mail bucket,
    which must be given: locking it first creates its row, at its rate)
    serializes the drains' counting of the last 24 hours."""
    if daily_cap > 0 and bucket is None:
        raise ValueError("a daily cap needs the drains' bucket, whose row lock serializes the count")
    with tdb.write_transaction():
        if daily_cap > 0:
            assert bucket is not None
            limit = min(limit, _daily_room(now, daily_cap, bucket))
            if limit <= 0:
                return []
        rows: list[tuple[Claimed, Any]]
        if tdb.is_postgres():
            cursor = database.execute_sql(_CLAIM_PG, {"now": now, "me": me, "limit": limit})
            rows = [
                (Claimed(*r[:8]), tdb.parse_timestamp(r[8]))
                for r in cursor.fetchall()  # RETURNING has no order
            ]
        else:
            ids = [
                r.id
                for r in EmailOutbox.select(EmailOutbox.id)
                .where((EmailOutbox.status == EmailStatus.PENDING) & (EmailOutbox.available_at <= now))
                .order_by(EmailOutbox.priority, EmailOutbox.available_at, EmailOutbox.id)
                .limit(limit)
            ]
            if not ids:
                return []
            EmailOutbox.update(
                status=EmailStatus.SENDING,
                locked_at=now,
                locked_by=me,
                attempts=EmailOutbox.attempts + 1,
            ).where(EmailOutbox.id.in_(ids)).execute()
            rows = [
                (
                    Claimed(
                        r.id,
                        r.dedupe_key,
                        r.user_id,
                        r.to_email,
                        r.template,
                        r.context,
                        r.priority,
                        r.attempts,
                    ),
                    r.available_at,
                )
                for r in EmailOutbox.select().where(EmailOutbox.id.in_(ids))
            ]
    rows.sort(key=lambda pair: (pair[0].priority, pair[1], pair[0].id))
    claimed = [c for c, _ in rows]
    for c in claimed:
        if isinstance(c.context, (str, bytes)):
            try:
                c.context = json.loads(c.context)
            except ValueError:
                pass  # rendering reports it as this row's failure
    return claimed


def has_due(now: dt.datetime) -> bool:
    """Whether any row is waiting to be sent at ``now``."""
    return bool(
        EmailOutbox.select()
        .where((EmailOutbox.status == EmailStatus.PENDING) & (EmailOutbox.available_at <= now))
        .exists()
    )


# -- outcomes ------------------------------------------------------------------------------


def reap(*, now: dt.datetime, max_attempts: int, reap_after: dt.timedelta = REAP_AFTER) -> int:
    """Rows stuck in ``sending`` for longer than ``reap_after`` (their drain
    died) go back to ``pending``, or to ``dead`` when they have used every
    attempt; returns how many."""
    cutoff = now - reap_after
    stuck = (EmailOutbox.status == EmailStatus.SENDING) & (EmailOutbox.locked_at < cutoff)
    with tdb.write_transaction():
        dead: int = (
            EmailOutbox.update(
                status=EmailStatus.DEAD,
                locked_at=None,
                locked_by=None,
                last_error="stuck in sending (its drain died) after the last attempt",
            )
            .where(stuck & (EmailOutbox.attempts >= max_attempts))
            .execute()
        )
        back: int = (
            EmailOutbox.update(status=EmailStatus.PENDING, locked_at=None, locked_by=None)
            .where(stuck)
            .execute()
        )
    if dead or back:
        log.warning(
            "reaped %s email(s) stuck in sending: %s back to pending, %s dead", dead + back, back, dead
        )
    return dead + back


def finish(row: Claimed, me: str, **values: Any) -> bool:
    """Record an outcome (the columns in ``values``), only if the row is still ours."""
    values.setdefault("locked_at", None)
    values.setdefault("locked_by", None)
    query = EmailOutbox.update(**values).where(
        (EmailOutbox.id == row.id)
        & (EmailOutbox.status == EmailStatus.SENDING)
        & (EmailOutbox.locked_by == me)
    )
    if tdb.is_postgres():
        with database.atomic():
            # Waiting for the WAL flush of every outcome would cost more than the
            # SMTP exchange itself. A database crash can lose only the last
            # moments of outcomes; those rows stay `sending`, are reaped and sent
            # again: the at-least-once a dying drain gives anyway.
            database.execute_sql("SET LOCAL synchronous_commit = off")
            n = query.execute()
    else:
        n = query.execute()
    if n != 1:
        log.warning("email %s was taken back from drain %s before its outcome was recorded", row.id, me)
    return bool(n == 1)


def release(rows: Iterable[Claimed], me: str) -> int:
    """Give claimed rows back untried: pending again, the attempt not charged."""
    ids = [r.id for r in rows]
    if not ids:
        return 0
    n: int = (
        EmailOutbox.update(
            status=EmailStatus.PENDING,
            locked_at=None,
            locked_by=None,
            attempts=EmailOutbox.attempts - 1,
        )
        .where(
            EmailOutbox.id.in_(ids)
            & (EmailOutbox.status == EmailStatus.SENDING)
            & (EmailOutbox.locked_by == me)
        )
        .execute()
    )
    return n


# -- the suppression list ------------------------------------------------------------------


def add_suppression(
    address: str,
    reason: SuppressionReason | str = SuppressionReason.UNSUBSCRIBE,
    *,
    detail: str | None = None,
    now: dt.datetime | None = None,
) -> bool:
    """Never mail ``address`` again; False if it already was suppressed.

    An ``unsubscribe`` suppression only stops bulk mail; any other reason
    (a hard bounce ...) stops all mail, so it replaces an ``unsubscribe`` row."""
    reason = SuppressionReason(reason)
    address = normalize_address(address)
    insert = EmailSuppression.insert(
        address=address,
        reason=reason.value,
        detail=detail,
        created_at=now or tdb.utcnow(),
    ).on_conflict_ignore()
    # The row count, not execute()'s "id": SQLite's is the connection's last
    # rowid, which an ignored insert does not reset.
    n = database.execute(insert).rowcount
    if not n and reason != SuppressionReason.UNSUBSCRIBE:
        n = (
            EmailSuppression.update(reason=reason.value, detail=detail)
            .where(
                (EmailSuppression.address == address)
                & (EmailSuppression.reason == SuppressionReason.UNSUBSCRIBE.value)
            )
            .execute()
        )
    return bool(n)


def suppressed(rows: list[Claimed]) -> set[int]:
    """Ids of rows not to send: suppressed addresses, and bulk mail to users
    who opted out. An address that unsubscribed still gets transactional mail
    (its match is ready, its result was recorded)."""
    addresses = {normalize_address(r.to_email) for r in rows}
    reasons = {
        s.address: s.reason
        for s in EmailSuppression.select(EmailSuppression.address, EmailSuppression.reason).where(
            EmailSuppression.address.in_(addresses)
        )
    }
    out = set()
    for r in rows:
        reason = reasons.get(normalize_address(r.to_email))
        if reason is None:
            continue
        if reason != SuppressionReason.UNSUBSCRIBE.value or is_bulk(r.template):
            out.add(r.id)
    bulk_users = {r.user_id for r in rows if r.user_id is not None and is_bulk(r.template)}
    if bulk_users:
        opt_out = User.notifications_opt_out == True  # noqa: E712 - a peewee expression
        opted_out = {u.id for u in User.select(User.id).where(User.id.in_(bulk_users) & opt_out)}
        out |= {r.id for r in rows if r.user_id in opted_out and is_bulk(r.template)}
    return out


# -- status --------------------------------------------------------------------------------


def outbox_status(cap: int | None = None) -> dict[str, int]:
    """Rows per status, every status listed (zero included). With ``cap``,
    each is exact up to it and estimated above (``db.bounded_count``), one
    indexed count per status instead of a scan of the whole outbox."""
    if cap is not None:
        return {
            s.value: tdb.bounded_count(
                EmailOutbox.select(EmailOutbox.id).where(EmailOutbox.status == s), cap=cap
            )
            for s in EmailStatus
        }
    counts = {s.value: 0 for s in EmailStatus}
    query = EmailOutbox.select(EmailOutbox.status, peewee.fn.COUNT(EmailOutbox.id)).group_by(
        EmailOutbox.status
    )
    for status, n in tdb.tuples(query):
        counts[getattr(status, "value", str(status))] = n
    return counts


def summary(
    now: dt.datetime | None = None, settings: Settings | None = None, cap: int | None = None
) -> dict[str, Any]:
    """What ``tourno mail status`` shows: counts, what is due, the last 24 h,
    and the mail bucket (refilled to ``now`` at the rate of ``settings``, if
    given). With ``cap``, every count is exact up to it and estimated above."""
    now = now or tdb.utcnow()
    pending = EmailOutbox.status == EmailStatus.PENDING
    due = EmailOutbox.select(EmailOutbox.id).where(pending & (EmailOutbox.available_at <= now))
    oldest = (
        EmailOutbox.select(peewee.fn.MIN(EmailOutbox.available_at))
        .where(pending & (EmailOutbox.available_at <= now))
        .scalar()
    )
    oldest_at = tdb.parse_timestamp(oldest)
    sent_24h = EmailOutbox.select(EmailOutbox.id).where(
        (EmailOutbox.status == EmailStatus.SENT) & (EmailOutbox.sent_at > now - dt.timedelta(hours=24))
    )
    if settings is not None:
        tokens = TokenBucket(MAIL_BUCKET, settings.mail_rate).peek(now)
    else:
        tokens = TokenBucket(MAIL_BUCKET, 1.0).peek(None)
    return {
        "counts": outbox_status(cap),
        "due": tdb.bounded_count(due, cap=cap),
        "oldest_due_seconds": round((now - oldest_at).total_seconds(), 3) if oldest_at else None,
        "sent_last_24h": tdb.bounded_count(sent_24h, cap=cap),
        "suppressed_addresses": tdb.bounded_count(EmailSuppression.select(EmailSuppression.address), cap=cap),
        "bucket_tokens": None if tokens is None else round(tokens, 3),
    }
