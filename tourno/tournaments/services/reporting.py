"""Players report their own matches: a result, "my opponent did not show",
confirming or disputing the opponent's report (``reference/domain.md`` §4.1).

Each function is one transaction holding the tournament's row lock, so two
reports, or a report and the deadline job, never interleave. A report that
decides the match goes through :func:`~.progress.complete_match`; differing
reports make it ``disputed``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from tourno.accounts.models import User
from tourno.db import utcnow
from tourno.mail.models import EmailPriority
from tourno.tournaments.decisions import (
    Decision,
    agree,
    agreed_type,
    decision_from_scores,
    decision_of,
    opponent,
)
from tourno.tournaments.errors import DeadlinePassed, InvalidState, NotYourMatch, PermissionDenied
from tourno.tournaments.inputs import DisputeInput, ForfeitClaim, ResultReport
from tourno.tournaments.models import (
    ACTIONABLE_MATCH_STATES,
    Match,
    MatchEventType,
    MatchReport,
    MatchState,
    Participant,
    ReportKind,
    ReportMode,
    ReportStatus,
    ResultType,
    Tournament,
)
from tourno.tournaments.services.common import (
    PLAYING,
    can_manage,
    entries_of,
    locked_match,
    record_event,
    remember_reports,
    save_match,
    touch,
)
from tourno.tournaments.services.notify import mail_players
from tourno.tournaments.services.progress import active_reports, complete_match, mark_disputed


def report_result(
    match: Match | int,
    actor: User,
    *,
    player1_score: int,
    player2_score: int,
    winner: int | None = None,
    game_scores: list[list[int]] | None = None,
    comment: str | None = None,
    now: dt.datetime | None = None,
) -> Match:
    """A player reports their match. Single-report mode decides it at once;
    in both-agree mode the first report waits for the opponent, a matching
    second report decides it and a differing one makes it ``disputed``.
    Reporting again replaces the player's own earlier report."""
    now = now or utcnow()
    entered = ResultReport.check_arguments(
        player1_score=player1_score,
        player2_score=player2_score,
        winner=winner,
        game_scores=game_scores,
        comment=comment,
    )
    with locked_match(match) as (t, m):
        me = _player_side(t, m, actor, now)
        decision = decision_from_scores(m, t.format, **entered.arguments())
        report = _file_report(
            t, m, me, actor, ReportKind.RESULT, now, stating=decision, comment=entered.comment
        )
        return _after_report(t, m, me, report, decision, actor, now)


def claim_forfeit(
    match: Match | int, actor: User, *, comment: str | None = None, now: dt.datetime | None = None
) -> Match:
    """ "My opponent did not show": a report that the reporter won by forfeit.
    The opponent may confirm or dispute it; unanswered, it stands at the deadline."""
    now = now or utcnow()
    comment = ForfeitClaim.check({"forfeit_claim": True, "comment": comment}).comment
    with locked_match(match) as (t, m):
        me = _player_side(t, m, actor, now)
        other = opponent(m, me)
        decision = Decision(winner=me, loser=other, result_type=ResultType.FORFEIT)
        report = _file_report(
            t, m, me, actor, ReportKind.FORFEIT_CLAIM, now, stating=decision, comment=comment
        )
        return _after_report(t, m, me, report, decision, actor, now)


def confirm_result(match: Match | int, actor: User, *, now: dt.datetime | None = None) -> Match:
    """The opponent agrees with the standing report: the match is decided as reported."""
    now = now or utcnow()
    with locked_match(match) as (t, m):
        me = _player_side(t, m, actor, now)
        theirs = _their_report(m, me)
        if m.state != MatchState.AWAITING_CONFIRMATION or theirs is None or theirs.kind == ReportKind.DISPUTE:
            raise InvalidState("there is no report from your opponent to confirm")
        decision = decision_of(m, theirs, ResultType.PLAYED)
        # The confirmation states what theirs states (a claim: the claimant won, no scores).
        _file_report(
            t, m, me, actor, ReportKind.RESULT, now, stating=decision, comment="confirmed", event=False
        )
        complete_match(t, m, decision, actor, now, MatchEventType.CONFIRMED, {"report": theirs.id})
        return m


def dispute_result(
    match: Match | int, actor: User, *, comment: str | None = None, now: dt.datetime | None = None
) -> Match:
    """The opponent rejects the standing report: ``disputed`` until an organizer decides."""
    now = now or utcnow()
    comment = DisputeInput.check({"comment": comment}).comment
    with locked_match(match) as (t, m):
        me = _player_side(t, m, actor, now)
        theirs = _their_report(m, me)
        if theirs is None or theirs.kind == ReportKind.DISPUTE:
            raise InvalidState("there is no report from your opponent to dispute")
        _file_report(t, m, me, actor, ReportKind.DISPUTE, now, comment=comment, event=False)
        mark_disputed(t, m, actor, now, reason="disputed by a player")
        return m


