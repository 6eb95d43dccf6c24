"""How a match is decided, as pure functions: no database, no queries.

A :class:`Decision` is what the services write onto a match (winner, loser,
scores, how it was decided). It comes from the scores a player or organizer
entered (:func:`decision_from_scores`, after the input models checked them),
from a report (:func:`decision_of`), or from who is still in the competition
(:func:`forfeit_decision`). :func:`agree` says whether two reports tell the
same story. :func:`match_records` and :func:`league_results` read decided
matches for the standings.

The functions read only plain attributes (``player1_id``, ``kind``...), so the
tests give them unsaved model instances and never touch a database.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from tourno.tournaments.errors import ValidationError
from tourno.tournaments.formats import Outcome, Result
from tourno.tournaments.models import MatchState, ParticipantStatus, ReportKind, ResultType, TournamentFormat

LEAGUES = (TournamentFormat.ROUND_ROBIN, TournamentFormat.SWISS)
# Out of the competition: their next matches are forfeited, Swiss does not pair them.
OUT = (ParticipantStatus.DISQUALIFIED, ParticipantStatus.DROPPED)


class Slots(Protocol):
    """The two players of a match (``Match`` is one)."""

    player1_id: int | None
    player2_id: int | None


class DecidedMatch(Slots, Protocol):
    """A decided match as the standings read it (``Match`` is one)."""

    state: MatchState
    winner_id: int | None
    is_draw: bool
    player2_is_bye: bool


class Report(Protocol):
    """A player's report as a decision reads it (``MatchReport`` is one)."""

    kind: ReportKind
    participant_id: int
    winner_participant_id: int | None
    player1_score: int | None
    player2_score: int | None
    game_scores: list[Any] | None


@dataclass(frozen=True)
class Decision:
    """How a match was decided, oriented player 1 / player 2."""

    winner: int | None
    loser: int | None
    result_type: ResultType
    player1_score: int | None = None
    player2_score: int | None = None
    is_draw: bool = False
    game_scores: list[Any] | None = None

    def as_type(self, result_type: ResultType) -> Decision:
        """The same decision, recorded as ``result_type``."""
        return replace(self, result_type=result_type)

    def payload(self) -> dict[str, Any]:
        """The decision as a match event records it."""
        return {
            "winner": self.winner,
            "loser": self.loser,
            "result_type": self.result_type.value,
            "player1_score": self.player1_score,
            "player2_score": self.player2_score,
            "draw": self.is_draw,
        }


def opponent(m: Slots, pid: int | None) -> int | None:
    """The other player of ``m`` (``pid`` is one of the two)."""
    return m.player2_id if pid == m.player1_id else m.player1_id


def agree(a: Report, b: Report) -> bool:
    """Two reports tell the same result: the same winner, and the same scores
    unless one is a forfeit claim (which has none)."""
    if a.winner_participant_id != b.winner_participant_id:
        return False
    if ReportKind.FORFEIT_CLAIM in (a.kind, b.kind):
        return True
    return (a.player1_score, a.player2_score) == (b.player1_score, b.player2_score)


def agreed_type(a: Report, b: Report) -> ResultType:
    """How two agreeing reports decide the match: a forfeit if either claims one."""
    return ResultType.FORFEIT if ReportKind.FORFEIT_CLAIM in (a.kind, b.kind) else ResultType.PLAYED


def decision_of(m: Slots, report: Report, result_type: ResultType) -> Decision:
    """The decision a report states (a forfeit claim: the reporter wins by forfeit)."""
    if report.kind == ReportKind.FORFEIT_CLAIM:
        return Decision(
            winner=report.participant_id,
            loser=opponent(m, report.participant_id),
            result_type=ResultType.FORFEIT,
        )
    winner = report.winner_participant_id
    return Decision(
        winner=winner,
        loser=opponent(m, winner) if winner else None,
        result_type=result_type,
        player1_score=report.player1_score,
        player2_score=report.player2_score,
        is_draw=winner is None,
        game_scores=report.game_scores,
    )


