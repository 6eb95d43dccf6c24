"""Double elimination: a standard winners bracket, a losers bracket and a grand final.

With ``k`` winners rounds (bracket size ``S = 2**k``) the losers bracket has
``2(k - 1)`` rounds. Round 1 pairs the losers of winners round 1. Then, for
``j = 1 .. k-1``, losers round ``2j`` ("drop-in" round) pairs the survivors
with the losers of winners round ``j + 1``, and losers round ``2j + 1`` pairs
the survivors with each other. The losers-bracket champion meets the
winners-bracket champion in the grand final; with ``reset`` a second grand final
is planned, played only if the losers-bracket champion wins the first.

Drop-in order: a player dropping from winners round ``j + 1`` has only met
players from their own winners-bracket region (the subtree of the match they
lost). For each drop-in round we track which regions the losers-bracket
survivors come from and take the first of the orders natural, reverse,
half shift, reverse half shift in which no dropped player lands on a survivor
from their own region, so nobody meets straight away someone they met in the
winners bracket. When no order achieves that (the last drop-ins, where few
regions are left) the one with the fewest such meetings is taken.

Byes: winners round 1 has the bye matches of the single-elimination bracket;
their ``LoserOf`` slots resolve to nobody, so the losers-bracket opponent gets a
walkover (see ``plan``). With no reset, ``2n - 2`` matches are played; with a
reset that is needed, ``2n - 1``.
"""

from __future__ import annotations

from .plan import Bracket, LoserOf, MatchKey, PlannedMatch, WinnerOf, wire
from .single_elimination import winners_bracket


def _drop_in_orders(count: int) -> list[list[int]]:
    """Candidate drop-in orders: entry ``i`` is the winners match whose loser meets losers match ``i + 1``."""
    natural = list(range(1, count + 1))
    half = count // 2
    shifted = natural[half:] + natural[:half]
    return [natural, natural[::-1], shifted, shifted[::-1]]


def _choose_drop_in_order(origins: list[set[int]]) -> list[int]:
    """The first candidate order that sends fewest dropped players onto survivors from their region."""

    def clashes(order: list[int]) -> int:
        return sum(1 for dropped, origin in zip(order, origins, strict=True) if dropped in origin)

    return min(_drop_in_orders(len(origins)), key=clashes)


def double_elimination(n: int, reset: bool = True) -> list[PlannedMatch]:
    """The full wired plan for ``n >= 2`` participants."""
    matches = winners_bracket(n)
    k = matches[-1].key.round
    size = 1 << k
    wb_final = matches[-1].key
    lb = Bracket.LOSERS

    if k == 1:
        losers_champion: WinnerOf | LoserOf = LoserOf(wb_final)
    else:
        count = size // 4
        # origins[i]: the winners round-(j+1) regions the players reaching
        # losers match i+1 of the next drop-in round come from.
        origins = [{position} for position in range(1, count + 1)]
        for position in range(1, count + 1):
            matches.append(
                PlannedMatch(
                    MatchKey(lb, 1, position),
                    LoserOf(MatchKey(Bracket.WINNERS, 1, 2 * position - 1)),
                    LoserOf(MatchKey(Bracket.WINNERS, 1, 2 * position)),
                )
            )
        for j in range(1, k):
            drop_round = 2 * j
            order = _choose_drop_in_order(origins)
            for position in range(1, count + 1):
                dropped = order[position - 1]
                matches.append(
                    PlannedMatch(
                        MatchKey(lb, drop_round, position),
                        WinnerOf(MatchKey(lb, drop_round - 1, position)),
                        LoserOf(MatchKey(Bracket.WINNERS, j + 1, dropped)),
                    )
                )
            if j < k - 1:
                merged = [origin | {dropped} for origin, dropped in zip(origins, order, strict=True)]
                origins = [
                    {(region + 1) // 2 for region in merged[2 * i] | merged[2 * i + 1]}
                    for i in range(len(merged) // 2)
                ]
                count //= 2
                for position in range(1, count + 1):
                    matches.append(
                        PlannedMatch(
                            MatchKey(lb, drop_round + 1, position),
                            WinnerOf(MatchKey(lb, drop_round, 2 * position - 1)),
                            WinnerOf(MatchKey(lb, drop_round, 2 * position)),
                        )
                    )
        losers_champion = WinnerOf(MatchKey(lb, 2 * (k - 1), 1))

    grand_final = MatchKey(Bracket.GRAND_FINAL, 1, 1)
    matches.append(PlannedMatch(grand_final, WinnerOf(wb_final), losers_champion, is_final=True))
    if reset:
        matches.append(
            PlannedMatch(
                MatchKey(Bracket.GRAND_FINAL, 2, 1),
                WinnerOf(grand_final),
                LoserOf(grand_final),
                is_bracket_reset=True,
                is_final=True,
            )
        )
    return wire(matches)
