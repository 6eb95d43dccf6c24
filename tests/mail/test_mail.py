"""The mail pipeline: templates, transports and the outbox drain.

Mail goes to a real SMTP server (aiosmtpd on loopback) whose handler can
refuse chosen recipients; rows live in a real PostgreSQL or SQLite database.
The clock is injected (``now=``), so the rate-limit tests check the bucket's
arithmetic, not timing.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import hashlib
import hmac
import json
import os
import re
import socket
import threading
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner

from tests.conftest import DOMAIN_NOW
from tourno import db as tdb
from tourno.accounts.models import User
from tourno.buckets import RateBucket, TokenBucket, bucket_capacity, refill
from tourno.cli import main
from tourno.config import ConfigError, Settings
from tourno.mail import message, store, templates, transports
from tourno.mail.drain import backoff_seconds, drain
from tourno.mail.models import CHECKS, EmailOutbox, EmailStatus, EmailSuppression
from tourno.mail.transports import ConsoleTransport, FileTransport, SMTPTransport, TemporaryMailError

ROOT = Path(__file__).resolve().parents[2]
NOW = DOMAIN_NOW
T = dt.timedelta


# -- a real SMTP server ------------------------------------------------------------------


class Recorder:
    """aiosmtpd handler: records messages, RCPT attempts and sessions; answers
    ``replies[address]`` (e.g. ``"451 4.7.1 try later"``) at RCPT for chosen recipients."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list[email.message.EmailMessage] = []
        self.rcpts: list[str] = []
        self.sessions: list[object] = []
        self.replies: dict[str, str] = {}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            self.rcpts.append(address)
        reply = self.replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(msg)
            if not any(s is session for s in self.sessions):
                self.sessions.append(session)
        return "250 2.0.0 Ok: queued"

    def to(self) -> list[str]:
        return [str(m["To"]) for m in self.messages]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp():
    handler = Recorder()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    handler.port = controller.port
    yield handler
    controller.stop()


def mail_settings(qdb, port: int = 25, **overrides) -> Settings:
    values = dict(
        database_url=qdb.url,
        mail_transport="smtp",
        mail_host="127.0.0.1",
        mail_port=port,
        mail_from="Tourno <noreply@tourno.test>",
        mail_rate=1000.0,
        app_url="https://tourno.test",
    )
    values.update(overrides)
    return Settings(**values)


def add_row(
    to: str,
    *,
    template: str = "match_ready",
    context: object = None,
    priority: int = 1,
    available_at: dt.datetime = NOW - T(minutes=1),
    key: str | None = None,
    **extra,
) -> EmailOutbox:
    if context is None:
        context = {
            "tournament_id": 7,
            "tournament_name": "Winter Cup",
            "match_id": 42,
            "display_name": "Ann",
            "opponent_name": "Bob",
            "deadline_at": "2026-11-29T12:00:00+00:00",
        }
    return EmailOutbox.create(
        dedupe_key=key or f"test:{to}:{template}:{priority}:{available_at.isoformat()}",
        to_email=to,
        template=template,
        context=context,
        priority=priority,
        available_at=available_at,
        created_at=available_at,
        **extra,
    )


def reload(row: EmailOutbox) -> EmailOutbox:
    return EmailOutbox.get_by_id(row.id)


def statuses() -> dict[str, int]:
    return {k: v for k, v in store.outbox_status().items() if v}


def in_threads(n: int, target) -> list:
    """Run ``target(i)`` in ``n`` threads, each on its own database connection,
    started together; returns their results (re-raises the first error)."""
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        tdb.open_connection()
        try:
            barrier.wait()
            results[i] = target(i)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)
        finally:
            tdb.database.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    return results


# -- sending --------------------------------------------------------------------------


def test_rows_go_out_over_one_smtp_connection(qdb, smtp):
    rows = [add_row(f"p{i}@example.com") for i in range(3)]
    result = drain(settings=mail_settings(qdb, smtp.port), now=NOW)

    assert (result.seen, result.sent, result.failed, result.retried) == (3, 3, 0, 0)
    assert result.changed == 3
    assert sorted(smtp.to()) == ["p0@example.com", "p1@example.com", "p2@example.com"]
    msg = smtp.messages[0]
    assert str(msg["From"]) == "Tourno <noreply@tourno.test>"
    assert str(msg["Subject"]) == "Your match in Winter Cup is ready: vs Bob"
    assert msg.get_content_type() == "multipart/alternative"
    body = msg.get_body(("plain",)).get_content()
    assert "Hi Ann," in body
    assert "against Bob is ready to play" in body
    assert "Report the result by 2026-11-29 12:00 UTC." in body
    assert "https://tourno.test/matches/42" in body
    assert len(smtp.sessions) == 1  # one connection for all three
    for row in rows:
        row = reload(row)
        assert row.status == EmailStatus.SENT
        assert row.sent_at == NOW
        assert row.attempts == 1
        assert row.locked_by is None
        assert row.provider_message_id and row.provider_message_id in {
            str(m["Message-ID"]).strip("<>") for m in smtp.messages
        }
        # The Message-ID is the row's: a copy sent again after a crash has the same one.
        expected = message.message_id(row.id, row.dedupe_key, "tourno.test").strip("<>")
        assert row.provider_message_id == expected
        assert row.provider_message_id.startswith(f"outbox-{row.id}-")


