"""Participants: the organizer's list management (add, bulk add, seed,
remove or disqualify) and a player's own registration, withdrawal and
check-in."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from tourno.accounts.models import User
from tourno.api import schemas, serializers
from tourno.api.auth import current_user, require_user
from tourno.api.context import now, participant_of, visible_tournament
from tourno.api.openapi import documented
from tourno.api.validation import body, json_body, query
from tourno.tournaments import services
from tourno.tournaments.errors import ValidationError
from tourno.tournaments.inputs import EntrantInput, EntrantsInput, ParticipantListQuery, SeedInput
from tourno.tournaments.models import Participant

bp = Blueprint("participants", __name__)

ONE = {"response": schemas.OneParticipant, "auth": True}
LIST = {"response": schemas.ParticipantList, "auth": True}


def participant_response(p: Participant, status: int = 200) -> Response:
    response = jsonify({"participant": serializers.participant(p)})
    response.status_code = status
    return response


@bp.get("/tournaments/<id:tid>/participants")
@documented("Participants", query=ParticipantListQuery, response=schemas.ParticipantList)
def list_participants(tid: int) -> Response:
    t = visible_tournament(tid, current_user())
    status = query(ParticipantListQuery).status
    rows = Participant.select().where(Participant.tournament == t.id)
    if status:
        rows = rows.where(Participant.status == status)
    return jsonify({"participants": [serializers.participant(p) for p in rows.order_by(Participant.id)]})


@bp.post("/tournaments/<id:tid>/participants")
@documented("Organizer adds an entrant by name", body=(EntrantInput,), status=201, **ONE)
def add_participant(tid: int) -> Response:
    user = require_user()
    entrant = body(EntrantInput)
    account = None
    if entrant.user_id is not None:
        account = User.get_or_none(User.id == entrant.user_id)
        if account is None:
            raise ValidationError({"user_id": "no such user"})
    visible_tournament(tid, user)
    p = services.add_entrant(tid, user, display_name=entrant.display_name, user=account, now=now())
    return participant_response(p, 201)


@bp.post("/tournaments/<id:tid>/participants/bulk_add")
@documented("Organizer adds entrants by name", body=(EntrantsInput,), status=201, **LIST)
def bulk_add(tid: int) -> Response:
    user = require_user()
    names = body(EntrantsInput).names
    visible_tournament(tid, user)
    added = services.add_entrants(tid, user, names, now=now())
    response = jsonify({"participants": [serializers.participant(p) for p in added]})
    response.status_code = 201
    return response


@bp.put("/tournaments/<id:tid>/participants/<id:pid>/seed")
@documented("Set a participant's seed", body=(SeedInput,), **ONE)
def set_seed(tid: int, pid: int) -> Response:
    user = require_user()
    seed = body(SeedInput).seed
    t = visible_tournament(tid, user)
    p = participant_of(t, pid)
    return participant_response(services.set_seed(t.id, user, p.id, seed, now=now()))


@bp.delete("/tournaments/<id:tid>/participants/<id:pid>")
@documented("Remove before the start, disqualify after", **ONE)
def remove_participant(tid: int, pid: int) -> Response:
    user = require_user()
    t = visible_tournament(tid, user)
    p = participant_of(t, pid)
    return participant_response(services.remove_participant(t.id, user, p.id, now=now()))


@bp.post("/tournaments/<id:tid>/register")
@documented("Join (or the waitlist)", status=201, **ONE)
def register(tid: int) -> Response:
    user = require_user()
    json_body(required=False)
    visible_tournament(tid, user)
    return participant_response(services.register(tid, user, now=now()), 201)


@bp.delete("/tournaments/<id:tid>/register")
@documented("Withdraw before the start", **ONE)
def withdraw(tid: int) -> Response:
    user = require_user()
    visible_tournament(tid, user)
    return participant_response(services.withdraw(tid, user, now=now()))


@bp.post("/tournaments/<id:tid>/check_in")
@documented("Check in during the window", **ONE)
def check_in(tid: int) -> Response:
    user = require_user()
    json_body(required=False)
    visible_tournament(tid, user)
    return participant_response(services.check_in(tid, user, now=now()))
