"""The tournament formats, as pure functions: plans, pairings, standings and simulated runs."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tourno.tournaments.formats import (
    Bracket,
    ByeSlot,
    LoserOf,
    MatchKey,
    Outcome,
    Result,
    SeedSlot,
    WinnerOf,
    bracket_size,
    compute_standings,
    double_elimination,
    elimination_ranks,
    pair_next_round,
    play_order,
    ranks_from_standings,
    resting_seed,
    round_name,
    round_robin,
    single_elimination,
    standard_seed_order,
)
from tourno.tournaments.formats.simulation import (
    Decision,
    simulate_elimination,
    simulate_round_robin,
    simulate_swiss,
)

SIZES = range(2, 65)
WINS = [Decision.SLOT1_WINS, Decision.SLOT2_WINS]
ELIMINATION_EVENTS = WINS * 6 + [Decision.SLOT1_FORFEITS, Decision.SLOT2_FORFEITS, Decision.DOUBLE_NO_SHOW]
LEAGUE_EVENTS = [*ELIMINATION_EVENTS, Decision.DRAW, Decision.DRAW]


def random_decider(rng: random.Random, events=WINS):
    return lambda key, a, b: rng.choice(events)


def assert_consistent_ranks(ranks: dict[int, int], n: int) -> None:
    """Every seed ranked once, and ranks are competition ranks (1, 2, 2, 4, ...)."""
    assert sorted(ranks) == list(range(1, n + 1))
    for rank in ranks.values():
        assert rank == 1 + sum(1 for other in ranks.values() if other < rank)


def assert_wiring_consistent(plan) -> None:
    by_key = {m.key: m for m in plan}
    assert len(by_key) == len(plan)
    for match in plan:
        for destination, kind in ((match.winner_to, WinnerOf), (match.loser_to, LoserOf)):
            if destination is not None:
                target = by_key[destination.match]
                slot = target.slot1 if destination.slot == 1 else target.slot2
                assert slot == kind(match.key)
        for slot in (match.slot1, match.slot2):
            if isinstance(slot, WinnerOf | LoserOf):
                assert slot.match in by_key


def champion_won_last_match(run) -> bool:
    last = [m for m in run.matches.values() if run.champion in (m.player1, m.player2)][-1]
    return last.winner == run.champion


# --- single elimination --------------------------------------------------------------------------


def test_standard_seed_order_examples():
    assert standard_seed_order(2) == [1, 2]
    assert standard_seed_order(4) == [1, 4, 2, 3]
    assert standard_seed_order(8) == [1, 8, 4, 5, 2, 7, 3, 6]
    assert standard_seed_order(16) == [1, 16, 8, 9, 4, 13, 5, 12, 2, 15, 7, 10, 3, 14, 6, 11]
    with pytest.raises(ValueError):
        standard_seed_order(6)


def test_eight_player_bracket_positions():
    plan = single_elimination(8)
    first = [(m.slot1, m.slot2) for m in plan if m.key.round == 1]
    assert first == [
        (SeedSlot(1), SeedSlot(8)),
        (SeedSlot(4), SeedSlot(5)),
        (SeedSlot(2), SeedSlot(7)),
        (SeedSlot(3), SeedSlot(6)),
    ]
    semi = {m.key: m for m in plan}[MatchKey(Bracket.WINNERS, 2, 2)]
    assert semi.slot1 == WinnerOf(MatchKey(Bracket.WINNERS, 1, 3))
    final = plan[-1]
    assert final.is_final and final.key == MatchKey(Bracket.WINNERS, 3, 1)


def test_twelve_players_give_byes_to_seeds_one_to_four():
    plan = single_elimination(12)
    byes = sorted(m.slot1.seed for m in plan if m.has_bye)
    assert byes == [1, 2, 3, 4]
    real = [(m.slot1.seed, m.slot2.seed) for m in plan if m.key.round == 1 and not m.has_bye]
    assert real == [(8, 9), (5, 12), (7, 10), (6, 11)]


def test_round_names_and_bracket_size():
    assert [round_name(r, 4) for r in range(1, 5)] == [
        "Round of 16",
        "Quarter-finals",
        "Semi-finals",
        "Final",
    ]
    assert [bracket_size(n) for n in (2, 3, 4, 5, 64, 65)] == [2, 4, 4, 8, 64, 128]
    with pytest.raises(ValueError):
        bracket_size(1)


@pytest.mark.parametrize("third_place", [False, True])
def test_single_elimination_structure_for_every_size(third_place):
    for n in SIZES:
        size = bracket_size(n)
        plan = single_elimination(n, third_place=third_place)
        assert_wiring_consistent(plan)
        first = [m for m in plan if m.key.bracket is Bracket.WINNERS and m.key.round == 1]
        seeds = [s.seed for m in first for s in (m.slot1, m.slot2) if isinstance(s, SeedSlot)]
        assert sorted(seeds) == list(range(1, n + 1)), "every participant placed once in round 1"
        for match in plan:
            if match.key.round > 1 or match.key.bracket is not Bracket.WINNERS:
                assert not match.has_bye, "byes only in round 1"
                assert not isinstance(match.slot1, SeedSlot) and not isinstance(match.slot2, SeedSlot)
        bye_matches = [m for m in first if m.has_bye]
        assert all(isinstance(m.slot1, SeedSlot) for m in bye_matches), "never a bye against a bye"
        assert sorted(m.slot1.seed for m in bye_matches) == list(range(1, size - n + 1)), "byes to top seeds"
        wb = [m for m in plan if m.key.bracket is Bracket.WINNERS]
        assert len(wb) == size - 1
        assert len(wb) - len(bye_matches) == n - 1, "n - 1 real matches"
        halves = {
            s.seed: i < len(first) // 2
            for i, m in enumerate(first)
            for s in (m.slot1, m.slot2)
            if isinstance(s, SeedSlot)
        }
        if n > 2:
            assert halves[1] != halves[2], "seeds 1 and 2 in opposite halves"
        has_third = any(m.key.bracket is Bracket.THIRD_PLACE for m in plan)
        assert has_third == (third_place and size >= 4)


@pytest.mark.parametrize("third_place", [False, True])
def test_single_elimination_simulated_for_every_size(third_place):
    rng = random.Random(3)
    for n in SIZES:
        run = simulate_elimination(single_elimination(n, third_place), n, random_decider(rng))
        played = [m for m in run.matches.values() if m.decision is not None]
        deciding = [m for m in played if m.key.bracket is Bracket.WINNERS]
        assert len(deciding) == n - 1
        assert_consistent_ranks(run.ranks, n)
        assert run.ranks[run.champion] == 1 and champion_won_last_match(run)
        assert all(run.losses[p] == (0 if p == run.champion else 1) for p in range(1, n + 1)) or third_place
        if third_place and n >= 4:
            assert sorted(run.ranks.values())[:4] == [1, 2, 3, 4]


def test_top_seeds_always_winning_rank_by_seed():
    def better_seed_wins(key, a, b):
        return Decision.SLOT1_WINS if a < b else Decision.SLOT2_WINS

    run = simulate_elimination(single_elimination(8, third_place=True), 8, better_seed_wins)
    assert run.champion == 1
    assert [run.ranks[s] for s in (1, 2, 3, 4)] == [1, 2, 3, 4]
    assert run.ranks[5] == run.ranks[8] == 5


def test_elimination_ranks_and_play_order_for_four_players():
    plan = single_elimination(4, third_place=True)
    order = [m.key for m in play_order(plan)]
    assert order[:2] == [MatchKey(Bracket.WINNERS, 1, 1), MatchKey(Bracket.WINNERS, 1, 2)]
    assert order[2:] == [MatchKey(Bracket.THIRD_PLACE, 2, 1), MatchKey(Bracket.WINNERS, 2, 1)]
    semis = {4: MatchKey(Bracket.WINNERS, 1, 1), 3: MatchKey(Bracket.WINNERS, 1, 2)}
    final = MatchKey(Bracket.WINNERS, 2, 1)
    third = MatchKey(Bracket.THIRD_PLACE, 2, 1)
    assert elimination_ranks(plan, {2: final, **semis}, champion=1) == {1: 1, 2: 2, 3: 3, 4: 3}
    ranks = elimination_ranks(plan, {2: final, 4: third}, champion=1, third_place_winner=3)
    assert ranks == {1: 1, 2: 2, 3: 3, 4: 4}


# --- double elimination --------------------------------------------------------------------------


@pytest.mark.parametrize("reset", [True, False])
def test_double_elimination_every_size_two_losses(reset):
    rng = random.Random(5)
    for n in SIZES:
        plan = double_elimination(n, reset=reset)
        assert_wiring_consistent(plan)
        run = simulate_elimination(plan, n, random_decider(rng))
        assert_consistent_ranks(run.ranks, n)
        assert run.ranks[run.champion] == 1 and champion_won_last_match(run)
        runner_up = next(p for p, r in run.ranks.items() if r == 2)
        for p in range(1, n + 1):
            if p == run.champion:
                assert run.losses[p] <= 1
            elif p == runner_up and not reset:
                assert run.losses[p] in (1, 2)
            else:
                assert run.losses[p] == 2, (n, p)
        played = sum(1 for m in run.matches.values() if m.decision is not None)
        reset_played = run.matches.get(MatchKey(Bracket.GRAND_FINAL, 2, 1))
        extra = 1 if reset_played is not None and reset_played.decision is not None else 0
        assert played == 2 * n - 2 + extra


def test_double_elimination_reset_is_played_only_when_losers_champion_wins():
    def decide(key, a, b):
        # Everyone wins in the winners bracket as slot 1; the grand final goes to slot 2.
        return Decision.SLOT2_WINS if key == MatchKey(Bracket.GRAND_FINAL, 1, 1) else Decision.SLOT1_WINS

    run = simulate_elimination(double_elimination(8), 8, decide)
    reset = run.matches[MatchKey(Bracket.GRAND_FINAL, 2, 1)]
    assert reset.decision is Decision.SLOT1_WINS and run.champion == reset.winner
    run = simulate_elimination(double_elimination(8), 8, lambda k, a, b: Decision.SLOT1_WINS)
    assert run.matches[MatchKey(Bracket.GRAND_FINAL, 2, 1)].decision is None
    assert run.champion == 1 and run.losses[1] == 0


def test_double_elimination_losers_bracket_shape():
    plan = double_elimination(16)
    rounds = Counter(m.key.round for m in plan if m.key.bracket is Bracket.LOSERS)
    assert rounds == {1: 4, 2: 4, 3: 2, 4: 2, 5: 1, 6: 1}
    assert len(double_elimination(2)) == 3  # winners final, grand final, reset
    assert len(double_elimination(8, reset=False)) == 7 + 6 + 1


@pytest.mark.parametrize("n", [8, 16, 32, 64])
def test_double_elimination_drop_ins_avoid_immediate_rematches(n):
    """While a drop-in round has at least four matches, nobody dropping in meets someone already met."""
    plan = double_elimination(n)
    wide_drop_ins = {
        r
        for r, count in Counter(m.key.round for m in plan if m.key.bracket is Bracket.LOSERS).items()
        if r % 2 == 0 and count >= 4
    }
    assert wide_drop_ins == {2 * j for j in range(1, n.bit_length() - 3)}
    rng = random.Random(n)
    for _ in range(30):
        run = simulate_elimination(plan, n, random_decider(rng))
        met = set()
        for match in run.matches.values():
            pair = frozenset((match.player1, match.player2))
            if match.key.bracket is Bracket.LOSERS and match.key.round in wide_drop_ins:
                assert pair not in met, match.key
            if match.decision is not None:
                met.add(pair)


# --- elimination with forfeits, double no-shows and disqualifications ----------------------------


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 64),
    double=st.booleans(),
    extra=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    dq=st.dictionaries(st.integers(1, 64), st.integers(0, 4), max_size=6),
)
def test_elimination_with_forfeits_and_disqualifications_completes(n, double, extra, seed, dq):
    plan = double_elimination(n, reset=extra) if double else single_elimination(n, third_place=extra)
    rng = random.Random(seed)
    dq = {p: k for p, k in dq.items() if p <= n}
    run = simulate_elimination(plan, n, random_decider(rng, ELIMINATION_EVENTS), dq)
    assert_consistent_ranks(run.ranks, n)
    assert {p for p, after in dq.items() if after == 0} <= run.disqualified
    if run.champion is not None:
        assert run.champion not in run.disqualified
        assert run.ranks[run.champion] == 1 and champion_won_last_match(run)
        assert list(run.ranks.values()).count(1) == 1
    for p in range(1, n + 1):
        assert run.losses[p] <= (2 if double or extra else 1)


# --- round robin ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cycles", [1, 2])
def test_round_robin_every_pair_meets_once_per_cycle(cycles):
    for n in SIZES:
        plan = round_robin(n, cycles)
        pairs = Counter(frozenset((m.slot1.seed, m.slot2.seed)) for m in plan)
        assert set(pairs) == {frozenset(p) for p in itertools.combinations(range(1, n + 1), 2)}
        assert set(pairs.values()) == {cycles}
        rounds = {}
        for match in plan:
            rounds.setdefault(match.key.round, []).append(match)
        assert len(rounds) == cycles * (n - 1 + n % 2)
        for number, matches in rounds.items():
            assert len(matches) == n // 2
            players = [s.seed for m in matches for s in (m.slot1, m.slot2)]
            assert len(players) == len(set(players))
            rest = set(range(1, n + 1)) - set(players)
            assert rest == ({resting_seed(n, number)} if n % 2 else set())
        if cycles == 2:
            first_leg = {(m.slot1.seed, m.slot2.seed) for m in plan if m.key.round <= len(rounds) // 2}
            second_leg = {(m.slot2.seed, m.slot1.seed) for m in plan if m.key.round > len(rounds) // 2}
            assert first_leg == second_leg


def test_round_robin_rejects_bad_input():
    with pytest.raises(ValueError):
        round_robin(1)
    with pytest.raises(ValueError):
        round_robin(4, cycles=3)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 64),
    cycles=st.sampled_from([1, 2]),
    seed=st.integers(0, 2**32 - 1),
    dq=st.dictionaries(st.integers(1, 64), st.integers(0, 10), max_size=4),
)
def test_round_robin_simulated_completes(n, cycles, seed, dq):
    rng = random.Random(seed)
    run = simulate_round_robin(round_robin(n, cycles), n, random_decider(rng, LEAGUE_EVENTS), dq)
    assert_consistent_ranks(run.ranks, n)
    assert len(run.results) == cycles * n * (n - 1) // 2
    # A player disqualified before their first match scores nothing.
    for p, after in dq.items():
        if p <= n and after == 0:
            assert next(s for s in run.standings if s.seed == p).points == 0


# --- Swiss ---------------------------------------------------------------------------------------


def test_swiss_first_round_pairs_top_half_against_bottom_half():
    table = compute_standings(range(1, 9), [])
    matches = pair_next_round(table, set(), set(), 1)
    assert [(m.slot1.seed, m.slot2.seed) for m in matches] == [(1, 5), (2, 6), (3, 7), (4, 8)]
    assert all(m.key.bracket is Bracket.SWISS and m.key.round == 1 for m in matches)
    odd = pair_next_round(compute_standings(range(1, 8), []), set(), set(), 1)
    assert odd[-1].slot1 == SeedSlot(7) and isinstance(odd[-1].slot2, ByeSlot)


def test_standings_points_buchholz_and_sonneborn_berger():
    results = [
        Result(1, 2, Outcome.FIRST_WINS),
        Result(3, 4, Outcome.DRAW),
        Result(1, 3, Outcome.DRAW),
        Result(2, 4, Outcome.SECOND_WINS),
        Result(5, None, Outcome.BYE),
    ]
    table = {s.seed: s for s in compute_standings(range(1, 6), results)}
    assert [table[p].points for p in (1, 2, 3, 4, 5)] == [1.5, 0.0, 1.0, 1.5, 1.0]
    assert table[1].buchholz == 0.0 + 1.0
    assert table[1].sonneborn_berger == 0.0 + 0.5 * 1.0
    assert table[4].buchholz == 1.0 + 0.0
    assert table[4].sonneborn_berger == 0.5 * 1.0 + 0.0
    assert table[5].buchholz == 0.0 and table[5].points == 1.0
    order = [s.seed for s in compute_standings(range(1, 6), results)]
    assert order[:2] == [1, 4]  # equal points, Buchholz tie, Sonneborn-Berger tie: seed decides


def assert_no_repeated_byes(run) -> None:
    byes = [m.slot1.seed for matches in run.rounds for m in matches if m.has_bye]
    assert len(byes) == len(set(byes))


@settings(max_examples=80, deadline=None)
@given(n=st.integers(2, 64), seed=st.integers(0, 2**32 - 1))
def test_swiss_no_rematches_in_log2_rounds(n, seed):
    rounds = min(n - 1, int(math.log2(n)) + 1)
    rng = random.Random(seed)
    run = simulate_swiss(n, rounds, random_decider(rng, [*WINS, Decision.DRAW]))
    pairs = [
        frozenset((m.slot1.seed, m.slot2.seed)) for matches in run.rounds for m in matches if not m.has_bye
    ]
    assert len(pairs) == len(set(pairs))
    assert_no_repeated_byes(run)
    assert_consistent_ranks(run.ranks, n)
    for matches in run.rounds:
        players = [s.seed for m in matches for s in (m.slot1, m.slot2) if isinstance(s, SeedSlot)]
        assert sorted(players) == list(range(1, n + 1))
        assert len(matches) == (n + 1) // 2


@settings(max_examples=30, deadline=None)
@given(n=st.integers(4, 24), seed=st.integers(0, 2**32 - 1))
def test_swiss_no_rematches_up_to_two_thirds_of_the_field(n, seed):
    rounds = math.ceil(2 * n / 3) - 1
    rng = random.Random(seed)
    run = simulate_swiss(n, rounds, random_decider(rng, [*WINS, Decision.DRAW]))
    pairs = [
        frozenset((m.slot1.seed, m.slot2.seed)) for matches in run.rounds for m in matches if not m.has_bye
    ]
    assert len(pairs) == len(set(pairs))
    assert_no_repeated_byes(run)


def rematch_free_round_exists(players, met, had_bye) -> bool:
    """Brute force: some bye (a fresh one if any) and a perfect matching with no rematch."""

    def perfect(rest) -> bool:
        if not rest:
            return True
        top = rest[0]
        return any(
            frozenset((top, other)) not in met and perfect([p for p in rest[1:] if p != other])
            for other in rest[1:]
        )

    if len(players) % 2 == 0:
        return perfect(players)
    fresh = [p for p in players if p not in had_bye] or players
    return any(perfect([p for p in players if p != bye]) for bye in fresh)


@pytest.mark.parametrize("n", range(2, 11))
def test_swiss_repeats_only_when_unavoidable_up_to_n_minus_one_rounds(n):
    rng = random.Random(n)
    for _ in range(10):
        results: list[Result] = []
        met: set[frozenset[int]] = set()
        had_bye: set[int] = set()
        for round_number in range(1, n):
            table = compute_standings(range(1, n + 1), results)
            matches = pair_next_round(table, met, had_bye, round_number)
            pairs = [frozenset((m.slot1.seed, m.slot2.seed)) for m in matches if not m.has_bye]
            if any(p in met for p in pairs):
                assert not rematch_free_round_exists(list(range(1, n + 1)), met, had_bye)
            for match in matches:
                if match.has_bye:
                    assert match.slot1.seed not in had_bye or len(had_bye) == n
                    had_bye.add(match.slot1.seed)
                    results.append(Result(match.slot1.seed, None, Outcome.BYE))
                else:
                    results.append(Result(match.slot1.seed, match.slot2.seed, rng.choice(list(Outcome)[:3])))
            met.update(pairs)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 64),
    seed=st.integers(0, 2**32 - 1),
    dq=st.dictionaries(st.integers(1, 64), st.integers(0, 4), max_size=5),
)
def test_swiss_with_forfeits_and_disqualifications_completes(n, seed, dq):
    rng = random.Random(seed)
    run = simulate_swiss(n, max(1, (n - 1).bit_length()), random_decider(rng, LEAGUE_EVENTS), dq)
    assert_consistent_ranks(run.ranks, n)
    played = Counter(
        s.seed for matches in run.rounds for m in matches if not m.has_bye for s in (m.slot1, m.slot2)
    )
    for p, after in dq.items():
        if p <= n:
            assert played[p] <= after + 1, "a disqualified player is not paired again"


def test_head_to_head_breaks_a_round_robin_tie_before_buchholz():
    # 1 and 2 finish level on points; the tiebreaks put 1 ahead, but 2 won their game.
    F, S, D = Outcome.FIRST_WINS, Outcome.SECOND_WINS, Outcome.DRAW
    games = {
        (1, 2): S,
        (1, 3): F,
        (1, 4): F,
        (1, 5): S,
        (2, 3): F,
        (2, 4): S,
        (2, 5): S,
        (3, 4): S,
        (3, 5): F,
    }
    results = [Result(a, b, o) for (a, b), o in games.items()] + [Result(4, 5, D)]
    plain = [s.seed for s in compute_standings(range(1, 6), results)]
    table = compute_standings(range(1, 6), results, head_to_head=True)
    h2h = [s.seed for s in table]
    assert plain.index(1) < plain.index(2)
    assert h2h.index(2) < h2h.index(1)
    ranks = ranks_from_standings(table)
    assert ranks[2] < ranks[1]
