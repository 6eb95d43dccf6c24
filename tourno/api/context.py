"""What every blueprint needs per request: the clock, the services (looked up
at call time, so a service added later is picked up without an import
cycle), and fetching rows a caller may see."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from flask import current_app

from tourno.accounts.models import Role, User
from tourno.api.errors import ApiError
from tourno.tournaments import services
from tourno.tournaments.errors import NotFound
from tourno.tournaments.models import Match, Participant, Tournament, TournamentState


def now() -> dt.datetime:
    """The request's "now"; tests set ``app.config["TOURNO_CLOCK"]``."""
    return current_app.config["TOURNO_CLOCK"]()


def service(name: str) -> Callable[..., Any]:
    fn = getattr(services, name, None)
    if fn is None:
        raise ApiError(501, "not_implemented", f"this server has no {name} service yet")
    return fn


def can_manage(user: User | None, t: Tournament) -> bool:
    return user is not None and (user.role == Role.ADMIN or user.id == t.organizer_id)


def visible_tournament(tid: int, user: User | None) -> Tournament:
    """A tournament the caller may see: drafts only to their organizer and admins."""
    return require_visible(tid, Tournament.get_or_none(Tournament.id == tid), user)


def require_visible(tid: int, t: Tournament | None, user: User | None) -> Tournament:
    """``t`` (tournament ``tid`` as read) if the caller may see it, else NotFound."""
    if t is None or (t.state == TournamentState.DRAFT and not can_manage(user, t)):
        raise NotFound(f"no tournament {tid}")
    return t


def participant_of(t: Tournament, pid: int) -> Participant:
    p = Participant.get_or_none(Participant.id == pid, Participant.tournament == t.id)
    if p is None:
        raise NotFound(f"no participant {pid} in tournament {t.id}")
    return p


def visible_match(mid: int, user: User | None) -> Match:
    m = Match.get_or_none(Match.id == mid)
    if m is None:
        raise NotFound(f"no match {mid}")
    visible_tournament(m.tournament_id, user)
    return m
