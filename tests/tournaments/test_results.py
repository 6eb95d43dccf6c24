"""Results through the services, on PostgreSQL and SQLite: whole tournaments
played by reports and confirmations end exactly as the pure simulation of the
same format says (same champion, same ranks), and every report path (confirm,
dispute, single report, organizer decisions) behaves as §7.2 describes."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from tests.conftest import make_players
from tourno.accounts.models import User
from tourno.mail.models import EmailOutbox
from tourno.tournaments import services
from tourno.tournaments.errors import (
    DeadlinePassed,
    InvalidState,
    NotYourMatch,
    PermissionDenied,
    ValidationError,
)
from tourno.tournaments.formats import (
    Bracket,
    MatchKey,
    PointsScheme,
    double_elimination,
    round_robin,
    single_elimination,
)
from tourno.tournaments.formats.simulation import (
    Decision,
    simulate_elimination,
    simulate_round_robin,
    simulate_swiss,
)
from tourno.tournaments.models import (
    Match,
    MatchEvent,
    MatchReport,
    MatchState,
    Participant,
    ParticipantStatus,
    ReportStatus,
    ResultType,
    Round,
    Tournament,
    TournamentState,
)

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)
SCHEME = PointsScheme(win=3, draw=1, loss=0, bye=3)


def started(
    organizer: User, fmt: str, n: int, prefix: str = "p", **options
) -> tuple[Tournament, dict[int, User]]:
    """A tournament of ``n`` players started at NOW; returns it and seed -> user."""
    t = services.create_tournament(
        organizer, name="Cup", game="Chess", format=fmt, capacity=max(n, 2), **options
    )
    services.publish(t, organizer, now=NOW - dt.timedelta(hours=2))
    for i, user in enumerate(make_players(n, prefix=prefix)):
        services.register(t, user, now=NOW - dt.timedelta(hours=1, seconds=-i))
    services.start_tournament(t, organizer, now=NOW)
    users = {
        p.seed: User.get_by_id(p.user_id)
        for p in Participant.select().where(Participant.tournament == t.id, Participant.seed.is_null(False))
    }
    return Tournament.get_by_id(t.id), users


def seed_of(pid: int) -> int:
    return Participant.get_by_id(pid).seed


def user_of(pid: int) -> User:
    return User.get_by_id(Participant.get_by_id(pid).user_id)


def open_matches(t: Tournament) -> list[Match]:
    return list(
        Match.select().where(Match.tournament == t.id, Match.state == MatchState.OPEN).order_by(Match.id)
    )


def key(m: Match) -> MatchKey:
    return MatchKey(Bracket(m.bracket), Round.get_by_id(m.round_id).number, m.position)


def play(t: Tournament, decide, *, now: dt.datetime = NOW, limit: int = 10_000) -> None:
    """Play every open match by a report from player 1 and a confirmation from player 2."""
    for _ in range(limit):
        matches = open_matches(t)
        if not matches:
            return
        for m in matches:
            m = Match.get_by_id(m.id)
            if m.state != MatchState.OPEN:
                continue
            decision = decide(key(m), seed_of(m.player1_id), seed_of(m.player2_id))
            scores = {Decision.SLOT1_WINS: (2, 1), Decision.SLOT2_WINS: (0, 2), Decision.DRAW: (1, 1)}[
                decision
            ]
            services.report_result(
                m, user_of(m.player1_id), player1_score=scores[0], player2_score=scores[1], now=now
            )
            services.confirm_result(m, user_of(m.player2_id), now=now)
    raise AssertionError("the tournament never ran out of open matches")


def ranks_by_seed(t: Tournament) -> dict[int, int]:
    return {
        p.seed: p.final_rank
        for p in Participant.select().where(Participant.tournament == t.id, Participant.seed.is_null(False))
    }


def decider(seed: int, draws: bool = False):
    """Deterministic per match: a coin per (match key, players), so the services
    and the simulation see the same results."""

    def decide(k: MatchKey, a: int, b: int) -> Decision:
        rng = random.Random(f"{seed}:{k}:{a}:{b}")
        roll = rng.random()
        if draws and roll < 0.2:
            return Decision.DRAW
        # Mostly the better seed, sometimes an upset.
        better_wins = roll < 0.75
        return Decision.SLOT1_WINS if (a < b) == better_wins else Decision.SLOT2_WINS

    return decide


# -- whole tournaments equal their simulation ------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 5, 8, 11])
def test_single_elimination_played_by_reports_ends_like_the_simulation(organizer, n):
    t, _ = started(organizer, "single_elimination", n, settings={"third_place": n >= 4})
    decide = decider(n)
    play(t, decide)
    t = Tournament.get_by_id(t.id)
    assert t.state == TournamentState.COMPLETE
    expected = simulate_elimination(single_elimination(n, third_place=n >= 4), n, decide)
    assert ranks_by_seed(t) == expected.ranks
    assert not Match.select().where(Match.tournament == t.id, Match.state != MatchState.COMPLETE).exists()
    champion = Participant.get(Participant.tournament == t.id, Participant.final_rank == 1)
    assert champion.seed == expected.champion
    assert champion.eliminated_at is None


@pytest.mark.parametrize("n", [2, 3, 6, 9])
def test_double_elimination_played_by_reports_ends_like_the_simulation(organizer, n):
    t, _ = started(organizer, "double_elimination", n)
    decide = decider(100 + n)
    play(t, decide)
    t = Tournament.get_by_id(t.id)
    assert t.state == TournamentState.COMPLETE
    expected = simulate_elimination(double_elimination(n), n, decide)
    assert ranks_by_seed(t) == expected.ranks
    # The reset is played only when the losers' champion took the first grand final.
    gf = {
        Round.get_by_id(m.round_id).number: m
        for m in Match.select().where(Match.tournament == t.id, Match.bracket == Bracket.GRAND_FINAL)
    }
    reset_played = gf[2].result_type == ResultType.PLAYED
    assert reset_played == (gf[1].winner_id == gf[1].player2_id)


@pytest.mark.parametrize("n", [2, 4, 5])
def test_round_robin_played_by_reports_ends_like_the_simulation(organizer, n):
    t, _ = started(organizer, "round_robin", n)
    decide = decider(200 + n, draws=True)
    play(t, decide)
    t = Tournament.get_by_id(t.id)
    assert t.state == TournamentState.COMPLETE
    assert t.current_round == t.total_rounds
    expected = simulate_round_robin(round_robin(n), n, decide, scheme=SCHEME)
    assert ranks_by_seed(t) == expected.ranks
    table = services.standings(t)
    assert [row["points"] for row in table] == [st.points for st in expected.standings]


@pytest.mark.parametrize("n", [2, 5, 8])
def test_swiss_played_by_reports_ends_like_the_simulation(organizer, n):
    t, _ = started(organizer, "swiss", n)
    decide = decider(300 + n, draws=True)
    play(t, decide)
    t = Tournament.get_by_id(t.id)
    assert t.state == TournamentState.COMPLETE
    expected = simulate_swiss(n, t.total_rounds, decide, scheme=SCHEME)
    assert ranks_by_seed(t) == expected.ranks
    rounds = Round.select().where(Round.tournament == t.id).count()
    assert rounds == t.total_rounds == len(expected.rounds)
    # Pairings: the persisted rounds are the simulation's rounds.
    for number, planned in enumerate(expected.rounds, start=1):
        rows = (
            Match.select()
            .join(Round, on=(Match.round == Round.id))
            .where(Match.tournament == t.id, Round.number == number)
        )
        persisted = {frozenset(seed_of(p) for p in (m.player1_id, m.player2_id) if p) for m in rows}
        wanted = {frozenset(s.seed for s in (pm.slot1, pm.slot2) if hasattr(s, "seed")) for pm in planned}
        assert persisted == wanted


def test_completion_writes_ranks_standings_cache_and_mail(organizer):
    t, _ = started(organizer, "round_robin", 4)
    play(t, decider(7))
    t = Tournament.get_by_id(t.id)
    assert t.completed_at == NOW
    entries = list(Participant.select().where(Participant.tournament == t.id))
    assert sorted(e.final_rank for e in entries)[0] == 1
    assert sum(e.wins for e in entries) == sum(e.losses for e in entries)
    assert all(e.wins + e.losses + e.draws == 3 for e in entries)
    for template in ("tournament_started", "tournament_complete"):
        assert EmailOutbox.select().where(EmailOutbox.template == template).count() == 4


def test_review_before_finalizing_waits_for_the_organizer(organizer):
    t, _ = started(organizer, "single_elimination", 4, settings={"review_before_finalizing": True})
    play(t, decider(1))
    t = Tournament.get_by_id(t.id)
    assert t.state == TournamentState.AWAITING_REVIEW
    assert (
        Participant.select().where(Participant.tournament == t.id, Participant.final_rank == 1).count() == 1
    )
    other = services.create_user("other-org@example.com", "Other", role="organizer")
    with pytest.raises(PermissionDenied):
        services.finalize(t, other, now=NOW)
    services.finalize(t, organizer, now=NOW)
    assert Tournament.get_by_id(t.id).state == TournamentState.COMPLETE
    with pytest.raises(InvalidState):
        services.finalize(t, organizer, now=NOW)


# -- reporting ---------------------------------------------------------------------------------


def first_match(t: Tournament) -> tuple[Match, User, User]:
    m = open_matches(t)[0]
    return m, user_of(m.player1_id), user_of(m.player2_id)


def test_a_report_waits_for_confirmation_then_completes(organizer):
    t, _ = started(organizer, "single_elimination", 4)
    m, a, b = first_match(t)
    services.report_result(m, a, player1_score=3, player2_score=1, now=NOW)
    m = Match.get_by_id(m.id)
    assert m.state == MatchState.AWAITING_CONFIRMATION
    to_confirm = EmailOutbox.get(EmailOutbox.template == "result_to_confirm")
    assert to_confirm.to_email == b.email
    with pytest.raises(InvalidState):
        services.confirm_result(m, a, now=NOW)  # one's own report is not confirmed by oneself
    services.confirm_result(m, b, now=NOW)
    m = Match.get_by_id(m.id)
    assert (m.state, m.winner_id, m.result_type) == (MatchState.COMPLETE, m.player1_id, ResultType.PLAYED)
    assert (m.player1_score, m.player2_score) == (3, 1)
    statuses = {r.status for r in MatchReport.select().where(MatchReport.match == m.id)}
    assert statuses == {ReportStatus.ACCEPTED}
    nxt = Match.get_by_id(m.winner_to_id)
    assert m.player1_id in (nxt.player1_id, nxt.player2_id)


def test_two_differing_reports_make_a_dispute_for_the_organizer(organizer):
    t, _ = started(organizer, "single_elimination", 4)
    m, a, b = first_match(t)
    services.report_result(m, a, player1_score=3, player2_score=1, now=NOW)
    services.report_result(m, b, player1_score=1, player2_score=3, now=NOW)
    m = Match.get_by_id(m.id)
    assert m.state == MatchState.DISPUTED
    assert EmailOutbox.get(EmailOutbox.template == "match_disputed").to_email == organizer.email
    with pytest.raises(InvalidState):
        services.report_result(m, a, player1_score=3, player2_score=0, now=NOW)
    services.resolve_match(m, organizer, player1_score=0, player2_score=2, now=NOW)
    m = Match.get_by_id(m.id)
    assert (m.state, m.winner_id, m.result_type) == (MatchState.COMPLETE, m.player2_id, ResultType.ADMIN)
    by_side = {r.participant_id: r.status for r in MatchReport.select().where(MatchReport.match == m.id)}
    assert by_side == {m.player1_id: ReportStatus.REJECTED, m.player2_id: ReportStatus.ACCEPTED}


def test_a_matching_second_report_completes_and_a_dispute_blocks(organizer):
    t, _ = started(organizer, "single_elimination", 8)
    (m1, a1, b1), m2 = first_match(t), open_matches(t)[1]
    services.report_result(m1, a1, player1_score=2, player2_score=0, now=NOW)
    services.report_result(m1, b1, player1_score=2, player2_score=0, now=NOW)
    assert Match.get_by_id(m1.id).state == MatchState.COMPLETE
    a2, b2 = user_of(m2.player1_id), user_of(m2.player2_id)
    services.report_result(m2, a2, player1_score=2, player2_score=0, now=NOW)
    services.dispute_result(m2, b2, comment="he never showed up", now=NOW)
    assert Match.get_by_id(m2.id).state == MatchState.DISPUTED


def test_reporting_again_replaces_ones_own_report(organizer):
    t, _ = started(organizer, "single_elimination", 2)
    m, a, b = first_match(t)
    services.report_result(m, a, player1_score=1, player2_score=2, now=NOW)
    services.report_result(m, a, player1_score=2, player2_score=1, now=NOW)
    services.confirm_result(m, b, now=NOW)
    m = Match.get_by_id(m.id)
    assert m.winner_id == m.player1_id
    assert MatchReport.select().where(MatchReport.status == ReportStatus.SUPERSEDED).count() == 1
    assert Tournament.get_by_id(t.id).state == TournamentState.COMPLETE


def test_single_report_mode_decides_at_once_and_admin_only_refuses_players(organizer):
    t, _ = started(organizer, "single_elimination", 2, report_mode="single_report")
    m, a, _ = first_match(t)
    services.report_result(m, a, player1_score=0, player2_score=1, now=NOW)
    m = Match.get_by_id(m.id)
    assert (m.state, m.winner_id) == (MatchState.COMPLETE, m.player2_id)

    t2 = services.create_tournament(
        organizer, name="B", game="Go", format="single_elimination", capacity=2, report_mode="admin_only"
    )
    services.publish(t2, organizer, now=NOW - dt.timedelta(hours=1))
    for user in make_players(2, prefix="adm"):
        services.register(t2, user, now=NOW - dt.timedelta(minutes=30))
    services.start_tournament(t2, organizer, now=NOW)
    m, a, _ = first_match(t2)
    with pytest.raises(PermissionDenied):
        services.report_result(m, a, player1_score=1, player2_score=0, now=NOW)
    services.resolve_match(m, organizer, player1_score=1, player2_score=0, now=NOW)
    assert Tournament.get_by_id(t2.id).state == TournamentState.COMPLETE


def test_refusals_write_nothing(organizer):
    t, _ = started(organizer, "single_elimination", 4)
    m, a, b = first_match(t)
    stranger = services.create_user("stranger@example.com", "Stranger")
    before = (MatchReport.select().count(), MatchEvent.select().count(), Match.get_by_id(m.id).version)
    with pytest.raises(NotYourMatch):
        services.report_result(m, stranger, player1_score=1, player2_score=0, now=NOW)
    with pytest.raises(NotYourMatch):
        services.report_result(m, organizer, player1_score=1, player2_score=0, now=NOW)
    with pytest.raises(ValidationError) as err:
        services.report_result(m, a, player1_score=-1, player2_score=True, now=NOW)
    assert set(err.value.errors) == {"player1_score", "player2_score"}
    with pytest.raises(ValidationError):
        services.report_result(m, a, player1_score=1, player2_score=1, now=NOW)  # no draws in elimination
    with pytest.raises(ValidationError):
        services.report_result(m, a, player1_score=3, player2_score=1, winner=m.player2_id, now=NOW)
    with pytest.raises(ValidationError):
        services.report_result(m, a, player1_score=3, player2_score=1, game_scores=[[1, "x"]], now=NOW)
    with pytest.raises(DeadlinePassed):
        services.report_result(
            m, a, player1_score=1, player2_score=0, now=m.deadline_at + dt.timedelta(seconds=1)
        )
    with pytest.raises(InvalidState):
        services.confirm_result(m, b, now=NOW)  # nothing to confirm yet
    pending = Match.get(Match.tournament == t.id, Match.state == MatchState.PENDING)
    with pytest.raises(InvalidState):
        services.resolve_match(pending, organizer, player1_score=1, player2_score=0, now=NOW)
    assert (
        MatchReport.select().count(),
        MatchEvent.select().count(),
        Match.get_by_id(m.id).version,
    ) == before


def test_a_draw_counts_in_a_league(organizer):
    t, _ = started(organizer, "round_robin", 2)
    m, a, b = first_match(t)
    services.report_result(m, a, player1_score=1, player2_score=1, now=NOW)
    services.confirm_result(m, b, now=NOW)
    m = Match.get_by_id(m.id)
    assert m.is_draw and m.winner_id is None
    assert {row["points"] for row in services.standings(t)} == {1.0}
    assert {p.final_rank for p in Participant.select()} == {1}


# -- the organizer's decisions --------------------------------------------------------------


def test_override_of_a_complete_match_resets_what_it_fed(organizer):
    t, _ = started(organizer, "single_elimination", 4)
    semis = open_matches(t)
    for m in semis:
        services.resolve_match(m, organizer, player1_score=1, player2_score=0, now=NOW)
    final = Match.get(Match.tournament == t.id, Match.state == MatchState.OPEN)
    services.report_result(final, user_of(final.player1_id), player1_score=1, player2_score=0, now=NOW)
    # The organizer changes the first semi-final: the final goes back to waiting.
    services.resolve_match(semis[0], organizer, player1_score=0, player2_score=1, now=NOW)
    semi = Match.get_by_id(semis[0].id)
    assert semi.winner_id == semi.player2_id
    final = Match.get_by_id(final.id)
    assert final.state == MatchState.OPEN  # refilled with the new winner and opened again
    assert semi.player2_id in (final.player1_id, final.player2_id)
    assert (
        MatchReport.select()
        .where(MatchReport.match == final.id, MatchReport.superseded_at.is_null(True))
        .count()
        == 0
    )
    services.resolve_match(final, organizer, player1_score=2, player2_score=0, now=NOW)
    t = Tournament.get_by_id(t.id)
    assert t.state == TournamentState.COMPLETE
    # Overriding the final of a complete tournament reopens the tournament and completes it again.
    services.resolve_match(final, organizer, player1_score=0, player2_score=2, now=NOW)
    final = Match.get_by_id(final.id)
    champion = Participant.get(Participant.tournament == t.id, Participant.final_rank == 1)
    assert champion.id == final.player2_id
    assert Tournament.get_by_id(t.id).state == TournamentState.COMPLETE


def test_reopen_opens_the_match_again_with_a_new_deadline(organizer):
    t, _ = started(organizer, "single_elimination", 4)
    m, a, b = first_match(t)
    services.report_result(m, a, player1_score=1, player2_score=0, now=NOW)
    services.confirm_result(m, b, now=NOW)
    later = NOW + dt.timedelta(hours=1)
    with pytest.raises(PermissionDenied):
        services.reopen_match(m, a, now=later)
    services.reopen_match(m, organizer, now=later)
    m = Match.get_by_id(m.id)
    assert (m.state, m.winner_id, m.result_type) == (MatchState.OPEN, None, None)
    assert m.deadline_at == later + dt.timedelta(minutes=t.match_deadline_minutes)
    nxt = Match.get_by_id(m.winner_to_id)
    assert a.id not in [user_of(p).id for p in (nxt.player1_id, nxt.player2_id) if p]
    with pytest.raises(InvalidState):
        services.reopen_match(m, organizer, now=later)


def test_forfeit_and_disqualification(organizer):
    t, _ = started(organizer, "single_elimination", 8)
    m1, m2 = open_matches(t)[:2]
    services.forfeit_match(m1, organizer, loser=m1.player1_id, now=NOW)
    m1 = Match.get_by_id(m1.id)
    assert (m1.winner_id, m1.result_type) == (m1.player2_id, ResultType.FORFEIT)
    with pytest.raises(ValidationError):
        services.forfeit_match(m2, organizer, loser=m1.player2_id, now=NOW)
    # The winner of m1 is disqualified while waiting for the winner of m2.
    services.disqualify_participant(t, organizer, m1.player2_id, now=NOW)
    assert Participant.get_by_id(m1.player2_id).status == ParticipantStatus.DISQUALIFIED
    services.resolve_match(m2, organizer, player1_score=1, player2_score=0, now=NOW)
    semi = Match.get_by_id(m1.winner_to_id)
    assert semi.state == MatchState.COMPLETE
    assert (semi.winner_id, semi.loser_id, semi.result_type) == (m2.player1_id, m1.player2_id, ResultType.DQ)
    assert EmailOutbox.select().where(EmailOutbox.template == "disqualified").count() == 1


def test_disqualifying_a_player_with_an_open_match_forfeits_it(organizer):
    t, _ = started(organizer, "round_robin", 4)
    m = open_matches(t)[0]
    services.remove_participant(t, organizer, m.player1_id, now=NOW)
    m = Match.get_by_id(m.id)
    assert (m.state, m.winner_id, m.result_type) == (MatchState.COMPLETE, m.player2_id, ResultType.DQ)
    play(t, decider(3))
    # Every later match of the disqualified player was forfeited, none was opened.
    theirs = Match.select().where((Match.player1 == m.player1_id) | (Match.player2 == m.player1_id))
    assert {x.result_type for x in theirs} == {ResultType.DQ}
    assert Tournament.get_by_id(t.id).state == TournamentState.COMPLETE


def test_extend_deadline_rearms_the_warning(organizer):
    t, _ = started(organizer, "single_elimination", 2)
    m = open_matches(t)[0]
    Match.update(deadline_warning_sent_at=NOW).where(Match.id == m.id).execute()
    with pytest.raises(ValidationError):
        services.extend_deadline(m, organizer, minutes=0, now=NOW)
    services.extend_deadline(m, organizer, minutes=120, now=NOW)
    m2 = Match.get_by_id(m.id)
    assert m2.deadline_at == m.deadline_at + dt.timedelta(minutes=120)
    assert m2.warn_at == m2.deadline_at - dt.timedelta(minutes=t.deadline_warning_minutes)
    assert m2.deadline_warning_sent_at is None and m2.deadline_extensions == 1
    assert EmailOutbox.select().where(EmailOutbox.template == "deadline_extended").count() == 2


# -- concurrency ---------------------------------------------------------------------------------


def _together(*calls) -> list:
    """Run each call in its own thread with its own connection, released at once."""
    import threading

    from tourno import db as tdb
    from tourno.tournaments.errors import DomainError

    go = threading.Event()
    results: list = [None] * len(calls)

    def run(index: int) -> None:
        go.wait()
        tdb.open_connection()
        try:
            results[index] = calls[index]()
        except DomainError as exc:
            results[index] = exc.code
        finally:
            tdb.database.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    go.set()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return results


def test_racing_reports_and_the_deadline_job_decide_a_match_once(organizer):
    """Both players report the same result while the deadline job runs on the
    same match: one decision, one advance, one result mail per player."""
    for attempt in range(5):
        t, _ = started(organizer, "single_elimination", 4, prefix=f"race{attempt}-")
        m, a, b = first_match(t)
        late = m.deadline_at  # the job sees the deadline reached; the reports are just in time
        outcomes = _together(
            lambda m=m, a=a, late=late: services.report_result(
                m.id, a, player1_score=2, player2_score=1, now=late
            ),
            lambda m=m, b=b, late=late: services.report_result(
                m.id, b, player1_score=2, player2_score=1, now=late
            ),
            lambda m=m, late=late: services.resolve_expired_match(m.id, now=late),
        )
        m = Match.get_by_id(m.id)
        nxt = Match.get_by_id(m.winner_to_id)
        slot = nxt.player1_id if m.position % 2 else nxt.player2_id
        if outcomes[2] == "double_forfeit":
            # The job took the lock first: the reports came too late and were refused.
            assert outcomes[:2] == ["invalid_state", "invalid_state"]
            assert m.winner_id is None and slot is None
        else:
            assert m.state == MatchState.COMPLETE and m.winner_id == m.player1_id
            assert slot == m.player1_id
        decided = MatchEvent.select().where(
            MatchEvent.match == m.id,
            MatchEvent.type.in_(
                ("confirmed", "admin_override", "deadline_forfeit", "deadline_double_forfeit")
            ),
        )
        assert decided.count() == 1
        mails = EmailOutbox.select().where(
            EmailOutbox.template == "match_result", EmailOutbox.dedupe_key.startswith(f"match_result:{m.id}:")
        )
        assert mails.count() == 2
