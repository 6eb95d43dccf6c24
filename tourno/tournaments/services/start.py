"""Starting a tournament: seed the field, persist the bracket, open the first
matches (``reference/domain.md`` §7.1 pending / checked_in -> underway).

One transaction under the tournament's row lock. The bracket is planned,
resolved and written by :mod:`~tourno.tournaments.services.brackets`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import peewee

from tourno.accounts.models import User
from tourno.db import utcnow
from tourno.tournaments.errors import InvalidState, ValidationError
from tourno.tournaments.models import (
    PRE_START_STATES,
    Participant,
    ParticipantStatus,
    Tournament,
    TournamentState,
)
from tourno.tournaments.services.brackets import persist, plan, resolve
from tourno.tournaments.services.common import CHUNK, locked_tournament, require_manager, save_tournament
from tourno.tournaments.services.notify import mail_started


def start_tournament(
    tournament: Tournament | int, actor: User | None, *, now: dt.datetime | None = None
) -> Tournament:
    """pending / checked_in -> underway: seed, generate the rounds and matches,
    complete the bye matches, open the playable ones with their deadlines, and
    write a ``match_ready`` email per player of each opened match.

    With check-in enabled and check-ins not processed yet, registered
    participants who did not check in become ``no_show`` first. Refuses with
    PermissionDenied (not the organizer or an admin), InvalidState (not
    pending / checked_in) or ValidationError (too few participants), having
    written nothing.
    """
    now = now or utcnow()
    with locked_tournament(tournament) as t:
        require_manager(actor, t)
        if t.state not in PRE_START_STATES:
            raise InvalidState(f"tournament is {t.state.value}, it cannot be started")
        entries = list(
            Participant.select(Participant, User)
            .join(User, peewee.JOIN.LEFT_OUTER, on=(Participant.user == User.id))
            .where(Participant.tournament == t.id, Participant.status == ParticipantStatus.REGISTERED)
            .order_by(Participant.created_at, Participant.id)
        )
        process_check_ins = t.check_in_enabled and t.check_ins_processed_at is None
        no_shows = [e for e in entries if process_check_ins and e.checked_in_at is None]
        players = [e for e in entries if not (process_check_ins and e.checked_in_at is None)]
        minimum = max(2, t.min_participants)
        if len(players) < minimum:
            raise ValidationError(
                {"participants": f"at least {minimum} needed, {len(players)} ready"},
                f"not enough participants to start ({len(players)} of {minimum})",
            )

        # Seeds: existing seeds first (in their order), then registration order.
        seeded = sorted((e for e in players if e.seed is not None), key=lambda e: e.seed or 0)
        players = seeded + [e for e in players if e.seed is None]
        by_seed = {number: entry for number, entry in enumerate(players, start=1)}
        _write_seeds(t, by_seed, no_shows)

        planned, total_rounds = plan(t, len(players))
        persist(t, resolve(t, planned, by_seed, now), actor, now)
        mail_started(t, players, now)

        changes: dict[str, Any] = {
            "state": TournamentState.UNDERWAY,
            "started_at": now,
            "current_round": 1,
            "total_rounds": total_rounds,
            "participants_count": len(players),
            "full_since": t.full_since if len(players) >= t.capacity else None,
        }
        if process_check_ins:
            changes["check_ins_processed_at"] = now
        save_tournament(t, now, **changes)
        return t


def _write_seeds(t: Tournament, by_seed: dict[int, Participant], no_shows: list[Participant]) -> None:
    """Seeds 1..n in two statements (cleared first: the (tournament, seed)
    index is unique), and the no-shows in a third."""
    Participant.update(seed=None).where(
        Participant.tournament == t.id, Participant.seed.is_null(False)
    ).execute()
    pairs = [(entry.id, seed) for seed, entry in by_seed.items()]
    for batch in peewee.chunked(pairs, CHUNK):
        Participant.update(seed=peewee.Case(Participant.id, batch)).where(
            Participant.id.in_([pid for pid, _ in batch])
        ).execute()
    for seed, entry in by_seed.items():
        entry.seed = seed
    if no_shows:
        Participant.update(
            status=ParticipantStatus.NO_SHOW, seed=None, version=Participant.version + 1
        ).where(Participant.id.in_([e.id for e in no_shows])).execute()
