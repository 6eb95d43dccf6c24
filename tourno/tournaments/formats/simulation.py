"""Plays a planned tournament with given results, without a database.

Used by the tests to check the formats end to end, and a readable statement of
the propagation rules the services apply (see ``plan``): byes and walkovers,
forfeits, double no-shows (both disqualified in elimination, a loss for both in
leagues) and disqualification, which forfeits every remaining match of a player.

``disqualify_after`` maps a seed to the number of matches that player completes
before being disqualified (0: disqualified before their first match); the player
forfeits the next match they reach and is never paired or advanced again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from .plan import Bracket, ByeSlot, MatchKey, PlannedMatch, SeedSlot, Slot, WinnerOf
from .ranking import elimination_ranks, play_order
from .standings import Outcome, PointsScheme, Result, Standing, compute_standings, ranks_from_standings
from .swiss import history_from_results, pair_next_round


class Decision(StrEnum):
    """What happened in a match between two present players."""

    SLOT1_WINS = "slot1_wins"
    SLOT2_WINS = "slot2_wins"
    SLOT1_FORFEITS = "slot1_forfeits"
    SLOT2_FORFEITS = "slot2_forfeits"
    DOUBLE_NO_SHOW = "double_no_show"
    DRAW = "draw"  # leagues only


Decide = Callable[[MatchKey, int, int], Decision]


@dataclass(frozen=True)
class PlayedMatch:
    key: MatchKey
    player1: int | None
    player2: int | None
    winner: int | None
    loser: int | None
    # None when the match was decided without a game: a bye, a walkover, a void
    # match, or a bracket reset that was not needed.
    decision: Decision | None


@dataclass
class EliminationRun:
    matches: dict[MatchKey, PlayedMatch] = field(default_factory=dict)
    ranks: dict[int, int] = field(default_factory=dict)
    champion: int | None = None
    losses: dict[int, int] = field(default_factory=dict)
    disqualified: set[int] = field(default_factory=set)


@dataclass
class LeagueRun:
    results: list[Result] = field(default_factory=list)
    rounds: list[list[PlannedMatch]] = field(default_factory=list)
    standings: list[Standing] = field(default_factory=list)
    ranks: dict[int, int] = field(default_factory=dict)
    disqualified: set[int] = field(default_factory=set)


def simulate_elimination(
    plan: Sequence[PlannedMatch],
    seeds: int,
    decide: Decide,
    disqualify_after: Mapping[int, int] | None = None,
) -> EliminationRun:
    """Plays a single- or double-elimination plan for seeds 1..``seeds`` and ranks everyone.

    A player's rank is 1 + the number of players eliminated at a later stage
    (players eliminated in the same round share a rank); the third-place winner
    ranks above its loser.
    """
    disqualify_after = disqualify_after or {}
    by_key = {m.key: m for m in plan}
    run = EliminationRun(losses=dict.fromkeys(range(1, seeds + 1), 0))
    completed = dict.fromkeys(range(1, seeds + 1), 0)
    advancing_loser: dict[MatchKey, int | None] = {}
    eliminated_in: dict[int, MatchKey] = {}
    third_place_winner = None

    def resolve(slot: Slot) -> int | None:
        if isinstance(slot, SeedSlot):
            return slot.seed
        if isinstance(slot, ByeSlot):
            return None
        if isinstance(slot, WinnerOf):
            return run.matches[slot.match].winner
        return advancing_loser[slot.match]

    for match in play_order(plan):
        key = match.key
        p1, p2 = resolve(match.slot1), resolve(match.slot2)
        present = [p for p in (p1, p2) if p is not None]
        forfeiting = [p for p in present if completed[p] >= disqualify_after.get(p, math.inf)]
        for p in present:
            completed[p] += 1
        winner = loser = None
        decision = None
        if forfeiting:
            run.disqualified.update(forfeiting)
            for p in forfeiting:
                run.losses[p] += 1
                eliminated_in[p] = key
            others = [p for p in present if p not in forfeiting]
            winner = others[0] if others else None
            loser = forfeiting[0] if len(forfeiting) == 1 and winner is not None else None
            decision = Decision.SLOT1_FORFEITS if p1 in forfeiting else Decision.SLOT2_FORFEITS
            if len(forfeiting) == 2:
                decision = Decision.DOUBLE_NO_SHOW
            elif len(present) == 1:
                decision = None
        elif len(present) == 1:
            winner = present[0]
        elif len(present) == 2:
            first, second = present  # p1, p2, both known
            decision = decide(key, first, second)
            if decision is Decision.DRAW:
                raise ValueError(f"{key}: an elimination match cannot be drawn")
            if decision is Decision.DOUBLE_NO_SHOW:
                run.disqualified.update(present)
                for p in present:
                    run.losses[p] += 1
                    eliminated_in[p] = key
            else:
                slot1_won = decision in (Decision.SLOT1_WINS, Decision.SLOT2_FORFEITS)
                winner, loser = (first, second) if slot1_won else (second, first)
                run.losses[loser] += 1

        # Where the loser goes: nowhere (eliminated) unless the plan routes them
        # on; a grand-final reset is not needed when slot 1 won the first final.
        advancing = None
        if loser is not None and loser not in run.disqualified:
            target = match.loser_to
            reset_not_needed = target is not None and by_key[target.match].is_bracket_reset and winner == p1
            if target is None or reset_not_needed:
                eliminated_in[loser] = key
            else:
                advancing = loser
        advancing_loser[key] = advancing
        if key.bracket is Bracket.THIRD_PLACE and winner is not None:
            third_place_winner = winner
        run.matches[key] = PlayedMatch(key, p1, p2, winner, loser, decision)
        if match.is_final:
            # Final matches come last in play order; a reset that was not
            # needed is a walkover for the winner of the first grand final.
            run.champion = winner

    run.ranks = elimination_ranks(plan, eliminated_in, run.champion, third_place_winner)
    return run


def _league_result(
    key: MatchKey,
    p1: int,
    p2: int,
    decide: Decide,
    completed: dict[int, int],
    disqualify_after: Mapping[int, int],
    disqualified: set[int],
) -> Result:
    forfeiting = {
        p for p in (p1, p2) if p in disqualified or completed[p] >= disqualify_after.get(p, math.inf)
    }
    completed[p1] += 1
    completed[p2] += 1
    disqualified.update(forfeiting)
    if forfeiting == {p1, p2}:
        return Result(p1, p2, Outcome.BOTH_LOSE)
    if forfeiting:
        return Result(p1, p2, Outcome.SECOND_WINS if p1 in forfeiting else Outcome.FIRST_WINS)
    decision = decide(key, p1, p2)
    outcome = {
        Decision.SLOT1_WINS: Outcome.FIRST_WINS,
        Decision.SLOT2_FORFEITS: Outcome.FIRST_WINS,
        Decision.SLOT2_WINS: Outcome.SECOND_WINS,
        Decision.SLOT1_FORFEITS: Outcome.SECOND_WINS,
        Decision.DRAW: Outcome.DRAW,
        Decision.DOUBLE_NO_SHOW: Outcome.BOTH_LOSE,
    }[decision]
    return Result(p1, p2, outcome)


def _play_league_match(
    match: PlannedMatch,
    decide: Decide,
    completed: dict[int, int],
    disqualify_after: Mapping[int, int],
    run: LeagueRun,
) -> None:
    assert isinstance(match.slot1, SeedSlot) and isinstance(match.slot2, SeedSlot)
    run.results.append(
        _league_result(
            match.key,
            match.slot1.seed,
            match.slot2.seed,
            decide,
            completed,
            disqualify_after,
            run.disqualified,
        )
    )


def simulate_round_robin(
    plan: Sequence[PlannedMatch],
    seeds: int,
    decide: Decide,
    disqualify_after: Mapping[int, int] | None = None,
    scheme: PointsScheme = PointsScheme(),
) -> LeagueRun:
    """Plays every match of a round-robin plan; a disqualified player forfeits the rest."""
    disqualify_after = disqualify_after or {}
    run = LeagueRun()
    completed = dict.fromkeys(range(1, seeds + 1), 0)
    for match in sorted(plan, key=lambda m: m.key):
        _play_league_match(match, decide, completed, disqualify_after, run)
    run.standings = compute_standings(range(1, seeds + 1), run.results, scheme, head_to_head=True)
    run.ranks = ranks_from_standings(run.standings)
    return run


def simulate_swiss(
    seeds: int,
    rounds: int,
    decide: Decide,
    disqualify_after: Mapping[int, int] | None = None,
    scheme: PointsScheme = PointsScheme(),
) -> LeagueRun:
    """Pairs and plays ``rounds`` Swiss rounds; disqualified players are not paired again."""
    disqualify_after = disqualify_after or {}
    run = LeagueRun()
    completed = dict.fromkeys(range(1, seeds + 1), 0)
    for round_number in range(1, rounds + 1):
        table = compute_standings(range(1, seeds + 1), run.results, scheme)
        active = [s for s in table if s.seed not in run.disqualified]
        if len(active) < 2:
            break
        met, had_bye = history_from_results(run.results)
        matches = pair_next_round(active, met, had_bye, round_number)
        run.rounds.append(matches)
        for match in matches:
            assert isinstance(match.slot1, SeedSlot)
            if isinstance(match.slot2, ByeSlot):
                run.results.append(Result(match.slot1.seed, None, Outcome.BYE))
                continue
            _play_league_match(match, decide, completed, disqualify_after, run)
    run.standings = compute_standings(range(1, seeds + 1), run.results, scheme)
    run.ranks = ranks_from_standings(run.standings)
    return run
