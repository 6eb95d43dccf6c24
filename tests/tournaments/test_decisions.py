"""The pure rules of a decision, table-tested without a database: the models
are unsaved instances, read only for their attributes."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from tourno.tournaments import decisions
from tourno.tournaments.decisions import (
    Decision,
    agree,
    agreed_type,
    decision_from_scores,
    decision_of,
    forfeit_decision,
    league_results,
    match_records,
    opponent,
)
from tourno.tournaments.errors import ValidationError
from tourno.tournaments.formats import Outcome, Result
from tourno.tournaments.inputs import DeadlineExtension, DisputeInput, MatchScores
from tourno.tournaments.limits import COMMENT_MAX_LENGTH, MAX_EXTENSION_MINUTES, MAX_GAMES, MAX_SCORE
from tourno.tournaments.models import (
    Match,
    MatchReport,
    MatchState,
    ParticipantStatus,
    ReportKind,
    ResultType,
    TournamentFormat,
)

A, B = 11, 22  # participant ids
ELIMINATION = TournamentFormat.SINGLE_ELIMINATION
LEAGUE = TournamentFormat.ROUND_ROBIN
REG, DQ, DROPPED = ParticipantStatus.REGISTERED, ParticipantStatus.DISQUALIFIED, ParticipantStatus.DROPPED


def match(p1: int | None = A, p2: int | None = B, **fields: Any) -> Match:
    return Match(player1=p1, player2=p2, **fields)


def report(by: int, kind: ReportKind = ReportKind.RESULT, **fields: Any) -> MatchReport:
    winner = fields.pop("winner", None)
    return MatchReport(participant=by, kind=kind, winner_participant=winner, **fields)


def test_the_module_is_pure() -> None:
    """No database layer: no peewee, no tourno.db, no services."""
    tree = ast.parse(Path(decisions.__file__).read_text(encoding="utf-8"))
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if m == "peewee" or m == "tourno.db" or ".services" in m}


@pytest.mark.parametrize(("pid", "expected"), [(A, B), (B, A)])
def test_opponent(pid: int, expected: int) -> None:
    assert opponent(match(), pid) == expected


@pytest.mark.parametrize(
    ("first", "second", "agrees", "result_type"),
    [
        (
            report(A, winner=A, player1_score=2, player2_score=1),
            report(B, winner=A, player1_score=2, player2_score=1),
            True,
            ResultType.PLAYED,
        ),
        (
            report(A, winner=A, player1_score=2, player2_score=1),
            report(B, winner=A, player1_score=3, player2_score=1),
            False,
            ResultType.PLAYED,
        ),
        (
            report(A, winner=A, player1_score=2, player2_score=1),
            report(B, winner=B, player1_score=1, player2_score=2),
            False,
            ResultType.PLAYED,
        ),
        (
            report(A, ReportKind.FORFEIT_CLAIM, winner=A),
            report(B, winner=A, player1_score=2, player2_score=0),
            True,
            ResultType.FORFEIT,
        ),
        (
            report(A, ReportKind.FORFEIT_CLAIM, winner=A),
            report(B, ReportKind.FORFEIT_CLAIM, winner=B),
            False,
            ResultType.FORFEIT,
        ),
        (
            report(A, player1_score=1, player2_score=1),
            report(B, player1_score=1, player2_score=1),
            True,
            ResultType.PLAYED,
        ),
    ],
    ids=["same", "other-score", "other-winner", "forfeit-and-score", "two-claims", "draw"],
)
def test_agree(first: MatchReport, second: MatchReport, agrees: bool, result_type: ResultType) -> None:
    assert agree(first, second) is agrees
    assert agree(second, first) is agrees
    assert agreed_type(first, second) == result_type


@pytest.mark.parametrize(
    ("rep", "result_type", "expected"),
    [
        (
            report(A, winner=B, player1_score=0, player2_score=2, game_scores=[[0, 1], [0, 1]]),
            ResultType.PLAYED,
            Decision(B, A, ResultType.PLAYED, 0, 2, False, [[0, 1], [0, 1]]),
        ),
        (
            report(B, winner=A, player1_score=2, player2_score=1),
            ResultType.AUTO_CONFIRMED,
            Decision(A, B, ResultType.AUTO_CONFIRMED, 2, 1),
        ),
        (
            report(A, player1_score=1, player2_score=1),
            ResultType.PLAYED,
            Decision(None, None, ResultType.PLAYED, 1, 1, True),
        ),
        # A forfeit claim: the reporter wins by forfeit, whatever type was asked for.
        (
            report(B, ReportKind.FORFEIT_CLAIM, winner=B),
            ResultType.AUTO_CONFIRMED,
            Decision(B, A, ResultType.FORFEIT),
        ),
    ],
    ids=["played", "auto-confirmed", "draw", "forfeit-claim"],
)
def test_decision_of(rep: MatchReport, result_type: ResultType, expected: Decision) -> None:
    assert decision_of(match(), rep, result_type) == expected


@pytest.mark.parametrize(
    ("tournament_format", "p1", "p2", "winner", "expected"),
    [
        (ELIMINATION, 3, 1, None, Decision(A, B, ResultType.PLAYED, 3, 1)),
        (ELIMINATION, 1, 3, None, Decision(B, A, ResultType.PLAYED, 1, 3)),
        (ELIMINATION, 3, 1, A, Decision(A, B, ResultType.PLAYED, 3, 1)),
        # Level scores in elimination: the winner says who went through (penalties...).
        (ELIMINATION, 2, 2, B, Decision(B, A, ResultType.PLAYED, 2, 2)),
        (LEAGUE, 2, 2, None, Decision(None, None, ResultType.PLAYED, 2, 2, True)),
        (LEAGUE, 0, MAX_SCORE, None, Decision(B, A, ResultType.PLAYED, 0, MAX_SCORE)),
    ],
)
def test_decision_from_scores(
    tournament_format: TournamentFormat, p1: int, p2: int, winner: int | None, expected: Decision
) -> None:
    assert decision_from_scores(match(), tournament_format, p1, p2, winner, None) == expected


@pytest.mark.parametrize(
    ("tournament_format", "p1", "p2", "winner", "fields"),
    [
        (ELIMINATION, 3, 1, B, {"winner": "contradicts the scores"}),
        (ELIMINATION, 2, 2, None, {"winner": "an elimination match cannot be drawn; give the winner"}),
        (LEAGUE, 1, 0, 99, {"winner": "must be the id of one of the match's two participants"}),
    ],
)
def test_decision_from_scores_refuses(
    tournament_format: TournamentFormat, p1: int, p2: int, winner: int | None, fields: dict[str, str]
) -> None:
    with pytest.raises(ValidationError) as refused:
        decision_from_scores(match(), tournament_format, p1, p2, winner, None)
    assert refused.value.errors == fields


# What the scores are on their own is the input model's rule (the services
# check it first); the service names its own arguments (``winner``).
@pytest.mark.parametrize(
    ("p1", "p2", "winner", "games", "fields"),
    [
        (-1, 0, None, None, {"player1_score"}),
        (0, MAX_SCORE + 1, None, None, {"player2_score"}),
        (True, 1.5, None, None, {"player1_score", "player2_score"}),
        ("3", None, None, None, {"player1_score", "player2_score"}),
        (1, 0, True, None, {"winner"}),
        (1, 0, None, [[1, 0]] * (MAX_GAMES + 1), {"game_scores"}),
        (1, 0, None, [[1, 0, 0]], {"game_scores"}),
        (1, 0, None, [[1, -1]], {"game_scores"}),
        (1, 0, None, [[True, 0]], {"game_scores"}),
        (1, 0, None, "1-0", {"game_scores"}),
    ],
)
def test_the_scores_model_refuses(p1: Any, p2: Any, winner: Any, games: Any, fields: set[str]) -> None:
    with pytest.raises(ValidationError) as refused:
        MatchScores.check_arguments(player1_score=p1, player2_score=p2, winner=winner, game_scores=games)
    assert set(refused.value.errors) == fields


def test_the_limits_are_accepted() -> None:
    games = [[0, MAX_SCORE]] * MAX_GAMES
    entered = MatchScores.check_arguments(
        player1_score=0, player2_score=MAX_SCORE, winner=B, game_scores=games
    )
    assert entered.arguments() == {
        "player1_score": 0,
        "player2_score": MAX_SCORE,
        "winner": B,
        "game_scores": games,
    }
    decided = decision_from_scores(match(), LEAGUE, **entered.arguments())
    assert decided == Decision(B, A, ResultType.PLAYED, 0, MAX_SCORE, game_scores=games)


@pytest.mark.parametrize(
    ("p1", "p2", "statuses", "expected"),
    [
        (A, None, {A: REG}, Decision(A, None, ResultType.WALKOVER)),
        (None, B, {B: REG}, Decision(B, None, ResultType.WALKOVER)),
        (A, B, {A: REG, B: DQ}, Decision(A, B, ResultType.DQ)),
        (A, B, {A: DROPPED, B: REG}, Decision(B, A, ResultType.DQ)),
        (A, B, {A: DQ, B: DROPPED}, Decision(None, None, ResultType.DOUBLE_FORFEIT)),
        (A, None, {A: DQ}, Decision(None, A, ResultType.DQ)),
        (None, None, {}, Decision(None, None, ResultType.WALKOVER)),
    ],
    ids=["walkover-1", "walkover-2", "opponent-dq", "dropped", "both-out", "alone-and-out", "nobody"],
)
def test_forfeit_decision(
    p1: int | None, p2: int | None, statuses: dict[int, ParticipantStatus], expected: Decision
) -> None:
    assert forfeit_decision(match(p1, p2), statuses) == expected


def test_a_decision_as_another_type_and_its_payload() -> None:
    d = Decision(A, B, ResultType.PLAYED, 2, 1).as_type(ResultType.ADMIN)
    assert d == Decision(A, B, ResultType.ADMIN, 2, 1)
    assert d.payload() == {
        "winner": A,
        "loser": B,
        "result_type": "admin",
        "player1_score": 2,
        "player2_score": 1,
        "draw": False,
    }


@pytest.mark.parametrize(
    ("comment", "expected"),
    [(None, None), ("  gg  ", "gg"), ("   ", None), ("x" * COMMENT_MAX_LENGTH, "x" * COMMENT_MAX_LENGTH)],
)
def test_a_comment_is_trimmed(comment: str | None, expected: str | None) -> None:
    assert DisputeInput.check({"comment": comment}).comment == expected


@pytest.mark.parametrize("comment", ["x" * (COMMENT_MAX_LENGTH + 1), 42, ["gg"]])
def test_a_comment_is_refused(comment: Any) -> None:
    with pytest.raises(ValidationError):
        DisputeInput.check({"comment": comment})


@pytest.mark.parametrize("minutes", [1, 60, MAX_EXTENSION_MINUTES])
def test_extension_minutes(minutes: int) -> None:
    assert DeadlineExtension.check({"minutes": minutes}).minutes == minutes


@pytest.mark.parametrize("minutes", [0, -5, MAX_EXTENSION_MINUTES + 1, True, 1.0, "60", None])
def test_extension_minutes_refused(minutes: Any) -> None:
    with pytest.raises(ValidationError) as refused:
        DeadlineExtension.check({"minutes": minutes})
    assert set(refused.value.errors) == {"minutes"}


C = 33
DONE = MatchState.COMPLETE


def test_match_records_count_games_not_byes() -> None:
    matches = [
        match(A, B, state=DONE, winner=A),
        match(B, C, state=DONE, winner=C),
        match(A, C, state=DONE, is_draw=True),
        match(A, B, state=DONE),  # a double forfeit: both lose
        match(A, None, state=DONE, winner=A, player2_is_bye=True),  # a bye is not a game
    ]
    assert match_records(matches) == {
        A: {"wins": 1, "draws": 1, "losses": 1},
        B: {"wins": 0, "draws": 0, "losses": 3},
        C: {"wins": 1, "draws": 1, "losses": 0},
    }


def test_league_results_by_seed() -> None:
    seed_of = {A: 1, B: 2, C: 3}
    matches = [
        match(A, B, state=DONE, winner=B),
        match(B, C, state=DONE, winner=B),
        match(A, C, state=DONE, is_draw=True),
        match(C, A, state=DONE),
        match(C, None, state=DONE, winner=C, player2_is_bye=True),
        match(A, None, state=DONE, winner=A),  # a walkover, not a Swiss bye: no result
        match(A, B, state=MatchState.OPEN),  # not decided yet
    ]
    assert league_results(matches, seed_of) == [
        Result(1, 2, Outcome.SECOND_WINS),
        Result(2, 3, Outcome.FIRST_WINS),
        Result(1, 3, Outcome.DRAW),
        Result(3, 1, Outcome.BOTH_LOSE),
        Result(3, None, Outcome.BYE),
    ]