# -- helpers ------------------------------------------------------------------------------------


def _player_side(t: Tournament, m: Match, actor: User, now: dt.datetime) -> int:
    """The actor's participant id in ``m``, after the checks every player action shares."""
    known = entries_of(m)
    if known is not None:
        mine = next((e for e in known.values() if e.user_id == actor.id), None)
    else:
        mine = (
            Participant.select(Participant.id)
            .where(
                Participant.id.in_([p for p in (m.player1_id, m.player2_id) if p]),
                Participant.user == actor.id,
            )
            .first()
        )
    if mine is None:
        if can_manage(actor, t):
            raise NotYourMatch("organizers decide matches with resolve, not by reporting")
        raise NotYourMatch("you play in neither slot of this match")
    if t.state not in PLAYING:
        raise InvalidState(f"tournament is {t.state.value}")
    if t.report_mode == ReportMode.ADMIN_ONLY:
        raise PermissionDenied("in this tournament only the organizer enters results")
    if m.state not in ACTIONABLE_MATCH_STATES:
        raise InvalidState(f"match is {m.state.value}")
    if m.admin_locked_at is not None:
        raise InvalidState("an organizer is handling this match")
    if m.deadline_at is not None and now > m.deadline_at:
        raise DeadlinePassed("the match deadline has passed")
    return mine.id


def _their_report(m: Match, me: int) -> MatchReport | None:
    """The opponent's live report, if they have one."""
    other = opponent(m, me)
    return active_reports(m).get(other) if other is not None else None


def _file_report(
    t: Tournament,
    m: Match,
    me: int,
    actor: User,
    kind: ReportKind,
    now: dt.datetime,
    *,
    stating: Decision | None = None,
    comment: str | None = None,
    event: bool = True,
) -> MatchReport:
    """The side's new live report (its earlier one superseded), ``stating``
    a result or none (a dispute), and, unless the caller writes a more
    specific one, its ``report`` event."""
    live = active_reports(m)
    if me in live:
        _supersede_own(m, me, now)
    report = MatchReport.create(
        match=m.id,
        participant=me,
        user=actor.id,
        kind=kind,
        status=ReportStatus.ACTIVE,
        created_at=now,
        comment=comment,
        player1_score=stating.player1_score if stating else None,
        player2_score=stating.player2_score if stating else None,
        game_scores=stating.game_scores if stating else None,
        winner_participant=stating.winner if stating else None,
    )
    remember_reports(m, live | {me: report})
    if event:
        record_event(t, m, actor, MatchEventType.REPORT, _report_payload(report), now)
    return report


def _supersede_own(m: Match, pid: int, now: dt.datetime) -> None:
    MatchReport.update(status=ReportStatus.SUPERSEDED, superseded_at=now).where(
        MatchReport.match == m.id, MatchReport.participant == pid, MatchReport.superseded_at.is_null(True)
    ).execute()


def _after_report(
    t: Tournament,
    m: Match,
    me: int,
    report: MatchReport,
    decision: Decision,
    actor: User,
    now: dt.datetime,
) -> Match:
    if t.report_mode == ReportMode.SINGLE_REPORT:
        complete_match(t, m, decision, actor, now, MatchEventType.CONFIRMED, {"report": report.id})
        return m
    theirs = _their_report(m, me)
    if theirs is None:
        m.state = MatchState.AWAITING_CONFIRMATION
        touch(m, now)
        save_match(m)
        mail_players(
            t,
            m,
            (opponent(m, me),),
            template="result_to_confirm",
            dedupe_key=lambda pid: f"result_to_confirm:{m.id}:{report.id}",
            extra=lambda pid: {"player1_score": report.player1_score, "player2_score": report.player2_score},
            priority=EmailPriority.HIGH,
            now=now,
        )
    elif theirs.kind != ReportKind.DISPUTE and agree(theirs, report):
        complete_match(
            t,
            m,
            decision.as_type(agreed_type(theirs, report)),
            actor,
            now,
            MatchEventType.CONFIRMED,
            {"reports": [theirs.id, report.id]},
        )
    else:
        mark_disputed(t, m, actor, now, reason="the two reports differ")
    return m


def _report_payload(report: MatchReport) -> dict[str, Any]:
    return {
        "report": report.id,
        "kind": report.kind.value,
        "participant": report.participant_id,
        "player1_score": report.player1_score,
        "player2_score": report.player2_score,
        "winner": report.winner_participant_id,
    }
