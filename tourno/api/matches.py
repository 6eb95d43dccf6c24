"""Matches: lists and detail, a player's own reports (result, forfeit claim,
confirm, dispute) and the organizer's decisions (resolve, forfeit, reopen,
extend the deadline)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import Blueprint, Response, jsonify

from tourno.accounts.models import User
from tourno.api import cache, schemas, serializers
from tourno.api.auth import current_user, require_user
from tourno.api.context import may_manage, now, require_visible, visible_match
from tourno.api.openapi import documented
from tourno.api.validation import body, json_body, query
from tourno.tournaments import reads, services
from tourno.tournaments.errors import ValidationError
from tourno.tournaments.inputs import (
    DeadlineExtension,
    DisputeInput,
    ForfeitClaim,
    ForfeitDecision,
    MatchListQuery,
    MatchScores,
    ResultReport,
)
from tourno.tournaments.models import (
    Match,
    MatchReport,
    Participant,
    Round,
    Tournament,
    TournamentState,
)

bp = Blueprint("matches", __name__)

ONE = {"response": schemas.OneMatch, "auth": True}


def match_response(m: Match, *, with_reports: bool = False) -> Response:
    data = serializers.match(m)
    if with_reports:
        data["reports"] = [
            serializers.report(r)
            for r in MatchReport.select().where(MatchReport.match == m.id).order_by(MatchReport.id)
        ]
    return jsonify({"match": data})


#: The services' argument names -> the API's field names, for 422 messages:
#: the models' own renames, read backwards.
FIELD_NAMES = {
    argument: field
    for model in (MatchScores, ForfeitDecision)
    for field, argument in model.argument_names.items()
}


@contextmanager
def api_field_names() -> Iterator[None]:
    """A service's ValidationError, with its fields named as the API names them."""
    try:
        yield
    except ValidationError as exc:
        raise ValidationError(
            {FIELD_NAMES.get(k, k): v for k, v in exc.errors.items()}, exc.message
        ) from None


def _plays_in(user: User, m: Match) -> bool:
    ids = [pid for pid in (m.player1_id, m.player2_id) if pid is not None]
    return (
        bool(ids)
        and Participant.select().where(Participant.id.in_(ids), Participant.user == user.id).exists()
    )


@bp.get("/tournaments/<id:tid>/matches")
@documented("Matches", query=MatchListQuery, response=schemas.MatchList, revalidated=True)
def list_matches(tid: int) -> Response:
    """Polled like the bracket: cached by the tournament's data version."""
    found, token = reads.tournament_row(tid)
    t = require_visible(tid, found, current_user())
    asked = query(MatchListQuery)
    state, number, participant_id = asked.state, asked.round, asked.participant_id
    key = None if token is None else ("matches", tid, token, t.version, state, number, participant_id)

    def build() -> dict[str, Any]:
        rows = Match.select().join(Round).where(Match.tournament == t.id)
        if state:
            rows = rows.where(Match.state == state)
        if number is not None:
            rows = rows.where(Round.number == number)
        if participant_id is not None:
            rows = rows.where((Match.player1 == participant_id) | (Match.player2 == participant_id))
        rows = rows.order_by(Round.number, Match.bracket, Match.position)
        return {"matches": serializers.match_rows(rows)}

    return cache.cached_json(key, build, private=t.state == TournamentState.DRAFT)


@bp.get("/matches/<id:mid>")
@documented("One match (reports for its players and organizer)", response=schemas.OneMatch)
def show_match(mid: int) -> Response:
    user = current_user()
    m = visible_match(mid, user)
    # Reports are visible to the two players and to whoever manages the tournament.
    with_reports = user is not None and (
        may_manage(user, Tournament.get_by_id(m.tournament_id)) or _plays_in(user, m)
    )
    return match_response(m, with_reports=with_reports)


@bp.post("/matches/<id:mid>/reports")
@documented(
    "Report own result, or claim a forfeit with {forfeit_claim: true}",
    body=(ResultReport, ForfeitClaim),
    status=201,
    **ONE,
)
def report(mid: int) -> Response:
    user = require_user()
    data = json_body()
    if data.get("forfeit_claim") is not None:
        claim = ForfeitClaim.check(data)
        visible_match(mid, user)
        with api_field_names():
            m = services.claim_forfeit(mid, user, comment=claim.comment, now=now())
    else:
        result = ResultReport.check(data)
        visible_match(mid, user)
        with api_field_names():
            m = services.report_result(mid, user, comment=result.comment, now=now(), **result.arguments())
    response = match_response(m, with_reports=True)
    response.status_code = 201
    return response


@bp.post("/matches/<id:mid>/confirm")
@documented("Accept the opponent's report", **ONE)
def confirm(mid: int) -> Response:
    user = require_user()
    json_body(required=False)
    visible_match(mid, user)
    with api_field_names():
        m = services.confirm_result(mid, user, now=now())
    return match_response(m, with_reports=True)


@bp.post("/matches/<id:mid>/dispute")
@documented("Dispute the opponent's report", body=(DisputeInput,), body_required=False, **ONE)
def dispute(mid: int) -> Response:
    user = require_user()
    comment = body(DisputeInput, required=False).comment
    visible_match(mid, user)
    with api_field_names():
        m = services.dispute_result(mid, user, comment=comment, now=now())
    return match_response(m, with_reports=True)


@bp.post("/matches/<id:mid>/resolve")
@documented("Organizer decides the result", body=(MatchScores,), **ONE)
def resolve(mid: int) -> Response:
    user = require_user()
    result = body(MatchScores)
    visible_match(mid, user)
    with api_field_names():
        m = services.resolve_match(mid, user, now=now(), **result.arguments())
    return match_response(m, with_reports=True)


@bp.post("/matches/<id:mid>/forfeit")
@documented("Organizer records a forfeit", body=(ForfeitDecision,), **ONE)
def forfeit(mid: int) -> Response:
    user = require_user()
    loser = body(ForfeitDecision).loser_id
    visible_match(mid, user)
    with api_field_names():
        m = services.forfeit_match(mid, user, loser=loser, now=now())
    return match_response(m, with_reports=True)


@bp.post("/matches/<id:mid>/reopen")
@documented("complete -> open", **ONE)
def reopen(mid: int) -> Response:
    user = require_user()
    json_body(required=False)
    visible_match(mid, user)
    with api_field_names():
        m = services.reopen_match(mid, user, now=now())
    return match_response(m, with_reports=True)


@bp.post("/matches/<id:mid>/deadline")
@documented("Extend the deadline by some minutes", body=(DeadlineExtension,), **ONE)
def extend_deadline(mid: int) -> Response:
    user = require_user()
    minutes = body(DeadlineExtension).minutes
    visible_match(mid, user)
    with api_field_names():
        m = services.extend_deadline(mid, user, minutes=minutes, now=now())
    return match_response(m, with_reports=True)