def test_messages_have_a_text_and_an_html_part_and_the_html_escapes_names(qdb, smtp):
    context = {
        "tournament_id": 7,
        "tournament_name": "Cup & Co",
        "match_id": 42,
        "display_name": "<b>x</b>",
        "opponent_name": "<script>alert(1)</script>",
    }
    add_row("p@example.com", context=context)
    assert drain(settings=mail_settings(qdb, smtp.port), now=NOW).sent == 1
    (msg,) = smtp.messages
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]  # text first
    text, html = (p.get_content() for p in parts)
    assert "Hi <b>x</b>," in text  # plain text needs no escaping
    assert "Hi &lt;b&gt;x&lt;/b&gt;," in html
    assert "<b>x</b>" not in html and "<script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "Cup &amp; Co" in html
    assert '<a href="https://tourno.test/matches/42">https://tourno.test/matches/42</a>' in html
    assert html.lstrip().startswith("<!DOCTYPE html>")


def test_a_missing_key_fails_the_row_in_both_parts(qdb, smtp):
    # Strict templates: no half-rendered email, in either part.
    row = add_row("p@example.com", context={"tournament_name": "Cup", "display_name": "Ann"})
    result = drain(settings=mail_settings(qdb, smtp.port), now=NOW)
    assert (result.failed, result.sent) == (1, 0)
    assert "opponent_name" in reload(row).last_error
    assert smtp.messages == []


def test_connection_is_renewed_after_max_per_connection(qdb, smtp):
    for i in range(5):
        add_row(f"p{i}@example.com")
    result = drain(settings=mail_settings(qdb, smtp.port, mail_max_per_connection=2), now=NOW)
    assert result.sent == 5
    assert len(smtp.sessions) == 3


def test_transactional_mail_goes_first(qdb, smtp):
    add_row("bulk@example.com", template="announcement", context={"message": "hello"}, priority=9)
    add_row("normal@example.com", priority=5)
    add_row("urgent@example.com", priority=0, available_at=NOW - T(seconds=1))
    # One row per claim: the order comes from the claim, not from a sort of one batch.
    result = drain(settings=mail_settings(qdb, smtp.port), now=NOW, batch=1)
    assert result.sent == 3
    assert smtp.to() == ["urgent@example.com", "normal@example.com", "bulk@example.com"]


SECRET = "test-secret-key-0123456789"


def test_bulk_mail_has_one_click_unsubscribe_and_transactional_mail_has_not(qdb, smtp):
    add_row(
        "Fan@Example.com",
        template="announcement",
        context={"tournament_name": "Winter Cup", "message": "Finals on Sunday!"},
        priority=9,
        key="announce:abc:1",
    )
    add_row("player@example.com")
    assert drain(settings=mail_settings(qdb, smtp.port, secret_key=SECRET), now=NOW).sent == 2
    by_to = {str(m["To"]): m for m in smtp.messages}
    bulk = by_to["Fan@Example.com"]
    signature = hmac.new(SECRET.encode(), b"fan@example.com", hashlib.sha256).hexdigest()
    url = f"https://tourno.test/unsubscribe?u=fan@example.com&s={signature}"
    assert str(bulk["List-Unsubscribe"]) == f"<{url}>"
    assert str(bulk["List-Unsubscribe-Post"]) == "List-Unsubscribe=One-Click"
    text = bulk.get_body(("plain",)).get_content()
    assert "Finals on Sunday!" in text
    assert f"Unsubscribe from announcements: {url}" in text
    assert url.replace("&", "&amp;") in bulk.get_body(("html",)).get_content()
    transactional = by_to["player@example.com"]
    assert transactional["List-Unsubscribe"] is None
    assert transactional["List-Unsubscribe-Post"] is None
    assert "unsubscribe" not in transactional.get_body(("plain",)).get_content().lower()


