"""The API's response cache (``tourno.api.cache``) on a real PostgreSQL:
every change to a tournament's rows gives it a new data version, the cached
bracket is never stale (a warm process answers exactly what a cold one
does), what the clock derives is part of the key, and ETag / If-None-Match
work and change after a write."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

from tests.api.test_api import Api, user_with_token
from tests.conftest import DOMAIN_NOW as NOW
from tests.conftest import make_players
from tourno.accounts.models import Role
from tourno.api import cache, create_app
from tourno.jobs.periodic import CheckMatchDeadlinesJob, SendMatchDeadlineWarningsJob
from tourno.tournaments import reads, services
from tourno.tournaments.errors import AlreadyRegistered
from tourno.tournaments.models import Match, MatchState, Participant, Tournament, TournamentState

HOUR = dt.timedelta(hours=1)


class Clock:
    """The app's clock, moved by the test."""

    def __init__(self, at: dt.datetime) -> None:
        self.at = at

    def __call__(self) -> dt.datetime:
        return self.at


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def warm(pg, clock) -> Api:
    """The app whose cache the test warms."""
    return Api(create_app(pg.settings, init_database=False, clock=clock))


def cold_body(settings, clock: Clock, path: str) -> bytes:
    """What a process with an empty cache answers (a new app, same database)."""
    response = Api(create_app(settings, init_database=False, clock=clock)).get(path)
    assert response.status_code == 200
    return response.get_data()


def data_token(tid: int) -> tuple:
    t, token = reads.tournament_row(tid)
    return token, t.version


# -- a world in each state the services act in ---------------------------------------------


def pending_world(organizer, *, capacity: int = 4, players: int = 3, **values) -> dict:
    t = services.create_tournament(
        organizer, name="Cup", game="Chess", format="single_elimination", capacity=capacity, **values
    )
    services.publish(t, organizer, now=NOW)
    users = make_players(players + 1)
    for user in users[:players]:
        services.register(t, user, now=NOW)
    return {"t": t, "org": organizer, "users": users, "spare": users[players]}


def underway_world(organizer) -> dict:
    world = pending_world(organizer, players=4)
    services.start_tournament(world["t"], organizer, now=NOW)
    match = Match.select().where(Match.tournament == world["t"].id).order_by(Match.id).first()
    by_participant = {p.id: p for p in Participant.select().where(Participant.tournament == world["t"].id)}
    users = {u.id: u for u in world["users"]}
    world["m"] = match
    world["p1"] = users[by_participant[match.player1_id].user_id]
    world["p2"] = users[by_participant[match.player2_id].user_id]
    return world


def reported(world: dict) -> dict:
    services.report_result(world["m"], world["p1"], player1_score=2, player2_score=0, now=NOW)
    return world


def completed(world: dict) -> dict:
    services.confirm_result(reported(world)["m"], world["p2"], now=NOW)
    return world


def entry_of(world: dict, user) -> Participant:
    return Participant.get(Participant.tournament == world["t"].id, Participant.user == user.id)


def run_warnings(world: dict) -> None:
    m = Match.get_by_id(world["m"].id)
    counts = SendMatchDeadlineWarningsJob().run(now=m.warn_at + dt.timedelta(minutes=1))
    assert counts.changed >= 1 and Match.get_by_id(m.id).deadline_warning_sent_at is not None


def run_deadlines(world: dict) -> None:
    m = Match.get_by_id(world["m"].id)
    counts = CheckMatchDeadlinesJob().run(now=m.deadline_at + dt.timedelta(minutes=1))
    assert counts.changed >= 1


