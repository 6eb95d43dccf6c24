"""What every service shares: the write transaction with the tournament row
locked and permission checks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tourno import db as tdb
from tourno.accounts.models import Role, User
from tourno.db import write_transaction
from tourno.tournaments.errors import NotFound, PermissionDenied
from tourno.tournaments.models import Tournament


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


def can_manage(actor: User, tournament: Tournament) -> bool:
    return actor.role == Role.ADMIN or actor.id == tournament.organizer_id


def require_manager(actor: User, tournament: Tournament) -> None:
    if not can_manage(actor, tournament):
        raise PermissionDenied("only the organizer or an admin may do this")


def epoch(moment: dt.datetime) -> int:
    return int(moment.timestamp())