def test_without_a_secret_key_bulk_mail_has_no_unsubscribe_link_and_a_warning_once(qdb, smtp, caplog):
    for i in range(3):
        add_row(f"fan{i}@example.com", template="announcement", context={"message": "hi"}, priority=9)
    with caplog.at_level("WARNING", logger="tourno.mail.drain"):
        assert drain(settings=mail_settings(qdb, smtp.port), now=NOW, batch=1).sent == 3
    assert [m["List-Unsubscribe"] for m in smtp.messages] == [None, None, None]
    assert all("unsubscribe" not in m.get_body(("plain",)).get_content().lower() for m in smtp.messages)
    warnings = [r for r in caplog.records if "TOURNO_SECRET_KEY" in r.getMessage()]
    assert len(warnings) == 1  # once per drain, not once per batch or message


def test_bulk_mail_to_an_opted_out_user_is_suppressed(qdb, smtp):
    user = User.create(email="quiet@example.com", display_name="Q", notifications_opt_out=True)
    bulk = add_row(user.email, template="announcement", context={"message": "hi"}, priority=9, user=user)
    match = add_row(user.email, user=user)  # transactional mail still goes
    result = drain(settings=mail_settings(qdb, smtp.port), now=NOW)
    assert (result.sent, result.suppressed) == (1, 1)
    assert reload(bulk).status == EmailStatus.SUPPRESSED
    assert reload(match).status == EmailStatus.SENT


def test_two_drains_at_once_send_every_row_exactly_once(qdb, smtp):
    n = 60
    for i in range(n):
        add_row(f"r{i}@example.com")
    settings = mail_settings(qdb, smtp.port)
    results = in_threads(2, lambda i: drain(settings=settings, now=NOW, batch=5))

    assert sum(r.sent for r in results) == n
    assert sum(r.seen for r in results) == n
    assert sorted(smtp.to()) == sorted(f"r{i}@example.com" for i in range(n))  # none twice
    assert statuses() == {"sent": n}
    assert EmailOutbox.select().where(EmailOutbox.attempts != 1).count() == 0


# -- the global rate limit ------------------------------------------------------------------


def test_refill_is_pure_arithmetic():
    assert bucket_capacity(10) == 5  # half a second's worth
    assert bucket_capacity(0.5) == 1  # a burst of at least one message
    tokens, stamp = refill(1.0, NOW, NOW + T(seconds=0.3), 10)
    assert (tokens, stamp) == (4.0, NOW + T(seconds=0.3))
    assert refill(2.0, NOW, NOW + T(hours=1), 10)[0] == 5  # capped at the burst
    # A server whose clock is behind adds nothing and does not move the stamp back.
    assert refill(2.0, NOW, NOW - T(seconds=5), 10) == (2.0, NOW)


def test_a_named_bucket_is_its_own_and_shared_by_every_connection(qdb):
    login = TokenBucket("api:login", rate=2.0, burst=3)
    # Four takers, each on its own connection, share one burst of three.
    granted = in_threads(4, lambda i: TokenBucket("api:login", 2.0, 3).take(1, NOW)[0])
    assert sorted(granted) == [0, 1, 1, 1]
    assert login.take(1, NOW) == (0, 0.5)  # the next whole token in half a second
    # Another name is another bucket, full on first use.
    assert TokenBucket("webhooks", rate=100.0).take(80, NOW)[0] == 50
    assert login.take(5, NOW + T(seconds=1))[0] == 2
    login.give_back(5, NOW + T(seconds=1))
    assert login.peek(NOW + T(seconds=1)) == 3  # never above the burst
    assert RateBucket.select().count() == 2


def test_token_bucket_is_shared_by_concurrent_drains(qdb, smtp):
    rate = 10.0
    for i in range(40):
        add_row(f"r{i}@example.com")
    settings = mail_settings(qdb, smtp.port, mail_rate=rate)

    def both(at: dt.datetime) -> int:
        results = in_threads(2, lambda i: drain(settings=settings, now=at, batch=4))
        return sum(r.sent for r in results)

    # The bucket starts full: half a second's worth, for both drains together.
    assert both(NOW) == 5
    # Half a second later: five more between the two, not five each.
    assert both(NOW + T(seconds=0.5)) == 5
    assert both(NOW + T(seconds=0.5)) == 0
    assert both(NOW + T(seconds=0.8)) == 3
    # A long pause refills only up to the burst size.
    assert both(NOW + T(seconds=60)) == 5
    sent = EmailOutbox.select().where(EmailOutbox.status == EmailStatus.SENT).count()
    assert sent == len(smtp.messages) == 18
    # Rows claimed but not sent went back untouched: pending, no attempt charged.
    waiting = list(EmailOutbox.select().where(EmailOutbox.status != EmailStatus.SENT))
    assert len(waiting) == 22
    assert {(r.status, r.attempts, r.locked_by) for r in waiting} == {(EmailStatus.PENDING, 0, None)}
    assert RateBucket.get().tokens < 1


