"""The drain: send ``email_outbox`` rows, paced by a global token bucket.

One call to :func:`drain` (SendBulkEmailsJob's body, or ``tourno mail drain``)
does, until the outbox is empty or its time budget is spent:

1. reap: rows left in ``sending`` by a drain that died go back to ``pending``;
2. claim a batch (priority order) and commit, so no lock is held while sending;
3. render each row, skip suppressed addresses, take tokens from the bucket
   row in the database (one bucket for every worker on every server), send
   over the one transport connection, and record each outcome on the row,
   guarded by ``locked_by`` so a row reaped from under a slow drain is not
   overwritten.

Delivery is at least once: a drain that dies between the SMTP reply and the
row update sends that message again after the reaper returns it. The
Message-ID is a function of the row (``<outbox-{id}-{hash}@domain>``), so such
a second copy carries the same Message-ID and receivers can drop it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from typing import Any

import peewee

from tourno import db as tdb
from tourno.accounts.models import User
from tourno.config import Settings
from tourno.db import database
from tourno.mail.models import EmailOutbox, EmailStatus, EmailSuppression, MailRate, SuppressionReason
from tourno.mail.templates import TEMPLATES, Rendered, TemplateError, render
from tourno.mail.transports import PermanentMailError, TemporaryMailError, Transport, from_settings

log = logging.getLogger(__name__)

BUCKET = "mail"
# A row in `sending` for longer than this belongs to a drain that died.
REAP_AFTER = dt.timedelta(minutes=10)
BACKOFF_BASE = 30.0
BACKOFF_CAP = 3600.0
DEFAULT_BATCH = 50
# SendBulkEmailsJob runs every minute: leave it time to finish before the next.
DEFAULT_BUDGET = 50.0
# Floating-point slack when turning a refilled bucket into whole tokens.
_EPS = 1e-9


@dataclass
class DrainResult:
    """What one drain did. ``seen`` counts claimed rows; the job runner
    records ``seen`` and ``changed`` (= ``sent``)."""

    seen: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    dead: int = 0
    suppressed: int = 0
    # Claimed but not tried (budget, rate or a down server): back to pending, attempt not charged.
    released: int = 0
    reaped: int = 0
    # Why the drain stopped: empty, budget, rate, daily_cap or unreachable.
    stopped: str = "empty"
    # The missing-TOURNO_SECRET_KEY warning was logged (once per drain).
    warned_unsigned: bool = False

    @property
    def changed(self) -> int:
        return self.sent

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Claimed:
    id: int
    dedupe_key: str
    user_id: int | None
    to_email: str
    template: str
    context: Any
    priority: int
    attempts: int


# -- pure pieces -----------------------------------------------------------------------


def backoff_seconds(attempts: int, rand: float) -> float:
    """Delay before retry number ``attempts``: 30 s, 1 min, 2 min ... capped at
    1 h, half of it random ("equal jitter"), so a burst of rows refused
    together does not come back together. ``rand`` is in [0, 1)."""
    delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, min(attempts - 1, 30)))
    return delay / 2 + delay / 2 * rand


def bucket_capacity(rate: float) -> float:
    """Largest burst: half a second's worth of messages, and at least one.

    Tokens are taken a chunk at a time by each drain and spent a moment
    later, so a second on the wire can see a full burst, a second's refill
    and the chunks in flight; with a half-second burst that stays under the
    "one second's rate plus one burst" providers allow (bench/scale.py
    measured 206 messages in one second at 100/s with a one-second burst)."""
    return max(1.0, rate / 2)


def refill(
    tokens: float, updated_at: dt.datetime, now: dt.datetime, rate: float
) -> tuple[float, dt.datetime]:
    """The bucket at ``now``. A clock behind the last writer's adds nothing
    (time never runs backwards for the bucket), so servers with skewed clocks
    can only under-send."""
    elapsed = max(0.0, (now - updated_at).total_seconds())
    return min(bucket_capacity(rate), tokens + elapsed * rate), max(updated_at, now)


# -- database helpers ---------------------------------------------------------------------


def _write_transaction():
    # SQLite takes the write lock at BEGIN, so concurrent drains queue up
    # instead of failing at COMMIT; PostgreSQL locks rows as it goes.
    return database.atomic() if tdb.is_postgres() else database.atomic("IMMEDIATE")


def _lock_bucket(now: dt.datetime, rate: float) -> MailRate:
    """The bucket row, locked until the caller's transaction ends (created full on first use)."""
    MailRate.insert(name=BUCKET, tokens=bucket_capacity(rate), updated_at=now).on_conflict_ignore().execute()
    query = MailRate.select().where(MailRate.name == BUCKET)
    if tdb.is_postgres():
        query = query.for_update()
    return query.get()


