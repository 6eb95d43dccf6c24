"""Accounts and messages to people: API tokens and organizer announcements.

An API token is stored only as its hash; the caller (the API or the CLI)
generates the token, shows it once and hands the hash here. An announcement
becomes one outbox row per recipient in one transaction, so creating it is
O(recipients) inserts and sending is paced by the mail drain.
"""

from __future__ import annotations

import datetime as dt
import uuid

from tourno.accounts.models import User
from tourno.db import database, utcnow, write_transaction
from tourno.mail.models import EmailPriority, EmailSuppression, SuppressionReason
from tourno.tournaments import limits
from tourno.tournaments.errors import ValidationError
from tourno.tournaments.inputs import Announcement
from tourno.tournaments.models import Participant, ParticipantStatus, Tournament
from tourno.tournaments.services.common import locked_tournament, require_manager
from tourno.tournaments.services.notify import mail_user, tournament_context

#: Who hears an organizer's announcement: everyone still in the tournament.
ANNOUNCED_STATUSES = (ParticipantStatus.REGISTERED, ParticipantStatus.WAITLISTED)


def set_api_token_hash(user: User | int, token_hash: str) -> None:
    """Replace the user's API token (its hash); the old token stops working."""
    if not isinstance(token_hash, str) or not 32 <= len(token_hash) <= 128:
        raise ValidationError({"token": "must be a hash of 32 to 128 characters"})
    uid = user if isinstance(user, int) else user.id
    with write_transaction():
        User.update(api_token_hash=token_hash).where(User.id == uid).execute()
    if not isinstance(user, int):
        user.api_token_hash = token_hash


def announce(
    tournament: Tournament | int,
    actor: User,
    *,
    subject: str,
    body: str,
    now: dt.datetime | None = None,
) -> tuple[str, int]:
    """Mail ``subject``/``body`` to every participant with an account who has
    not opted out of bulk mail; returns (announcement key, recipients)."""
    now = now or utcnow()
    message = Announcement.check({"subject": subject, "body": body})
    subject, body = message.subject, message.body
    key = uuid.uuid4().hex
    with locked_tournament(tournament) as t:
        require_manager(actor, t)
        recipients = (
            User.select()
            .join(Participant, on=(Participant.user == User.id))
            .where(
                Participant.tournament == t.id,
                Participant.status.in_(ANNOUNCED_STATUSES),
                User.notifications_opt_out == False,  # noqa: E712 - a peewee expression
            )
            .order_by(User.id)
        )
        count = 0
        for recipient in recipients:
            mail_user(
                recipient,
                dedupe_key=f"announce:{key}:{recipient.id}",
                template="announcement",
                context=tournament_context(t)
                | {
                    "subject": subject,
                    "body": body,
                    "announcement_key": key,
                },
                priority=EmailPriority.BULK,
                now=now,
            )
            count += 1
    return key, count


def unsubscribe(address: str, *, now: dt.datetime | None = None) -> bool:
    """Stop bulk mail (announcements) to ``address``, from a signed unsubscribe
    link: an ``unsubscribe`` suppression of the address, and the opt-out flag
    of the user who has it. Transactional mail still goes. Idempotent;
    returns False when the address had already unsubscribed."""
    address = address.strip().lower() if isinstance(address, str) else ""
    if "@" not in address or len(address) > limits.EMAIL_MAX_LENGTH or any(c.isspace() for c in address):
        raise ValidationError({"address": "must be an email address"})
    now = now or utcnow()
    with write_transaction():
        # A stronger suppression (a hard bounce) already in place is kept as it is.
        insert = EmailSuppression.insert(
            address=address,
            reason=SuppressionReason.UNSUBSCRIBE.value,
            detail="unsubscribe link",
            created_at=now,
        ).on_conflict_ignore()
        # The row count: SQLite's insert "id" is the last rowid even when ignored.
        added = database.execute(insert).rowcount
        opted_out = (
            User.update(notifications_opt_out=True)
            .where((User.email == address) & (User.notifications_opt_out == False))  # noqa: E712
            .execute()
        )
    return bool(added) or bool(opted_out)
