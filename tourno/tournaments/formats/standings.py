"""Points and tiebreaks from results, for round robin and Swiss.

Tiebreaks:

- Buchholz: the sum of the points of the opponents a player actually met.
- Sonneborn-Berger: the points of each opponent, weighted by the share of the
  game the player scored against them (a win counts in full, a draw half).
- Head-to-head (round robin, where everyone meets everyone and Buchholz says
  little): among the players level on points, the points each scored in the
  games between them. It comes right after points.

Byes and double no-shows bring points as the scheme says, but a bye has no
opponent and so adds nothing to either tiebreak.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    FIRST_WINS = "first_wins"
    SECOND_WINS = "second_wins"
    DRAW = "draw"
    # A double no-show in a league: a loss for both.
    BOTH_LOSE = "both_lose"
    # ``second`` is None: a pairing-allocated bye for ``first``.
    BYE = "bye"


@dataclass(frozen=True)
class Result:
    """One decided league game between seeds ``first`` and ``second`` (None for a bye)."""

    first: int
    second: int | None
    outcome: Outcome

    def share(self, seed: int) -> float:
        """The share of the game ``seed`` scored: 1 win or bye, 0.5 draw, 0 loss."""
        if self.outcome is Outcome.BYE:
            return 1.0
        if self.outcome is Outcome.DRAW:
            return 0.5
        if self.outcome is Outcome.BOTH_LOSE:
            return 0.0
        winner = self.first if self.outcome is Outcome.FIRST_WINS else self.second
        return 1.0 if winner == seed else 0.0


@dataclass(frozen=True)
class PointsScheme:
    win: float = 1.0
    draw: float = 0.5
    loss: float = 0.0
    bye: float = 1.0

    def points(self, result: Result, seed: int) -> float:
        if result.outcome is Outcome.BYE:
            return self.bye
        if result.outcome is Outcome.DRAW:
            return self.draw
        return self.win if result.share(seed) == 1.0 else self.loss


@dataclass(frozen=True)
class Standing:
    seed: int
    points: float
    buchholz: float
    sonneborn_berger: float
    played: int
    head_to_head: float = 0.0


def compute_standings(
    seeds: Iterable[int],
    results: Iterable[Result],
    scheme: PointsScheme = PointsScheme(),
    head_to_head: bool = False,
) -> list[Standing]:
    """Standings, best first: points, then (with ``head_to_head``) the points
    scored against the others level on points, then Buchholz, then
    Sonneborn-Berger, then seed."""
    seeds = list(seeds)
    results = list(results)
    points = dict.fromkeys(seeds, 0.0)
    played = dict.fromkeys(seeds, 0)
    for result in results:
        for seed in (result.first, result.second):
            if seed is not None:
                points[seed] = points.get(seed, 0.0) + scheme.points(result, seed)
                played[seed] = played.get(seed, 0) + 1
    buchholz = dict.fromkeys(points, 0.0)
    sonneborn_berger = dict.fromkeys(points, 0.0)
    for result in results:
        if result.second is None:
            continue
        for seed, opponent in ((result.first, result.second), (result.second, result.first)):
            buchholz[seed] += points[opponent]
            sonneborn_berger[seed] += points[opponent] * result.share(seed)
    mutual = dict.fromkeys(points, 0.0)
    if head_to_head:
        for result in results:
            if result.second is not None and points[result.first] == points[result.second]:
                for seed in (result.first, result.second):
                    mutual[seed] += scheme.points(result, seed)
    table = [Standing(s, points[s], buchholz[s], sonneborn_berger[s], played[s], mutual[s]) for s in seeds]
    table.sort(key=lambda st: (-st.points, -st.head_to_head, -st.buchholz, -st.sonneborn_berger, st.seed))
    return table


def ranks_from_standings(table: Sequence[Standing]) -> dict[int, int]:
    """Competition ranks (1, 2, 2, 4) from a sorted table; equal points and tiebreaks share a rank."""
    ranks: dict[int, int] = {}
    previous = None
    for index, standing in enumerate(table):
        key = (standing.points, standing.head_to_head, standing.buchholz, standing.sonneborn_berger)
        if key != previous:
            rank = index + 1
            previous = key
        ranks[standing.seed] = rank
    return ranks
