"""The write path's statement counts, pinned as upper bounds (issue 16).

A player's report, a confirmation (which decides the match and moves its
players on), an organizer's resolution and a deadline resolution each run a
small, fixed number of SQL statements, whatever the format and however big
the tournament: read what is needed in one query, write the match, the next
match, the events and the mail in as few statements as possible. A change
that adds a statement per row, or re-reads a row it just wrote, fails here.

The counts are of statements peewee executes (see ``tests/support/statements.py``):
they run on the real database; transaction control is not counted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

from tests.support.statements import Statements, count_statements
from tests.tournaments.test_results import NOW, open_matches, started, user_of
from tourno.accounts.models import User
from tourno.tournaments import services
from tourno.tournaments.models import Match, MatchState, Tournament

FORMATS = ["single_elimination", "double_elimination", "round_robin", "swiss"]


def counted(call: Callable[[], object]) -> Statements:
    with count_statements() as seen:
        call()
    return seen


def _play(m: Match) -> None:
    services.report_result(m, user_of(m.player1_id), player1_score=2, player2_score=1, now=NOW)
    services.confirm_result(m, user_of(m.player2_id), now=NOW)


def _last_open_of_round(t: Tournament) -> Match:
    """Play all open matches but one; return that one (reported by player 1, to be confirmed)."""
    matches = open_matches(t)
    for m in matches[:-1]:
        _play(m)
    last = Match.get_by_id(matches[-1].id)
    services.report_result(last, user_of(last.player1_id), player1_score=2, player2_score=1, now=NOW)
    return last


def measure_report(organizer: User, fmt: str, n: int) -> Statements:
    t, _ = started(organizer, fmt, n)
    m = open_matches(t)[0]
    a = user_of(m.player1_id)
    return counted(lambda: services.report_result(m.id, a, player1_score=2, player2_score=1, now=NOW))


def measure_confirm_first(organizer: User, fmt: str, n: int) -> Statements:
    t, _ = started(organizer, fmt, n)
    m = open_matches(t)[0]
    services.report_result(m, user_of(m.player1_id), player1_score=2, player2_score=1, now=NOW)
    b = user_of(m.player2_id)
    return counted(lambda: services.confirm_result(m.id, b, now=NOW))


def measure_confirm_opening(organizer: User, fmt: str, n: int) -> Statements:
    t, _ = started(organizer, fmt, n)
    last = _last_open_of_round(t)
    before = {m.id for m in open_matches(t)}
    b = user_of(last.player2_id)
    seen = counted(lambda: services.confirm_result(last.id, b, now=NOW))
    assert {m.id for m in open_matches(t)} - before, "the confirmation opened no match"
    return seen


def measure_resolve(organizer: User, fmt: str, n: int) -> Statements:
    t, _ = started(organizer, fmt, n)
    m = open_matches(t)[0]
    return counted(lambda: services.resolve_match(m.id, organizer, player1_score=0, player2_score=2, now=NOW))


def measure_deadline(organizer: User, fmt: str, n: int) -> Statements:
    t, _ = started(organizer, fmt, n)
    m = open_matches(t)[0]
    services.report_result(m, user_of(m.player1_id), player1_score=2, player2_score=1, now=NOW)
    due = Match.get_by_id(m.id).deadline_at + dt.timedelta(seconds=1)
    seen = counted(lambda: services.resolve_expired_match(m.id, now=due))
    assert Match.get_by_id(m.id).state == MatchState.COMPLETE
    return seen


def measure_no_show(organizer: User, fmt: str, n: int) -> Statements:
    t, _ = started(organizer, fmt, n)
    m = open_matches(t)[0]
    due = m.deadline_at + dt.timedelta(seconds=1)
    seen = counted(lambda: services.resolve_expired_match(m.id, now=due))
    assert Match.get_by_id(m.id).state == MatchState.COMPLETE
    return seen


OPERATIONS = {
    "report": measure_report,  # both-agree mode, the first report
    "confirm": measure_confirm_first,  # decides the match, its players move on
    "confirm_opening": measure_confirm_opening,  # ... and opens the next match (or round)
    "resolve": measure_resolve,  # the organizer decides an open match
    "deadline": measure_deadline,  # a single report stands at the deadline
    "no_show": measure_no_show,  # nobody reported: the policy's double forfeit
}

# Upper bounds, (operation, format) -> statements. PostgreSQL writes what a
# locked write holds (report statuses, eliminations, rounds, events, mail) in
# one statement; SQLite, without data-modifying WITH, one per kind.
# Swiss's confirm_opening pairs and inserts a whole round (every match and
# the seeded players read for the standings, ids reserved, the round and its
# matches inserted in one statement): two above the other operations.
POSTGRES = {
    "report": dict.fromkeys(FORMATS, 5),
    "confirm": {"single_elimination": 7, "double_elimination": 8, "round_robin": 6, "swiss": 6},
    "confirm_opening": {"single_elimination": 7, "double_elimination": 8, "round_robin": 8, "swiss": 10},
    "resolve": {"single_elimination": 6, "double_elimination": 7, "round_robin": 5, "swiss": 5},
    "deadline": {"single_elimination": 6, "double_elimination": 7, "round_robin": 5, "swiss": 5},
    "no_show": {"single_elimination": 8, "double_elimination": 9, "round_robin": 8, "swiss": 8},
}
SQLITE = {
    "report": dict.fromkeys(FORMATS, 6),
    "confirm": {"single_elimination": 11, "double_elimination": 11, "round_robin": 9, "swiss": 9},
    "confirm_opening": {"single_elimination": 11, "double_elimination": 11, "round_robin": 13, "swiss": 16},
    "resolve": {"single_elimination": 9, "double_elimination": 9, "round_robin": 7, "swiss": 7},
    "deadline": {"single_elimination": 10, "double_elimination": 10, "round_robin": 8, "swiss": 8},
    "no_show": {"single_elimination": 11, "double_elimination": 12, "round_robin": 10, "swiss": 10},
}


def test_the_counter_counts_each_statement_once(qdb):
    with count_statements() as seen:
        Tournament.select().count()
        Match.select().where(Match.id == 1).first()
    assert len(seen) == 2
    assert seen[0].upper().startswith("SELECT COUNT")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("op", list(OPERATIONS))
def test_write_path_statement_counts(organizer, qdb, op, fmt):
    bound = (POSTGRES if qdb.kind == "postgres" else SQLITE)[op][fmt]
    seen = OPERATIONS[op](organizer, fmt, 8)
    assert len(seen) <= bound, f"{op} ({fmt}, {qdb.kind}): {len(seen)} > {bound}\n{seen.report()}"


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("op", ["confirm_opening", "deadline"])
def test_counts_do_not_grow_with_the_tournament(organizer, qdb, op, fmt):
    """32 players: more matches opened per round and more rows per statement, not more statements."""
    seen = OPERATIONS[op](organizer, fmt, 32)
    bound = (POSTGRES if qdb.kind == "postgres" else SQLITE)[op][fmt]
    assert len(seen) <= bound, f"{op} ({fmt}, 32 players): {len(seen)} > {bound}\n{seen.report()}"
