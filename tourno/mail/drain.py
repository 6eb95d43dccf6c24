"""The drain: send ``email_outbox`` rows, paced by a global token bucket.

One :class:`Drain` run (SendBulkEmailsJob's body, or ``tourno mail drain``)
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
import logging
import math
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from typing import Any

from tourno import db as tdb
from tourno.buckets import TokenBucket
from tourno.config import Settings
from tourno.mail import store
from tourno.mail.message import build_message
from tourno.mail.models import EmailStatus, SuppressionReason
from tourno.mail.store import MAIL_BUCKET, REAP_AFTER, Claimed
from tourno.mail.templates import TemplateError, is_bulk, render
from tourno.mail.transports import PermanentMailError, TemporaryMailError, Transport, from_settings

log = logging.getLogger(__name__)

BACKOFF_BASE = 30.0
BACKOFF_CAP = 3600.0
DEFAULT_BATCH = 50
# SendBulkEmailsJob runs every minute: leave it time to finish before the next.
DEFAULT_BUDGET = 50.0

#: A clock: a fixed instant, a function giving the time, or None for the real time.
ClockLike = dt.datetime | Callable[[], dt.datetime] | None


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


def backoff_seconds(attempts: int, rand: float) -> float:
    """Delay before retry number ``attempts``: 30 s, 1 min, 2 min ... capped at
    1 h, half of it random ("equal jitter"), so a burst of rows refused
    together does not come back together. ``rand`` is in [0, 1)."""
    delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, min(attempts - 1, 30)))
    return delay / 2 + delay / 2 * rand


def _clock(now: ClockLike) -> Callable[[], dt.datetime]:
    if now is None:
        return tdb.utcnow
    if callable(now):
        return now
    fixed = now if now.tzinfo else now.replace(tzinfo=dt.UTC)
    return lambda: fixed


class Drain:
    """One drain: its name (``me``, the ``locked_by`` of the rows it claims),
    transport, settings, bucket, clock and result, shared by the steps of a run.

    ``now`` fixes the clock (a datetime) or supplies it (a callable); with a
    fixed clock the bucket cannot refill, so the drain stops when it is empty
    instead of waiting. Uses the calling thread's database connection. A
    Drain runs once.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        transport: Transport | None = None,
        now: ClockLike = None,
        budget_seconds: float = DEFAULT_BUDGET,
        batch: int = DEFAULT_BATCH,
        progress: Callable[[DrainResult], None] | None = None,
        rand: Callable[[], float] = random.random,
        reap_after: dt.timedelta = REAP_AFTER,
    ) -> None:
        self.settings = settings
        self.transport = transport or from_settings(settings)
        self.clock = _clock(now)
        self.can_wait = now is None or callable(now)
        self.budget_seconds = max(0.0, budget_seconds)
        self.batch = max(1, batch)
        self.progress = progress
        self.rand = rand
        self.reap_after = reap_after
        self.me = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.bucket = TokenBucket(MAIL_BUCKET, settings.mail_rate)
        # Tokens taken per round trip: a twentieth of a second's worth. The
        # drain sends what it took right away, so a small chunk keeps the
        # messages on the wire close to the moment their tokens were taken.
        self.chunk = max(1, math.ceil(settings.mail_rate / 20))
        self.result = DrainResult()
        self.deadline = 0.0

    def run(self) -> DrainResult:
        """Send due rows until none is left or the budget is spent."""
        settings, result = self.settings, self.result
        self.deadline = time.monotonic() + self.budget_seconds
        try:
            result.reaped = store.reap(
                now=self.clock(), max_attempts=settings.mail_max_attempts, reap_after=self.reap_after
            )
            while True:
                if time.monotonic() >= self.deadline:
                    result.stopped = "budget"
                    break
                rows = store.claim(
                    self.me, self.batch, self.clock(), daily_cap=settings.mail_daily_cap, bucket=self.bucket
                )
                if not rows:
                    result.stopped = "empty"
                    if settings.mail_daily_cap > 0 and store.has_due(self.clock()):
                        result.stopped = "daily_cap"
                    break
                result.seen += len(rows)
                if self.send_batch(rows):
                    break
        finally:
            self.transport.close()
        # Every minute on an idle outbox would be noise at info level.
        log.log(
            logging.INFO if result.seen or result.reaped else logging.DEBUG,
            "mail drain %s: seen %s, sent %s, retried %s, failed %s, dead %s, suppressed %s, released %s (stopped: %s)",
            self.me,
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

    def _tick(self) -> None:
        if self.progress is not None:
            self.progress(self.result)

    def _ready(self, rows: list[Claimed]) -> list[tuple[Claimed, EmailMessage]]:
        """Build the messages of a batch; rows that need no token (suppressed,
        or impossible to render) get their outcome here."""
        result, settings = self.result, self.settings
        blocked = store.suppressed(rows)
        if not settings.secret_key and not result.warned_unsigned:
            if any(is_bulk(r.template) and r.id not in blocked for r in rows):
                result.warned_unsigned = True
                log.warning(
                    "TOURNO_SECRET_KEY is not set: bulk mail goes out without an unsubscribe link "
                    "(providers such as Gmail may reject or junk it)"
                )
        ready: list[tuple[Claimed, EmailMessage]] = []
        for row in rows:
            if row.id in blocked:
                store.finish(
                    row, self.me, status=EmailStatus.SUPPRESSED, last_error="address suppressed or opted out"
                )
                result.suppressed += 1
                self._tick()
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
                    now=self.clock(),
                    outbox_id=row.id,
                    dedupe_key=row.dedupe_key,
                )
            except (TemplateError, ValueError, TypeError) as exc:
                log.error("email %s (%s) cannot be built: %s", row.id, row.template, exc)
                store.finish(row, self.me, status=EmailStatus.FAILED, last_error=str(exc)[:2000])
                result.failed += 1
                self._tick()
                continue
            ready.append((row, message))
        return ready

    def send_batch(self, rows: list[Claimed]) -> bool:
        """Send one claimed batch; True when the drain must stop."""
        result = self.result
        ready = self._ready(rows)

        def stop(reason: str, untried: int) -> bool:
            result.released += store.release((r for r, _ in ready[untried:]), self.me)
            result.stopped = reason
            return True

        tokens = 0
        i = 0
        try:
            while i < len(ready):
                if time.monotonic() >= self.deadline:
                    return stop("budget", i)
                if tokens == 0:
                    granted, wait = self.bucket.take(min(len(ready) - i, self.chunk), self.clock())
                    if granted == 0:
                        if not self.can_wait or time.monotonic() + wait > self.deadline:
                            return stop("rate", i)
                        time.sleep(wait)
                        continue
                    tokens = granted
                row, message = ready[i]
                i += 1
                tokens -= 1
                if self.send_one(row, message):
                    return stop("unreachable", i)
                self._tick()
        finally:
            if tokens:
                self.bucket.give_back(tokens, self.clock())
        return False

    def send_one(self, row: Claimed, message: EmailMessage) -> bool:
        """Send one row and record the outcome; True when the server is unreachable."""
        try:
            provider_id = self.transport.send(message)
        except TemporaryMailError as exc:
            self._retry_later(row, str(exc))
            return exc.connection
        except PermanentMailError as exc:
            log.warning("email %s to %s failed permanently: %s", row.id, row.to_email, exc)
            store.finish(row, self.me, status=EmailStatus.FAILED, last_error=str(exc)[:2000])
            self.result.failed += 1
            if exc.hard_bounce:
                store.add_suppression(
                    row.to_email, SuppressionReason.HARD_BOUNCE, detail=str(exc)[:2000], now=self.clock()
                )
            return False
        except Exception as exc:  # noqa: BLE001 - a transport bug must not lose the row or stop the drain
            log.exception("email %s: unexpected error from the %s transport", row.id, self.transport.name)
            self._retry_later(row, f"{type(exc).__name__}: {exc}")
            return False
        store.finish(
            row,
            self.me,
            status=EmailStatus.SENT,
            sent_at=self.clock(),
            provider_message_id=(provider_id or "")[:255] or None,
        )
        self.result.sent += 1
        return False

    def _retry_later(self, row: Claimed, error: str) -> None:
        if row.attempts >= self.settings.mail_max_attempts:
            log.warning(
                "email %s to %s is dead after %s attempts: %s", row.id, row.to_email, row.attempts, error
            )
            store.finish(row, self.me, status=EmailStatus.DEAD, last_error=error[:2000])
            self.result.dead += 1
            return
        delay = backoff_seconds(row.attempts, self.rand())
        log.info("email %s to %s: %s; retry in %.0f s", row.id, row.to_email, error, delay)
        store.finish(
            row,
            self.me,
            status=EmailStatus.PENDING,
            available_at=self.clock() + dt.timedelta(seconds=delay),
            last_error=error[:2000],
        )
        self.result.retried += 1


def drain(*, settings: Settings, **options: Any) -> DrainResult:
    """Send due outbox rows until none is left or ``budget_seconds`` is spent:
    one :class:`Drain` run, ``options`` being its keyword arguments
    (transport, now, budget_seconds, batch, progress, rand, reap_after)."""
    return Drain(settings, **options).run()
