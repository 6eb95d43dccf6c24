"""Swiss pairing, one round at a time, from the current standings.

Players are taken best first. The best unpaired player is paired, by
depth-first search with backtracking, with someone they have not met yet:
first within their score group, where the preferred opponent is the one half
a group further down (1 v 4, 2 v 5, 3 v 6 in a group of six, as in the Dutch
system), then with the nearest score below (a float). If that search runs out
of budget, a second search pairs the most constrained players first (late
rounds, where few opponents are left). Only if neither finds a round without a
rematch is the round paired allowing rematches, still preferring new opponents.

With an odd field the bye goes to the lowest-ranked player who has not had one
and whose absence still lets the rest be paired without rematches; a player
gets a second bye only when everyone has had one. The bye is planned as a
match against a ``ByeSlot``, decided at once (as in single elimination).
Dropped or disqualified players are simply left out of ``standings``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence

from .plan import Bracket, ByeSlot, MatchKey, PlannedMatch, SeedSlot
from .standings import Result, Standing

DEFAULT_SEARCH_BUDGET = 5_000


class _BudgetExhausted(Exception):
    pass


def default_rounds(n: int) -> int:
    """ceil(log2 n) rounds, the usual Swiss length (at least 1)."""
    return max(1, (n - 1).bit_length())


def history_from_results(results: Iterable[Result]) -> tuple[set[frozenset[int]], set[int]]:
    """The pairs that have met and the seeds that have had a bye."""
    met: set[frozenset[int]] = set()
    had_bye: set[int] = set()
    for result in results:
        if result.second is None:
            had_bye.add(result.first)
        else:
            met.add(frozenset((result.first, result.second)))
    return met, had_bye


def _candidates(
    top: int, rest: list[int], points: dict[int, float], met: set[frozenset[int]], allow_rematch: bool
) -> list[int]:
    group = [p for p in rest if points[p] == points[top]]
    ideal = max((len(group) + 1) // 2 - 1, 0)
    group_index = {p: i for i, p in enumerate(group)}
    options = []
    for rank, player in enumerate(rest):
        rematch = frozenset((top, player)) in met
        if rematch and not allow_rematch:
            continue
        in_group = group_index.get(player)
        closeness = abs(in_group - ideal) if in_group is not None else rank
        options.append((rematch, abs(points[top] - points[player]), closeness, player))
    options.sort()
    return [option[-1] for option in options]


def _pair(
    players: list[int],
    points: dict[int, float],
    met: set[frozenset[int]],
    allow_rematch: bool,
    budget: list[int],
    most_constrained_first: bool = False,
) -> list[tuple[int, int]] | None:
    """Depth-first pairing of ``players`` (best first); None if impossible without rematches.

    By default the best unpaired player is paired first, which gives Swiss
    pairings. ``most_constrained_first`` instead pairs first the player with
    the fewest possible opponents and gives up early when someone has none
    left: slower per step, but it finds a rematch-free round in late rounds
    where the plain search wanders.
    """
    if not players:
        return []
    if most_constrained_first and not allow_rematch:
        options = {p: sum(1 for q in players if q != p and frozenset((p, q)) not in met) for p in players}
        if min(options.values()) == 0:
            return None
        top = min(players, key=lambda p: options[p])
        rest = [p for p in players if p != top]
    else:
        top, rest = players[0], players[1:]
    for partner in _candidates(top, rest, points, met, allow_rematch):
        budget[0] -= 1
        if budget[0] < 0:
            raise _BudgetExhausted
        remaining = [p for p in rest if p != partner]
        pairs = _pair(remaining, points, met, allow_rematch, budget, most_constrained_first)
        if pairs is not None:
            return [(top, partner), *pairs]
    return None


def pair_next_round(
    standings: Sequence[Standing],
    met: Collection[frozenset[int]],
    had_bye: Collection[int],
    round_number: int,
    search_budget: int = DEFAULT_SEARCH_BUDGET,
) -> list[PlannedMatch]:
    """The matches of Swiss round ``round_number`` for the active players in ``standings``.

    ``standings`` is best first (as ``compute_standings`` returns it); ``met`` the
    pairs that have already played and ``had_bye`` who has had a bye (see
    ``history_from_results``). Slot 1 holds the better-ranked player; positions
    follow the rank of that player, and the bye, if any, comes last.
    """
    players = [s.seed for s in standings]
    if len(players) < 2:
        raise ValueError("a Swiss round needs at least 2 active players")
    points = {s.seed: s.points for s in standings}
    met = set(met)
    if len(players) % 2:
        fresh = [p for p in reversed(players) if p not in had_bye]
        bye_choices: list[int | None] = list(fresh) if fresh else list(reversed(players))
    else:
        bye_choices = [None]

    pairs: list[tuple[int, int]] | None = None
    bye: int | None = None
    for most_constrained_first in (False, True):
        budget = [search_budget]
        try:
            for bye in bye_choices:
                rest = [p for p in players if p != bye]
                pairs = _pair(rest, points, met, False, budget, most_constrained_first)
                if pairs is not None:
                    break
        except _BudgetExhausted:
            pairs = None
        if pairs is not None:
            break
    if pairs is None:
        # No rematch-free round was found: allow rematches, keep the bye rule.
        bye = bye_choices[0]
        pairs = _pair([p for p in players if p != bye], points, met, True, [len(players) ** 2 + 1])
    assert pairs is not None  # with rematches allowed the first branch always succeeds

    rank = {seed: index for index, seed in enumerate(players)}
    # Each pair in rank order, then the pairs by their first player's rank.
    pairs = sorted(((a, b) if rank[a] < rank[b] else (b, a) for a, b in pairs), key=lambda p: rank[p[0]])
    matches = [
        PlannedMatch(MatchKey(Bracket.SWISS, round_number, position), SeedSlot(a), SeedSlot(b))
        for position, (a, b) in enumerate(pairs, start=1)
    ]
    if bye is not None:
        key = MatchKey(Bracket.SWISS, round_number, len(matches) + 1)
        matches.append(PlannedMatch(key, SeedSlot(bye), ByeSlot()))
    return matches
