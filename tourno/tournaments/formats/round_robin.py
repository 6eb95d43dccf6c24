"""Round robin by the circle (Berger) method, single or double.

The field is rounded up to an even size ``m`` with a dummy seed for an odd
``n``; seed ``m`` stays fixed and the others rotate one place per round, giving
``m - 1`` rounds of ``m / 2`` pairs in which every pair meets once. Whoever is
paired with the dummy rests that round: the plan holds only real matches
(``n // 2`` per round) and ``resting_seed`` says who sits out. A double round
robin repeats the rounds with the slots swapped.
"""

from __future__ import annotations

from .plan import Bracket, MatchKey, PlannedMatch, SeedSlot


def _circle_rounds(n: int) -> list[list[tuple[int, int]]]:
    """Pairs of seeds per round, including pairs with the dummy seed ``n + 1`` for odd ``n``."""
    m = n + (n % 2)
    fixed = m
    rounds = []
    for r in range(m - 1):
        # Alternate the fixed seed's slot so it is not always slot 1.
        pairs = [(fixed, r + 1) if r % 2 == 0 else (r + 1, fixed)]
        for i in range(1, m // 2):
            a = (r + i) % (m - 1) + 1
            b = (r - i) % (m - 1) + 1
            pairs.append((a, b))
        rounds.append(pairs)
    return rounds


def round_robin(n: int, cycles: int = 1) -> list[PlannedMatch]:
    """All matches of a round robin for ``n >= 2`` seeds, ``cycles`` times (1 or 2)."""
    if n < 2:
        raise ValueError(f"a round robin needs at least 2 participants, got {n}")
    if cycles not in (1, 2):
        raise ValueError(f"cycles must be 1 or 2, got {cycles}")
    base = _circle_rounds(n)
    matches: list[PlannedMatch] = []
    for cycle in range(cycles):
        for index, pairs in enumerate(base):
            round_number = cycle * len(base) + index + 1
            real = [(a, b) if cycle == 0 else (b, a) for a, b in pairs if a <= n and b <= n]
            for position, (a, b) in enumerate(real, start=1):
                key = MatchKey(Bracket.ROUND_ROBIN, round_number, position)
                matches.append(PlannedMatch(key, SeedSlot(a), SeedSlot(b)))
    return matches


def resting_seed(n: int, round_number: int) -> int | None:
    """The seed who sits out ``round_number`` (from 1) of a round robin of ``n``; None if ``n`` is even."""
    if n % 2 == 0:
        return None
    base = _circle_rounds(n)
    pairs = base[(round_number - 1) % len(base)]
    for a, b in pairs:
        if a > n:
            return b
        if b > n:
            return a
    raise AssertionError("an odd round robin always has a resting seed")
