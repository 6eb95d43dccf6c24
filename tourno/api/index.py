"""The site's root: ``/`` says what this server offers (a newcomer who opens
``http://localhost:8000`` after ``tourno up`` gets a map, not a 404), and
the links Tourno's mails carry (``TOURNO_APP_URL/tournaments/ID``,
``/matches/ID``) lead to the API's JSON for them when no front-end is
deployed at that URL (the local demo; with a front-end, its own pages
answer those paths and these routes are never reached)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, redirect
from werkzeug.wrappers import Response as WerkzeugResponse

import tourno
from tourno.api import API_PREFIX

bp = Blueprint("index", __name__)


@bp.get("/")
def index() -> Response:
    links = {
        "api": f"{API_PREFIX}/tournaments",
        "openapi": f"{API_PREFIX}/openapi.json",
        "health": "/healthz",
        "ready": "/readyz",
        "metrics": "/metrics",
        # For admins; 503 until TOURNO_SECRET_KEY is set (the page says so).
        "dashboard": "/admin",
    }
    return jsonify({"name": "Tourno", "version": tourno.__version__, "links": links})


@bp.get("/tournaments/<id:tid>")
def tournament_link(tid: int) -> WerkzeugResponse:
    return redirect(f"{API_PREFIX}/tournaments/{tid}", code=302)


@bp.get("/matches/<id:mid>")
def match_link(mid: int) -> WerkzeugResponse:
    return redirect(f"{API_PREFIX}/matches/{mid}", code=302)
