"""Tournaments: list, create, show, update, cancel, the lifecycle actions,
standings and announcements."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

from tourno.accounts.models import Role, User
from tourno.api import cache, schemas, serializers
from tourno.api.auth import current_user, require_user
from tourno.api.context import now, require_visible, visible_tournament
from tourno.api.openapi import documented
from tourno.api.validation import body, json_body, query
from tourno.tournaments import reads, services
from tourno.tournaments.errors import PermissionDenied
from tourno.tournaments.inputs import (
    Announcement,
    TournamentInput,
    TournamentListQuery,
    TournamentQuery,
    TournamentUpdate,
)
from tourno.tournaments.models import Participant, Tournament, TournamentState

bp = Blueprint("tournaments", __name__)

ONE = {"response": schemas.OneTournament, "auth": True}


def tournament_response(t: Tournament, status: int = 200) -> Response:
    response = jsonify({"tournament": serializers.tournament(t, now())})
    response.status_code = status
    return response


@bp.get("/tournaments")
@documented(
    "Tournaments, newest first (drafts only to their organizer)",
    query=TournamentListQuery,
    response=schemas.TournamentPage,
)
def list_tournaments() -> Response:
    user = current_user()
    asked = query(TournamentListQuery)
    state, fmt, game, page, per_page = asked.state, asked.format, asked.game, asked.page, asked.per_page
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
@documented("Create a draft (organizers and admins)", body=(TournamentInput,), status=201, **ONE)
def create_tournament() -> Response:
    user = require_user()
    values = body(TournamentInput).values()
    if user.role not in (Role.ORGANIZER, Role.ADMIN):
        raise PermissionDenied("only organizers and admins create tournaments")
    t = services.create_tournament(user, now=now(), **values)
    response = tournament_response(t, 201)
    response.headers["Location"] = f"/api/v1/tournaments/{t.id}"
    return response


@bp.get("/tournaments/<id:tid>")
@documented(
    "One tournament, optionally with participants and matches",
    query=TournamentQuery,
    response=schemas.OneTournament,
    revalidated=True,
)
def show_tournament(tid: int) -> Response:
    """The hot read of a bracket: one query for the row and its data version,
    and the body from the cache while nothing changed (``tourno.api.cache``)."""
    user = current_user()
    include = query(TournamentQuery).include
    found, token = reads.tournament_row(tid)
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
@documented("Update", body=(TournamentUpdate,), **ONE)
def update_tournament(tid: int) -> Response:
    user = require_user()
    values = body(TournamentUpdate).values()
    visible_tournament(tid, user)
    return tournament_response(services.update_tournament(tid, user, values, now=now()))


@bp.delete("/tournaments/<id:tid>")
@documented("Cancel", **ONE)
def cancel_tournament(tid: int) -> Response:
    user = require_user()
    visible_tournament(tid, user)
    return tournament_response(services.cancel_tournament(tid, user, reason="organizer", now=now()))


def _caller_of(tid: int) -> User:
    """The caller of a lifecycle action (its body, if any, is ignored), once the tournament is visible."""
    user = require_user()
    json_body(required=False)
    visible_tournament(tid, user)
    return user


@bp.post("/tournaments/<id:tid>/publish")
@documented("draft -> pending", **ONE)
def publish(tid: int) -> Response:
    return tournament_response(services.publish(tid, _caller_of(tid), now=now()))


@bp.post("/tournaments/<id:tid>/start")
@documented("Seed and open round 1", **ONE)
def start(tid: int) -> Response:
    return tournament_response(services.start_tournament(tid, _caller_of(tid), now=now()))


@bp.post("/tournaments/<id:tid>/finalize")
@documented("-> complete", **ONE)
def finalize(tid: int) -> Response:
    return tournament_response(services.finalize(tid, _caller_of(tid), now=now()))


@bp.post("/tournaments/<id:tid>/process_check_ins")
@documented("pending -> checked_in", **ONE)
def process_check_ins(tid: int) -> Response:
    return tournament_response(services.process_check_ins(tid, _caller_of(tid), now=now()))


@bp.get("/tournaments/<id:tid>/standings")
@documented("Ranks, points, tiebreaks", response=schemas.Standings)
def standings(tid: int) -> Response:
    t = visible_tournament(tid, current_user())
    rows = services.standings(t)
    return jsonify({"tournament_id": t.id, "standings": [serializers.standing(r) for r in rows]})


@bp.post("/tournaments/<id:tid>/announcements")
@documented(
    "Email every participant (bulk, through the outbox)",
    body=(Announcement,),
    status=202,
    response=schemas.Announced,
    auth=True,
)
def announce(tid: int) -> Response:
    """One ``announcement`` email per participant with an account who has not
    opted out, written to the outbox at bulk priority; the drain sends them
    at the global mail rate. The key makes each recipient's row unique."""
    user = require_user()
    message = body(Announcement)
    t = visible_tournament(tid, user)
    key, count = services.announce(t, user, subject=message.subject, body=message.body, now=now())
    response = jsonify({"announcement_key": key, "recipients": count})
    response.status_code = 202
    return response