#: (name, world builder, the change) for every kind of service call on a tournament's rows.
CHANGES: list[tuple[str, Callable, Callable]] = [
    ("register", pending_world, lambda w: services.register(w["t"], w["spare"], now=NOW)),
    ("withdraw", pending_world, lambda w: services.withdraw(w["t"], w["users"][0], now=NOW)),
    (
        "register_waitlisted",
        lambda org: pending_world(org, capacity=2, players=2),
        lambda w: services.register(w["t"], w["spare"], now=NOW),
    ),
    (
        "check_in",
        lambda org: pending_world(org, check_in_enabled=True, starts_at=NOW + HOUR, check_in_minutes=90),
        lambda w: services.check_in(w["t"], w["users"][0], now=NOW),
    ),
    (
        "update_tournament",
        pending_world,
        lambda w: services.update_tournament(w["t"], w["org"], {"name": "Renamed"}, now=NOW),
    ),
    (
        "add_entrant",
        pending_world,
        lambda w: services.add_entrant(w["t"], w["org"], display_name="Walk-in", now=NOW),
    ),
    (
        "remove_participant",
        pending_world,
        lambda w: services.remove_participant(w["t"], w["org"], entry_of(w, w["users"][1]), now=NOW),
    ),
    (
        "announce",
        pending_world,
        lambda w: services.announce(w["t"], w["org"], subject="Hello", body="Welcome", now=NOW),
    ),
    (
        "remind_full_tournament",
        lambda org: pending_world(org, players=4),
        lambda w: services.remind_full_tournament(w["t"], now=NOW),
    ),
    ("cancel", pending_world, lambda w: services.cancel_tournament(w["t"], w["org"], now=NOW)),
    (
        "start",
        lambda org: pending_world(org, players=4),
        lambda w: services.start_tournament(w["t"], w["org"], now=NOW),
    ),
    (
        "report",
        underway_world,
        lambda w: services.report_result(w["m"], w["p1"], player1_score=2, player2_score=1, now=NOW),
    ),
    ("claim_forfeit", underway_world, lambda w: services.claim_forfeit(w["m"], w["p1"], now=NOW)),
    (
        "confirm",
        lambda org: reported(underway_world(org)),
        lambda w: services.confirm_result(w["m"], w["p2"], now=NOW),
    ),
    (
        "dispute",
        lambda org: reported(underway_world(org)),
        lambda w: services.dispute_result(w["m"], w["p2"], now=NOW),
    ),
    (
        "resolve",
        underway_world,
        lambda w: services.resolve_match(w["m"], w["org"], player1_score=0, player2_score=3, now=NOW),
    ),
    (
        "forfeit",
        underway_world,
        lambda w: services.forfeit_match(w["m"], w["org"], loser=w["m"].player1_id, now=NOW),
    ),
    (
        "reopen",
        lambda org: completed(underway_world(org)),
        lambda w: services.reopen_match(w["m"], w["org"], now=NOW),
    ),
    (
        "extend_deadline",
        underway_world,
        lambda w: services.extend_deadline(w["m"], w["org"], minutes=60, now=NOW),
    ),
    (
        "disqualify",
        underway_world,
        lambda w: services.disqualify_participant(w["t"], w["org"], w["m"].player1_id, now=NOW),
    ),
    ("deadline_warning_job", underway_world, run_warnings),
    ("deadline_resolution_job", lambda org: reported(underway_world(org)), run_deadlines),
    (
        "deadline_resolution_service",
        lambda org: reported(underway_world(org)),
        lambda w: services.resolve_expired_match(w["m"], now=w["m"].deadline_at + HOUR),
    ),
]


@pytest.mark.parametrize(("name", "build", "change"), CHANGES, ids=[c[0] for c in CHANGES])
def test_every_change_to_a_tournament_gives_it_a_new_version_and_no_stale_read(
    pg, warm, clock, name, build, change
):
    organizer = services.create_user("org@example.com", "Org", role=Role.ORGANIZER)
    world = build(organizer)
    tid = world["t"].id
    path = f"/tournaments/{tid}?include=participants,matches"
    before = warm.get(path)
    assert before.status_code == 200
    assert warm.get(path).get_data() == before.get_data()  # now from the cache
    token = data_token(tid)

    change(world)

    assert data_token(tid) != token
    after = warm.get(path)
    assert after.status_code == 200
    assert after.headers["ETag"] != before.headers["ETag"]
    assert after.get_data() == cold_body(pg.settings, clock, path)


def test_a_service_that_bumps_the_version_is_not_bumped_twice(pg):
    organizer = services.create_user("org@example.com", "Org", role=Role.ORGANIZER)
    world = pending_world(organizer, players=0)
    version = Tournament.get_by_id(world["t"].id).version
    services.register(world["t"], world["spare"], now=NOW)
    assert Tournament.get_by_id(world["t"].id).version == version + 1


def test_a_refused_change_keeps_the_version(pg):
    organizer = services.create_user("org@example.com", "Org", role=Role.ORGANIZER)
    world = pending_world(organizer)
    token = data_token(world["t"].id)
    with pytest.raises(AlreadyRegistered):
        services.register(world["t"], world["users"][0], now=NOW)
    assert data_token(world["t"].id) == token


