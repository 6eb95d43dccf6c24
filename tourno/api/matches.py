"""Matches: lists and detail, a player's own reports (result, forfeit claim,
confirm, dispute) and the organizer's decisions (resolve, forfeit, reopen,
extend the deadline)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from tourno.api import cache, serializers
from tourno.api.auth import current_user, require_user
from tourno.api.context import can_manage, now, require_visible, service, visible_match
from tourno.api.validation import MAX_ID, Form, Query, json_body
from tourno.tournaments.errors import ValidationError
from tourno.tournaments.models import (
    Match,
    MatchReport,
    MatchState,
    Participant,
    Round,
    Tournament,
    TournamentState,
)

bp = Blueprint("matches", __name__)

MAX_SCORE = 1_000_000
MAX_GAMES = 99
MAX_EXTENSION_MINUTES = 10080


def match_response(m: Match, *, with_reports: bool = False):
    data = serializers.match(m)
    if with_reports:
        data["reports"] = [
            serializers.report(r)
            for r in MatchReport.select().where(MatchReport.match == m.id).order_by(MatchReport.id)
        ]
    return jsonify({"match": data})


#: The services' argument names -> the API's field names, for 422 messages.
FIELD_NAMES = {"winner": "winner_id", "loser": "loser_id"}


def call(name: str, *args: Any, **kwargs: Any) -> Match:
    try:
        return service(name)(*args, **kwargs)
    except ValidationError as exc:
        raise ValidationError(
            {FIELD_NAMES.get(k, k): v for k, v in exc.errors.items()}, exc.message
        ) from None


def _plays_in(user, m: Match) -> bool:
    ids = [pid for pid in (m.player1_id, m.player2_id) if pid is not None]
    return (
        bool(ids)
        and Participant.select().where(Participant.id.in_(ids), Participant.user == user.id).exists()
    )


@bp.get("/tournaments/<id:tid>/matches")
def list_matches(tid: int):
    """Polled like the bracket: cached by the tournament's data version."""
    found, token = cache.tournament_row(tid)
    t = require_visible(tid, found, current_user())
    query = Query()
    state = query.choice("state", [s.value for s in MatchState])
    number = query.integer("round", low=1, high=100_000)
    participant_id = query.integer("participant_id", low=1, high=MAX_ID)
    query.check()
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
def show_match(mid: int):
    user = current_user()
    m = visible_match(mid, user)
    # Reports are visible to the two players and to whoever manages the tournament.
    with_reports = user is not None and (
        can_manage(user, Tournament.get_by_id(m.tournament_id)) or _plays_in(user, m)
    )
    return match_response(m, with_reports=with_reports)


def _result_values(form: Form) -> dict[str, Any]:
    values: dict[str, Any] = {
        "player1_score": form.integer("player1_score", required=True, high=MAX_SCORE),
        "player2_score": form.integer("player2_score", required=True, high=MAX_SCORE),
        "winner": form.integer("winner_id", low=1, high=MAX_ID),
    }
    games = form.raw("game_scores")
    if games is not None:
        if not isinstance(games, list) or len(games) > MAX_GAMES or not all(_game_ok(g) for g in games):
            form.errors["game_scores"] = (
                f"must be a list of at most {MAX_GAMES} [player1, player2] score pairs"
            )
        else:
            values["game_scores"] = games
    return values


def _game_ok(game: Any) -> bool:
    return (
        isinstance(game, list)
        and len(game) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= MAX_SCORE for x in game)
    )


@bp.post("/matches/<id:mid>/reports")
def report(mid: int):
    user = require_user()
    body = json_body()
    if body.get("forfeit_claim") is not None:
        form = Form(body, allowed=("forfeit_claim", "comment"))
        if form.boolean("forfeit_claim") is not True:
            form.errors["forfeit_claim"] = "must be true (or left out to report a result)"
        comment = form.text("comment", max_length=2000, strip=False)
        form.check()
        visible_match(mid, user)
        m = call("claim_forfeit", mid, user, comment=comment, now=now())
    else:
        form = Form(body, allowed=("player1_score", "player2_score", "winner_id", "game_scores", "comment"))
        values = _result_values(form)
        comment = form.text("comment", max_length=2000, strip=False)
        form.check()
        visible_match(mid, user)
        m = call("report_result", mid, user, comment=comment, now=now(), **values)
    response = match_response(m, with_reports=True)
    response.status_code = 201
    return response


@bp.post("/matches/<id:mid>/confirm")
def confirm(mid: int):
    user = require_user()
    json_body(required=False)
    visible_match(mid, user)
    return match_response(call("confirm_result", mid, user, now=now()), with_reports=True)


@bp.post("/matches/<id:mid>/dispute")
def dispute(mid: int):
    user = require_user()
    form = Form(json_body(required=False), allowed=("comment",))
    comment = form.text("comment", max_length=2000, strip=False)
    form.check()
    visible_match(mid, user)
    return match_response(call("dispute_result", mid, user, comment=comment, now=now()), with_reports=True)


@bp.post("/matches/<id:mid>/resolve")
def resolve(mid: int):
    user = require_user()
    form = Form(json_body(), allowed=("player1_score", "player2_score", "winner_id", "game_scores"))
    values = _result_values(form)
    form.check()
    visible_match(mid, user)
    return match_response(call("resolve_match", mid, user, now=now(), **values), with_reports=True)


@bp.post("/matches/<id:mid>/forfeit")
def forfeit(mid: int):
    user = require_user()
    form = Form(json_body(), allowed=("loser_id",))
    loser = form.integer("loser_id", required=True, low=1, high=MAX_ID)
    form.check()
    visible_match(mid, user)
    return match_response(call("forfeit_match", mid, user, loser=loser, now=now()), with_reports=True)


@bp.post("/matches/<id:mid>/reopen")
def reopen(mid: int):
    user = require_user()
    json_body(required=False)
    visible_match(mid, user)
    return match_response(call("reopen_match", mid, user, now=now()), with_reports=True)


@bp.post("/matches/<id:mid>/deadline")
def extend_deadline(mid: int):
    user = require_user()
    form = Form(json_body(), allowed=("minutes",))
    minutes = form.integer("minutes", required=True, low=1, high=MAX_EXTENSION_MINUTES)
    form.check()
    visible_match(mid, user)
    return match_response(call("extend_deadline", mid, user, minutes=minutes, now=now()), with_reports=True)
