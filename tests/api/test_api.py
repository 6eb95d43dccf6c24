"""The HTTP API through Flask's test client, on a real PostgreSQL (and a
smoke subset on SQLite): every endpoint's happy path, its refusals with the
one JSON error shape, and bad input that must never reach a 500 or write."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from tests.conftest import DOMAIN_NOW as NOW
from tourno.accounts.models import Role, User
from tourno.api import create_app
from tourno.api.auth import hash_token, issue_token
from tourno.config import Settings
from tourno.mail.models import EmailOutbox, EmailPriority
from tourno.tournaments import services
from tourno.tournaments.models import Match, MatchState, Participant, Tournament

V1 = "/api/v1"


class Api:
    """A test client that remembers tokens by name."""

    def __init__(self, app) -> None:
        self.app = app
        self.client = app.test_client()

    def call(self, method: str, path: str, token: str | None = None, body=None, **kwargs):
        headers = kwargs.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            kwargs["json"] = body
        return self.client.open(
            V1 + path if not path.startswith("/healthz") else path, method=method, headers=headers, **kwargs
        )

    def get(self, path, token=None, **kw):
        return self.call("GET", path, token, **kw)

    def post(self, path, token=None, body=None, **kw):
        return self.call("POST", path, token, body, **kw)


def user_with_token(email: str, role: Role = Role.PLAYER, name: str | None = None) -> tuple[User, str]:
    user = services.create_user(email, name or email.split("@")[0], role=role)
    return user, issue_token(user)


@pytest.fixture
def api(qdb):
    return Api(create_app(qdb.settings, init_database=False, clock=lambda: NOW))


@pytest.fixture
def pg_api(pg):
    return Api(create_app(pg.settings, init_database=False, clock=lambda: NOW))


@pytest.fixture
def org(qdb):
    return user_with_token("org@example.com", Role.ORGANIZER, "Org")


def error_of(response) -> dict:
    body = response.get_json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "fields"}, body
    return body["error"]


def new_tournament(api: Api, token: str, **values) -> dict:
    body = {"name": "Cup", "game": "Chess", "format": "single_elimination", "capacity": 8, **values}
    r = api.post("/tournaments", token, body)
    assert r.status_code == 201, r.get_json()
    return r.get_json()["tournament"]


def published(api: Api, token: str, **values) -> dict:
    t = new_tournament(api, token, **values)
    r = api.post(f"/tournaments/{t['id']}/publish", token)
    assert r.status_code == 200, r.get_json()
    return r.get_json()["tournament"]


# -- health ----------------------------------------------------------------------------------


def test_health_and_readiness(api):
    assert api.client.get("/healthz").get_json() == {"status": "ok"}
    r = api.client.get("/readyz")
    assert r.status_code == 200
    assert r.get_json() == {
        "status": "ready",
        "checks": {"database": "ok", "migrations": "ok", "queue": "ok"},
    }


def test_the_root_is_a_map_and_mail_links_lead_to_the_api(api, organizer):
    from tourno.tournaments import services

    site = api.client  # paths at the site's root, not under /api/v1
    index = site.get("/")
    assert index.status_code == 200
    links = index.get_json()["links"]
    assert links["openapi"] == "/api/v1/openapi.json" and links["health"] == "/healthz"
    for name, path in links.items():
        # The dashboard says it needs TOURNO_SECRET_KEY (503), or asks for a login.
        assert site.get(path).status_code in ((302, 503) if name == "dashboard" else (200,)), path
    t = services.create_tournament(
        organizer, name="Linked", game="Chess", format="single_elimination", capacity=4
    )
    services.publish(t, organizer)
    followed = site.get(f"/tournaments/{t.id}")
    assert followed.status_code == 302 and followed.headers["Location"].endswith(
        f"/api/v1/tournaments/{t.id}"
    )
    assert site.get(followed.headers["Location"]).get_json()["tournament"]["name"] == "Linked"
    assert site.get("/matches/99999").headers["Location"].endswith("/api/v1/matches/99999")
    assert site.get("/tournaments/0").status_code == 404  # the id converter's rule holds here too


def test_readiness_fails_while_a_migration_is_pending(sqlite):
    app = create_app(sqlite.settings, init_database=False)
    last = sqlite.scalar("SELECT name FROM schema_migrations ORDER BY id DESC LIMIT 1")
    sqlite.database.execute_sql("DELETE FROM schema_migrations WHERE name = ?", (last,))
    r = app.test_client().get("/readyz")
    assert r.status_code == 503
    assert r.get_json()["checks"]["migrations"] == f"1 pending: {last}"
    assert r.get_json()["status"] == "unavailable"


def test_a_dead_database_is_a_503_not_a_hang_or_500():
    # Port 1 on loopback refuses at once: the same path as a stopped server.
    app = create_app(Settings(database_url="postgresql://postgres@127.0.0.1:1/nowhere"))
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get(f"{V1}/openapi.json").status_code == 200
    r = client.get(f"{V1}/tournaments")
    assert r.status_code == 503
    assert error_of(r)["code"] == "database_unavailable"
    assert r.headers["Retry-After"] == "5"
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["checks"]["database"].startswith("unreachable")


def test_the_api_pools_a_plain_postgresql_url(pg_template):
    """``postgresql://`` as users write it: requests reuse connections
    instead of connecting anew each time."""
    from playhouse.pool import PooledPostgresqlDatabase

    from tests.conftest import drop_pg, fresh_pg_url
    from tourno.db import database

    url = fresh_pg_url(pg_template)
    assert url.startswith("postgresql://")
    app = create_app(Settings(database_url=url))
    assert isinstance(database.obj, PooledPostgresqlDatabase)

    @app.get("/api/v1/backend")
    def backend():
        return {"pid": database.execute_sql("SELECT pg_backend_pid()").fetchone()[0]}

    client = app.test_client()
    try:
        pids = {client.get(f"{V1}/backend").get_json()["pid"] for _ in range(5)}
        assert len(pids) == 1  # one connection, checked out and back five times
        assert database.is_closed()  # between requests it waits in the pool
    finally:
        database.obj.close_all()
        drop_pg(url)
    # Without the pool (a script, a test), the URL's own scheme decides.
    create_app(Settings(database_url=url), pool=False)
    assert not isinstance(database.obj, PooledPostgresqlDatabase)


def test_a_database_lost_mid_request_is_a_503_then_recovers(pg_template):
    from tests.conftest import drop_pg, fresh_pg_url
    from tourno.db import database

    url = fresh_pg_url(pg_template)
    app = create_app(Settings(database_url=url))

    @app.get("/api/v1/die")
    def die():
        # The server ends this request's session, as a restart or failover would.
        database.execute_sql("SELECT pg_terminate_backend(pg_backend_pid())")
        database.execute_sql("SELECT 1")
        return {}

    client = app.test_client()
    try:
        r = client.get(f"{V1}/die")
        assert r.status_code == 503 and error_of(r)["code"] == "database_unavailable"
        # The broken connection was dropped at teardown; the next request gets a new one.
        assert client.get(f"{V1}/tournaments").status_code == 200
    finally:
        if not database.is_closed():
            database.close()
        drop_pg(url)


# -- users and tokens --------------------------------------------------------------------------


def test_sign_up_returns_a_token_once_and_stores_only_its_hash(api):
    r = api.post("/users", body={"email": " Ann@Example.com ", "display_name": "Ann"})
    assert r.status_code == 201
    data = r.get_json()
    token = data["token"]
    assert data["user"]["email"] == "ann@example.com" and data["user"]["role"] == "player"
    stored = User.get(User.email == "ann@example.com")
    assert stored.api_token_hash == hash_token(token) and token not in stored.api_token_hash
    me = api.get("/me", token)
    assert me.status_code == 200 and me.get_json()["user"]["id"] == stored.id

    again = api.post("/users", body={"email": "ann@example.com", "display_name": "Ann 2"})
    assert again.status_code == 422
    assert error_of(again)["fields"] == {"email": "is already in use"}
    assert User.select().count() == 1

    # Rotating the token retires the old one.
    fresh = issue_token(stored)
    assert api.get("/me", token).status_code == 401
    assert api.get("/me", fresh).status_code == 200


def test_sign_up_validation_names_every_field(api):
    r = api.post("/users", body={"email": "nope", "display_name": "", "role": "admin"})
    assert r.status_code == 422
    fields = error_of(r)["fields"]
    # Every field at once, the address's shape included (the input model checks it).
    assert fields == {
        "email": "must be an email address",
        "display_name": "must be 1 to 100 characters",
        "role": "is not a known field",
    }
    r = api.post("/users", body={"email": "nope", "display_name": "X"})
    assert error_of(r)["fields"] == {"email": "must be an email address"}
    assert User.select().count() == 0


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer not-a-token", "Basic dXNlcjpwdw==", "bearer " + "x" * 300, "Token abc"],
)
def test_bad_credentials_are_401_with_a_challenge(pg_api, header):
    r = pg_api.get("/me", headers={"Authorization": header})
    assert r.status_code == 401
    assert error_of(r)["code"] == "unauthorized"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_anonymous_me_is_401(pg_api):
    assert pg_api.get("/me").status_code == 401
    assert pg_api.get("/me/matches").status_code == 401


# -- malformed requests ----------------------------------------------------------------------------


def test_malformed_bodies_are_400_and_write_nothing(pg_api):
    cases = [
        dict(data="{", content_type="application/json"),
        dict(data='{"email": NaN}', content_type="application/json"),
        dict(data='{"email": 1e400}', content_type="application/json"),
        dict(data="[1, 2]", content_type="application/json"),
        dict(data='"text"', content_type="application/json"),
        dict(data=b"\xff\xfe{}", content_type="application/json"),
        dict(data="[" * 100_000, content_type="application/json"),
        dict(data='{"email": "a@b.c", "display_name": "A"}', content_type="text/plain"),
        dict(data="email=a@b.c", content_type="application/x-www-form-urlencoded"),
        dict(data=""),
    ]
    for case in cases:
        r = pg_api.client.post(f"{V1}/users", **case)
        assert r.status_code == 400, (case, r.get_json())
        assert error_of(r)["code"] == "bad_request"
    assert User.select().count() == 0


def test_unstorable_strings_are_422_not_a_driver_error(pg_api):
    for bad in ("A\x00B", "\ud800"):
        raw = json.dumps({"email": "a@b.c", "display_name": bad})
        r = pg_api.client.post(f"{V1}/users", data=raw, content_type="application/json")
        assert r.status_code == 422, r.get_json()
        assert "display_name" in error_of(r)["fields"]
    r = pg_api.get("/tournaments", query_string={"game": "a\x00b"})
    assert r.status_code == 422 and "game" in error_of(r)["fields"]
    assert User.select().count() == 0


def test_oversized_body_is_413(pg_api):
    big = json.dumps({"email": "a@b.c", "display_name": "x" * (2 * 1024 * 1024)})
    r = pg_api.client.post(f"{V1}/users", data=big, content_type="application/json")
    assert r.status_code == 413
    assert error_of(r)["code"] == "payload_too_large"


def test_an_empty_enum_query_value_is_422_like_any_bad_value(api, org):
    _, token = org
    tid = new_tournament(api, token)["id"]
    for path, name in [
        ("/tournaments", "state"),
        ("/tournaments", "format"),
        (f"/tournaments/{tid}/participants", "status"),
        (f"/tournaments/{tid}", "include"),
    ]:
        empty = api.get(path, token, query_string={name: ""})
        bogus = api.get(path, token, query_string={name: "bogus"})
        assert empty.status_code == 422, (path, name, empty.get_json())
        assert error_of(empty)["fields"] == error_of(bogus)["fields"], (path, name)
        assert list(error_of(empty)["fields"]) == [name]
    # Not an enum: empty means absent, as before.
    r = api.get("/tournaments", token, query_string={"page": "", "game": ""})
    assert r.status_code == 200 and r.get_json()["total"] == 1


def test_game_length_is_checked_on_what_is_sent_and_what_is_stored_is_trimmed(api, org):
    _, token = org
    r = api.post("/tournaments", token, {"name": "Cup", "game": "  Go  ", "format": "swiss", "capacity": 8})
    assert r.status_code == 201, r.get_json()
    assert r.get_json()["tournament"]["game"] == "Go"
    document = api.get("/openapi.json").get_json()
    game_schema = document["components"]["schemas"]["TournamentInput"]["properties"]["game"]
    limit = game_schema["maxLength"]
    # What the document allows is accepted, the padding trimmed...
    ok = api.post(
        "/tournaments",
        token,
        {"name": "Cup", "game": " " + "g" * (limit - 2) + " ", "format": "swiss", "capacity": 8},
    )
    assert ok.status_code == 201, ok.get_json()
    assert ok.get_json()["tournament"]["game"] == "g" * (limit - 2)
    # ...and a longer text is refused even when trimming would make it fit.
    for game in ["g" * (limit + 1), "  " + "g" * limit + "  ", "   "]:
        bad = api.post("/tournaments", token, {"name": "Cup", "game": game, "format": "swiss", "capacity": 8})
        assert bad.status_code == 422, (len(game), bad.get_json())
        assert list(error_of(bad)["fields"]) == ["game"]
        patch = api.call("PATCH", f"/tournaments/{ok.get_json()['tournament']['id']}", token, {"game": game})
        assert patch.status_code == 422, (len(game), patch.get_json())
    assert Tournament.select().count() == 2


def test_unknown_paths_methods_and_huge_ids(pg_api):
    r = pg_api.get("/nowhere")
    assert r.status_code == 404 and error_of(r)["code"] == "not_found"
    r = pg_api.call("PUT", "/tournaments")
    assert r.status_code == 405 and error_of(r)["code"] == "method_not_allowed"
    assert "POST" in r.headers["Allow"]
    for path in ("/tournaments/99999999999999999999999", "/tournaments/0", "/matches/-1", "/tournaments/1x"):
        assert pg_api.get(path).status_code == 404, path
    r = pg_api.get("/tournaments/9223372036854775807")
    assert r.status_code == 404 and error_of(r)["code"] == "not_found"


def test_an_unexpected_exception_is_a_logged_500_in_the_same_shape(pg, caplog):
    app = create_app(pg.settings, init_database=False)

    @app.get("/boom")
    def boom():
        raise RuntimeError("kaboom")

    r = app.test_client().get("/boom")
    assert r.status_code == 500
    assert error_of(r)["code"] == "internal_error"
    assert "kaboom" not in r.get_data(as_text=True)
    assert any("unhandled error" in rec.getMessage() for rec in caplog.records)


# -- tournaments -----------------------------------------------------------------------------------


def test_create_show_list_and_drafts_stay_private(api, org):
    _, token = org
    t = new_tournament(api, token, starts_at="2026-12-01T18:00:00+01:00", settings={"third_place": True})
    assert t["state"] == "draft" and t["starts_at"] == "2026-12-01T17:00:00Z"
    assert t["settings"] == {"third_place": True}
    _, player = user_with_token("p@example.com")
    _, other_org = user_with_token("o2@example.com", Role.ORGANIZER)

    # A draft is visible to its organizer only.
    assert api.get(f"/tournaments/{t['id']}", token).status_code == 200
    for who in (None, player, other_org):
        assert api.get(f"/tournaments/{t['id']}", who).status_code == 404
        assert api.get("/tournaments", who).get_json()["total"] == 0
    assert api.get("/tournaments", token).get_json()["total"] == 1

    r = api.post(f"/tournaments/{t['id']}/publish", token)
    assert r.status_code == 200 and r.get_json()["tournament"]["state"] == "pending"
    assert r.get_json()["tournament"]["registration_open"] is True
    listed = api.get("/tournaments").get_json()
    assert [x["id"] for x in listed["tournaments"]] == [t["id"]]
    r = api.post(f"/tournaments/{t['id']}/publish", token)
    assert r.status_code == 409 and error_of(r)["code"] == "invalid_state"


def test_list_filters_and_pagination(pg_api, pg):
    _, token = user_with_token("org@example.com", Role.ORGANIZER)
    for i in range(5):
        published(
            pg_api,
            token,
            name=f"T{i}",
            game="Go" if i % 2 else "Chess",
            format="round_robin" if i < 2 else "swiss",
        )
    page = pg_api.get("/tournaments", query_string={"per_page": 2, "page": 2}).get_json()
    assert page["total"] == 5 and page["page"] == 2 and len(page["tournaments"]) == 2
    assert pg_api.get("/tournaments", query_string={"game": "Go"}).get_json()["total"] == 2
    assert pg_api.get("/tournaments", query_string={"format": "round_robin"}).get_json()["total"] == 2
    assert pg_api.get("/tournaments", query_string={"state": "pending"}).get_json()["total"] == 5
    assert pg_api.get("/tournaments", query_string={"state": "complete"}).get_json()["total"] == 0
    r = pg_api.get("/tournaments", query_string={"state": "bogus", "per_page": "0", "page": "x"})
    assert r.status_code == 422
    assert set(error_of(r)["fields"]) == {"state", "per_page", "page"}
    r = pg_api.get("/tournaments", query_string={"per_page": "101"})
    assert r.status_code == 422


def test_create_validation_is_per_field_and_writes_nothing(pg_api):
    _, token = user_with_token("org@example.com", Role.ORGANIZER)
    r = pg_api.post(
        "/tournaments",
        token,
        {
            "name": "",
            "game": 7,
            "format": "knockout",
            "capacity": 1,
            "starts_at": "tomorrow",
            "colour": "red",
        },
    )
    assert r.status_code == 422
    # Every bad field at once (the input model), not the unknown and the times first.
    assert set(error_of(r)["fields"]) == {"name", "game", "format", "capacity", "starts_at", "colour"}
    r = pg_api.post("/tournaments", token, {"name": "", "game": 7, "format": "knockout", "capacity": True})
    assert set(error_of(r)["fields"]) == {"name", "game", "format", "capacity"}
    r = pg_api.post("/tournaments", token, {"name": "A", "game": "B", "format": "swiss", "capacity": 2**70})
    assert r.status_code == 422 and "capacity" in error_of(r)["fields"]
    r = pg_api.post(
        "/tournaments",
        token,
        {"name": "A", "game": "B", "format": "swiss", "capacity": 8, "starts_at": "2026-12-01T10:00:00"},
    )
    assert error_of(r)["fields"]["starts_at"].startswith("must be an ISO 8601 date-time with a timezone")
    assert Tournament.select().count() == 0


def test_players_cannot_create_tournaments(pg_api):
    _, player = user_with_token("p@example.com")
    r = pg_api.post("/tournaments", player, {"name": "A", "game": "B", "format": "swiss", "capacity": 8})
    assert r.status_code == 403 and error_of(r)["code"] == "permission_denied"
    assert pg_api.post("/tournaments", None, {"name": "A"}).status_code == 401


def test_update_and_cancel(pg_api):
    _, token = user_with_token("org@example.com", Role.ORGANIZER)
    t = published(pg_api, token)
    r = pg_api.call("PATCH", f"/tournaments/{t['id']}", token, {"name": "Renamed", "capacity": 16})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["tournament"]["name"] == "Renamed" and r.get_json()["tournament"]["capacity"] == 16
    r = pg_api.call("PATCH", f"/tournaments/{t['id']}", token, {"format": "swiss"})
    assert r.status_code == 422 and "format" in error_of(r)["fields"]
    r = pg_api.call("DELETE", f"/tournaments/{t['id']}", token)
    assert r.status_code == 200 and r.get_json()["tournament"]["state"] == "cancelled"
    r = pg_api.call("DELETE", f"/tournaments/{t['id']}", token)
    assert r.status_code == 409


# -- participants --------------------------------------------------------------------------------


def test_register_withdraw_waitlist_and_full(api, org):
    _, token = org
    t = published(api, token, capacity=2, waitlist_enabled=False)
    players = [user_with_token(f"p{i}@example.com") for i in range(3)]
    tid = t["id"]
    for _, ptoken in players[:2]:
        r = api.post(f"/tournaments/{tid}/register", ptoken)
        assert r.status_code == 201 and r.get_json()["participant"]["status"] == "registered"
    again = api.post(f"/tournaments/{tid}/register", players[0][1])
    assert again.status_code == 409 and error_of(again)["code"] == "already_registered"
    full = api.post(f"/tournaments/{tid}/register", players[2][1])
    assert full.status_code == 409 and error_of(full)["code"] == "tournament_full"

    r = api.call("DELETE", f"/tournaments/{tid}/register", players[0][1])
    assert r.status_code == 200 and r.get_json()["participant"]["status"] == "withdrawn"
    r = api.call("DELETE", f"/tournaments/{tid}/register", players[0][1])
    assert r.status_code == 409 and error_of(r)["code"] == "not_registered"
    assert api.post(f"/tournaments/{tid}/register", players[2][1]).status_code == 201

    listed = api.get(f"/tournaments/{tid}/participants").get_json()["participants"]
    assert [p["status"] for p in listed] == ["withdrawn", "registered", "registered"]
    only = api.get(f"/tournaments/{tid}/participants", query_string={"status": "registered"}).get_json()
    assert len(only["participants"]) == 2
    shown = api.get(f"/tournaments/{tid}", query_string={"include": "participants"}).get_json()["tournament"]
    assert shown["participants_count"] == 2 and len(shown["participants"]) == 3
    r = api.post(f"/tournaments/{tid}/check_in", players[1][1])
    assert r.status_code == 409 and error_of(r)["code"] == "invalid_state"
    assert api.get(f"/tournaments/{tid}", query_string={"include": "nope"}).status_code == 422


def test_check_in_window_shows_checking_in(pg, pg_api):
    _, token = user_with_token("org@example.com", Role.ORGANIZER)
    starts = NOW + dt.timedelta(minutes=30)
    t = published(pg_api, token, starts_at=starts.isoformat(), check_in_enabled=True, check_in_minutes=60)
    assert t["state"] == "checking_in"
    _, player = user_with_token("p@example.com")
    assert pg_api.post(f"/tournaments/{t['id']}/register", player).status_code == 201
    r = pg_api.post(f"/tournaments/{t['id']}/check_in", player)
    assert r.status_code == 200 and r.get_json()["participant"]["checked_in_at"] == "2026-11-28T12:00:00Z"
    r = pg_api.post(f"/tournaments/{t['id']}/process_check_ins", token)
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["tournament"]["state"] == "checked_in"


def test_organizer_adds_seeds_and_removes_entrants(pg_api):
    _, token = user_with_token("org@example.com", Role.ORGANIZER)
    t = published(pg_api, token, capacity=4)
    tid = t["id"]
    r = pg_api.post(f"/tournaments/{tid}/participants", token, {"display_name": "Walk-in"})
    assert r.status_code == 201 and r.get_json()["participant"]["user_id"] is None
    r = pg_api.post(f"/tournaments/{tid}/participants/bulk_add", token, {"names": ["A", "B"]})
    assert r.status_code == 201 and [p["display_name"] for p in r.get_json()["participants"]] == ["A", "B"]
    r = pg_api.post(f"/tournaments/{tid}/participants/bulk_add", token, {"names": ["C", " ", 5]})
    assert r.status_code == 422 and set(error_of(r)["fields"]) == {"names[1]", "names[2]"}
    r = pg_api.post(f"/tournaments/{tid}/participants", token, {"display_name": "X", "user_id": 999999})
    assert r.status_code == 422 and error_of(r)["fields"] == {"user_id": "no such user"}
    pid = r = pg_api.get(f"/tournaments/{tid}/participants").get_json()["participants"][1]["id"]
    r = pg_api.call("PUT", f"/tournaments/{tid}/participants/{pid}/seed", token, {"seed": 1})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["participant"]["seed"] == 1
    r = pg_api.call("PUT", f"/tournaments/{tid}/participants/{pid}/seed", token, {"seed": "1"})
    assert r.status_code == 422
    r = pg_api.call("DELETE", f"/tournaments/{tid}/participants/{pid}", token)
    assert r.status_code == 200 and r.get_json()["participant"]["status"] == "withdrawn"
    assert pg_api.call("DELETE", f"/tournaments/{tid}/participants/999999", token).status_code == 404
    assert Tournament.get_by_id(tid).participants_count == 2


def test_announcements_write_one_bulk_row_per_opted_in_participant(pg_api):
    _, token = user_with_token("org@example.com", Role.ORGANIZER)
    t = published(pg_api, token)
    users = [user_with_token(f"p{i}@example.com") for i in range(3)]
    for _, ptoken in users:
        assert pg_api.post(f"/tournaments/{t['id']}/register", ptoken).status_code == 201
    User.update(notifications_opt_out=True).where(User.id == users[2][0].id).execute()
    user_with_token("bystander@example.com")
    before = EmailOutbox.select().count()
    r = pg_api.post(f"/tournaments/{t['id']}/announcements", token, {"subject": "Hi", "body": "Starts soon"})
    assert r.status_code == 202
    key = r.get_json()["announcement_key"]
    assert r.get_json()["recipients"] == 2
    rows = list(EmailOutbox.select().where(EmailOutbox.template == "announcement").order_by(EmailOutbox.id))
    assert EmailOutbox.select().count() == before + 2
    assert [row.dedupe_key for row in rows] == [f"announce:{key}:{u.id}" for u, _ in users[:2]]
    assert {row.priority for row in rows} == {int(EmailPriority.BULK)}
    assert rows[0].context["subject"] == "Hi" and rows[0].context["body"] == "Starts soon"
    # A second announcement is a new key, so new rows.
    r2 = pg_api.post(f"/tournaments/{t['id']}/announcements", token, {"subject": "Again", "body": "x"})
    assert r2.get_json()["announcement_key"] != key
    assert EmailOutbox.select().where(EmailOutbox.template == "announcement").count() == 4
    # Another organizer, a player: refused, nothing written.
    _, other = user_with_token("o2@example.com", Role.ORGANIZER)
    assert (
        pg_api.post(f"/tournaments/{t['id']}/announcements", other, {"subject": "S", "body": "B"}).status_code
        == 403
    )
    assert (
        pg_api.post(
            f"/tournaments/{t['id']}/announcements", users[0][1], {"subject": "S", "body": "B"}
        ).status_code
        == 403
    )
    r = pg_api.post(f"/tournaments/{t['id']}/announcements", token, {"subject": "", "body": 3})
    assert r.status_code == 422 and set(error_of(r)["fields"]) == {"subject", "body"}
    assert EmailOutbox.select().where(EmailOutbox.template == "announcement").count() == 4


# -- start, matches, results ------------------------------------------------------------------------


def started(api: Api, token: str, n: int = 4, **values) -> tuple[dict, list[tuple[User, str]]]:
    t = published(api, token, capacity=n, **values)
    players = [user_with_token(f"p{i}@example.com", name=f"P{i}") for i in range(n)]
    for _, ptoken in players:
        assert api.post(f"/tournaments/{t['id']}/register", ptoken).status_code == 201
    r = api.post(f"/tournaments/{t['id']}/start", token)
    assert r.status_code == 200, r.get_json()
    return r.get_json()["tournament"], players


def test_start_lists_matches_and_my_matches(api, org):
    _, token = org
    t, players = started(api, token)
    assert t["state"] == "underway"
    matches = api.get(f"/tournaments/{t['id']}/matches").get_json()["matches"]
    assert len(matches) == 3
    assert (
        api.get(f"/tournaments/{t['id']}/matches", query_string={"round": 1}).get_json()["matches"]
        == matches[:2]
    )
    open_ = api.get(f"/tournaments/{t['id']}/matches", query_string={"state": "open"}).get_json()["matches"]
    assert len(open_) == 2 and all(m["deadline_at"] for m in open_)
    mine = api.get("/me/matches", players[0][1]).get_json()
    assert mine["total"] == 1 and mine["matches"][0]["state"] == "open"
    pid = mine["matches"][0]["player1_id"]
    by_participant = api.get(
        f"/tournaments/{t['id']}/matches", query_string={"participant_id": pid}
    ).get_json()
    assert [m["id"] for m in by_participant["matches"]] == [mine["matches"][0]["id"]]
    shown = api.get(f"/tournaments/{t['id']}", query_string={"include": "participants,matches"}).get_json()
    assert len(shown["tournament"]["matches"]) == 3 and len(shown["tournament"]["participants"]) == 4
    r = api.post(f"/tournaments/{t['id']}/start", token)
    assert r.status_code == 409 and error_of(r)["code"] == "invalid_state"


def _players_of(match: dict) -> tuple[int, int]:
    return match["player1_id"], match["player2_id"]


def _token_of(players, participant_id: int) -> str:
    user_id = Participant.get_by_id(participant_id).user_id
    return next(tok for u, tok in players if u.id == user_id)


def test_report_confirm_dispute_resolve(pg_api):
    _, token = user_with_token("org@example.com", Role.ORGANIZER)
    t, players = started(pg_api, token)
    first, second = pg_api.get(f"/tournaments/{t['id']}/matches", query_string={"state": "open"}).get_json()[
        "matches"
    ]
    p1, p2 = _players_of(first)
    tok1, tok2 = _token_of(players, p1), _token_of(players, p2)

    r = pg_api.post(f"/matches/{first['id']}/reports", tok1, {"player1_score": 2, "player2_score": 1})
    assert r.status_code == 201, r.get_json()
    assert r.get_json()["match"]["state"] == "awaiting_confirmation"
    assert len(r.get_json()["match"]["reports"]) == 1
    # Reports are visible to the players and the organizer, not to the public.
    assert "reports" not in pg_api.get(f"/matches/{first['id']}").get_json()["match"]
    assert len(pg_api.get(f"/matches/{first['id']}", token).get_json()["match"]["reports"]) == 1
    r = pg_api.post(f"/matches/{first['id']}/confirm", tok2)
    assert r.status_code == 200 and r.get_json()["match"]["state"] == "complete"
    assert r.get_json()["match"]["winner_id"] == p1
    # The organizer reopens it (players may not), and the players report it again.
    assert pg_api.post(f"/matches/{first['id']}/reopen", tok1).status_code == 403
    r = pg_api.post(f"/matches/{first['id']}/reopen", token)
    assert r.status_code == 200 and r.get_json()["match"]["state"] == "open"
    assert r.get_json()["match"]["winner_id"] is None
    assert (
        pg_api.post(
            f"/matches/{first['id']}/reports", tok1, {"player1_score": 2, "player2_score": 1}
        ).status_code
        == 201
    )
    assert pg_api.post(f"/matches/{first['id']}/confirm", tok2).get_json()["match"]["winner_id"] == p1

    # A winner contradicting the scores is a 422 on the API's field name.
    q1, q2 = _players_of(second)
    tq1, tq2 = _token_of(players, q1), _token_of(players, q2)
    r = pg_api.post(
        f"/matches/{second['id']}/reports", tq1, {"player1_score": 2, "player2_score": 0, "winner_id": q2}
    )
    assert r.status_code == 422 and "winner_id" in error_of(r)["fields"]
    r = pg_api.post(
        f"/matches/{second['id']}/reports",
        tq1,
        {"player1_score": 2, "player2_score": 0, "game_scores": [[1, 0], [1]]},
    )
    assert r.status_code == 422 and "game_scores" in error_of(r)["fields"]
    r = pg_api.post(f"/matches/{second['id']}/reports", tq1, {"player1_score": 2, "player2_score": 0})
    assert r.status_code == 201
    r = pg_api.post(f"/matches/{second['id']}/dispute", tq2, {"comment": "I won"})
    assert r.status_code == 200 and r.get_json()["match"]["state"] == "disputed"
    # Not your match: the winner of the first match cannot report this one.
    r = pg_api.post(f"/matches/{second['id']}/reports", tok1, {"player1_score": 0, "player2_score": 2})
    assert r.status_code == 409 and error_of(r)["code"] == "not_your_match"
    r = pg_api.post(f"/matches/{second['id']}/resolve", tq1, {"player1_score": 0, "player2_score": 2})
    assert r.status_code == 403
    r = pg_api.post(f"/matches/{second['id']}/resolve", token, {"player1_score": 0, "player2_score": 2})
    assert r.status_code == 200 and r.get_json()["match"]["winner_id"] == q2

    final = pg_api.get(f"/tournaments/{t['id']}/matches", query_string={"state": "open"}).get_json()[
        "matches"
    ]
    assert len(final) == 1 and set(_players_of(final[0])) == {p1, q2}
    r = pg_api.post(f"/matches/{final[0]['id']}/deadline", token, {"minutes": 30})
    assert r.status_code == 200 and r.get_json()["match"]["deadline_extensions"] >= 0
    assert pg_api.post(f"/matches/{final[0]['id']}/deadline", token, {"minutes": 0}).status_code == 422
    r = pg_api.post(f"/matches/{final[0]['id']}/forfeit", token, {"loser_id": q2})
    assert r.status_code == 200 and r.get_json()["match"]["winner_id"] == p1
    r = pg_api.post(f"/matches/{final[0]['id']}/forfeit", token, {"loser_id": 123})
    assert r.status_code == 409
    standings = pg_api.get(f"/tournaments/{t['id']}/standings").get_json()["standings"]
    assert standings[0]["participant_id"] == p1 and standings[0]["rank"] == 1
    state = pg_api.get(f"/tournaments/{t['id']}").get_json()["tournament"]["state"]
    assert state == "complete"

    # Reopening a semi-final of the finished tournament resets the final and
    # puts the tournament back underway.
    r = pg_api.post(f"/matches/{first['id']}/reopen", token)
    assert r.status_code == 200 and r.get_json()["match"]["state"] == "open"
    assert pg_api.get(f"/tournaments/{t['id']}").get_json()["tournament"]["state"] == "underway"
    assert pg_api.get(f"/matches/{final[0]['id']}").get_json()["match"]["winner_id"] is None


def test_forfeit_claim_body_shape(pg_api):
    _, token = user_with_token("org@example.com", Role.ORGANIZER)
    t, players = started(pg_api, token)
    m = pg_api.get(f"/tournaments/{t['id']}/matches", query_string={"state": "open"}).get_json()["matches"][0]
    tok = _token_of(players, m["player1_id"])
    r = pg_api.post(f"/matches/{m['id']}/reports", tok, {"forfeit_claim": False})
    assert r.status_code == 422 and "forfeit_claim" in error_of(r)["fields"]
    r = pg_api.post(f"/matches/{m['id']}/reports", tok, {"forfeit_claim": True, "player1_score": 1})
    assert r.status_code == 422 and "player1_score" in error_of(r)["fields"]
    r = pg_api.post(f"/matches/{m['id']}/reports", tok, {"forfeit_claim": True, "comment": "no show"})
    assert r.status_code == 201, r.get_json()
    assert Match.get_by_id(m["id"]).state != MatchState.OPEN


# -- admin -----------------------------------------------------------------------------------------


def test_admin_views(api):
    _, admin = user_with_token("admin@example.com", Role.ADMIN)
    _, player = user_with_token("p@example.com")
    from tests.support.jobs import Noop  # a test job, so the queue has something to count

    Noop().dispatch()
    r = api.get("/admin/queue", admin)
    assert r.status_code == 200, r.get_json()
    data = r.get_json()
    assert data["failed"] == 0 and data["workers"] == []
    assert {"queue": "default", "ready": 1}.items() <= data["queues"][0].items()
    assert api.get("/admin/queue", player).status_code == 403
    assert api.get("/admin/queue").status_code == 401
    from tourno.scheduler.models import JobRun

    JobRun.create(job="CheckMatchDeadlinesJob", started_at=NOW, finished_at=NOW, changed=3, host="h", pid=1)
    runs = api.get("/admin/jobs/runs", admin)
    assert runs.status_code == 200
    (run,) = runs.get_json()["runs"]
    assert run["job"] == "CheckMatchDeadlinesJob" and run["changed"] == 3
    assert run["started_at"] == "2026-11-28T12:00:00Z"
    assert api.get("/admin/jobs/runs", player).status_code == 403


def test_admin_queue_shows_paused_queues(api):
    from tests.support.jobs import Noop
    from tourno.queue import pauses

    _, admin = user_with_token("admin@example.com", Role.ADMIN)
    Noop().dispatch()
    pauses.pause(["default", "mail"])
    data = api.get("/admin/queue", admin).get_json()
    assert [p["queue"] for p in data["paused"]] == ["default", "mail"]
    at = data["paused"][0]["paused_at"]
    assert at.endswith("Z") and dt.datetime.fromisoformat(at)
    # A paused queue is listed even when it holds no job.
    rows = {q["queue"]: q for q in data["queues"]}
    assert rows["default"]["ready"] == 1 and rows["default"]["paused_at"] == at
    assert rows["mail"]["ready"] == 0 and rows["mail"]["paused_at"] is not None
    pauses.resume(["default", "mail"])
    data = api.get("/admin/queue", admin).get_json()
    assert data["paused"] == [] and [q["paused_at"] for q in data["queues"]] == [None]


# -- the OpenAPI document --------------------------------------------------------------------------


def test_openapi_document_matches_the_routes(pg_api):
    doc = pg_api.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    served = set()
    for rule in pg_api.app.url_map.iter_rules():
        # The operator's HTML pages at /admin (tourno.dashboard) are not the JSON API's,
        # nor the site's root map and the mail links' redirects (tourno.api.index).
        if rule.endpoint == "static" or rule.endpoint.startswith(("dashboard.", "index.")):
            continue
        path = rule.rule.replace("<id:", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            served.add((path, method))
    assert documented == served
