"""The mail the domain's changes write: one outbox row per recipient, in the
caller's transaction, each with a ``dedupe_key`` so a retried change never
mails twice. Every row goes through :func:`~.common.add_mails`: inside a
locked write the rows are held and written at its end in one multi-row INSERT.

Nothing here decides anything: the services call these after they have
written the change the mail tells about.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from typing import Any

import peewee

from tourno.accounts.models import User
from tourno.mail.models import EmailPriority
from tourno.mail.store import outbox_row
from tourno.tournaments.decisions import opponent
from tourno.tournaments.models import Match, Participant, ParticipantStatus, Tournament
from tourno.tournaments.services.common import add_mails, entries_of, remember_entries


def tournament_context(t: Tournament) -> dict[str, Any]:
    """What every template about a tournament is given."""
    return {"tournament_id": t.id, "tournament_name": t.name}


def entries_with_users(ids: Iterable[int | None]) -> dict[int, Participant]:
    """Participant id -> participant, its user (if any) read in the same query."""
    return {
        e.id: e
        for e in Participant.select(Participant, User)
        .join(User, peewee.JOIN.LEFT_OUTER, on=(Participant.user == User.id))
        .where(Participant.id.in_([p for p in ids if p]))
    }


def account_of(entry: Participant) -> User | None:
    """The entry's user (read with it), or None for an entrant added by name."""
    return entry.user if entry.user_id is not None else None


def seeded_with_users(t: Tournament) -> list[Participant]:
    """The tournament's seeded participants (everyone who started), each with its user (if any)."""
    return list(
        Participant.select(Participant, User)
        .join(User, peewee.JOIN.LEFT_OUTER, on=(Participant.user == User.id))
        .where(Participant.tournament == t.id, Participant.seed.is_null(False))
    )


def mail_user(
    user: User,
    *,
    template: str,
    dedupe_key: str,
    context: dict[str, Any],
    priority: EmailPriority,
    now: dt.datetime,
) -> None:
    """One email to ``user`` at their address.

    Here and in the helpers below the template is passed by keyword, as a
    literal at the call site: ``tests/mail/test_mail.py`` finds the templates the
    code writes by reading the source for ``template="..."``."""
    add_mails(
        [
            outbox_row(
                dedupe_key=dedupe_key,
                to_email=user.email,
                user=user,
                template=template,
                context=context,
                priority=priority,
                now=now,
            )
        ]
    )


def mail_players(
    t: Tournament,
    m: Match,
    pids: tuple[int | None, ...],
    *,
    template: str,
    dedupe_key: Callable[[int], str],
    extra: Callable[[int], dict[str, Any]],
    priority: EmailPriority,
    now: dt.datetime,
) -> None:
    """One email per listed player of ``m`` who has an address (an entrant
    added by name has none), both players read in one query (or with the match)."""
    entries = entries_of(m)
    if entries is None:
        entries = entries_with_users((m.player1_id, m.player2_id))
        remember_entries(m, entries)  # as they are now: propagation reads their statuses
    for pid in pids:
        entry = entries.get(pid) if pid else None
        user = account_of(entry) if entry is not None else None
        if pid is None or entry is None or user is None:
            continue
        other = opponent(m, pid)
        rival = entries.get(other) if other else None
        mail_user(
            user,
            template=template,
            dedupe_key=dedupe_key(pid),
            context=tournament_context(t)
            | {
                "match_id": m.id,
                "match_identifier": m.identifier,
                "participant_id": pid,
                "display_name": entry.display_name,
                "opponent_name": rival.display_name if rival else None,
            }
            | extra(pid),
            priority=priority,
            now=now,
        )


def mail_organizer(
    t: Tournament, *, template: str, dedupe_key: str, extra: dict[str, Any], now: dt.datetime
) -> None:
    """A high-priority email to the tournament's organizer."""
    organizer = User.get_by_id(t.organizer_id)
    mail_user(
        organizer,
        template=template,
        dedupe_key=dedupe_key,
        context=tournament_context(t) | {"display_name": organizer.display_name} | extra,
        priority=EmailPriority.HIGH,
        now=now,
    )


def mail_tournament_full(t: Tournament, now: dt.datetime) -> None:
    """``tournament_full`` to the organizer: the last place was just taken."""
    organizer = User.get_by_id(t.organizer_id)
    mail_user(
        organizer,
        template="tournament_full",
        dedupe_key=f"tournament_full:{t.id}:{t.version}",
        context=tournament_context(t) | {"capacity": t.capacity},
        priority=EmailPriority.NORMAL,
        now=now,
    )


