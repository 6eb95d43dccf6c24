"""What every blueprint needs per request: the clock, and fetching rows a
caller may see. The views call the services by importing them."""

from __future__ import annotations

import datetime as dt

from flask import current_app

from tourno.accounts.models import User
from tourno.tournaments.errors import NotFound
from tourno.tournaments.models import Match, Participant, Tournament, TournamentState
from tourno.tournaments.services.common import can_manage


def now() -> dt.datetime:
    """The request's "now"; tests set ``app.config["TOURNO_CLOCK"]``."""
    clock = current_app.config["TOURNO_CLOCK"]
    moment: dt.datetime = clock()
    return moment


def may_manage(user: User | None, t: Tournament) -> bool:
    """The services' rule (:func:`~tourno.tournaments.services.common.can_manage`), for anonymous callers too."""
    return user is not None and can_manage(user, t)


def visible_tournament(tid: int, user: User | None) -> Tournament:
    """A tournament the caller may see: drafts only to their organizer and admins."""
    return require_visible(tid, Tournament.get_or_none(Tournament.id == tid), user)


def require_visible(tid: int, t: Tournament | None, user: User | None) -> Tournament:
    """``t`` (tournament ``tid`` as read) if the caller may see it, else NotFound."""
    if t is None or (t.state == TournamentState.DRAFT and not may_manage(user, t)):
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
