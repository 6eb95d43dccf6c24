"""Single elimination with standard seeding and byes to the top seeds.

The bracket has ``S = next power of two >= n`` slots. Round 1 pairs the slots in
standard seed order (1 v S, S/2 v S/2+1, ...), so seeds 1 and 2 can meet only in
the final. A slot whose seed exceeds ``n`` is a bye; since seed ``k`` faces
``S + 1 - k``, the top ``S - n`` seeds get the byes and a bye never faces a bye.

Byes are *materialized*: every round-1 slot pair is a planned match (``S - 1``
matches in all), and a round-1 match against a ``ByeSlot`` is decided at once
as a bye (never notified, never played). That keeps one propagation path for
byes, walkovers and double disqualifications. ``n - 1`` matches are played.
"""

from __future__ import annotations

from .plan import Bracket, ByeSlot, LoserOf, MatchKey, PlannedMatch, SeedSlot, Slot, WinnerOf, wire


def bracket_size(n: int) -> int:
    """The smallest power of two that holds ``n`` participants (``n >= 2``)."""
    if n < 2:
        raise ValueError(f"an elimination bracket needs at least 2 participants, got {n}")
    return 1 << (n - 1).bit_length()


def standard_seed_order(size: int) -> list[int]:
    """Seeds in bracket-slot order for a power-of-two ``size``: 8 -> 1,8,4,5,2,7,3,6."""
    if size < 2 or size & (size - 1):
        raise ValueError(f"bracket size must be a power of two >= 2, got {size}")
    order = [1, 2]
    while len(order) < size:
        mirror = 2 * len(order) + 1
        order = [seed for s in order for seed in (s, mirror - s)]
    return order


def winners_bracket(n: int, bracket: Bracket = Bracket.WINNERS) -> list[PlannedMatch]:
    """The unwired matches of a standard bracket for ``n`` seeds, round by round."""
    size = bracket_size(n)
    order = standard_seed_order(size)
    matches: list[PlannedMatch] = []
    first: list[Slot] = [SeedSlot(s) if s <= n else ByeSlot() for s in order]
    for position in range(size // 2):
        key = MatchKey(bracket, 1, position + 1)
        matches.append(PlannedMatch(key, first[2 * position], first[2 * position + 1]))
    round_number, count = 2, size // 4
    while count >= 1:
        for position in range(1, count + 1):
            key = MatchKey(bracket, round_number, position)
            matches.append(
                PlannedMatch(
                    key,
                    WinnerOf(MatchKey(bracket, round_number - 1, 2 * position - 1)),
                    WinnerOf(MatchKey(bracket, round_number - 1, 2 * position)),
                )
            )
        round_number, count = round_number + 1, count // 2
    return matches


def single_elimination(n: int, third_place: bool = False) -> list[PlannedMatch]:
    """The full wired plan for ``n >= 2`` participants.

    With ``third_place`` (and at least four bracket slots) a match between the
    two semi-final losers is added as ``MatchKey(THIRD_PLACE, last round, 1)``.
    """
    matches = winners_bracket(n)
    rounds = matches[-1].key.round
    final = matches[-1]
    matches[-1] = PlannedMatch(final.key, final.slot1, final.slot2, is_final=True)
    if third_place and rounds >= 2:
        matches.append(
            PlannedMatch(
                MatchKey(Bracket.THIRD_PLACE, rounds, 1),
                LoserOf(MatchKey(Bracket.WINNERS, rounds - 1, 1)),
                LoserOf(MatchKey(Bracket.WINNERS, rounds - 1, 2)),
            )
        )
    return wire(matches)


def round_name(round_number: int, rounds: int) -> str:
    """Name of a winners-bracket round counted from the end: Final, Semi-finals, Round of 16..."""
    remaining = rounds - round_number
    if remaining == 0:
        return "Final"
    if remaining == 1:
        return "Semi-finals"
    if remaining == 2:
        return "Quarter-finals"
    return f"Round of {2 ** (remaining + 1)}"
