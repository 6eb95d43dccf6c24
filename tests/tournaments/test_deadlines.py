"""resolve_expired_match applies the deadline table of reference/domain.md
§4.2, on PostgreSQL and SQLite, and decides the same way whether it runs one
second or fifteen minutes after the deadline."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.tournaments.test_results import NOW, first_match, open_matches, started, user_of
from tourno.mail.models import EmailOutbox
from tourno.tournaments import services
from tourno.tournaments.errors import DeadlinePassed
from tourno.tournaments.models import (
    Match,
    MatchEvent,
    MatchEventType,
    MatchReport,
    MatchState,
    Participant,
    ParticipantStatus,
    ResultType,
    Tournament,
    TournamentState,
)
from tourno.tournaments.services import deadlines


def after(m: Match, seconds: float = 1) -> dt.datetime:
    return Match.get_by_id(m.id).deadline_at + dt.timedelta(seconds=seconds)


def test_not_due_yet_or_not_actionable_does_nothing(organizer):
    t, _ = started(organizer, "single_elimination", 4)
    m, a, b = first_match(t)
    assert services.resolve_expired_match(m, now=m.deadline_at - dt.timedelta(seconds=1)) is None
    services.report_result(m, a, player1_score=1, player2_score=0, now=NOW)
    services.confirm_result(m, b, now=NOW)
    assert services.resolve_expired_match(m, now=after(m)) is None  # complete
    assert services.resolve_expired_match(999_999, now=NOW) is None
    pending = Match.get(Match.tournament == t.id, Match.state == MatchState.PENDING)
    assert services.resolve_expired_match(pending, now=NOW + dt.timedelta(days=30)) is None


def test_a_single_report_stands_as_reported(organizer):
    t, _ = started(organizer, "single_elimination", 4)
    m, a, _ = first_match(t)
    # Player 1 reports their own loss: the opponent wins (not "the reporter wins").
    services.report_result(m, a, player1_score=0, player2_score=2, now=NOW)
    assert services.resolve_expired_match(m, now=after(m)) == deadlines.AUTO_CONFIRMED
    m = Match.get_by_id(m.id)
    assert (m.state, m.winner_id, m.result_type) == (
        MatchState.COMPLETE,
        m.player2_id,
        ResultType.AUTO_CONFIRMED,
    )
    assert (m.player1_score, m.player2_score) == (0, 2)
    assert services.resolve_expired_match(m, now=after(m, 60)) is None  # idempotent


def test_a_forfeit_claim_stands_as_a_forfeit(organizer):
    t, _ = started(organizer, "single_elimination", 4)
    m, _, b = first_match(t)
    services.claim_forfeit(m, b, now=NOW)
    assert services.resolve_expired_match(m, now=after(m)) == deadlines.FORFEIT
    m = Match.get_by_id(m.id)
    assert (m.winner_id, m.result_type) == (m.player2_id, ResultType.FORFEIT)


def test_conflicting_reports_become_a_dispute_never_a_decision(organizer):
    t, _ = started(organizer, "round_robin", 4, report_mode="single_report")
    Tournament.update(report_mode="both_agree").where(Tournament.id == t.id).execute()
    m, a, b = first_match(t)
    # Written straight to the table: two live reports that disagree, as a race could leave them.
    for pid, user, winner in ((m.player1_id, a, m.player1_id), (m.player2_id, b, m.player2_id)):
        MatchReport.create(
            match=m.id,
            participant=pid,
            user=user.id,
            player1_score=1,
            player2_score=0,
            winner_participant=winner,
            created_at=NOW,
        )
    assert services.resolve_expired_match(m, now=after(m)) == deadlines.DISPUTED
    assert Match.get_by_id(m.id).state == MatchState.DISPUTED
    assert EmailOutbox.get(EmailOutbox.template == "match_disputed").to_email == organizer.email
    assert services.resolve_expired_match(m, now=after(m, 3600)) is None  # out of the scan


def test_reports_after_the_deadline_do_not_count(organizer):
    t, _ = started(organizer, "single_elimination", 4)
    m, a, _ = first_match(t)
    with pytest.raises(DeadlinePassed):
        services.report_result(m, a, player1_score=1, player2_score=0, now=after(m))
    # Even one written past the service (a clock skew, a bug) is ignored.
    MatchReport.create(
        match=m.id,
        participant=m.player1_id,
        user=a.id,
        player1_score=1,
        player2_score=0,
        winner_participant=m.player1_id,
        created_at=after(m),
    )
    assert services.resolve_expired_match(m, now=after(m, 5)) == deadlines.DOUBLE_FORFEIT


def test_one_side_checked_in_wins_by_forfeit(organizer):
    t, _ = started(organizer, "single_elimination", 4)
    m, _, _ = first_match(t)
    Match.update(player2_checked_in_at=NOW).where(Match.id == m.id).execute()
    assert services.resolve_expired_match(m, now=after(m)) == deadlines.FORFEIT
    m = Match.get_by_id(m.id)
    assert m.winner_id == m.player2_id


def test_double_no_show_in_elimination_disqualifies_both_and_the_next_match_is_a_walkover(organizer):
    t, _ = started(organizer, "single_elimination", 4)
    m1, m2 = open_matches(t)
    assert services.resolve_expired_match(m1, now=after(m1)) == deadlines.DOUBLE_FORFEIT
    m1 = Match.get_by_id(m1.id)
    assert (m1.winner_id, m1.result_type) == (None, ResultType.DOUBLE_FORFEIT)
    assert {Participant.get_by_id(p).status for p in (m1.player1_id, m1.player2_id)} == {
        ParticipantStatus.DISQUALIFIED
    }
    assert MatchEvent.get(
        MatchEvent.match == m1.id, MatchEvent.type == MatchEventType.DEADLINE_DOUBLE_FORFEIT
    )
    services.resolve_match(m2, organizer, player1_score=1, player2_score=0, now=NOW)
    final = Match.get_by_id(m1.winner_to_id)
    assert (final.state, final.result_type, final.winner_id) == (
        MatchState.COMPLETE,
        ResultType.WALKOVER,
        m2.player1_id,
    )
    t = Tournament.get_by_id(t.id)
    assert t.state == TournamentState.COMPLETE
    assert Participant.get(Participant.final_rank == 1).id == m2.player1_id


@pytest.mark.parametrize("policy", ["higher_seed_advances", "random"])
def test_other_elimination_no_show_policies_pick_one_winner(organizer, policy):
    t, _ = started(organizer, "single_elimination", 4, no_show_policy_elimination=policy)
    m = open_matches(t)[0]
    assert services.resolve_expired_match(m, now=after(m)) == deadlines.FORFEIT
    m = Match.get_by_id(m.id)
    assert m.winner_id in (m.player1_id, m.player2_id) and m.result_type == ResultType.FORFEIT
    if policy == "higher_seed_advances":
        assert Participant.get_by_id(m.winner_id).seed < Participant.get_by_id(m.loser_id).seed


def test_league_no_shows_lose_both_and_drop_after_two(organizer):
    t, _ = started(organizer, "round_robin", 4)
    for _ in range(2):
        m = open_matches(t)[0]
        victims = {m.player1_id, m.player2_id}
        for other in open_matches(t)[1:]:
            services.resolve_match(other, organizer, player1_score=1, player2_score=0, now=NOW)
        assert services.resolve_expired_match(m, now=after(m)) == deadlines.DOUBLE_FORFEIT
        m = Match.get_by_id(m.id)
        assert (m.winner_id, m.is_draw) == (None, False)
    counts = {p.id: (p.no_show_count, p.status) for p in Participant.select()}
    dropped = [pid for pid, (_, status) in counts.items() if status == ParticipantStatus.DROPPED]
    assert all(counts[pid][0] >= 2 for pid in dropped)
    assert victims <= set(counts)


def test_league_no_show_policy_draw_gives_a_nil_draw(organizer):
    t, _ = started(organizer, "swiss", 2, no_show_policy_league="draw")
    m = open_matches(t)[0]
    services.resolve_expired_match(m, now=after(m))
    m = Match.get_by_id(m.id)
    assert (m.is_draw, m.player1_score, m.player2_score) == (True, 0, 0)


def test_the_final_is_extended_once_then_waits_for_review(organizer):
    t, _ = started(organizer, "single_elimination", 2)
    final = open_matches(t)[0]
    first_deadline = final.deadline_at
    # Run late: the new deadline still counts from the old one.
    assert (
        services.resolve_expired_match(final, now=first_deadline + dt.timedelta(minutes=14))
        == deadlines.FINAL_EXTENDED
    )
    final = Match.get_by_id(final.id)
    assert final.deadline_at == first_deadline + dt.timedelta(hours=24)
    assert final.deadline_warning_sent_at is None and final.warn_at is not None
    assert EmailOutbox.get(EmailOutbox.template == "final_extended").to_email == organizer.email
    assert EmailOutbox.select().where(EmailOutbox.template == "deadline_extended").count() == 2
    assert services.resolve_expired_match(final, now=after(final)) == deadlines.AWAITING_REVIEW
    t = Tournament.get_by_id(t.id)
    assert t.state == TournamentState.AWAITING_REVIEW
    final = Match.get_by_id(final.id)
    assert final.admin_locked_at is not None and final.state == MatchState.OPEN
    assert services.resolve_expired_match(final, now=after(final, 3600)) is None
    # The organizer decides it; the tournament completes.
    services.resolve_match(final, organizer, player1_score=1, player2_score=0, now=after(final, 7200))
    assert Tournament.get_by_id(t.id).state == TournamentState.COMPLETE


def test_the_final_policy_cancel_cancels_on_the_second_expiry(organizer):
    t, _ = started(organizer, "single_elimination", 2, final_second_expiry="cancel")
    final = open_matches(t)[0]
    services.resolve_expired_match(final, now=after(final))
    assert services.resolve_expired_match(final, now=after(final)) == deadlines.CANCELLED
    t = Tournament.get_by_id(t.id)
    assert (t.state, t.cancel_reason) == (TournamentState.CANCELLED, "final_not_played")
    assert Match.get_by_id(final.id).deadline_at is None  # out of every scan
    assert EmailOutbox.select().where(EmailOutbox.template == "tournament_cancelled").count() == 2


def _outcome_snapshot(t: Tournament) -> list[tuple]:
    return [
        (m.identifier, m.state.value, m.winner_id and Participant.get_by_id(m.winner_id).seed, m.result_type)
        for m in Match.select().where(Match.tournament == t.id).order_by(Match.identifier)
    ]


def test_outcomes_do_not_depend_on_when_the_job_runs(organizer):
    """Two identical tournaments, the same reports, one job one second after
    each deadline and one fifteen minutes after: the same results."""
    snapshots = []
    for run, lateness in enumerate((dt.timedelta(seconds=1), dt.timedelta(minutes=15))):
        t, _ = started(organizer, "double_elimination", 6, prefix=f"run{run}-")
        step = 0
        while True:
            matches = [m for m in open_matches(t) if m.admin_locked_at is None]
            if not matches:
                break
            for m in matches:
                step += 1
                if step % 3 == 0:
                    services.report_result(
                        m, user_of(m.player1_id), player1_score=2, player2_score=1, now=m.opened_at
                    )
                elif step % 3 == 1:
                    services.claim_forfeit(m, user_of(m.player2_id), now=m.opened_at)
                services.resolve_expired_match(m, now=m.deadline_at + lateness)
            t = Tournament.get_by_id(t.id)
        snapshots.append((_outcome_snapshot(t), Tournament.get_by_id(t.id).state))
    assert snapshots[0] == snapshots[1]
    assert snapshots[0][1] in (TournamentState.COMPLETE, TournamentState.AWAITING_REVIEW)