def decision_from_scores(
    m: Slots,
    tournament_format: TournamentFormat,
    player1_score: int,
    player2_score: int,
    winner: int | None,
    game_scores: list[list[int]] | None,
) -> Decision:
    """A played result from scores already checked on their own
    (:class:`~tourno.tournaments.inputs.MatchScores`); raises ValidationError
    for what needs the match: a winner who does not play in it, a winner
    that contradicts the scores, or a draw outside a league."""
    if winner is not None and winner not in (m.player1_id, m.player2_id):
        raise ValidationError({"winner": "must be the id of one of the match's two participants"})
    if winner is None and player1_score != player2_score:
        winner = m.player1_id if player1_score > player2_score else m.player2_id
    if winner is not None and player1_score != player2_score:
        leader = m.player1_id if player1_score > player2_score else m.player2_id
        if winner != leader:
            raise ValidationError({"winner": "contradicts the scores"})
    if winner is None and tournament_format not in LEAGUES:
        raise ValidationError({"winner": "an elimination match cannot be drawn; give the winner"})
    return Decision(
        winner=winner,
        loser=opponent(m, winner) if winner is not None else None,
        result_type=ResultType.PLAYED,
        player1_score=player1_score,
        player2_score=player2_score,
        is_draw=winner is None,
        game_scores=game_scores,
    )


def forfeit_decision(m: Slots, statuses: Mapping[int, ParticipantStatus]) -> Decision:
    """A match decided without a game: the player still in wins; players out
    (disqualified, dropped) lose; no one present, no winner."""
    present = [p for p in (m.player1_id, m.player2_id) if p]
    out = [p for p in present if statuses.get(p) in OUT]
    alive = [p for p in present if p not in out]
    if len(alive) == 1:
        loser = out[0] if out else None
        kind = ResultType.DQ if out else ResultType.WALKOVER
        return Decision(winner=alive[0], loser=loser, result_type=kind)
    if len(present) == 2 and len(out) == 2:
        return Decision(winner=None, loser=None, result_type=ResultType.DOUBLE_FORFEIT)
    if len(out) == 1:
        return Decision(winner=None, loser=out[0], result_type=ResultType.DQ)
    return Decision(winner=None, loser=None, result_type=ResultType.WALKOVER)


def match_records(matches: Iterable[DecidedMatch]) -> dict[int, dict[str, int]]:
    """Participant id -> wins, draws and losses over decided ``matches``.
    Byes and walkovers (a slot without a player) are not games."""
    records: dict[int, dict[str, int]] = {}

    def bump(pid: int | None, key: str) -> None:
        if pid:
            records.setdefault(pid, {"wins": 0, "draws": 0, "losses": 0})[key] += 1

    for m in matches:
        if m.player1_id is None or m.player2_id is None:
            continue
        if m.is_draw:
            bump(m.player1_id, "draws")
            bump(m.player2_id, "draws")
        elif m.winner_id is None:
            bump(m.player1_id, "losses")
            bump(m.player2_id, "losses")
        else:
            bump(m.winner_id, "wins")
            bump(opponent(m, m.winner_id), "losses")
    return records


def league_results(matches: Iterable[DecidedMatch], seed_of: Mapping[int, int]) -> list[Result]:
    """The decided ones of league ``matches`` as the formats' results, by
    seed (a Swiss bye included)."""
    results = []
    for m in matches:
        if m.state != MatchState.COMPLETE:
            continue
        if m.player1_id and m.player2_id is None and m.player2_is_bye:
            results.append(Result(seed_of[m.player1_id], None, Outcome.BYE))
            continue
        if not (m.player1_id and m.player2_id):
            continue
        first, second = seed_of[m.player1_id], seed_of[m.player2_id]
        if m.is_draw:
            outcome = Outcome.DRAW
        elif m.winner_id is None:
            outcome = Outcome.BOTH_LOSE
        else:
            outcome = Outcome.FIRST_WINS if m.winner_id == m.player1_id else Outcome.SECOND_WINS
        results.append(Result(first, second, outcome))
    return results