def mail_participant(
    entry: Participant, user: User, t: Tournament, *, template: str, now: dt.datetime
) -> None:
    """A registration email (confirmed, waitlisted, promoted, missed check-in)
    about ``entry`` as it is now."""
    mail_user(
        user,
        template=template,
        dedupe_key=f"{template}:{entry.id}:{entry.version}",
        context=tournament_context(t)
        | {
            "participant_id": entry.id,
            "display_name": entry.display_name,
            "waitlist_position": entry.waitlist_position,
            "starts_at": t.starts_at.isoformat() if t.starts_at else None,
        },
        priority=EmailPriority.HIGH,
        now=now,
    )


def mail_cancelled(t: Tournament, reason: str, now: dt.datetime) -> None:
    """``tournament_cancelled`` to every participant with an account still in
    the tournament (registered, waitlisted, dropped, no-show)."""
    entries = (
        Participant.select(Participant, User)
        .join(User, on=(Participant.user == User.id))
        .where(
            Participant.tournament == t.id,
            Participant.status.in_(
                (
                    ParticipantStatus.REGISTERED,
                    ParticipantStatus.WAITLISTED,
                    ParticipantStatus.DROPPED,
                    ParticipantStatus.NO_SHOW,
                )
            ),
        )
    )
    for entry in entries:
        user = account_of(entry)
        if user is None:
            continue  # never: the inner join above keeps only entries with a user
        mail_user(
            user,
            template="tournament_cancelled",
            dedupe_key=f"tournament_cancelled:{t.id}:{entry.id}",
            context=tournament_context(t) | {"display_name": entry.display_name, "reason": reason},
            priority=EmailPriority.HIGH,
            now=now,
        )


def mail_disqualified(t: Tournament, ids: list[int], now: dt.datetime) -> None:
    """``disqualified`` to each of the participants ``ids`` who has an account."""
    for entry in entries_with_users(ids).values():
        user = account_of(entry)
        if user is not None:
            mail_user(
                user,
                template="disqualified",
                dedupe_key=f"disqualified:{entry.id}:{entry.version}",
                context=tournament_context(t) | {"display_name": entry.display_name},
                priority=EmailPriority.HIGH,
                now=now,
            )


def mail_tournament_complete(t: Tournament, ranks: dict[int, int], now: dt.datetime) -> None:
    """``tournament_complete`` to every seeded participant with an account,
    with their final rank and the champion."""
    entries = seeded_with_users(t)
    champion = next((e for e in entries if ranks.get(e.id) == 1), None)
    for e in entries:
        user = account_of(e)
        if user is None:
            continue
        mail_user(
            user,
            template="tournament_complete",
            dedupe_key=f"tournament_complete:{t.id}:{e.id}:{t.version}",
            context=tournament_context(t)
            | {
                "display_name": e.display_name,
                "final_rank": ranks.get(e.id),
                "champion": champion.display_name if champion else None,
            },
            priority=EmailPriority.NORMAL,
            now=now,
        )


def mail_started(t: Tournament, players: list[Participant], now: dt.datetime) -> None:
    """``tournament_started`` to every player with an address, in bulk."""
    rows = [
        outbox_row(
            to_email=user.email,
            user=user,
            template="tournament_started",
            dedupe_key=f"tournament_started:{t.id}:{entry.id}",
            context=tournament_context(t)
            | {
                "participant_id": entry.id,
                "display_name": entry.display_name,
                "seed": entry.seed,
                "participants": len(players),
            },
            priority=EmailPriority.NORMAL,
            now=now,
        )
        for entry in players
        if (user := account_of(entry)) is not None and user.email
    ]
    add_mails(rows)


def mail_match_ready(
    t: Tournament,
    rows: list[dict[str, Any]],
    entries: dict[int, Participant],
    round_names: dict[int, str | None],
    now: dt.datetime,
) -> None:
    """``match_ready`` to both players of each newly opened match (rows: id,
    identifier, round, player1, player2, deadline_at), in bulk."""
    mails = []
    for row in rows:
        for me, other in ((row["player1"], row["player2"]), (row["player2"], row["player1"])):
            entry = entries[me]
            user = account_of(entry)
            if user is None or not user.email:
                continue  # an entrant the organizer added by name has no address
            context = tournament_context(t) | {
                "match_id": row["id"],
                "match_identifier": row["identifier"],
                "round_name": round_names[row["round"]],
                "participant_id": entry.id,
                "display_name": entry.display_name,
                "opponent_name": entries[other].display_name,
                "deadline_at": row["deadline_at"].isoformat(),
            }
            key = f"match_ready:{row['id']}:{entry.id}"
            mail = outbox_row(
                to_email=user.email,
                user=user,
                template="match_ready",
                dedupe_key=key,
                context=context,
                priority=EmailPriority.HIGH,
                now=now,
            )
            mails.append(mail)
    add_mails(mails)