def test_daily_cap_counts_the_last_24_hours(qdb, smtp):
    for i in range(3):
        add_row(f"old{i}@example.com", key=f"old{i}", status=EmailStatus.SENT, sent_at=NOW - T(hours=23))
    add_row("ancient@example.com", key="ancient", status=EmailStatus.SENT, sent_at=NOW - T(hours=25))
    for i in range(5):
        add_row(f"new{i}@example.com")
    settings = mail_settings(qdb, smtp.port, mail_daily_cap=5)
    result = drain(settings=settings, now=NOW)
    assert (result.sent, result.stopped) == (2, "daily_cap")
    assert statuses() == {"sent": 6, "pending": 3}
    # An hour later the three from 23 h ago have rolled out of the window.
    assert drain(settings=settings, now=NOW + T(hours=1, minutes=1)).sent == 3


# -- failures -------------------------------------------------------------------------------


def test_4xx_is_retried_with_backoff_until_dead(qdb, smtp):
    smtp.replies["grey@example.com"] = "451 4.7.1 Greylisted, try again later"
    grey = add_row("grey@example.com", priority=0)
    fine = add_row("fine@example.com", priority=5)
    settings = mail_settings(qdb, smtp.port, mail_max_attempts=3)

    first = drain(settings=settings, now=NOW)
    assert (first.retried, first.sent) == (1, 1)  # the connection survives the refusal
    grey = reload(grey)
    assert grey.status == EmailStatus.PENDING
    assert grey.attempts == 1
    assert "451" in grey.last_error and "Greylisted" in grey.last_error
    assert NOW + T(seconds=15) <= grey.available_at <= NOW + T(seconds=30)
    assert reload(fine).status == EmailStatus.SENT

    # Not due yet: nothing is claimed.
    assert drain(settings=settings, now=NOW + T(seconds=10)).seen == 0

    second = drain(settings=settings, now=grey.available_at)
    assert second.retried == 1
    grey2 = reload(grey)
    assert grey2.attempts == 2
    assert grey2.available_at - grey.available_at >= T(seconds=30)  # the delay doubles

    third = drain(settings=settings, now=grey2.available_at)
    assert (third.dead, third.retried) == (1, 0)
    grey3 = reload(grey)
    assert (grey3.status, grey3.attempts) == (EmailStatus.DEAD, 3)
    assert smtp.rcpts.count("grey@example.com") == 3


def test_backoff_grows_exponentially_with_jitter_and_stops_at_an_hour():
    assert backoff_seconds(1, 0.0) == 15
    assert backoff_seconds(1, 0.999) < 30
    assert backoff_seconds(2, 0.0) == 30
    assert backoff_seconds(5, 0.5) == 0.75 * 480
    assert backoff_seconds(50, 0.999) <= 3600
    assert backoff_seconds(50, 0.0) == 1800


def test_5xx_fails_suppresses_and_the_next_mail_is_not_sent(qdb, smtp):
    smtp.replies["gone@example.com"] = "550 5.1.1 No such user"
    gone = add_row("gone@example.com")
    settings = mail_settings(qdb, smtp.port)
    result = drain(settings=settings, now=NOW)
    assert (result.failed, result.sent) == (1, 0)
    gone = reload(gone)
    assert gone.status == EmailStatus.FAILED
    assert "550" in gone.last_error
    (sup,) = EmailSuppression.select()
    assert (sup.address, sup.reason) == ("gone@example.com", "hard_bounce")
    assert "No such user" in sup.detail

    # Not retried, and a later email to the same address (any case) is never tried.
    later = add_row("Gone@Example.com", key="later")
    again = drain(settings=settings, now=NOW + T(hours=2))
    assert (again.seen, again.suppressed, again.sent) == (1, 1, 0)
    assert reload(later).status == EmailStatus.SUPPRESSED
    assert smtp.rcpts == ["gone@example.com"]
    assert reload(gone).attempts == 1


