"""The data a format produces: planned matches, their slots and their wiring.

A format returns a list of ``PlannedMatch``. A service persists each one as a
match row in the round ``(key.bracket, key.round)``, then resolves the
``winner_to`` / ``loser_to`` destinations into foreign keys. Participants are
referred to by seed (1 = top seed), so the plan does not depend on the database.

How a slot resolves to a player (the one rule the services and the simulator
share):

- ``SeedSlot(s)``: the participant with seed ``s``.
- ``ByeSlot()``: nobody. A match with a bye is decided without being played.
- ``WinnerOf(k)`` / ``LoserOf(k)``: whoever wins / loses match ``k``. When ``k``
  was decided without a game (a bye, a walkover, a double disqualification),
  its loser is nobody, and so is its winner if it had no player at all.

A match whose two slots both resolve to nobody is void; one with a single player
is a walkover for that player. Byes (``ByeSlot``) appear only in the first
round of a winners bracket and as the rest of an odd Swiss round; ``LoserOf``
slots can still resolve to nobody later on (in a losers bracket fed by bye
matches, or after disqualifications), which is what the walkover rule covers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Bracket(StrEnum):
    """Which part of the tournament a match belongs to (``rounds.bracket``)."""

    WINNERS = "winners"
    LOSERS = "losers"
    GRAND_FINAL = "grand_final"
    THIRD_PLACE = "third_place"
    ROUND_ROBIN = "round_robin"
    SWISS = "swiss"


@dataclass(frozen=True, order=True)
class MatchKey:
    """Stable identity of a planned match: bracket, round (from 1), position in the round (from 1)."""

    bracket: Bracket
    round: int
    position: int


@dataclass(frozen=True)
class SeedSlot:
    seed: int


@dataclass(frozen=True)
class ByeSlot:
    pass


@dataclass(frozen=True)
class WinnerOf:
    match: MatchKey


@dataclass(frozen=True)
class LoserOf:
    match: MatchKey


Slot = SeedSlot | ByeSlot | WinnerOf | LoserOf


@dataclass(frozen=True)
class Destination:
    """Where a player goes next: a match and its slot (1 or 2)."""

    match: MatchKey
    slot: int


@dataclass(frozen=True)
class PlannedMatch:
    key: MatchKey
    slot1: Slot
    slot2: Slot
    winner_to: Destination | None = None
    loser_to: Destination | None = None
    # The grand-final reset: played only when the losers-bracket champion
    # (slot 2 of the first grand final) wins that first grand final.
    is_bracket_reset: bool = False
    # The match that decides the bracket (the final; the grand final and its reset).
    is_final: bool = False

    @property
    def round(self) -> int:
        return self.key.round

    @property
    def has_bye(self) -> bool:
        return isinstance(self.slot1, ByeSlot) or isinstance(self.slot2, ByeSlot)


def wire(matches: list[PlannedMatch]) -> list[PlannedMatch]:
    """Fill ``winner_to`` / ``loser_to`` from the ``WinnerOf`` / ``LoserOf`` slots.

    Formats only say where each slot comes from; the forward wiring the services
    store (so propagation is one lookup) is derived here, in one place.
    """
    winner_to: dict[MatchKey, Destination] = {}
    loser_to: dict[MatchKey, Destination] = {}
    for match in matches:
        for number, slot in ((1, match.slot1), (2, match.slot2)):
            if isinstance(slot, WinnerOf):
                winner_to[slot.match] = Destination(match.key, number)
            elif isinstance(slot, LoserOf):
                loser_to[slot.match] = Destination(match.key, number)
    return [
        PlannedMatch(
            key=m.key,
            slot1=m.slot1,
            slot2=m.slot2,
            winner_to=winner_to.get(m.key),
            loser_to=loser_to.get(m.key),
            is_bracket_reset=m.is_bracket_reset,
            is_final=m.is_final,
        )
        for m in matches
    ]
