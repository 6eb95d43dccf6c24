"""Tournaments: list, create, show, update, cancel, the lifecycle actions,
standings and announcements."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from tourno.accounts.models import Role
from tourno.api import cache, serializers
from tourno.api.auth import current_user, require_user
from tourno.api.context import now, require_visible, service, visible_tournament
from tourno.api.validation import Form, Query, json_body
from tourno.tournaments import services
from tourno.tournaments.errors import PermissionDenied
from tourno.tournaments.models import Participant, Tournament, TournamentFormat, TournamentState
from tourno.tournaments.services.registration import DEFAULTS

bp = Blueprint("tournaments", __name__)

REQUIRED = ("name", "game", "format", "capacity")
TOURNAMENT_INPUT = (*REQUIRED, *DEFAULTS)
TIMESTAMPS = ("starts_at", "registration_closes_at")


def tournament_values(body: dict[str, Any]) -> dict[str, Any]:
    """Body -> service values: known fields only, times parsed; the service
    checks the rest (ranges, enums, consistency) and names each bad field."""
    form = Form(body, allowed=TOURNAMENT_INPUT)
    values = {name: body[name] for name in body if name in TOURNAMENT_INPUT}
    for name in TIMESTAMPS:
        if name in body:
            values[name] = form.timestamp(name)
    form.check()
    return values


def tournament_response(t: Tournament, status: int = 200, **extra: Any):
    response = jsonify({"tournament": serializers.tournament(t, now()), **extra})
    response.status_code = status
    return response


@bp.get("/tournaments")
def list_tournaments():
    user = current_user()
    query = Query()
    state = query.choice("state", [s.value for s in TournamentState])
    fmt = query.choice("format", [f.value for f in TournamentFormat])
    game = query.text("game")
    page, per_page = query.page()
    query.check()
    rows = Tournament.select()
    if user is None or user.role != Role.ADMIN:
        # Drafts are private to their organizer.
        visible = Tournament.state != TournamentState.DRAFT
        if user is not None:
            visible = visible | (Tournament.organizer == user.id)
        rows = rows.where(visible)
    if state:
        rows = rows.where(Tournament.state == state)
    if fmt:
        rows = rows.where(Tournament.format == fmt)
    if game:
        rows = rows.where(Tournament.game == game)
    total = rows.count()
    at = now()
    return jsonify(
        {
            "tournaments": [
                serializers.tournament(t, at)
                for t in rows.order_by(Tournament.id.desc()).paginate(page, per_page)
            ],
            "page": page,
            "per_page": per_page,
            "total": total,
        }
    )


@bp.post("/tournaments")
def create_tournament():
    user = require_user()
    values = tournament_values(json_body())
    if user.role not in (Role.ORGANIZER, Role.ADMIN):
        raise PermissionDenied("only organizers and admins create tournaments")
    main = {name: values.pop(name, None) for name in REQUIRED}
    t = services.create_tournament(user, now=now(), **main, **values)
    response = tournament_response(t, 201)
    response.headers["Location"] = f"/api/v1/tournaments/{t.id}"
    return response


@bp.get("/tournaments/<id:tid>")
def show_tournament(tid: int):
    """The hot read of a bracket: one query for the row and its data version,
    and the body from the cache while nothing changed (``tourno.api.cache``)."""
    user = current_user()
    query = Query()
    include = query.names("include", ("participants", "matches"))
    query.check()
    found, token = cache.tournament_row(tid)
    t = require_visible(tid, found, user)
    at = now()
    key = None
    if token is not None:
        # Everything the body depends on: the data, the include, and what the clock derives.
        derived = (services.public_state(t, at), services.registration_open(t, at))
        key = ("tournament", tid, token, t.version, tuple(sorted(include)), *derived)

    def build() -> dict[str, Any]:
        data = serializers.tournament(t, at)
        if "participants" in include:
            data["participants"] = [
                serializers.participant(p)
                for p in Participant.select().where(Participant.tournament == t.id).order_by(Participant.id)
            ]
        if "matches" in include:
            data["matches"] = serializers.tournament_matches(t.id)
        return {"tournament": data}

    return cache.cached_json(key, build, private=t.state == TournamentState.DRAFT)


@bp.patch("/tournaments/<id:tid>")
def update_tournament(tid: int):
    user = require_user()
    values = tournament_values(json_body())
    visible_tournament(tid, user)
    t = service("update_tournament")(tid, user, values, now=now())
    return tournament_response(t)


@bp.delete("/tournaments/<id:tid>")
def cancel_tournament(tid: int):
    user = require_user()
    visible_tournament(tid, user)
    t = service("cancel_tournament")(tid, user, reason="organizer", now=now())
    return tournament_response(t)


def _lifecycle(name: str, tid: int):
    user = require_user()
    json_body(required=False)
    visible_tournament(tid, user)
    return tournament_response(service(name)(tid, user, now=now()))


@bp.post("/tournaments/<id:tid>/publish")
def publish(tid: int):
    return _lifecycle("publish", tid)


@bp.post("/tournaments/<id:tid>/start")
def start(tid: int):
    return _lifecycle("start_tournament", tid)


@bp.post("/tournaments/<id:tid>/finalize")
def finalize(tid: int):
    return _lifecycle("finalize", tid)


@bp.post("/tournaments/<id:tid>/process_check_ins")
def process_check_ins(tid: int):
    return _lifecycle("process_check_ins", tid)


@bp.get("/tournaments/<id:tid>/standings")
def standings(tid: int):
    t = visible_tournament(tid, current_user())
    rows = service("standings")(t)
    return jsonify({"tournament_id": t.id, "standings": [serializers.standing(r) for r in rows]})


@bp.post("/tournaments/<id:tid>/announcements")
def announce(tid: int):
    """One ``announcement`` email per participant with an account who has not
    opted out, written to the outbox at bulk priority; the drain sends them
    at the global mail rate. The key makes each recipient's row unique."""
    user = require_user()
    form = Form(json_body(), allowed=("subject", "body"))
    subject = form.text("subject", required=True, max_length=200)
    body = form.text("body", required=True, max_length=20_000, strip=False)
    form.check()
    t = visible_tournament(tid, user)
    key, count = services.announce(t, user, subject=subject, body=body, now=now())
    response = jsonify({"announcement_key": key, "recipients": count})
    response.status_code = 202
    return response