def test_554_at_data_fails_without_suppressing(qdb, smtp):
    class Reject(Recorder):
        async def handle_DATA(self, server, session, envelope):
            return "554 5.7.1 Message content rejected"

    controller = Controller(Reject(), hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        row = add_row("spammy@example.com")
        result = drain(settings=mail_settings(qdb, controller.port), now=NOW)
    finally:
        controller.stop()
    assert result.failed == 1
    assert reload(row).status == EmailStatus.FAILED
    assert "554" in reload(row).last_error
    assert EmailSuppression.select().count() == 0


def test_server_down_leaves_rows_pending(qdb):
    rows = [add_row(f"p{i}@example.com") for i in range(3)]
    result = drain(settings=mail_settings(qdb, free_port()), now=NOW)  # nothing listens there
    assert (result.seen, result.sent, result.retried, result.released) == (3, 0, 1, 2)
    assert result.stopped == "unreachable"
    rows = [reload(r) for r in rows]
    assert {r.status for r in rows} == {EmailStatus.PENDING}
    assert sorted(r.attempts for r in rows) == [0, 0, 1]  # only the one tried is charged
    tried = next(r for r in rows if r.attempts == 1)
    assert "cannot connect" in tried.last_error
    assert tried.available_at > NOW


def test_421_drops_the_connection_and_stops_the_drain(qdb, smtp):
    smtp.replies["first@example.com"] = "421 4.3.2 Service shutting down"
    first = add_row("first@example.com", priority=0)
    rest = [add_row(f"r{i}@example.com", priority=5) for i in range(2)]
    result = drain(settings=mail_settings(qdb, smtp.port), now=NOW)
    assert (result.retried, result.released, result.sent, result.stopped) == (1, 2, 0, "unreachable")
    assert reload(first).attempts == 1 and reload(first).available_at > NOW
    assert {(reload(r).status, reload(r).attempts) for r in rest} == {(EmailStatus.PENDING, 0)}
    # The next drain opens a new connection and sends the others.
    later = drain(settings=mail_settings(qdb, smtp.port), now=NOW + T(seconds=1))
    assert later.sent == 2
    assert len(smtp.sessions) == 1


def test_a_row_stuck_in_sending_is_reaped_and_sent(qdb, smtp):
    stuck = add_row(
        "stuck@example.com",
        key="stuck",
        status=EmailStatus.SENDING,
        attempts=1,
        locked_at=NOW - T(minutes=11),
        locked_by="dead-host:1:x",
    )
    busy = add_row(
        "busy@example.com",
        key="busy",
        status=EmailStatus.SENDING,
        attempts=1,
        locked_at=NOW - T(minutes=5),
        locked_by="live-host:2:y",
    )
    result = drain(settings=mail_settings(qdb, smtp.port), now=NOW)
    assert (result.reaped, result.sent) == (1, 1)
    assert (reload(stuck).status, reload(stuck).attempts) == (EmailStatus.SENT, 2)
    assert reload(busy).status == EmailStatus.SENDING  # its drain may still be alive
    assert smtp.to() == ["stuck@example.com"]


def test_the_reap_age_is_a_parameter(qdb, smtp):
    row = add_row(
        "slow@example.com",
        status=EmailStatus.SENDING,
        attempts=1,
        locked_at=NOW - T(minutes=1),
        locked_by="gone-host:3:z",
    )
    settings = mail_settings(qdb, smtp.port)
    assert drain(settings=settings, now=NOW).reaped == 0  # younger than the default 10 minutes
    assert reload(row).status == EmailStatus.SENDING
    result = drain(settings=settings, now=NOW, reap_after=T(seconds=30))
    assert (result.reaped, result.sent) == (1, 1)
    assert smtp.to() == ["slow@example.com"]


def test_a_hard_bounce_replaces_an_unsubscribe(qdb):
    assert store.add_suppression("a@example.com", "unsubscribe", now=NOW) is True
    assert store.add_suppression("A@example.com", "unsubscribe", now=NOW) is False
    assert store.add_suppression("a@example.com", "hard_bounce", detail="550", now=NOW) is True
    assert store.add_suppression("a@example.com", "unsubscribe", now=NOW) is False  # never weakened
    assert EmailSuppression.get().reason == "hard_bounce"


def test_a_late_outcome_does_not_overwrite_a_reaped_row(qdb):
    row = add_row("x@example.com", status=EmailStatus.SENDING, locked_by="me", locked_at=NOW)
    claimed = store.Claimed(row.id, row.dedupe_key, None, row.to_email, row.template, {}, 1, 1)
    EmailOutbox.update(locked_by="someone-else").where(EmailOutbox.id == row.id).execute()
    assert store.finish(claimed, "me", status=EmailStatus.FAILED) is False
    assert reload(row).status == EmailStatus.SENDING


def test_bad_rows_fail_alone_and_the_batch_goes_on(qdb, smtp):
    unknown = add_row("a@example.com", template="no_such_template")
    missing = add_row("b@example.com", context={"tournament_name": "Cup"})  # no opponent_name
    not_object = add_row("c@example.com", context=["not", "an", "object"])
    bad_date = add_row(
        "d@example.com",
        template="deadline_warning",
        context={"tournament_name": "Cup", "deadline_at": "soon"},
    )
    bad_address = add_row("not an address")
    good = [add_row(f"ok{i}@example.com") for i in range(2)]

    result = drain(settings=mail_settings(qdb, smtp.port), now=NOW)
    assert (result.failed, result.sent) == (5, 2)
    assert reload(unknown).last_error == "unknown template 'no_such_template'"
    assert "missing" in reload(missing).last_error and "opponent_name" in reload(missing).last_error
    assert "JSON object" in reload(not_object).last_error
    assert "'soon' is not an ISO date-time" in reload(bad_date).last_error
    assert "not an email address" in reload(bad_address).last_error
    assert {reload(r).status for r in (unknown, missing, not_object, bad_date, bad_address)} == {
        EmailStatus.FAILED
    }
    assert {reload(r).status for r in good} == {EmailStatus.SENT}
    assert sorted(smtp.to()) == ["ok0@example.com", "ok1@example.com"]


# -- templates ----------------------------------------------------------------------------


FULL_CONTEXT = {
    "tournament_id": 1,
    "tournament_name": "Cup",
    "display_name": "Ann",
    "participant_id": 3,
    "waitlist_position": 2,
    "starts_at": "2026-12-01T18:00:00+00:00",
    "capacity": 16,
    "match_id": 9,
    "match_identifier": "B",
    "round_name": "Semifinal",
    "opponent_name": "Bob",
    "deadline_at": "2026-12-02T18:00:00+00:00",
    "player1_score": 2,
    "player2_score": 1,
    "missing": "your result",
    "consequence": "the reported result stands.",
    "reason": "not_started_after_full",
    "result_type": "forfeit",
    "won": True,
    "champion": "Ann",
    "auto_start_at": "2026-12-01T18:00:00+00:00",
    "cancel_at": "2026-12-03T18:00:00+00:00",
    "standings": [{"rank": 1, "name": "Ann"}, {"rank": 2, "name": "Bob"}],
    "message": "See you there.",
    "timezone": "America/New_York",
}


@pytest.mark.parametrize("name", sorted(templates.TEMPLATES))
def test_every_template_renders(name):
    r = templates.render(
        name, FULL_CONTEXT, app_url="https://t.example", to_email="ann@example.com", secret_key=SECRET
    )
    assert r.subject and "\n" not in r.subject
    assert r.text.strip()
    assert "{{" not in r.text and "{%" not in r.text
    assert r.bulk == (name == "announcement")
    assert r.html.lstrip().startswith("<!DOCTYPE html>") and "<p>" in r.html
    assert "{{" not in r.html and "{%" not in r.html
    assert (r.unsubscribe_url is not None) == r.bulk


def test_times_are_shown_in_utc_and_the_readers_zone():
    r = templates.render("match_ready", FULL_CONTEXT, app_url="https://t.example", to_email="a@example.com")
    assert "Report the result by 2026-12-02 18:00 UTC (2026-12-02 13:00 America/New_York)." in r.text


def test_every_template_the_code_writes_exists():
    written = set()
    for path in (ROOT / "tourno").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        written |= set(re.findall(r"""template\s*=\s*["']([a-z_]+)["']""", text))
        written |= set(re.findall(r"""["']template["']\s*:\s*["']([a-z_]+)["']""", text))
        # Helpers that take the name as an argument: _mail_player(t, m, pid, "match_result", f"...").
        for call in re.finditer(r"_mail_(?:player|organizer|participant)\(([^()]|\([^()]*\))*\)", text):
            names = re.findall(r"""(?<![fFrRbB\w])["']([a-z_]+)["']""", call.group(0))
            written |= set(names[:1])
    assert "match_ready" in written  # the scan finds the services' mail
    assert written - set(templates.TEMPLATES) == set()
    for name in (
        "registered",
        "waitlisted",
        "promoted",
        "withdrawn",
        "checked_in",
        "tournament_full",
        "match_ready",
        "deadline_warning",
        "match_result",
        "match_disputed",
        "tournament_started",
        "tournament_cancelled",
        "tournament_complete",
        "full_reminder",
        "final_extended",
        "awaiting_review",
        "announcement",
    ):
        assert name in templates.TEMPLATES


# -- transports -----------------------------------------------------------------------------


def _message(to: str = "a@example.com"):
    settings = Settings()
    rendered = templates.render("test", {}, app_url=settings.app_url, to_email=to)
    return message.build_message(rendered=rendered, to_email=to, settings=settings, now=NOW, outbox_id=5)


def test_file_transport_writes_eml_files(tmp_path):
    transport = FileTransport(tmp_path / "out")
    message_id = transport.send(_message())
    (path,) = (tmp_path / "out").iterdir()
    assert path.suffix == ".eml"
    parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert str(parsed["To"]) == "a@example.com"
    assert str(parsed["Message-ID"]).strip("<>") == message_id


def test_console_transport_prints_the_message(capsys):
    ConsoleTransport().send(_message("b@example.com"))
    out = capsys.readouterr().out
    assert "To: b@example.com" in out
    assert "Subject: Tourno test message" in out


def test_summary_transport_prints_one_line_and_keeps_the_whole_message(tmp_path, capsys):
    transport = transports.from_settings(
        Settings(mail_transport="summary", mail_file_dir=str(tmp_path / "m"))
    )
    message_id = transport.send(_message("c@example.com"))
    (path,) = (tmp_path / "m").iterdir()
    out = capsys.readouterr().out
    assert out == f"email to c@example.com: Tourno test message ({path})\n"
    parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert str(parsed["Message-ID"]).strip("<>") == message_id
    assert str(parsed["Subject"]) == "Tourno test message" and parsed.get_body(("plain",)) is not None


def test_tourno_up_defaults_to_summary_mail_in_an_absolute_folder(tmp_path):
    from tourno.cli.up import child_environment

    env = child_environment({}, tmp_path, demo=True)
    assert (env["TOURNO_MAIL_TRANSPORT"], env["TOURNO_MAIL_FILE_DIR"]) == (
        "summary",
        str(tmp_path / "tourno-mail"),
    )
    mine = child_environment(
        {"TOURNO_MAIL_TRANSPORT": "smtp", "TOURNO_MAIL_FILE_DIR": "out"}, tmp_path, demo=False
    )
    assert (mine["TOURNO_MAIL_TRANSPORT"], mine["TOURNO_MAIL_FILE_DIR"]) == ("smtp", str(tmp_path / "out"))


def test_smtp_transport_reports_a_refused_connection_as_temporary():
    transport = SMTPTransport("127.0.0.1", free_port(), timeout=5)
    with pytest.raises(TemporaryMailError) as info:
        transport.send(_message())
    assert info.value.connection


# -- settings ----------------------------------------------------------------------------


def test_mail_settings_defaults_and_parsing():
    s = Settings.from_mapping({})
    assert (s.mail_transport, s.mail_host, s.mail_port, s.mail_security) == (
        "console",
        "127.0.0.1",
        25,
        "none",
    )
    assert s.secret_key is None
    assert (s.mail_rate, s.mail_daily_cap, s.mail_max_per_connection, s.mail_max_attempts) == (
        10.0,
        0,
        100,
        8,
    )
    assert s.mail_from == "Tourno <noreply@localhost>"
    assert s.app_url == "http://localhost:8000"
    s = Settings.from_mapping(
        {
            "TOURNO_MAIL_TRANSPORT": "SMTP",
            "TOURNO_MAIL_PORT": "587",
            "TOURNO_MAIL_SECURITY": "TLS",
            "TOURNO_SECRET_KEY": "  0123456789abcdef0123  ",
            "TOURNO_MAIL_USERNAME": "mailer",
            "TOURNO_MAIL_PASSWORD": "hunter2",
            "TOURNO_MAIL_RATE": "0.5",
            "TOURNO_MAIL_DAILY_CAP": "2000",
            "TOURNO_APP_URL": "https://play.example.com/",
        }
    )
    assert (s.mail_transport, s.mail_port, s.mail_security, s.mail_rate, s.mail_daily_cap) == (
        "smtp",
        587,
        "tls",
        0.5,
        2000,
    )
    assert s.app_url == "https://play.example.com"
    assert s.secret_key == "0123456789abcdef0123"
    shown = dict(s.describe())
    assert shown["TOURNO_MAIL_PASSWORD"] == "***"
    assert shown["TOURNO_SECRET_KEY"] == "***"
    assert "hunter2" not in repr(shown) and "0123456789abcdef" not in repr(shown)
    # `ssl` is another name for implicit TLS; STARTTLS stays itself.
    for raw, parsed in (("ssl", "tls"), ("starttls", "starttls"), ("none", "none")):
        assert Settings.from_mapping({"TOURNO_MAIL_SECURITY": raw}).mail_security == parsed
    assert SMTPTransport("127.0.0.1", 25, security="ssl").security == "tls"
    with pytest.raises(ValueError):
        SMTPTransport("127.0.0.1", 25, security="maybe")


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("TOURNO_MAIL_TRANSPORT", "pigeon"),
        ("TOURNO_MAIL_PORT", "smtp"),
        ("TOURNO_MAIL_PORT", "70000"),
        ("TOURNO_MAIL_SECURITY", "maybe"),
        ("TOURNO_SECRET_KEY", "short"),
        ("TOURNO_MAIL_FROM", "nobody"),
        ("TOURNO_MAIL_RATE", "0"),
        ("TOURNO_MAIL_RATE", "fast"),
        ("TOURNO_MAIL_DAILY_CAP", "-1"),
        ("TOURNO_MAIL_MAX_PER_CONNECTION", "0"),
        ("TOURNO_MAIL_MAX_ATTEMPTS", "1.5"),
        ("TOURNO_APP_URL", "localhost:8000"),
    ],
)
def test_bad_mail_settings_name_the_variable(var, value):
    with pytest.raises(ConfigError) as info:
        Settings.from_mapping({var: value})
    assert str(info.value).startswith(f"{var}: ")
    assert "\n" not in str(info.value)


