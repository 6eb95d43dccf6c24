"""Participants: the organizer's list management (add, bulk add, seed,
remove or disqualify) and a player's own registration, withdrawal and
check-in."""

from __future__ import annotations

from flask import Blueprint, jsonify

from tourno.accounts.models import User
from tourno.api import serializers
from tourno.api.auth import current_user, require_user
from tourno.api.context import now, participant_of, service, visible_tournament
from tourno.api.validation import MAX_ID, Form, Query, json_body
from tourno.tournaments import services
from tourno.tournaments.models import Participant, ParticipantStatus
from tourno.tournaments.services.registration import MAX_CAPACITY

bp = Blueprint("participants", __name__)


def participant_response(p: Participant, status: int = 200):
    response = jsonify({"participant": serializers.participant(p)})
    response.status_code = status
    return response


@bp.get("/tournaments/<id:tid>/participants")
def list_participants(tid: int):
    t = visible_tournament(tid, current_user())
    query = Query()
    status = query.choice("status", [s.value for s in ParticipantStatus])
    query.check()
    rows = Participant.select().where(Participant.tournament == t.id)
    if status:
        rows = rows.where(Participant.status == status)
    return jsonify({"participants": [serializers.participant(p) for p in rows.order_by(Participant.id)]})


@bp.post("/tournaments/<id:tid>/participants")
def add_participant(tid: int):
    user = require_user()
    form = Form(json_body(), allowed=("display_name", "user_id"))
    name = form.text("display_name", required=True, max_length=100)
    user_id = form.integer("user_id", low=1, high=MAX_ID)
    entrant = None
    if user_id is not None:
        entrant = User.get_or_none(User.id == user_id)
        if entrant is None:
            form.errors["user_id"] = "no such user"
    form.check()
    visible_tournament(tid, user)
    p = service("add_entrant")(tid, user, display_name=name, user=entrant, now=now())
    return participant_response(p, 201)


@bp.post("/tournaments/<id:tid>/participants/bulk_add")
def bulk_add(tid: int):
    user = require_user()
    form = Form(json_body(), allowed=("names",))
    names = form.raw("names")
    if not isinstance(names, list) or not 1 <= len(names) <= MAX_CAPACITY:
        form.errors["names"] = f"must be a list of 1 to {MAX_CAPACITY} names"
    else:
        for i, name in enumerate(names):
            if not isinstance(name, str) or not 1 <= len(name.strip()) <= 100:
                form.errors[f"names[{i}]"] = "must be 1 to 100 characters"
    form.check()
    visible_tournament(tid, user)
    added = service("add_entrants")(tid, user, [n.strip() for n in names], now=now())
    response = jsonify({"participants": [serializers.participant(p) for p in added]})
    response.status_code = 201
    return response


@bp.put("/tournaments/<id:tid>/participants/<id:pid>/seed")
def set_seed(tid: int, pid: int):
    user = require_user()
    form = Form(json_body(), allowed=("seed",))
    seed = form.integer("seed", required=True, low=1, high=MAX_CAPACITY)
    form.check()
    t = visible_tournament(tid, user)
    p = participant_of(t, pid)
    return participant_response(service("set_seed")(t.id, user, p.id, seed, now=now()))


@bp.delete("/tournaments/<id:tid>/participants/<id:pid>")
def remove_participant(tid: int, pid: int):
    user = require_user()
    t = visible_tournament(tid, user)
    p = participant_of(t, pid)
    return participant_response(service("remove_participant")(t.id, user, p.id, now=now()))


@bp.post("/tournaments/<id:tid>/register")
def register(tid: int):
    user = require_user()
    json_body(required=False)
    visible_tournament(tid, user)
    return participant_response(services.register(tid, user, now=now()), 201)


@bp.delete("/tournaments/<id:tid>/register")
def withdraw(tid: int):
    user = require_user()
    visible_tournament(tid, user)
    return participant_response(services.withdraw(tid, user, now=now()))


@bp.post("/tournaments/<id:tid>/check_in")
def check_in(tid: int):
    user = require_user()
    json_body(required=False)
    visible_tournament(tid, user)
    return participant_response(services.check_in(tid, user, now=now()))