class TokenBucket:
    """The global rate limit: ``rate`` tokens per second, in one database row."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        # Tokens taken per round trip: a twentieth of a second's worth. A drain
        # sends what it took right away, so a small chunk keeps the messages on
        # the wire close to the moment their tokens were taken.
        self.chunk = max(1, math.ceil(rate / 20))

    def take(self, want: int, now: dt.datetime) -> tuple[int, float]:
        """Take up to ``want`` tokens; returns (granted, seconds until the next
        whole token when none is left)."""
        with _write_transaction():
            row = _lock_bucket(now, self.rate)
            tokens, stamp = refill(row.tokens, row.updated_at, now, self.rate)
            granted = max(0, min(want, int(tokens + _EPS)))
            left = max(0.0, tokens - granted)
            MailRate.update(tokens=left, updated_at=stamp).where(MailRate.name == BUCKET).execute()
        wait = 0.0 if left + _EPS >= 1 else (1 - left) / self.rate
        return granted, wait

    def give_back(self, n: int, now: dt.datetime) -> None:
        """Return tokens taken but not used (the drain stopped early)."""
        if n <= 0:
            return
        with _write_transaction():
            row = _lock_bucket(now, self.rate)
            tokens, stamp = refill(row.tokens, row.updated_at, now, self.rate)
            tokens = min(bucket_capacity(self.rate), tokens + n)
            MailRate.update(tokens=tokens, updated_at=stamp).where(MailRate.name == BUCKET).execute()


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


def _daily_room(now: dt.datetime, cap: int, rate: float) -> int:
    """How many more messages the rolling 24 h cap allows. Messages being sent
    right now count too, and the caller holds the bucket row's lock, so two
    drains cannot both spend the last of the cap."""
    _lock_bucket(now, rate)
    since = now - dt.timedelta(hours=24)
    sent = (
        EmailOutbox.select()
        .where((EmailOutbox.status == EmailStatus.SENT) & (EmailOutbox.sent_at > since))
        .count()
    )
    sending = EmailOutbox.select().where(EmailOutbox.status == EmailStatus.SENDING).count()
    return max(0, cap - sent - sending)


def claim(me: str, limit: int, now: dt.datetime, *, daily_cap: int = 0, rate: float = 1.0) -> list[Claimed]:
    """Claim up to ``limit`` due rows for drain ``me``, committed before return."""
    with _write_transaction():
        if daily_cap > 0:
            limit = min(limit, _daily_room(now, daily_cap, rate))
            if limit <= 0:
                return []
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


def reap(*, now: dt.datetime, max_attempts: int, reap_after: dt.timedelta = REAP_AFTER) -> int:
    """Rows stuck in ``sending`` for longer than ``reap_after`` (their drain
    died) go back to ``pending``, or to ``dead`` when they have used every
    attempt; returns how many."""
    cutoff = now - reap_after
    stuck = (EmailOutbox.status == EmailStatus.SENDING) & (EmailOutbox.locked_at < cutoff)
    with _write_transaction():
        dead = (
            EmailOutbox.update(
                status=EmailStatus.DEAD,
                locked_at=None,
                locked_by=None,
                last_error="stuck in sending (its drain died) after the last attempt",
            )
            .where(stuck & (EmailOutbox.attempts >= max_attempts))
            .execute()
        )
        back = (
            EmailOutbox.update(status=EmailStatus.PENDING, locked_at=None, locked_by=None)
            .where(stuck)
            .execute()
        )
    if dead or back:
        log.warning(
            "reaped %s email(s) stuck in sending: %s back to pending, %s dead", dead + back, back, dead
        )
    return dead + back


def _finish(row: Claimed, me: str, **values: Any) -> bool:
    """Record an outcome, only if the row is still ours."""
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
    return n == 1


def release(rows: Iterable[Claimed], me: str) -> int:
    """Give claimed rows back untried: pending again, the attempt not charged."""
    ids = [r.id for r in rows]
    if not ids:
        return 0
    return (
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


def normalize_address(address: str) -> str:
    return address.strip().lower()


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


def _suppressed(rows: list[Claimed]) -> set[int]:
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
        if reason != SuppressionReason.UNSUBSCRIBE.value or _is_bulk(r.template):
            out.add(r.id)
    bulk_users = {
        r.user_id
        for r in rows
        if r.user_id is not None and r.template in TEMPLATES and TEMPLATES[r.template].bulk
    }
    if bulk_users:
        opt_out = User.notifications_opt_out == True  # noqa: E712 - a peewee expression
        opted_out = {u.id for u in User.select(User.id).where(User.id.in_(bulk_users) & opt_out)}
        out |= {r.id for r in rows if r.user_id in opted_out and TEMPLATES[r.template].bulk}
    return out


# -- messages ---------------------------------------------------------------------------


def build_message(
    *,
    rendered: Rendered,
    to_email: str,
    settings: Settings,
    now: dt.datetime,
    outbox_id: int | None = None,
    dedupe_key: str | None = None,
) -> EmailMessage:
    """The MIME message for one rendered email: multipart/alternative, the
    plain text first and the HTML last (the part a client prefers). Raises
    ValueError when it cannot be built."""
    to_addr = parseaddr(to_email)[1]
    if "@" not in to_addr or any(c.isspace() for c in to_email.strip()):
        raise ValueError(f"not an email address: {to_email!r}")
    domain = parseaddr(settings.mail_from)[1].rpartition("@")[2] or "localhost"
    msg = EmailMessage()
    msg["From"] = settings.mail_from
    msg["To"] = to_email.strip()
    msg["Subject"] = rendered.subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = (
        message_id(outbox_id, dedupe_key or "", domain) if outbox_id else make_msgid(domain=domain)
    )
    # RFC 3834: no vacation auto-replies to robots.
    msg["Auto-Submitted"] = "auto-generated"
    if rendered.bulk and rendered.unsubscribe_url:
        # RFC 8058 one-click unsubscribe, required by Gmail and Yahoo for bulk senders.
        msg["List-Unsubscribe"] = f"<{rendered.unsubscribe_url}>"
        msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(rendered.text)
    msg.add_alternative(rendered.html, subtype="html")
    return msg


def message_id(outbox_id: int, dedupe_key: str, domain: str) -> str:
    """The same Message-ID every time a row is sent: a copy sent again after
    its drain died (see reap) is recognisably the same message."""
    digest = hashlib.sha256(dedupe_key.encode("utf-8")).hexdigest()[:16]
    return f"<outbox-{outbox_id}-{digest}@{domain}>"


def _is_bulk(template: str) -> bool:
    return template in TEMPLATES and TEMPLATES[template].bulk


def _clock(now: dt.datetime | Callable[[], dt.datetime] | None) -> Callable[[], dt.datetime]:
    if now is None:
        return tdb.utcnow
    if callable(now):
        return now
    fixed = now if now.tzinfo else now.replace(tzinfo=dt.UTC)
    return lambda: fixed


# -- the drain ----------------------------------------------------------------------------


def drain(
    *,
    transport: Transport | None = None,
    settings: Settings | None = None,
    now: dt.datetime | Callable[[], dt.datetime] | None = None,
    budget_seconds: float = DEFAULT_BUDGET,
    batch: int = DEFAULT_BATCH,
    progress: Callable[[DrainResult], None] | None = None,
    rand: Callable[[], float] = random.random,
    reap_after: dt.timedelta = REAP_AFTER,
) -> DrainResult:
    """Send due outbox rows until none is left or ``budget_seconds`` is spent.

    ``now`` fixes the clock (a datetime) or supplies it (a callable); with a
    fixed clock the bucket cannot refill, so the drain stops when it is empty
    instead of waiting. Uses the calling thread's database connection.
    """
    settings = settings or Settings.from_env()
    clock = _clock(now)
    can_wait = now is None or callable(now)
    deadline = time.monotonic() + max(0.0, budget_seconds)
    me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    result = DrainResult()
    transport = transport or from_settings(settings)
    bucket = TokenBucket(settings.mail_rate)
    try:
        result.reaped = reap(now=clock(), max_attempts=settings.mail_max_attempts, reap_after=reap_after)
        while True:
            if time.monotonic() >= deadline:
                result.stopped = "budget"
                break
            rows = claim(
                me, max(1, batch), clock(), daily_cap=settings.mail_daily_cap, rate=settings.mail_rate
            )
            if not rows:
                result.stopped = "empty"
                if settings.mail_daily_cap > 0 and _has_due(clock()):
                    result.stopped = "daily_cap"
                break
            result.seen += len(rows)
            if _send_batch(
                rows, me, transport, settings, bucket, clock, can_wait, deadline, result, progress, rand
            ):
                break
    finally:
        transport.close()
    # Every minute on an idle outbox would be noise at info level.
    log.log(
        logging.INFO if result.seen or result.reaped else logging.DEBUG,
        "mail drain %s: seen %s, sent %s, retried %s, failed %s, dead %s, suppressed %s, released %s (stopped: %s)",
        me,
        result.seen,
        result.sent,
        result.retried,
        result.failed,
        result.dead,
        result.suppressed,
        result.released,
        result.stopped,
    )
    return result


def _has_due(now: dt.datetime) -> bool:
    return (
        EmailOutbox.select()
        .where((EmailOutbox.status == EmailStatus.PENDING) & (EmailOutbox.available_at <= now))
        .exists()
    )


def _send_batch(
    rows: list[Claimed],
    me: str,
    transport: Transport,
    settings: Settings,
    bucket: TokenBucket,
    clock: Callable[[], dt.datetime],
    can_wait: bool,
    deadline: float,
    result: DrainResult,
    progress: Callable[[DrainResult], None] | None,
    rand: Callable[[], float],
) -> bool:
    """Send one claimed batch; True when the drain must stop."""

    def tick() -> None:
        if progress is not None:
            progress(result)

    # Rows that need no token: suppressed, or impossible to render.
    blocked = _suppressed(rows)
    if not settings.secret_key and not result.warned_unsigned:
        if any(_is_bulk(r.template) and r.id not in blocked for r in rows):
            result.warned_unsigned = True
            log.warning(
                "TOURNO_SECRET_KEY is not set: bulk mail goes out without an unsubscribe link "
                "(providers such as Gmail may reject or junk it)"
            )
    ready: list[tuple[Claimed, EmailMessage]] = []
    for row in rows:
        if row.id in blocked:
            _finish(row, me, status=EmailStatus.SUPPRESSED, last_error="address suppressed or opted out")
            result.suppressed += 1
            tick()
            continue
        try:
            rendered = render(
                row.template,
                row.context,
                app_url=settings.app_url,
                to_email=row.to_email,
                secret_key=settings.secret_key,
            )
            message = build_message(
                rendered=rendered,
                to_email=row.to_email,
                settings=settings,
                now=clock(),
                outbox_id=row.id,
                dedupe_key=row.dedupe_key,
            )
        except (TemplateError, ValueError, TypeError) as exc:
            log.error("email %s (%s) cannot be built: %s", row.id, row.template, exc)
            _finish(row, me, status=EmailStatus.FAILED, last_error=str(exc)[:2000])
            result.failed += 1
            tick()
            continue
        ready.append((row, message))

    tokens = 0
    i = 0
    try:
        while i < len(ready):
            if time.monotonic() >= deadline:
                result.released += release((r for r, _ in ready[i:]), me)
                result.stopped = "budget"
                return True
            if tokens == 0:
                granted, wait = bucket.take(min(len(ready) - i, bucket.chunk), clock())
                if granted == 0:
                    if not can_wait or time.monotonic() + wait > deadline:
                        result.released += release((r for r, _ in ready[i:]), me)
                        result.stopped = "rate"
                        return True
                    time.sleep(wait)
                    continue
                tokens = granted
            row, message = ready[i]
            i += 1
            tokens -= 1
            if _send_one(row, message, me, transport, settings, clock, result, rand):
                result.released += release((r for r, _ in ready[i:]), me)
                result.stopped = "unreachable"
                return True
            tick()
    finally:
        if tokens:
            bucket.give_back(tokens, clock())
    return False


def _send_one(
    row: Claimed,
    message: EmailMessage,
    me: str,
    transport: Transport,
    settings: Settings,
    clock: Callable[[], dt.datetime],
    result: DrainResult,
    rand: Callable[[], float],
) -> bool:
    """Send one row and record the outcome; True when the server is unreachable."""
    try:
        provider_id = transport.send(message)
    except TemporaryMailError as exc:
        _retry_later(row, me, str(exc), settings, clock, result, rand)
        return exc.connection
    except PermanentMailError as exc:
        log.warning("email %s to %s failed permanently: %s", row.id, row.to_email, exc)
        _finish(row, me, status=EmailStatus.FAILED, last_error=str(exc)[:2000])
        result.failed += 1
        if exc.hard_bounce:
            add_suppression(row.to_email, SuppressionReason.HARD_BOUNCE, detail=str(exc)[:2000], now=clock())
        return False
    except Exception as exc:  # noqa: BLE001 - a transport bug must not lose the row or stop the drain
        log.exception("email %s: unexpected error from the %s transport", row.id, transport.name)
        _retry_later(row, me, f"{type(exc).__name__}: {exc}", settings, clock, result, rand)
        return False
    _finish(
        row,
        me,
        status=EmailStatus.SENT,
        sent_at=clock(),
        provider_message_id=(provider_id or "")[:255] or None,
    )
    result.sent += 1
    return False


def _retry_later(
    row: Claimed,
    me: str,
    error: str,
    settings: Settings,
    clock: Callable[[], dt.datetime],
    result: DrainResult,
    rand: Callable[[], float],
) -> None:
    if row.attempts >= settings.mail_max_attempts:
        log.warning("email %s to %s is dead after %s attempts: %s", row.id, row.to_email, row.attempts, error)
        _finish(row, me, status=EmailStatus.DEAD, last_error=error[:2000])
        result.dead += 1
        return
    delay = backoff_seconds(row.attempts, rand())
    log.info("email %s to %s: %s; retry in %.0f s", row.id, row.to_email, error, delay)
    _finish(
        row,
        me,
        status=EmailStatus.PENDING,
        available_at=clock() + dt.timedelta(seconds=delay),
        last_error=error[:2000],
    )
    result.retried += 1


# -- status -----------------------------------------------------------------------------


def outbox_status() -> dict[str, int]:
    """Rows per status, every status listed (zero included)."""
    counts = {s.value: 0 for s in EmailStatus}
    query = EmailOutbox.select(EmailOutbox.status, peewee.fn.COUNT(EmailOutbox.id)).group_by(
        EmailOutbox.status
    )
    for status, n in query.tuples():
        counts[getattr(status, "value", str(status))] = n
    return counts


def summary(now: dt.datetime | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """What ``tourno mail status`` shows: counts, what is due, the last 24 h, the bucket."""
    now = now or tdb.utcnow()
    pending = EmailOutbox.status == EmailStatus.PENDING
    due = EmailOutbox.select().where(pending & (EmailOutbox.available_at <= now))
    oldest = (
        EmailOutbox.select(peewee.fn.MIN(EmailOutbox.available_at))
        .where(pending & (EmailOutbox.available_at <= now))
        .scalar()
    )
    oldest_at = tdb.parse_timestamp(oldest)
    sent_24h = (
        EmailOutbox.select()
        .where(
            (EmailOutbox.status == EmailStatus.SENT) & (EmailOutbox.sent_at > now - dt.timedelta(hours=24))
        )
        .count()
    )
    bucket = MailRate.get_or_none(MailRate.name == BUCKET)
    tokens = None
    if bucket is not None and settings is not None:
        tokens = refill(bucket.tokens, bucket.updated_at, now, settings.mail_rate)[0]
    elif bucket is not None:
        tokens = bucket.tokens
    return {
        "counts": outbox_status(),
        "due": due.count(),
        "oldest_due_seconds": round((now - oldest_at).total_seconds(), 3) if oldest_at else None,
        "sent_last_24h": sent_24h,
        "suppressed_addresses": EmailSuppression.select().count(),
        "bucket_tokens": None if tokens is None else round(tokens, 3),
    }
