"""Signing up, and the caller's own profile and matches."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from tourno.accounts.models import Role
from tourno.api import schemas, serializers
from tourno.api.auth import hash_token, new_token, require_user
from tourno.api.openapi import documented
from tourno.api.validation import body, query
from tourno.db import write_transaction
from tourno.tournaments import services
from tourno.tournaments.inputs import MyMatchesQuery, UserInput
from tourno.tournaments.models import Match, Participant, Round

bp = Blueprint("users", __name__)


@bp.post("/users")
@documented(
    "Sign up a player; the token is returned once", body=(UserInput,), status=201, response=schemas.SignedUp
)
def sign_up() -> Response:
    """A new player account; the token is in this response and nowhere else."""
    account = body(UserInput)
    token = new_token()
    # The user and their token hash commit together.
    with write_transaction():
        user = services.create_user(account.email, account.display_name, role=Role.PLAYER)
        services.set_api_token_hash(user, hash_token(token))
    response = jsonify({"user": serializers.user(user, private=True), "token": token})
    response.status_code = 201
    response.headers["Location"] = "/api/v1/me"
    return response


@bp.get("/me")
@documented("The caller", response=schemas.Me, auth=True)
def me() -> Response:
    return jsonify({"user": serializers.user(require_user(), private=True)})


@bp.get("/me/matches")
@documented("The caller's matches", query=MyMatchesQuery, response=schemas.MatchPage, auth=True)
def my_matches() -> Response:
    user = require_user()
    asked = query(MyMatchesQuery)
    state, page, per_page = asked.state, asked.page, asked.per_page
    mine = Participant.select(Participant.id).where(Participant.user == user.id)
    matches = Match.select().join(Round).where(Match.player1.in_(mine) | Match.player2.in_(mine))
    if state:
        matches = matches.where(Match.state == state)
    total = matches.count()
    rows = serializers.match_rows(matches.order_by(Match.id.desc()).paginate(page, per_page))
    return jsonify(
        {
            "matches": rows,
            "page": page,
            "per_page": per_page,
            "total": total,
        }
    )
