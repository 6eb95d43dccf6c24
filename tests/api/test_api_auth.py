"""The authorization matrix: every mutating endpoint tried as an anonymous
caller (401), as a player with no stake in it and as another organizer
(403), with nothing written by any refusal; and admins may do everything."""

from __future__ import annotations

import pytest

from tests.api.test_api import NOW, Api, user_with_token
from tourno.accounts.models import Role, User
from tourno.api import create_app
from tourno.mail.models import EmailOutbox
from tourno.tournaments import services
from tourno.tournaments.models import Match, MatchReport, MatchState, Participant, Tournament


@pytest.fixture
def world(pg):
    """Organizer A's tournaments: ``pending`` (two players registered) and
    ``underway`` (four players, round 1 open); outsiders with tokens."""
    api = Api(create_app(pg.settings, init_database=False, clock=lambda: NOW))
    owner, owner_token = user_with_token("owner@example.com", Role.ORGANIZER)
    values = dict(name="Cup", game="Chess", format="single_elimination", capacity=4)
    pending = services.publish(services.create_tournament(owner, **values), owner, now=NOW)
    underway = services.publish(services.create_tournament(owner, **values), owner, now=NOW)
    players = [user_with_token(f"p{i}@example.com") for i in range(4)]
    for user, _ in players[:2]:
        services.register(pending, user, now=NOW)
    for user, _ in players:
        services.register(underway, user, now=NOW)
    services.start_tournament(underway, owner, now=NOW)
    match = Match.select().where(Match.tournament == underway.id, Match.state == MatchState.OPEN).first()
    entry = Participant.get(Participant.tournament == pending.id)
    return {
        "api": api,
        "owner": owner_token,
        "player": user_with_token("stranger@example.com")[1],
        "organizer": user_with_token("rival@example.com", Role.ORGANIZER)[1],
        "admin": user_with_token("admin@example.com", Role.ADMIN)[1],
        "pending": pending.id,
        "underway": underway.id,
        "match": match.id,
        "match_player1": match.player1_id,
        "entry": entry.id,
    }


# (method, path template, body, status for an outsider player, status for another organizer).
# Matches a player has no part in: the services' not_your_match (409), by the API's error mapping.
MATRIX = [
    ("POST", "/tournaments", {"name": "X", "game": "G", "format": "swiss", "capacity": 4}, 403, None),
    ("PATCH", "/tournaments/{pending}", {"name": "Mine"}, 403, 403),
    ("DELETE", "/tournaments/{pending}", None, 403, 403),
    ("POST", "/tournaments/{pending}/publish", None, 403, 403),
    ("POST", "/tournaments/{pending}/start", None, 403, 403),
    ("POST", "/tournaments/{underway}/finalize", None, 403, 403),
    ("POST", "/tournaments/{pending}/process_check_ins", None, 403, 403),
    ("POST", "/tournaments/{pending}/announcements", {"subject": "S", "body": "B"}, 403, 403),
    ("POST", "/tournaments/{pending}/participants", {"display_name": "Ringer"}, 403, 403),
    ("POST", "/tournaments/{pending}/participants/bulk_add", {"names": ["R1", "R2"]}, 403, 403),
    ("PUT", "/tournaments/{pending}/participants/{entry}/seed", {"seed": 1}, 403, 403),
    ("DELETE", "/tournaments/{pending}/participants/{entry}", None, 403, 403),
    ("POST", "/tournaments/{pending}/register", None, None, None),
    ("DELETE", "/tournaments/{pending}/register", None, 409, 409),
    ("POST", "/tournaments/{pending}/check_in", None, 409, 409),
    ("POST", "/matches/{match}/reports", {"player1_score": 2, "player2_score": 0}, 409, 409),
    ("POST", "/matches/{match}/reports", {"forfeit_claim": True}, 409, 409),
    ("POST", "/matches/{match}/confirm", None, 409, 409),
    ("POST", "/matches/{match}/dispute", {"comment": "no"}, 409, 409),
    ("POST", "/matches/{match}/resolve", {"player1_score": 2, "player2_score": 0}, 403, 403),
    ("POST", "/matches/{match}/forfeit", {"loser_id": "{match_player1}"}, 403, 403),
    ("POST", "/matches/{match}/reopen", None, 403, 403),
    ("POST", "/matches/{match}/deadline", {"minutes": 60}, 403, 403),
]

ADMIN_READS = [("GET", "/admin/queue"), ("GET", "/admin/jobs/runs")]


def _fill(template, world):
    if isinstance(template, str):
        text = template.format(**world)
        return int(text) if template.startswith("{") and text.isdigit() else text
    if isinstance(template, dict):
        return {k: _fill(v, world) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, world) for v in template]
    return template


def snapshot() -> tuple:
    """Everything a refused request could have touched."""
    return (
        [(t.id, t.version, t.state, t.name) for t in Tournament.select().order_by(Tournament.id)],
        [(p.id, p.version, p.status, p.seed) for p in Participant.select().order_by(Participant.id)],
        [(m.id, m.version, m.state, m.deadline_at) for m in Match.select().order_by(Match.id)],
        MatchReport.select().count(),
        EmailOutbox.select().count(),
        User.select().count(),
    )


def test_every_mutating_endpoint_refuses_anonymous_callers(world):
    api: Api = world["api"]
    before = snapshot()
    for method, path, body, _, _ in MATRIX:
        r = api.call(method, _fill(path, world), None, _fill(body, world))
        assert r.status_code == 401, (method, path, r.get_json())
        assert r.get_json()["error"]["code"] == "unauthorized"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    for method, path in ADMIN_READS:
        assert api.call(method, path).status_code == 401
    assert snapshot() == before


@pytest.mark.parametrize("who", ["player", "organizer"])
def test_outsiders_are_refused_and_nothing_is_written(world, who):
    api: Api = world["api"]
    before = snapshot()
    column = 3 if who == "player" else 4
    for row in MATRIX:
        method, path, body, expected = row[0], row[1], row[2], row[column]
        if expected is None:
            continue
        r = api.call(method, _fill(path, world), world[who], _fill(body, world))
        assert r.status_code == expected, (who, method, path, r.get_json())
        error = r.get_json()["error"]
        if expected == 403:
            assert error["code"] == "permission_denied"
        else:
            assert error["code"] in ("not_your_match", "not_registered", "invalid_state")
    for method, path in ADMIN_READS:
        assert api.call(method, path, world[who]).status_code == 403
    assert snapshot() == before


def test_admins_and_owners_may_act(world):
    api: Api = world["api"]
    r = api.call("PATCH", f"/tournaments/{world['pending']}", world["admin"], {"name": "By admin"})
    assert r.status_code == 200 and r.get_json()["tournament"]["name"] == "By admin"
    r = api.post(
        f"/tournaments/{world['pending']}/announcements", world["admin"], {"subject": "S", "body": "B"}
    )
    assert r.status_code == 202 and r.get_json()["recipients"] == 2
    r = api.post(f"/matches/{world['match']}/deadline", world["owner"], {"minutes": 60})
    assert r.status_code == 200
    r = api.post(
        f"/matches/{world['match']}/resolve", world["admin"], {"player1_score": 1, "player2_score": 0}
    )
    assert r.status_code == 200 and r.get_json()["match"]["state"] == "complete"
    assert api.get("/admin/queue", world["admin"]).status_code == 200
    r = api.call("DELETE", f"/tournaments/{world['pending']}", world["owner"])
    assert r.status_code == 200 and r.get_json()["tournament"]["state"] == "cancelled"
