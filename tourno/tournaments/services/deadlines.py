"""What happens to a match whose deadline has passed: the decision table of
``reference/domain.md`` §4.2, applied by CheckMatchDeadlinesJob.

The outcome depends only on what was recorded up to ``deadline_at`` (reports
and match check-ins created after it do not count), never on how late the job
runs, so a tick one second or fifteen minutes after the deadline decides the
same way. Every decision goes through the same ``complete_match`` path as a report,
so brackets advance and tournaments complete exactly as they would from the API.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from contextlib import ExitStack
from typing import Any

from tourno.db import utcnow
from tourno.tournaments.decisions import LEAGUES, Decision, agree, agreed_type, decision_of
from tourno.tournaments.errors import NotFound
from tourno.tournaments.models import (
    ACTIONABLE_MATCH_STATES,
    EliminationNoShowPolicy,
    FinalSecondExpiry,
    LeagueNoShowPolicy,
    Match,
    MatchEvent,
    MatchEventType,
    Participant,
    ParticipantStatus,
    ReportKind,
    ResultType,
    Tournament,
    TournamentState,
)
from tourno.tournaments.services.common import (
    epoch,
    forget_entries,
    locked_match,
    save_match,
    save_tournament,
    touch,
)
from tourno.tournaments.services.lifecycle import cancel_tournament
from tourno.tournaments.services.notify import mail_organizer
from tourno.tournaments.services.progress import active_reports, complete_match, mark_disputed, set_deadline

FINAL_EXTENSION_MINUTES = 1440
DROP_AFTER_NO_SHOWS = 2

# Outcome names (job_runs and logs count them).
AGREED = "agreed"
DISPUTED = "disputed"
AUTO_CONFIRMED = "auto_confirmed"
FORFEIT = "forfeit"
DOUBLE_FORFEIT = "double_forfeit"
FINAL_EXTENDED = "final_extended"
AWAITING_REVIEW = "awaiting_review"
CANCELLED = "cancelled"


def resolve_expired_match(match: Match | int, *, now: dt.datetime | None = None) -> str | None:
    """Decide one match past its deadline; returns what was done, or None when
    the match is not (or no longer) due: decided, disputed, locked by an
    organizer, or its deadline moved."""
    now = now or utcnow()
    with ExitStack() as stack:
        try:
            t, m = stack.enter_context(locked_match(match))
        except NotFound:
            return None  # only taking the lock is guarded: the match is gone
        if (
            t.state != TournamentState.UNDERWAY
            or m.state not in ACTIONABLE_MATCH_STATES
            or m.admin_locked_at is not None
            or m.deadline_at is None
            or m.deadline_at > now
            or not (m.player1_id and m.player2_id)
        ):
            return None
        return _decide(t, m, now)


def _decide(t: Tournament, m: Match, now: dt.datetime) -> str:
    deadline = m.deadline_at
    reports = active_reports(m, until=deadline)
    payload = {"deadline_at": deadline.isoformat()}
    if any(rep.kind == ReportKind.DISPUTE for rep in reports.values()):
        mark_disputed(t, m, None, now, reason="disputed before the deadline")
        return DISPUTED
    if len(reports) == 2:
        first, second = reports.values()
        if agree(first, second):
            decision = decision_of(m, first, agreed_type(first, second))
            complete_match(t, m, decision, None, now, MatchEventType.CONFIRMED, payload)
            return AGREED
        mark_disputed(t, m, None, now, reason="the two reports differ")
        return DISPUTED
    if len(reports) == 1:
        (report,) = reports.values()
        decision = decision_of(m, report, ResultType.AUTO_CONFIRMED)
        event = (
            MatchEventType.DEADLINE_FORFEIT
            if report.kind == ReportKind.FORFEIT_CLAIM
            else MatchEventType.CONFIRMED
        )
        complete_match(t, m, decision, None, now, event, {**payload, "report": report.id, "by": "deadline"})
        return FORFEIT if report.kind == ReportKind.FORFEIT_CLAIM else AUTO_CONFIRMED

    # No report: match check-ins recorded before the deadline decide, if there are any.
    in1 = m.player1_checked_in_at is not None and m.player1_checked_in_at <= deadline
    in2 = m.player2_checked_in_at is not None and m.player2_checked_in_at <= deadline
    if in1 != in2:
        winner, loser = (m.player1_id, m.player2_id) if in1 else (m.player2_id, m.player1_id)
        decision = Decision(winner=winner, loser=loser, result_type=ResultType.FORFEIT)
        complete_match(t, m, decision, None, now, MatchEventType.DEADLINE_FORFEIT, payload)
        return FORFEIT
    return _no_show(t, m, now, payload)


def _no_show(t: Tournament, m: Match, now: dt.datetime, payload: dict[str, Any]) -> str:
    """Neither side did anything by the deadline."""
    ids = [m.player1_id, m.player2_id]
    if t.format in LEAGUES:
        draw = t.no_show_policy_league == LeagueNoShowPolicy.DRAW
        decision = Decision(
            winner=None,
            loser=None,
            result_type=ResultType.DOUBLE_FORFEIT,
            player1_score=0 if draw else None,
            player2_score=0 if draw else None,
            is_draw=draw,
        )
        limit = int((t.settings or {}).get("drop_after_no_shows", DROP_AFTER_NO_SHOWS))
        Participant.update(no_show_count=Participant.no_show_count + 1).where(
            Participant.id.in_(ids)
        ).execute()
        if limit > 0:
            Participant.update(status=ParticipantStatus.DROPPED, version=Participant.version + 1).where(
                Participant.id.in_(ids),
                Participant.status == ParticipantStatus.REGISTERED,
                Participant.no_show_count >= limit,
            ).execute()
            forget_entries(m)  # a player may just have been dropped
        complete_match(t, m, decision, None, now, MatchEventType.DEADLINE_DOUBLE_FORFEIT, payload)
        return DOUBLE_FORFEIT

    if m.round.is_final:  # read with the match
        return _final_no_show(t, m, now, payload)
    policy = t.no_show_policy_elimination
    if policy == EliminationNoShowPolicy.DOUBLE_DQ:
        Participant.update(status=ParticipantStatus.DISQUALIFIED, version=Participant.version + 1).where(
            Participant.id.in_(ids), Participant.status == ParticipantStatus.REGISTERED
        ).execute()
        forget_entries(m)
        decision = Decision(winner=None, loser=None, result_type=ResultType.DOUBLE_FORFEIT)
        complete_match(t, m, decision, None, now, MatchEventType.DEADLINE_DOUBLE_FORFEIT, payload)
        return DOUBLE_FORFEIT
    if policy == EliminationNoShowPolicy.HIGHER_SEED_ADVANCES:
        seeds = {p.id: p.seed for p in Participant.select().where(Participant.id.in_(ids))}
        winner = min(ids, key=lambda pid: (seeds.get(pid) or 10**9, pid))
    else:
        # "Random", but the same whenever the job runs: drawn from the match and its deadline.
        digest = hashlib.sha256(f"{m.id}:{m.deadline_at.isoformat()}".encode()).digest()
        winner = ids[digest[0] % 2]
    loser = ids[1] if winner == ids[0] else ids[0]
    decision = Decision(winner=winner, loser=loser, result_type=ResultType.FORFEIT)
    complete_match(
        t, m, decision, None, now, MatchEventType.DEADLINE_FORFEIT, {**payload, "policy": policy.value}
    )
    return FORFEIT


def _final_no_show(t: Tournament, m: Match, now: dt.datetime, payload: dict[str, Any]) -> str:
    """A final nobody played: one extension (from the old deadline, so the new
    one does not depend on when the job ran), then review or cancel."""
    extended = any(
        e.payload.get("reason") == "final_no_show"
        for e in MatchEvent.select().where(
            MatchEvent.match == m.id, MatchEvent.type == MatchEventType.DEADLINE_EXTENDED
        )
    )
    if not extended:
        minutes = int((t.settings or {}).get("final_extension_minutes", FINAL_EXTENSION_MINUTES))
        new_deadline = m.deadline_at + dt.timedelta(minutes=minutes)
        set_deadline(t, m, new_deadline, None, now, {"reason": "final_no_show", "minutes": minutes})
        mail_organizer(
            t,
            template="final_extended",
            dedupe_key=f"final_extended:{m.id}:{epoch(new_deadline)}",
            extra={
                "match_id": m.id,
                "match_identifier": m.identifier,
                "deadline_at": new_deadline.isoformat(),
            },
            now=now,
        )
        return FINAL_EXTENDED
    if t.final_second_expiry == FinalSecondExpiry.CANCEL:
        # Already under the lock (a nested transaction is a savepoint).
        cancel_tournament(t.id, None, reason="final_not_played", now=now)
        return CANCELLED
    m.admin_locked_at = now
    touch(m, now)
    save_match(m)
    save_tournament(t, now, state=TournamentState.AWAITING_REVIEW, awaiting_review_since=now)
    mail_organizer(
        t,
        template="awaiting_review",
        dedupe_key=f"awaiting_review:{t.id}:{t.version}",
        extra={"match_id": m.id, "match_identifier": m.identifier, "reason": "final_not_played"},
        now=now,
    )
    return AWAITING_REVIEW
