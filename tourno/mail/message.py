"""Building the MIME message of one rendered email."""

from __future__ import annotations

import datetime as dt
import hashlib
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr

from tourno.config import Settings
from tourno.mail.templates import Rendered


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
    its drain died (see ``store.reap``) is recognisably the same message."""
    digest = hashlib.sha256(dedupe_key.encode("utf-8")).hexdigest()[:16]
    return f"<outbox-{outbox_id}-{digest}@{domain}>"
