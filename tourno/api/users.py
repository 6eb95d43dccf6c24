"""Signing up, and the caller's own profile and matches."""

from __future__ import annotations

from flask import Blueprint, jsonify

from tourno.accounts.models import Role
from tourno.api import serializers
from tourno.api.auth import hash_token, new_token, require_user
from tourno.api.validation import Form, Query, json_body
from tourno.db import write_transaction
from tourno.tournaments import services
from tourno.tournaments.models import Match, MatchState, Participant, Round

bp = Blueprint("users", __name__)


@bp.post("/users")
def sign_up():
    """A new player account; the token is in this response and nowhere else."""
    form = Form(json_body(), allowed=("email", "display_name"))
    email = form.text("email", required=True, max_length=320)
    name = form.text("display_name", required=True, max_length=100)
    form.check()
    token = new_token()
    # The user and their token hash commit together.
    with write_transaction():
        user = services.create_user(email, name, role=Role.PLAYER)
        services.set_api_token_hash(user, hash_token(token))
    response = jsonify({"user": serializers.user(user, private=True), "token": token})
    response.status_code = 201
    response.headers["Location"] = "/api/v1/me"
    return response


@bp.get("/me")
def me():
    return jsonify({"user": serializers.user(require_user(), private=True)})


@bp.get("/me/matches")
def my_matches():
    user = require_user()
    query = Query()
    state = query.choice("state", [s.value for s in MatchState])
    page, per_page = query.page()
    query.check()
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
