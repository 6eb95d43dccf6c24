"""Reminders the periodic jobs write: the deadline warning to the players of
a match (``reference/domain.md`` §4.3, §8.4) and the full-tournament reminder
to its organizer (§8.2).

Each is one transaction and idempotent: the flag on the row and the outbox's
unique ``dedupe_key`` make a second call write nothing. A call that finds
nothing due (already warned, outside the window, no longer full) returns 0 /
False and writes nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from tourno.accounts.models import User
from tourno.db import utcnow
from tourno.mail.models import EmailPriority
from tourno.tournaments.decisions import LEAGUES
from tourno.tournaments.models import (
    ACTIONABLE_MATCH_STATES,
    PRE_START_STATES,
    EliminationNoShowPolicy,
    LeagueNoShowPolicy,
    Match,
    MatchReport,
    Participant,
    ReportKind,
    Round,
    Tournament,
)
from tourno.tournaments.services.common import epoch, locked_match, locked_tournament, save_tournament
from tourno.tournaments.services.notify import mail_user, tournament_context
from tourno.tournaments.services.progress import active_reports


def warn_match_deadline(match: Match | int, *, now: dt.datetime | None = None) -> int:
    """Warn each player of an actionable match who has not acted yet (no live
    report) that its deadline is near, and mark the match warned, even when
    nobody needed a warning. Returns the number of emails written.

    Due means: actionable, ``warn_at <= now < deadline_at``, not warned since
    the deadline was last set (extending a deadline clears the flag, and the
    new deadline gives a new dedupe key, so one fresh warning goes out).
    """
    now = now or utcnow()
    # Under the tournament's lock like every other change to its rows (the
    # match's updated_at is part of the tournament the API shows).
    with locked_match(match) as (t, m):
        due = (
            m.state in ACTIONABLE_MATCH_STATES
            and m.warn_at is not None
            and m.deadline_warning_sent_at is None
            and m.deadline_at is not None
            and m.warn_at <= now < m.deadline_at
        )
        if not due:
            return 0
        rnd = Round.get_by_id(m.round_id)
        ids = [pid for pid in (m.player1_id, m.player2_id) if pid is not None]
        entries = {p.id: p for p in Participant.select().where(Participant.id.in_(ids))}
        users = {
            u.id: u
            for u in User.select().where(User.id.in_([p.user_id for p in entries.values() if p.user_id]))
        }
        reports = active_reports(m)
        sent = 0
        for me, other, checked_in_at in (
            (m.player1_id, m.player2_id, m.player1_checked_in_at),
            (m.player2_id, m.player1_id, m.player2_checked_in_at),
        ):
            if me is None or me in reports:
                continue  # an empty slot, or a player who has reported: nothing missing
            entry = entries.get(me)
            user = users.get(entry.user_id) if entry is not None and entry.user_id else None
            if entry is None or user is None or not user.email:
                continue  # an entrant added by name has no address
            opponent = entries.get(other) if other is not None else None
            missing = _missing(t, m, reports.get(other) if other is not None else None, checked_in_at)
            mail_user(
                user,
                dedupe_key=f"deadline_warning:{m.id}:{me}:{epoch(m.deadline_at)}",
                template="deadline_warning",
                context=tournament_context(t)
                | {
                    "match_id": m.id,
                    "match_identifier": m.identifier,
                    "round_name": rnd.name,
                    "participant_id": me,
                    "display_name": entry.display_name,
                    "opponent_name": opponent.display_name if opponent is not None else None,
                    "deadline_at": m.deadline_at.isoformat(),
                    "minutes_left": max(0, int((m.deadline_at - now).total_seconds() // 60)),
                    "missing": "; ".join(missing),
                    "consequence": consequence_text(t, rnd.is_final),
                },
                priority=EmailPriority.HIGH,
                now=now,
            )
            sent += 1
        Match.update(deadline_warning_sent_at=now, updated_at=now).where(Match.id == m.id).execute()
        m.deadline_warning_sent_at = now
        return sent


def _missing(
    t: Tournament, m: Match, opponent_report: MatchReport | None, checked_in_at: dt.datetime | None
) -> list[str]:
    """What this player still has to do, in words for the email."""
    missing = []
    if t.check_in_enabled and checked_in_at is None:
        missing.append("check in")
    if opponent_report is None:
        missing.append("report your result")
    elif opponent_report.kind == ReportKind.FORFEIT_CLAIM:
        missing.append("your opponent says you did not show: dispute it or report your result")
    else:
        score = f"{opponent_report.player1_score}-{opponent_report.player2_score}"
        missing.append(f"confirm or dispute your opponent's report of {score}")
    return missing


def consequence_text(t: Tournament, is_final: bool) -> str:
    """What the deadline job will do if the players do not act (§4.2)."""
    one_report = "If only one result is reported, it stands as reported."
    if t.format in LEAGUES:
        if t.no_show_policy_league == LeagueNoShowPolicy.DRAW:
            return f"{one_report} If neither of you reports, the match counts as a 0-0 draw."
        return f"{one_report} If neither of you reports, both of you get a loss and no points."
    if is_final:
        return (
            f"{one_report} If neither of you reports, the deadline is extended once by 24 hours; "
            "after that the organizer decides."
        )
    policy = t.no_show_policy_elimination
    if policy == EliminationNoShowPolicy.HIGHER_SEED_ADVANCES:
        return f"{one_report} If neither of you reports, the higher seed advances."
    if policy == EliminationNoShowPolicy.RANDOM:
        return f"{one_report} If neither of you reports, a player chosen at random advances."
    return f"{one_report} If neither of you reports, both of you are disqualified."


def remind_full_tournament(
    tournament: Tournament | int, *, now: dt.datetime | None = None, cancel_at: dt.datetime | None = None
) -> bool:
    """Tell the organizer, once, that their tournament is full and not started
    (``full_reminder``). ``cancel_at`` (when given) is the time the
    CheckFullTournaments job will cancel it. Returns whether the reminder was
    written; False when it was sent before or the tournament is no longer a
    full, unstarted one."""
    now = now or utcnow()
    with locked_tournament(tournament) as t:
        if (
            t.state not in PRE_START_STATES
            or t.full_since is None
            or t.started_at is not None
            or t.full_reminder_sent_at is not None
        ):
            return False
        organizer = User.get_by_id(t.organizer_id)
        context: dict[str, Any] = tournament_context(t) | {
            "capacity": t.capacity,
            "participants_count": t.participants_count,
            "full_since": t.full_since.isoformat(),
            "starts_at": t.starts_at.isoformat() if t.starts_at else None,
            "cancel_at": cancel_at.isoformat() if cancel_at else None,
        }
        if t.auto_start and t.starts_at is not None and t.starts_at > now:
            # It starts itself then (the template mentions it only when present).
            context["auto_start_at"] = t.starts_at.isoformat()
        mail_user(
            organizer,
            dedupe_key=f"full_reminder:{t.id}",
            template="full_reminder",
            context=context,
            priority=EmailPriority.NORMAL,
            now=now,
        )
        save_tournament(t, now, full_reminder_sent_at=now)
        return True
