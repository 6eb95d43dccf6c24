"""Play order and final ranks of an elimination plan.

A match's *level* is how many matches deep it is (round-1 matches are level 0,
a match is one level above its deepest feeder). Sorting by level, then by
bracket (third place before the final), gives an order in which every feeder
comes before the match it feeds; ranking by the level at which a player was
eliminated gives shared ranks per stage (both losing semi-finalists third when
there is no third-place match, and so on).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from .plan import Bracket, LoserOf, MatchKey, PlannedMatch, WinnerOf

_STAGE_ORDER = {
    Bracket.THIRD_PLACE: 0,
    Bracket.WINNERS: 1,
    Bracket.LOSERS: 1,
    Bracket.GRAND_FINAL: 2,
}


def match_levels(plan: Sequence[PlannedMatch]) -> dict[MatchKey, int]:
    """How many matches deep each match is; a feeder always has a lower level."""
    by_key = {m.key: m for m in plan}
    levels: dict[MatchKey, int] = {}

    def level(key: MatchKey) -> int:
        if key not in levels:
            match = by_key[key]
            feeders = [s.match for s in (match.slot1, match.slot2) if isinstance(s, WinnerOf | LoserOf)]
            levels[key] = 1 + max((level(k) for k in feeders), default=-1)
        return levels[key]

    for match in plan:
        level(match.key)
    return levels


def play_order(plan: Sequence[PlannedMatch]) -> list[PlannedMatch]:
    """The plan sorted so that every match comes after the matches feeding it."""
    levels = match_levels(plan)
    return sorted(plan, key=lambda m: (levels[m.key], _STAGE_ORDER[m.key.bracket], m.key))


def elimination_ranks(
    plan: Sequence[PlannedMatch],
    eliminated_in: Mapping[int, MatchKey],
    champion: int | None,
    third_place_winner: int | None = None,
) -> dict[int, int]:
    """Final ranks of an elimination tournament.

    ``eliminated_in`` maps every participant but the champion (and the
    third-place winner) to the match that put them out, a forfeit or
    disqualification included. A player's rank is 1 + the number of players
    who went out at a later stage; the champion is first, the third-place
    winner ranks just above the third-place loser.
    """
    levels = match_levels(plan)
    stage: dict[int, tuple[float, ...]] = {
        seed: (levels[key], _STAGE_ORDER[key.bracket], 0) for seed, key in eliminated_in.items()
    }
    if third_place_winner is not None:
        key = next(m.key for m in plan if m.key.bracket is Bracket.THIRD_PLACE)
        stage[third_place_winner] = (levels[key], _STAGE_ORDER[key.bracket], 1)
    if champion is not None:
        stage[champion] = (math.inf,)
    return _ranks_by_stage(stage)


def _ranks_by_stage(stage: Mapping[int, tuple[float, ...]]) -> dict[int, int]:
    values: Iterable[tuple[float, ...]] = list(stage.values())
    return {seed: 1 + sum(1 for other in values if other > mine) for seed, mine in stage.items()}
