"""What every service shares: the write transaction with the tournament row
(or a match's tournament) locked, the one permission check, the version bumps
of a changed row, and the match event log."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any

from tourno import db as tdb
from tourno.accounts.models import Role, User
from tourno.db import write_transaction
from tourno.tournaments.errors import InvalidState, NotFound, PermissionDenied
from tourno.tournaments.models import Match, MatchEvent, MatchEventType, Tournament, TournamentState

# Rows per INSERT: well under SQLite's 32,766 and PostgreSQL's 65,535 parameters.
CHUNK = 500
PLAYING = (TournamentState.UNDERWAY,)
# The organizer may still decide matches while the tournament waits for review.
MANAGING = (TournamentState.UNDERWAY, TournamentState.AWAITING_REVIEW)


def key_of(obj: Any) -> int:
    """The id of a model instance, or the id itself."""
    return obj if isinstance(obj, int) else obj.id


@contextmanager
def locked_tournament(tournament: Tournament | int) -> Iterator[Tournament]:
    """A write transaction holding the tournament's row lock, yielding the
    tournament as it is now (not as the caller last read it).

    Every change to a tournament's registrations runs under this lock, so
    ``participants_count`` and ``full_since`` can never race (no overbooking).
    On SQLite the IMMEDIATE transaction already excludes every other writer.

    Every change to a tournament's rows (its participants, matches, reports)
    runs under this lock too, which makes the tournament row a reliable data
    version: on PostgreSQL a body that ends normally always leaves the row
    rewritten, so its ``xmin`` is new and the API's response cache
    (``tourno.api.cache``) misses. ``version`` stays the services' own count of
    changes to the tournament itself.
    """
    with write_transaction():
        query = Tournament.select().where(Tournament.id == key_of(tournament))
        postgres = tdb.is_postgres()
        if postgres:
            query = query.for_update()
        found = query.get_or_none()
        if found is None:
            raise NotFound(f"no tournament {key_of(tournament)}")
        version = found.version
        yield found
        if postgres:
            # A no-op UPDATE still writes a new row version (a new xmin). Skipped
            # when the service bumped ``version``: it rewrote the row already.
            Tournament.update(version=Tournament.version).where(
                Tournament.id == found.id, Tournament.version == version
            ).execute()


@contextmanager
def locked_match(match: Match | int) -> Iterator[tuple[Tournament, Match]]:
    """:func:`locked_tournament` for the match's tournament (one writer per
    tournament), yielding it and the match as it is now; NotFound for no match."""
    mid = key_of(match)
    found = Match.select(Match.id, Match.tournament).where(Match.id == mid).first()
    if found is None:
        raise NotFound(f"no match {mid}")
    with locked_tournament(found.tournament_id) as t:
        yield t, Match.get_by_id(mid)


def can_manage(actor: User, tournament: Tournament) -> bool:
    """The actor is the tournament's organizer or an admin."""
    return actor.role == Role.ADMIN or actor.id == tournament.organizer_id


def require_manager(
    actor: User | None, tournament: Tournament, *, states: Collection[TournamentState] | None = None
) -> None:
    """The one permission check: ``actor`` is the organizer or an admin and,
    when ``states`` are given, the tournament is in one of them.
    ``actor=None`` is the system (a periodic job): no check at all."""
    if actor is None:
        return
    if not can_manage(actor, tournament):
        raise PermissionDenied("only the organizer or an admin may do this")
    if states is not None and tournament.state not in states:
        raise InvalidState(f"tournament is {tournament.state.value}")


def touch(m: Match, now: dt.datetime) -> None:
    """A new version of the match (the caller saves it)."""
    m.version += 1
    m.updated_at = now


def save_tournament(t: Tournament, now: dt.datetime, **changes: Any) -> None:
    """Write ``changes`` to the tournament as a new version, and onto ``t``."""
    changes.update(version=t.version + 1, updated_at=now)
    for name, value in changes.items():
        setattr(t, name, value)
    Tournament.update(**changes).where(Tournament.id == t.id).execute()


def record_event(
    t: Tournament,
    m: Match,
    actor: User | None,
    kind: MatchEventType,
    payload: dict[str, Any],
    now: dt.datetime,
) -> None:
    """One row of the match's audit log."""
    MatchEvent.create(
        match=m.id,
        tournament=t.id,
        actor_user=actor.id if actor is not None else None,
        type=kind,
        payload=payload,
        created_at=now,
    )


def epoch(moment: dt.datetime) -> int:
    """Whole seconds since 1970, for dedupe keys that name a moment."""
    return int(moment.timestamp())