# -- through the API, in one warm process --------------------------------------------------


def test_get_report_get_shows_the_new_state(pg, warm):
    org, org_token = user_with_token("org@example.com", Role.ORGANIZER, "Org")
    world = underway_world(org)
    tid, mid = world["t"].id, world["m"].id
    tokens = {user.id: services_token(user) for user in (world["p1"], world["p2"])}
    path = f"/tournaments/{tid}?include=matches"

    def match_in(response) -> dict:
        return next(m for m in response.get_json()["tournament"]["matches"] if m["id"] == mid)

    opened = match_in(warm.get(path))
    assert opened["state"] == MatchState.OPEN.value
    cached = response_cache_of(warm)
    hits = cached.hits
    assert match_in(warm.get(path))["state"] == MatchState.OPEN.value
    assert cached.hits == hits + 1

    r = warm.post(f"/matches/{mid}/reports", tokens[world["p1"].id], {"player1_score": 2, "player2_score": 0})
    assert r.status_code == 201, r.get_json()
    shown = match_in(warm.get(path))
    assert shown["state"] == MatchState.AWAITING_CONFIRMATION.value
    assert shown["version"] > opened["version"]

    r = warm.post(f"/matches/{mid}/confirm", tokens[world["p2"].id])
    assert r.status_code == 200, r.get_json()
    shown = match_in(warm.get(path))
    assert (shown["state"], shown["player1_score"]) == (MatchState.COMPLETE.value, 2)
    assert shown["winner_id"] == Match.get_by_id(mid).player1_id
    # The match list is cached the same way and is as fresh.
    listed = warm.get(f"/tournaments/{tid}/matches?state=complete").get_json()["matches"]
    assert [m["id"] for m in listed] == [mid]


def services_token(user) -> str:
    from tourno.api.auth import issue_token

    return issue_token(user)


def response_cache_of(api: Api) -> cache.ResponseCache:
    with api.app.app_context():
        return cache.response_cache()


def test_a_check_in_window_that_opens_changes_the_state_without_any_write(pg, warm, clock):
    organizer = services.create_user("org@example.com", "Org", role=Role.ORGANIZER)
    world = pending_world(organizer, check_in_enabled=True, starts_at=NOW + 3 * HOUR, check_in_minutes=60)
    path = f"/tournaments/{world['t'].id}?include=matches"
    first = warm.get(path)
    assert first.get_json()["tournament"]["state"] == "pending"
    assert warm.get(path).headers["ETag"] == first.headers["ETag"]
    token = data_token(world["t"].id)

    clock.at = NOW + 2 * HOUR + dt.timedelta(minutes=1)
    opened = warm.get(path)
    assert opened.get_json()["tournament"]["state"] == "checking_in"
    assert opened.headers["ETag"] != first.headers["ETag"]
    assert data_token(world["t"].id) == token  # nothing was written: the clock alone
    assert warm.get(path, headers={"If-None-Match": first.headers["ETag"]}).status_code == 200


def test_registration_closing_by_the_clock_is_not_served_from_the_cache(pg, warm, clock):
    organizer = services.create_user("org@example.com", "Org", role=Role.ORGANIZER)
    world = pending_world(organizer, registration_closes_at=NOW + HOUR)
    path = f"/tournaments/{world['t'].id}"
    assert warm.get(path).get_json()["tournament"]["registration_open"] is True
    clock.at = NOW + 2 * HOUR
    assert warm.get(path).get_json()["tournament"]["registration_open"] is False


