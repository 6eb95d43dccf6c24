"""Random tournaments played through the services: reports, confirmations,
forfeit claims, disputes, no-shows left to the deadline job and
disqualifications, in every format and field sizes up to 64. Whatever
happens, each tournament completes with every match decided and ranks that
are consistent (competition ranking: rank r has exactly r - 1 players above)."""

from __future__ import annotations

import datetime as dt
import itertools
import random
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.tournaments.test_results import NOW, started, user_of
from tourno.tournaments import services
from tourno.tournaments.models import (
    Match,
    MatchState,
    Participant,
    ParticipantStatus,
    Round,
    Tournament,
    TournamentState,
)

FORMATS = ["single_elimination", "double_elimination", "round_robin", "swiss"]
_runs = itertools.count()


def chaos(t: Tournament, organizer, rng: random.Random) -> Counter:
    """Play ``t`` to the end with random behaviour; returns what happened."""
    seen: Counter = Counter()
    clock = NOW
    for _ in range(5000):
        t = Tournament.get_by_id(t.id)
        if t.state == TournamentState.AWAITING_REVIEW:
            for m in Match.select().where(Match.tournament == t.id, Match.state != MatchState.COMPLETE):
                services.resolve_match(m, organizer, player1_score=1, player2_score=0, now=clock)
                seen["review_resolved"] += 1
            t = Tournament.get_by_id(t.id)
            if t.state == TournamentState.AWAITING_REVIEW:
                services.finalize(t, organizer, now=clock)
            continue
        if t.state != TournamentState.UNDERWAY:
            return seen
        live = list(
            Match.select().where(
                Match.tournament == t.id,
                Match.state.in_((MatchState.OPEN, MatchState.AWAITING_CONFIRMATION, MatchState.DISPUTED)),
            )
        )
        assert live, "an underway tournament with nothing to play"
        for m in live:
            m = Match.get_by_id(m.id)
            if m.state == MatchState.COMPLETE:
                continue
            if m.state == MatchState.DISPUTED:
                services.resolve_match(m, organizer, player1_score=2, player2_score=0, now=clock)
                seen["dispute_resolved"] += 1
                continue
            if m.state != MatchState.OPEN:
                continue
            a, b = user_of(m.player1_id), user_of(m.player2_id)
            league = t.format.value in ("round_robin", "swiss")
            roll = rng.random()
            p1, p2 = rng.choice([(2, 0), (0, 2), (2, 1), (1, 2)] + ([(1, 1)] if league else []))
            if roll < 0.6:
                services.report_result(m, a, player1_score=p1, player2_score=p2, now=clock)
                services.confirm_result(m, b, now=clock)
                seen["played"] += 1
            elif roll < 0.68:
                services.report_result(m, a, player1_score=p1, player2_score=p2, now=clock)
                services.report_result(m, b, player1_score=p2, player2_score=p1, now=clock)
                seen["conflict"] += 1
            elif roll < 0.76:
                services.claim_forfeit(m, b, now=clock)
                services.resolve_expired_match(
                    m, now=m.deadline_at + dt.timedelta(minutes=rng.randint(0, 15))
                )
                seen["forfeit_claim"] += 1
            elif roll < 0.84:
                services.report_result(m, b, player1_score=p1, player2_score=p2, now=clock)
                services.resolve_expired_match(m, now=m.deadline_at + dt.timedelta(seconds=1))
                seen["single_report"] += 1
            elif roll < 0.94:
                outcome = services.resolve_expired_match(m, now=m.deadline_at + dt.timedelta(minutes=7))
                seen[f"no_show:{outcome}"] += 1
            else:
                services.disqualify_participant(
                    t, organizer, rng.choice([m.player1_id, m.player2_id]), now=clock
                )
                seen["disqualified"] += 1
        _check_running(t)
    raise AssertionError(f"tournament {t.id} did not finish: {seen}")


def _check_running(t: Tournament) -> None:
    """Nobody out of the competition has a match to play; nobody plays two at once."""
    live = list(
        Match.select().where(
            Match.tournament == t.id,
            Match.state.in_((MatchState.OPEN, MatchState.AWAITING_CONFIRMATION)),
        )
    )
    players = [p for m in live for p in (m.player1_id, m.player2_id)]
    assert None not in players
    assert len(players) == len(set(players))
    out = {
        p.id
        for p in Participant.select().where(
            Participant.tournament == t.id, Participant.status == ParticipantStatus.DISQUALIFIED
        )
    }
    assert not out & set(players)


def _check_finished(t: Tournament, n: int) -> None:
    t = Tournament.get_by_id(t.id)
    assert t.state in (TournamentState.COMPLETE, TournamentState.CANCELLED)
    if t.state == TournamentState.CANCELLED:
        assert t.cancel_reason == "final_not_played"
        return
    assert not Match.select().where(Match.tournament == t.id, Match.state != MatchState.COMPLETE).exists()
    ranks = [
        p.final_rank
        for p in Participant.select().where(Participant.tournament == t.id, Participant.seed.is_null(False))
    ]
    assert len(ranks) == n and all(r is not None and 1 <= r <= n for r in ranks)
    counts = Counter(ranks)
    for rank in counts:
        assert sum(c for r, c in counts.items() if r < rank) == rank - 1, counts
    if t.format.value in ("single_elimination", "double_elimination") and counts.get(1, 0) > 1:
        # Only when nobody won the deciding match (both finalists disqualified,
        # or no one left to reach it): then those who went out last share rank 1.
        finals = list(
            Match.select(Match, Round)
            .join(Round, on=(Match.round == Round.id))
            .where(Match.tournament == t.id, Round.is_final)
        )
        decisive = max(finals, key=lambda m: (m.bracket.value == "grand_final", m.round.number))
        assert decisive.winner_id is None, counts


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(fmt=st.sampled_from(FORMATS), n=st.integers(2, 24), seed=st.integers(0, 2**32))
def test_random_tournaments_always_complete_with_consistent_ranks(organizer, fmt, n, seed):
    t, _ = started(organizer, fmt, n, prefix=f"h{next(_runs)}-")
    chaos(t, organizer, random.Random(seed))
    _check_finished(t, n)


def test_every_format_completes_at_sixty_four(sqlite):
    """The largest field of the property above, once per format (on SQLite:
    a round robin of 64 is 2,016 matches, each several transactions)."""
    organizer = services.create_user("org64@example.com", "Org", role="organizer")
    for index, fmt in enumerate(FORMATS):
        t, _ = started(organizer, fmt, 64, prefix=f"big{index}-")
        seen = chaos(t, organizer, random.Random(index))
        _check_finished(t, 64)
        assert seen["played"] > 0