def test_migration_keeps_a_frozen_copy_of_the_checks():
    import importlib

    migration = importlib.import_module("tourno.migrations.0003_mail")
    # The outbox's checks came with the tournament tables (0002); the table moved to mail/ later.
    # The bucket's check was renamed with its table (0010) and lives in tourno.buckets now.
    assert migration.CHECKS == {
        **{k: v for k, v in CHECKS.items() if not k.startswith("email_outbox_")},
        "mail_rate_tokens_check": ("mail_rate", "tokens >= 0"),
    }


def test_postgres_enforces_the_suppression_reason(pg):
    import peewee

    with pytest.raises(peewee.IntegrityError), tdb.database.atomic():
        EmailSuppression.create(address="x@example.com", reason="because", created_at=NOW)


# -- the CLI ------------------------------------------------------------------------------


def invoke(*args: str, **env: str | None):
    full_env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("TOURNO_")}
    full_env.update(COLUMNS="200", FORCE_COLOR=None)
    full_env.update(env)
    return CliRunner().invoke(main, list(args), env=full_env, prog_name="tourno")


@pytest.fixture
def restore_logging():
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    peewee_level = logging.getLogger("peewee").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("peewee").setLevel(peewee_level)


@pytest.mark.parametrize("path", [("mail",), ("mail", "status"), ("mail", "drain"), ("mail", "test")])
def test_mail_commands_have_help(path):
    result = invoke(*path, "--help", TOURNO_DATABASE_URL="postgresql://nobody:pw@127.0.0.1:1/nowhere")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Usage: tourno {' '.join(path)}")
    assert "Options:" in result.stdout


