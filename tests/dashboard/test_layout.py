"""The dashboard's pure parts: times as it shows them, and how matches are
laid out into bracket sections and rounds."""

from __future__ import annotations

import datetime as dt

from tourno.dashboard import timefmt
from tourno.dashboard.bracket import layout
from tourno.tournaments.formats.plan import Bracket

NOW = dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC)


def test_relative_times_and_utc():
    assert timefmt.relative(NOW - dt.timedelta(minutes=3, seconds=10), NOW) == "3 min ago"
    assert timefmt.relative(NOW + dt.timedelta(hours=2, minutes=5), NOW) == "in 2 h 5 min"
    assert timefmt.relative(NOW - dt.timedelta(days=3, hours=4, minutes=1), NOW) == "3 d 4 h ago"
    assert timefmt.relative(NOW - dt.timedelta(seconds=45), NOW) == "45 s ago"
    assert timefmt.relative(NOW, NOW) == "just now"
    assert timefmt.relative(None, NOW) == ""
    # SQLite hands timestamps back as text; they are UTC.
    assert timefmt.utc_text("2026-11-28 11:59:00") == "2026-11-28 11:59:00 UTC"
    assert timefmt.utc_text(dt.datetime(2026, 11, 28, 13, 0, tzinfo=dt.timezone(dt.timedelta(hours=1)))) == (
        "2026-11-28 12:00:00 UTC"
    )
    assert timefmt.iso(None) == ""


def _match(bracket: Bracket, number: int, position: int, name: str | None = None) -> dict:
    return {"bracket": bracket, "round_number": number, "round_name": name, "position": position}


def test_elimination_sections_are_trees_in_bracket_then_round_order():
    matches = [
        _match(Bracket.GRAND_FINAL, 1, 1, "Grand final"),
        _match(Bracket.LOSERS, 1, 1),
        _match(Bracket.WINNERS, 2, 1, "Final"),
        _match(Bracket.WINNERS, 1, 2),
        _match(Bracket.WINNERS, 1, 1),
    ]
    sections = layout(matches)
    assert [(s.bracket, s.tree) for s in sections] == [
        ("winners", True),
        ("losers", True),
        ("grand_final", True),
    ]
    winners = sections[0]
    assert [(c.number, c.name) for c in winners.rounds] == [(1, "Round 1"), (2, "Final")]
    assert [m["position"] for m in winners.rounds[0].matches] == [1, 2]


def test_leagues_are_round_tables():
    sections = layout([_match(Bracket.SWISS, 2, 1), _match(Bracket.SWISS, 1, 1), _match(Bracket.SWISS, 1, 2)])
    assert [(s.bracket, s.tree) for s in sections] == [("swiss", False)]
    assert [len(c.matches) for c in sections[0].rounds] == [2, 1]
    assert layout([]) == []
