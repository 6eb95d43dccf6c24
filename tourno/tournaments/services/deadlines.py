"""What happens to a match whose deadline has passed: the decision table of
``reference/domain.md`` §4.2, applied by CheckMatchDeadlinesJob.

The outcome depends only on what was recorded up to ``deadline_at`` (reports
and match check-ins created after it do not count), never on how late the job
runs, so a tick one second or fifteen minutes after the deadline decides the
same way. Every decision goes through the same ``_complete`` path as a report,
so brackets advance and tournaments complete exactly as they would from the API.
"""

from __future__ import annotations

import datetime as dt
import hashlib

from tourno.db import utcnow
from tourno.tournaments.models import (
    ACTIONABLE_MATCH_STATES,
    EliminationNoShowPolicy,
    FinalSecondExpiry,
    LeagueNoShowPolicy,
    Match,
    MatchEvent,
    MatchEventType,
    MatchReport,
    Participant,
    ParticipantStatus,
    ReportKind,
    ReportStatus,
    ResultType,
    Round,
    Tournament,
    TournamentState,
)
from tourno.tournaments.services import results as r
from tourno.tournaments.services.common import locked_tournament

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
    mid = match if isinstance(match, int) else match.id
    found = Match.select(Match.id, Match.tournament).where(Match.id == mid).first()
    if found is None:
        return None
    with locked_tournament(found.tournament_id) as t:
        m = Match.get_by_id(mid)
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
    reports = {
        rep.participant_id: rep
        for rep in MatchReport.select().where(
            MatchReport.match == m.id,
            MatchReport.superseded_at.is_null(True),
            MatchReport.status == ReportStatus.ACTIVE,
            MatchReport.created_at <= deadline,
        )
    }
    payload = {"deadline_at": deadline.isoformat()}
    if any(rep.kind == ReportKind.DISPUTE for rep in reports.values()):
        r.mark_disputed(t, m, None, now, reason="disputed before the deadline")
        return DISPUTED
    if len(reports) == 2:
        first, second = reports.values()
        if r._agree(first, second):
            kind = (
                ResultType.FORFEIT
                if ReportKind.FORFEIT_CLAIM in (first.kind, second.kind)
                else ResultType.PLAYED
            )
            r._complete(t, m, r._decision_of(m, first, kind), None, now, MatchEventType.CONFIRMED, payload)
            return AGREED
        r.mark_disputed(t, m, None, now, reason="the two reports differ")
        return DISPUTED
    if len(reports) == 1:
        (report,) = reports.values()
        decision = r._decision_of(m, report, ResultType.AUTO_CONFIRMED)
        event = (
            MatchEventType.DEADLINE_FORFEIT
            if report.kind == ReportKind.FORFEIT_CLAIM
            else MatchEventType.CONFIRMED
        )
        r._complete(t, m, decision, None, now, event, {**payload, "report": report.id, "by": "deadline"})
        return FORFEIT if report.kind == ReportKind.FORFEIT_CLAIM else AUTO_CONFIRMED

    # No report: match check-ins recorded before the deadline decide, if there are any.
    in1 = m.player1_checked_in_at is not None and m.player1_checked_in_at <= deadline
    in2 = m.player2_checked_in_at is not None and m.player2_checked_in_at <= deadline
    if in1 != in2:
        winner, loser = (m.player1_id, m.player2_id) if in1 else (m.player2_id, m.player1_id)
        decision = r.Decision(winner=winner, loser=loser, result_type=ResultType.FORFEIT)
        r._complete(t, m, decision, None, now, MatchEventType.DEADLINE_FORFEIT, payload)
        return FORFEIT
    return _no_show(t, m, now, payload)


def _no_show(t: Tournament, m: Match, now: dt.datetime, payload: dict) -> str:
    """Neither side did anything by the deadline."""
    ids = [m.player1_id, m.player2_id]
    if t.format in r.LEAGUES:
        draw = t.no_show_policy_league == LeagueNoShowPolicy.DRAW
        decision = r.Decision(
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
        r._complete(t, m, decision, None, now, MatchEventType.DEADLINE_DOUBLE_FORFEIT, payload)
        return DOUBLE_FORFEIT

    if Round.get_by_id(m.round_id).is_final:
        return _final_no_show(t, m, now, payload)
    policy = t.no_show_policy_elimination
    if policy == EliminationNoShowPolicy.DOUBLE_DQ:
        Participant.update(status=ParticipantStatus.DISQUALIFIED, version=Participant.version + 1).where(
            Participant.id.in_(ids), Participant.status == ParticipantStatus.REGISTERED
        ).execute()
        decision = r.Decision(winner=None, loser=None, result_type=ResultType.DOUBLE_FORFEIT)
        r._complete(t, m, decision, None, now, MatchEventType.DEADLINE_DOUBLE_FORFEIT, payload)
        return DOUBLE_FORFEIT
    if policy == EliminationNoShowPolicy.HIGHER_SEED_ADVANCES:
        seeds = {p.id: p.seed for p in Participant.select().where(Participant.id.in_(ids))}
        winner = min(ids, key=lambda pid: (seeds.get(pid) or 10**9, pid))
    else:
        # "Random", but the same whenever the job runs: drawn from the match and its deadline.
        digest = hashlib.sha256(f"{m.id}:{m.deadline_at.isoformat()}".encode()).digest()
        winner = ids[digest[0] % 2]
    loser = ids[1] if winner == ids[0] else ids[0]
    decision = r.Decision(winner=winner, loser=loser, result_type=ResultType.FORFEIT)
    r._complete(
        t, m, decision, None, now, MatchEventType.DEADLINE_FORFEIT, {**payload, "policy": policy.value}
    )
    return FORFEIT


def _final_no_show(t: Tournament, m: Match, now: dt.datetime, payload: dict) -> str:
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
        r._set_deadline(t, m, new_deadline, None, now, {"reason": "final_no_show", "minutes": minutes})
        r._mail_organizer(
            t,
            "final_extended",
            f"final_extended:{m.id}:{r.epoch(new_deadline)}",
            {"match_id": m.id, "match_identifier": m.identifier, "deadline_at": new_deadline.isoformat()},
            now,
        )
        return FINAL_EXTENDED
    if t.final_second_expiry == FinalSecondExpiry.CANCEL:
        from tourno.tournaments.services.lifecycle import cancel_tournament

        # Already under the lock (a nested transaction is a savepoint).
        cancel_tournament(t.id, None, reason="final_not_played", now=now)
        return CANCELLED
    m.admin_locked_at = now
    r._touch(m, now)
    m.save()
    r._save_tournament(t, now, state=TournamentState.AWAITING_REVIEW, awaiting_review_since=now)
    r._mail_organizer(
        t,
        "awaiting_review",
        f"awaiting_review:{t.id}:{t.version}",
        {"match_id": m.id, "match_identifier": m.identifier, "reason": "final_not_played"},
        now,
    )
    return AWAITING_REVIEW