def test_etag_and_if_none_match(pg, warm):
    org, org_token = user_with_token("org@example.com", Role.ORGANIZER, "Org")
    world = pending_world(org)
    tid = world["t"].id
    path = f"/tournaments/{tid}?include=participants"
    first = warm.get(path)
    etag = first.headers["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert first.headers["Cache-Control"] == "no-cache"

    again = warm.get(path, headers={"If-None-Match": etag})
    assert (again.status_code, again.get_data(), again.headers["ETag"]) == (304, b"", etag)
    assert warm.get(path, headers={"If-None-Match": f'"other", W/{etag}'}).status_code == 304
    assert warm.get(path, headers={"If-None-Match": "*"}).status_code == 304
    assert warm.get(path, headers={"If-None-Match": '"other"'}).status_code == 200
    # Another include is another body, so another tag.
    assert warm.get(f"/tournaments/{tid}").headers["ETag"] != etag

    r = warm.call("PATCH", f"/tournaments/{tid}", org_token, {"name": "Renamed"})
    assert r.status_code == 200, r.get_json()
    changed = warm.get(path, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.get_json()["tournament"]["name"] == "Renamed"
    assert changed.headers["ETag"] != etag
    assert warm.get(path, headers={"If-None-Match": changed.headers["ETag"]}).status_code == 304


def test_the_etag_is_the_same_in_every_process(pg, clock):
    """Two apps (as two gunicorn workers) give the same tag for the same data."""
    organizer = services.create_user("org@example.com", "Org", role=Role.ORGANIZER)
    world = pending_world(organizer)
    path = f"/tournaments/{world['t'].id}?include=matches"
    a = Api(create_app(pg.settings, init_database=False, clock=clock)).get(path)
    b = Api(create_app(pg.settings, init_database=False, clock=clock))
    assert b.get(path, headers={"If-None-Match": a.headers["ETag"]}).status_code == 304


def test_drafts_stay_private_with_a_warm_cache(pg, warm):
    org, org_token = user_with_token("org@example.com", Role.ORGANIZER, "Org")
    _, other_token = user_with_token("other@example.com", Role.ORGANIZER, "Other")
    t = services.create_tournament(org, name="Secret", game="Go", format="swiss", capacity=8)
    path = f"/tournaments/{t.id}?include=matches"
    shown = warm.get(path, org_token)
    assert shown.status_code == 200
    assert shown.headers["Cache-Control"] == "private, no-cache"
    assert warm.get(path, org_token).status_code == 200
    for token in (None, other_token):
        assert warm.get(path, token).status_code == 404
        assert warm.get(path, token, headers={"If-None-Match": shown.headers["ETag"]}).status_code == 404
        assert warm.get(f"/tournaments/{t.id}/matches", token).status_code == 404
    assert Tournament.get_by_id(t.id).state == TournamentState.DRAFT


def test_bad_input_is_still_refused_before_the_cache(pg, warm):
    organizer = services.create_user("org@example.com", "Org", role=Role.ORGANIZER)
    world = pending_world(organizer)
    assert warm.get(f"/tournaments/{world['t'].id}?include=nonsense").status_code == 422
    assert warm.get(f"/tournaments/{world['t'].id}/matches?round=0").status_code == 422
    assert warm.get("/tournaments/999999?include=matches").status_code == 404


def test_sqlite_serves_fresh_bodies_with_an_etag(sqlite):
    app = create_app(sqlite.settings, init_database=False, clock=lambda: NOW)
    api = Api(app)
    org, org_token = user_with_token("org@example.com", Role.ORGANIZER, "Org")
    world = pending_world(org)
    path = f"/tournaments/{world['t'].id}?include=participants"
    first = api.get(path)
    assert api.get(path, headers={"If-None-Match": first.headers["ETag"]}).status_code == 304
    services.register(world["t"], world["spare"], now=NOW)
    after = api.get(path, headers={"If-None-Match": first.headers["ETag"]})
    assert after.status_code == 200
    assert len(after.get_json()["tournament"]["participants"]) == 4
    assert len(response_cache_of(api)) == 0  # no data version on SQLite: nothing kept


# -- the cache itself ------------------------------------------------------------------------


def test_the_cache_is_a_bounded_lru():
    lru = cache.ResponseCache(max_entries=2)
    lru.put("a", b"1")
    lru.put("b", b"2")
    assert lru.get("a") == b"1"  # "a" is now the most recent
    lru.put("c", b"3")
    assert (lru.get("a"), lru.get("b"), lru.get("c")) == (b"1", None, b"3")
    assert len(lru) == 2
    assert (lru.hits, lru.misses) == (3, 1)


def test_the_cache_keeps_to_its_byte_budget():
    lru = cache.ResponseCache(max_entries=100, max_bytes=800)
    lru.put("too big", b"x" * 101)  # over an eighth of the budget: never kept
    assert lru.get("too big") is None
    for i in range(10):
        lru.put(i, b"y" * 100)
    assert lru.size == 800 and len(lru) == 8
    assert lru.get(0) is None and lru.get(1) is None and lru.get(9) == b"y" * 100
    lru.put(9, b"z" * 50)  # replacing an entry counts only the new body
    assert lru.size == 750
