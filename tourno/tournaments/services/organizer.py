"""The organizer's decisions on a running tournament: resolve (or override)
a match, forfeit one, disqualify a participant, reopen a match, extend a
deadline (``reference/domain.md`` §7.2).

Each function is one transaction holding the tournament's row lock, and each
decision goes through :func:`~.progress.complete_match` like a player's.
``actor=None`` is the system (a periodic job) and skips the permission check.
"""

from __future__ import annotations

import datetime as dt

from tourno.accounts.models import User
from tourno.db import utcnow
from tourno.tournaments.decisions import (
    Decision,
    decision_from_scores,
    forfeit_decision,
    opponent,
)
from tourno.tournaments.errors import InvalidState, NotFound, ValidationError
from tourno.tournaments.inputs import DeadlineExtension, ForfeitDecision, MatchScores
from tourno.tournaments.models import (
    ACTIONABLE_MATCH_STATES,
    Match,
    MatchEventType,
    MatchState,
    Participant,
    ParticipantStatus,
    ResultType,
    Tournament,
    TournamentState,
)
from tourno.tournaments.services.common import (
    MANAGING,
    key_of,
    locked_match,
    locked_tournament,
    require_manager,
)
from tourno.tournaments.services.notify import mail_disqualified
from tourno.tournaments.services.progress import complete_match, reopen, set_deadline, statuses_of

# Overriding a complete match reopens it, also in a completed tournament.
MANAGING_OR_COMPLETE = (*MANAGING, TournamentState.COMPLETE)


def resolve_match(
    match: Match | int,
    actor: User,
    *,
    player1_score: int,
    player2_score: int,
    winner: int | None = None,
    game_scores: list[list[int]] | None = None,
    now: dt.datetime | None = None,
) -> Match:
    """An organizer decides a match: an open or disputed one, or overrides a
    complete one (which reopens it first, resetting the matches that depended
    on it)."""
    now = now or utcnow()
    entered = MatchScores.check_arguments(
        player1_score=player1_score, player2_score=player2_score, winner=winner, game_scores=game_scores
    )
    with locked_match(match) as (t, m):
        require_manager(actor, t, states=MANAGING_OR_COMPLETE if m.state == MatchState.COMPLETE else MANAGING)
        if m.state == MatchState.COMPLETE:
            reopen(t, m, actor, now, open_again=False)
        elif m.state == MatchState.PENDING:
            raise InvalidState("the match's players are not known yet")
        decision = decision_from_scores(m, t.format, **entered.arguments()).as_type(ResultType.ADMIN)
        complete_match(t, m, decision, actor, now, MatchEventType.ADMIN_OVERRIDE, {"by": "organizer"})
        return m


def forfeit_match(match: Match | int, actor: User, *, loser: int, now: dt.datetime | None = None) -> Match:
    """An organizer records that ``loser`` (a participant id) forfeits the match."""
    now = now or utcnow()
    loser = ForfeitDecision.check_arguments(loser=loser).loser_id
    with locked_match(match) as (t, m):
        require_manager(actor, t, states=MANAGING)
        if m.state not in (*ACTIONABLE_MATCH_STATES, MatchState.DISPUTED):
            raise InvalidState(f"match is {m.state.value}, it cannot be forfeited")
        if loser not in (m.player1_id, m.player2_id):
            raise ValidationError({"loser": "must be one of the match's two participants"})
        decision = Decision(winner=opponent(m, loser), loser=loser, result_type=ResultType.FORFEIT)
        complete_match(t, m, decision, actor, now, MatchEventType.ADMIN_OVERRIDE, {"forfeit": loser})
        return m


def disqualify_participant(
    tournament: Tournament | int,
    actor: User | None,
    participant: Participant | int,
    *,
    now: dt.datetime | None = None,
) -> Participant:
    """A participant is out of a running tournament: every match they still
    have to play is forfeited to the opponent (a match still waiting for an
    opponent is forfeited when the opponent arrives), and Swiss stops pairing them."""
    now = now or utcnow()
    with locked_tournament(tournament) as t:
        require_manager(actor, t, states=MANAGING)
        if t.state not in MANAGING:
            raise InvalidState(
                f"tournament is {t.state.value}; before the start, remove the participant instead"
            )
        entry = Participant.get_or_none(Participant.id == key_of(participant), Participant.tournament == t.id)
        if entry is None:
            raise NotFound(f"no participant {key_of(participant)} in this tournament")
        if entry.status not in (ParticipantStatus.REGISTERED, ParticipantStatus.DROPPED):
            raise InvalidState(f"participant is {entry.status.value}")
        _disqualify(t, [entry.id], actor, now)
        entry.status = ParticipantStatus.DISQUALIFIED
        return entry


def _disqualify(t: Tournament, ids: list[int], actor: User | None, now: dt.datetime) -> None:
    Participant.update(status=ParticipantStatus.DISQUALIFIED, version=Participant.version + 1).where(
        Participant.id.in_(ids)
    ).execute()
    mail_disqualified(t, ids, now)
    live = Match.select().where(
        Match.tournament == t.id,
        Match.state.in_((*ACTIONABLE_MATCH_STATES, MatchState.DISPUTED)),
        (Match.player1.in_(ids)) | (Match.player2.in_(ids)),
    )
    for stale in list(live):
        m = Match.get_by_id(stale.id)  # an earlier forfeit in this loop may have moved things on
        if m.state in (*ACTIONABLE_MATCH_STATES, MatchState.DISPUTED):
            decision = forfeit_decision(m, statuses_of(m))
            complete_match(t, m, decision, actor, now, MatchEventType.WALKOVER, {"dq": ids})


def reopen_match(match: Match | int, actor: User, *, now: dt.datetime | None = None) -> Match:
    """complete -> open with a new deadline. The matches it fed are reset to
    pending (and theirs, and so on); a completed tournament is underway again."""
    now = now or utcnow()
    with locked_match(match) as (t, m):
        require_manager(actor, t, states=MANAGING_OR_COMPLETE)
        if m.state != MatchState.COMPLETE:
            raise InvalidState(f"match is {m.state.value}, only a complete match can be reopened")
        reopen(t, m, actor, now, open_again=True)
        return m


def extend_deadline(
    match: Match | int, actor: User | None, *, minutes: int, now: dt.datetime | None = None
) -> Match:
    """Move the deadline ``minutes`` later (from now, if it has passed). The
    deadline warning is re-armed for the new deadline."""
    now = now or utcnow()
    minutes = DeadlineExtension.check({"minutes": minutes}).minutes
    with locked_match(match) as (t, m):
        require_manager(actor, t, states=MANAGING)
        if m.state not in ACTIONABLE_MATCH_STATES:
            raise InvalidState(f"match is {m.state.value}, it has no deadline to extend")
        base = max(m.deadline_at or now, now)
        set_deadline(t, m, base + dt.timedelta(minutes=minutes), actor, now, {"minutes": minutes})
        return m
