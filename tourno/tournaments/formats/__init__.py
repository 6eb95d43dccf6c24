"""Tournament formats as pure functions: plans of matches, Swiss pairing, standings.

Nothing here touches the database. A format returns ``PlannedMatch`` objects
(``plan``) that the services persist as rounds and matches; ``ranking`` orders
an elimination plan and ranks its players; ``standings`` scores leagues;
``simulation`` plays a plan end to end (used by the tests).
"""

from .double_elimination import double_elimination
from .plan import (
    Bracket,
    ByeSlot,
    Destination,
    LoserOf,
    MatchKey,
    PlannedMatch,
    SeedSlot,
    Slot,
    WinnerOf,
)
from .ranking import elimination_ranks, match_levels, play_order
from .round_robin import resting_seed, round_robin
from .single_elimination import bracket_size, round_name, single_elimination, standard_seed_order
from .standings import Outcome, PointsScheme, Result, Standing, compute_standings, ranks_from_standings
from .swiss import default_rounds, history_from_results, pair_next_round

__all__ = [
    "Bracket",
    "ByeSlot",
    "Destination",
    "LoserOf",
    "MatchKey",
    "Outcome",
    "PlannedMatch",
    "PointsScheme",
    "Result",
    "SeedSlot",
    "Slot",
    "Standing",
    "WinnerOf",
    "bracket_size",
    "compute_standings",
    "default_rounds",
    "double_elimination",
    "elimination_ranks",
    "history_from_results",
    "match_levels",
    "pair_next_round",
    "play_order",
    "ranks_from_standings",
    "resting_seed",
    "round_name",
    "round_robin",
    "single_elimination",
    "standard_seed_order",
]
