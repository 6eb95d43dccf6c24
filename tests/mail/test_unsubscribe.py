"""Unsubscribing from bulk mail through the signed link, end to end.

The link comes out of a real message received by a real SMTP server
(aiosmtpd on loopback) and is followed through the Flask app's test client,
on a real PostgreSQL and SQLite database: GET shows the confirmation page,
POST (its form, or RFC 8058 one-click) records the opt-out. A forged or
missing signature writes nothing. Afterwards announcements to that address
are suppressed while mail about the player's own matches still goes.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

from tests.conftest import DOMAIN_NOW, make_players
from tests.mail.test_mail import add_row, mail_settings, reload, smtp  # noqa: F401 - smtp is a fixture
from tourno.accounts.models import User
from tourno.api import create_app
from tourno.config import Settings
from tourno.mail import unsubscribe as links
from tourno.mail.drain import drain
from tourno.mail.models import EmailOutbox, EmailStatus, EmailSuppression
from tourno.tournaments import services
from tourno.tournaments.errors import ValidationError

NOW = DOMAIN_NOW
SECRET = "unsubscribe-test-secret-0123456789"
APP_URL = "https://tourno.test"


@pytest.fixture
def client(qdb):
    settings = Settings(database_url=qdb.url, secret_key=SECRET, app_url=APP_URL)
    return create_app(settings, init_database=False, clock=lambda: NOW).test_client()


def local(url: str) -> str:
    """The path and query of an absolute link, for the test client."""
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == APP_URL
    return f"{parts.path}?{parts.query}"


def opted_out(email: str) -> bool:
    return User.get(User.email == email).notifications_opt_out


def suppressions() -> list[tuple[str, str]]:
    return [(s.address, s.reason) for s in EmailSuppression.select().order_by(EmailSuppression.address)]


def test_the_signature_is_an_hmac_of_the_lower_cased_address():
    url = links.link(APP_URL, SECRET, "Ann+Cup@Example.COM")
    assert url.startswith(f"{APP_URL}/unsubscribe?u=ann%2Bcup@example.com&s=")
    signature = url.rsplit("s=", 1)[1]
    assert len(signature) == 64 and int(signature, 16) >= 0
    assert links.verify(SECRET, "ann+cup@example.com", signature)
    assert links.verify(SECRET, "ANN+CUP@example.com", signature.upper())
    assert not links.verify(SECRET, "bob@example.com", signature)
    assert not links.verify("another-secret-0123456789", "ann+cup@example.com", signature)
    assert not links.verify(None, "ann+cup@example.com", signature)
    assert not links.verify(SECRET, "ann+cup@example.com", "é" * 64)


def test_the_signed_link_from_a_received_announcement_unsubscribes_via_the_page(qdb, smtp, client):  # noqa: F811
    (player,) = make_players(1)
    add_row(player.email, template="announcement", context={"message": "Finals!"}, priority=9, user=player)
    settings = mail_settings(qdb, smtp.port, secret_key=SECRET, app_url=APP_URL)
    assert drain(settings=settings, now=NOW).sent == 1
    (msg,) = smtp.messages
    url = str(msg["List-Unsubscribe"]).strip("<>")
    assert url in msg.get_body(("plain",)).get_content()  # the same link in the body

    page = client.get(local(url))
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert player.email in html
    (action,) = re.findall(r'<form method="post" action="([^"]+)">', html)
    action = action.replace("&amp;", "&")
    assert action == local(url)
    assert suppressions() == [] and not opted_out(player.email)  # GET alone changes nothing

    done = client.post(action, data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200, done.get_data(as_text=True)
    assert "Unsubscribed" in done.get_data(as_text=True)
    assert suppressions() == [(player.email, "unsubscribe")]
    assert opted_out(player.email)


def test_one_click_post_unsubscribes_and_is_idempotent(qdb, client):
    (player,) = make_players(1)
    url = links.link(APP_URL, SECRET, player.email.upper())
    for _ in range(2):
        r = client.post(
            local(url),
            data="List-Unsubscribe=One-Click",
            content_type="application/x-www-form-urlencoded",
        )
        assert r.status_code == 200, r.get_data(as_text=True)
    assert suppressions() == [(player.email, "unsubscribe")]
    assert opted_out(player.email)
    # An address with no account is suppressed too.
    stranger = links.link(APP_URL, SECRET, "stranger@example.com")
    assert client.post(local(stranger), data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert suppressions() == [(player.email, "unsubscribe"), ("stranger@example.com", "unsubscribe")]


@pytest.mark.parametrize(
    "query",
    [
        "u=p0@example.com&s=" + "0" * 64,  # forged
        "u=p0@example.com&s=SIGNED_FOR_ANOTHER",  # a real signature, of another address
        "u=p0@example.com&s=SIGNED_WITH_ANOTHER_KEY",
        "u=p0@example.com",  # missing
        "s=SIGNED",
        "",
        "u=p0@example.com&s=%00%FF",
    ],
)
def test_a_forged_or_missing_signature_is_refused_and_writes_nothing(qdb, client, query):
    make_players(1)
    query = (
        query.replace("SIGNED_FOR_ANOTHER", links.sign(SECRET, "p1@example.com"))
        .replace("SIGNED_WITH_ANOTHER_KEY", links.sign("another-secret-0123456789", "p0@example.com"))
        .replace("SIGNED", links.sign(SECRET, "p0@example.com"))
    )
    page = client.get(f"/unsubscribe?{query}")
    assert page.status_code == 403
    assert page.mimetype == "text/html"
    assert "<form" not in page.get_data(as_text=True)
    post = client.post(f"/unsubscribe?{query}", data={"List-Unsubscribe": "One-Click"})
    assert post.status_code == 403
    assert "Link not valid" in post.get_data(as_text=True)
    assert suppressions() == []
    assert not opted_out("p0@example.com")


def test_without_a_secret_key_no_link_is_accepted(qdb):
    (player,) = make_players(1)
    app = create_app(Settings(database_url=qdb.url), init_database=False, clock=lambda: NOW)
    url = links.link(APP_URL, SECRET, player.email)
    assert app.test_client().post(local(url)).status_code == 403
    assert suppressions() == []


def test_after_unsubscribing_announcements_are_suppressed_and_match_mail_still_goes(
    qdb,
    smtp,  # noqa: F811
    client,
    organizer,
):
    player, other = make_players(2)
    t = services.create_tournament(
        organizer, name="Cup", game="Chess", format="single_elimination", capacity=8
    )
    services.publish(t, organizer, now=NOW)
    for user in (player, other):
        services.register(t, user, now=NOW)
    settings = mail_settings(qdb, smtp.port, secret_key=SECRET, app_url=APP_URL)

    assert services.announce(t, organizer, subject="Welcome", body="See you", now=NOW)[1] == 2
    assert drain(settings=settings, now=NOW).sent >= 2
    first = next(m for m in smtp.messages if str(m["To"]) == player.email and m["List-Unsubscribe"])
    # A second announcement is already in the outbox when the player unsubscribes.
    assert services.announce(t, organizer, subject="Schedule", body="Round 1 at 6", now=NOW)[1] == 2
    match_mail = add_row(player.email, user=player, key="match-ready-after-unsubscribe")
    url = str(first["List-Unsubscribe"]).strip("<>")
    assert client.post(local(url), data={"List-Unsubscribe": "One-Click"}).status_code == 200

    smtp.messages.clear()
    result = drain(settings=settings, now=NOW)
    assert (result.sent, result.suppressed) == (2, 1)
    received = sorted((str(m["To"]), str(m["Subject"])) for m in smtp.messages)
    assert received == sorted(
        [(other.email, "Schedule"), (player.email, "Your match in Winter Cup is ready: vs Bob")]
    )
    assert reload(match_mail).status == EmailStatus.SENT
    queued = EmailOutbox.get(
        (EmailOutbox.to_email == player.email)
        & (EmailOutbox.dedupe_key.startswith("announce:"))
        & (EmailOutbox.status != EmailStatus.SENT)
    )
    assert queued.status == EmailStatus.SUPPRESSED

    # A later announcement is not even written for the player.
    assert services.announce(t, organizer, subject="Final", body="Sunday", now=NOW)[1] == 1


def test_the_service_refuses_what_is_not_an_address(qdb):
    for bad in ("", "nobody", "a b@example.com", "x" * 320 + "@example.com", None):
        with pytest.raises(ValidationError):
            services.unsubscribe(bad, now=NOW)
    assert suppressions() == []
    assert services.unsubscribe(" Someone@Example.com ", now=NOW) is True
    assert services.unsubscribe("someone@example.com", now=NOW) is False
    assert suppressions() == [("someone@example.com", "unsubscribe")]
