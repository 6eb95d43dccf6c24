"""How a tournament's matches are laid out on its page, as pure functions:
elimination brackets as columns of rounds (a tree read left to right), the
leagues (round robin, Swiss) as one table per round."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tourno.tournaments.formats.plan import Bracket

#: Sections in the order the page shows them, with their headings.
SECTIONS: tuple[tuple[Bracket, str], ...] = (
    (Bracket.WINNERS, "Winners bracket"),
    (Bracket.LOSERS, "Losers bracket"),
    (Bracket.GRAND_FINAL, "Grand final"),
    (Bracket.THIRD_PLACE, "Third place"),
    (Bracket.ROUND_ROBIN, "Rounds"),
    (Bracket.SWISS, "Rounds"),
)
TREE_BRACKETS = frozenset({Bracket.WINNERS, Bracket.LOSERS, Bracket.GRAND_FINAL, Bracket.THIRD_PLACE})


@dataclass
class Column:
    number: int
    name: str
    matches: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Section:
    bracket: str
    title: str
    tree: bool
    rounds: list[Column] = field(default_factory=list)


def layout(matches: list[dict[str, Any]]) -> list[Section]:
    """``matches`` (dicts with ``bracket``, ``round_number``, ``round_name``
    and ``position``) grouped into sections and rounds, each in play order."""
    by_bracket: dict[str, dict[int, Column]] = {}
    for m in sorted(matches, key=lambda m: (m["round_number"], m["position"])):
        bracket = str(getattr(m["bracket"], "value", m["bracket"]))
        columns = by_bracket.setdefault(bracket, {})
        number = int(m["round_number"])
        column = columns.get(number)
        if column is None:
            column = columns[number] = Column(number, m["round_name"] or f"Round {number}")
        column.matches.append(m)
    sections = []
    for bracket, title in SECTIONS:
        columns = by_bracket.pop(bracket.value, {})
        if columns:
            sections.append(Section(bracket.value, title, bracket in TREE_BRACKETS, list(columns.values())))
    for bracket_name, columns in by_bracket.items():  # a bracket this page does not know yet
        sections.append(Section(bracket_name, bracket_name, False, list(columns.values())))
    return sections