def test_mail_status_json_and_drain(qdb, restore_logging):
    add_row("a@example.com", available_at=tdb.utcnow() - T(minutes=1))
    add_row("b@example.com", key="b", status=EmailStatus.FAILED)
    add_row("c@example.com", key="later", available_at=tdb.utcnow() + T(hours=1))
    tdb.database.close()
    try:
        status = invoke("mail", "status", "--json", TOURNO_DATABASE_URL=qdb.url)
        assert status.exit_code == 0, status.output
        info = json.loads(status.stdout)
        assert info["counts"] == {
            "pending": 2,
            "sending": 0,
            "sent": 0,
            "failed": 1,
            "dead": 0,
            "suppressed": 0,
        }
        assert info["due"] == 1
        assert info["sent_last_24h"] == 0

        table = invoke("mail", "status", TOURNO_DATABASE_URL=qdb.url)
        assert table.exit_code == 0, table.output
        assert re.search(r"│ pending\s+│ 2\s+│", table.stdout)
        assert "Due now: 1" in table.stdout

        # The default transport prints to stdout.
        run = invoke("mail", "drain", "--budget", "10", TOURNO_DATABASE_URL=qdb.url)
        assert run.exit_code == 0, run.output
        assert "To: a@example.com" in run.stdout
        assert "seen 1, sent 1, retried 0, failed 0" in run.stdout
    finally:
        tdb.open_connection()
    assert EmailOutbox.get(EmailOutbox.to_email == "a@example.com").status == EmailStatus.SENT


def test_mail_test_through_the_console_transport(restore_logging):
    result = invoke("mail", "test", "ops@example.com", TOURNO_MAIL_TRANSPORT="console")
    assert result.exit_code == 0, result.output
    assert "To: ops@example.com" in result.stdout
    assert "Subject: Tourno test message" in result.stdout
    assert "Sent a test message to ops@example.com via console" in result.stdout


def test_mail_test_over_smtp_and_its_errors(smtp, restore_logging):
    ok = invoke(
        "mail", "test", "ops@example.com", TOURNO_MAIL_TRANSPORT="smtp", TOURNO_MAIL_PORT=str(smtp.port)
    )
    assert ok.exit_code == 0, ok.output
    assert smtp.to() == ["ops@example.com"]

    down = invoke(
        "mail", "test", "ops@example.com", TOURNO_MAIL_TRANSPORT="smtp", TOURNO_MAIL_PORT=str(free_port())
    )
    assert down.exit_code == 1
    assert "error: the smtp transport could not send: cannot connect to SMTP server" in down.stderr

    bad = invoke("mail", "test", "not an address")
    assert bad.exit_code == 2
    assert "not an email address" in bad.stderr
