"""One contract: the OpenAPI document, the input limits and the API agree.

For a few limits, end to end on a real PostgreSQL: the number the document
publishes is the one in ``tourno.tournaments.limits``, the API accepts a
value at the limit and refuses one past it with a 422 naming the field, the
service called directly (as a job or the CLI calls it) does the same with a
ValidationError, and where the database has a CHECK on it, PostgreSQL
refuses the value past it too.
"""

from __future__ import annotations

from typing import Any

import peewee
import pytest
from openapi_spec_validator import validate

from tests.api.test_api import Api, error_of, started, user_with_token
from tests.conftest import DOMAIN_NOW as NOW
from tourno.accounts.models import Role, User
from tourno.api import create_app
from tourno.tournaments import limits, services
from tourno.tournaments.errors import ValidationError
from tourno.tournaments.models import Match, MatchState, Tournament


@pytest.fixture
def pg_api(pg) -> Api:
    return Api(create_app(pg.settings, init_database=False, clock=lambda: NOW))


def _document(api: Api) -> dict[str, Any]:
    r = api.get("/openapi.json")
    assert r.status_code == 200
    doc: dict[str, Any] = r.get_json()
    return doc


def _property(doc: dict[str, Any], model: str, name: str) -> dict[str, Any]:
    prop: dict[str, Any] = doc["components"]["schemas"][model]["properties"][name]
    # A nullable field is anyOf [the type, null]: the bounds are on the type.
    for option in prop.get("anyOf", ()):
        if option.get("type") != "null":
            return {**option, **prop}
    return prop


def test_the_served_document_is_valid_openapi(pg_api):
    doc = _document(pg_api)
    assert doc["openapi"] == "3.1.0"
    validate(doc)


def test_every_documented_body_is_a_component_generated_from_a_model(pg_api):
    doc = _document(pg_api)
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            for content in operation.get("requestBody", {}).get("content", {}).values():
                refs = content["schema"].get("oneOf", [content["schema"]])
                for ref in refs:
                    name = ref["$ref"].rsplit("/", 1)[-1]
                    assert name in doc["components"]["schemas"], (method, path, name)


def _create(api: Api, token: str, **values: Any):
    body = {"name": "Cup", "game": "Chess", "format": "swiss", "capacity": 8, **values}
    return api.post("/tournaments", token, body)


def _refused_by_the_service(field: str, call: Any, **arguments: Any) -> None:
    with pytest.raises(ValidationError) as refused:
        call(**arguments)
    assert field in refused.value.errors, (field, arguments, refused.value.errors)


def test_capacity_and_match_deadline_limits_agree_end_to_end(pg, pg_api):
    doc = _document(pg_api)
    capacity = _property(doc, "TournamentInput", "capacity")
    deadline = _property(doc, "TournamentInput", "match_deadline_minutes")
    assert (capacity["minimum"], capacity["maximum"]) == (limits.MIN_CAPACITY, limits.MAX_CAPACITY)
    assert (deadline["minimum"], deadline["maximum"]) == (
        limits.MIN_MATCH_DEADLINE_MINUTES,
        limits.MAX_MATCH_DEADLINE_MINUTES,
    )
    organizer, token = user_with_token("org@example.com", Role.ORGANIZER)

    def create(**values: Any) -> Tournament:
        return services.create_tournament(
            organizer, **{"name": "Cup", "game": "Chess", "format": "swiss", "capacity": 8, **values}
        )

    for field, refused in (
        ("capacity", limits.MAX_CAPACITY + 1),
        ("capacity", limits.MIN_CAPACITY - 1),
        ("match_deadline_minutes", limits.MAX_MATCH_DEADLINE_MINUTES + 1),
        ("match_deadline_minutes", limits.MIN_MATCH_DEADLINE_MINUTES - 1),
    ):
        r = _create(pg_api, token, **{field: refused})
        assert r.status_code == 422 and field in error_of(r)["fields"], (field, refused, r.get_json())
        _refused_by_the_service(field, create, **{field: refused})
    assert Tournament.select().count() == 0

    for field, accepted in (
        ("capacity", limits.MAX_CAPACITY),
        ("capacity", limits.MIN_CAPACITY),
        ("match_deadline_minutes", limits.MAX_MATCH_DEADLINE_MINUTES),
        ("match_deadline_minutes", limits.MIN_MATCH_DEADLINE_MINUTES),
    ):
        r = _create(pg_api, token, **{field: accepted})
        assert r.status_code == 201, (field, accepted, r.get_json())
        assert r.get_json()["tournament"][field] == accepted
        assert getattr(create(**{field: accepted}), field) == accepted

    # The database's CHECK has the same bound.
    t = Tournament.select().first()
    with pytest.raises(peewee.IntegrityError), pg.database.atomic():
        Tournament.update(match_deadline_minutes=limits.MAX_MATCH_DEADLINE_MINUTES + 1).where(
            Tournament.id == t.id
        ).execute()


def test_score_games_and_extension_limits_agree_end_to_end(pg_api):
    doc = _document(pg_api)
    score = _property(doc, "MatchScores", "player1_score")
    games = _property(doc, "MatchScores", "game_scores")
    minutes = _property(doc, "DeadlineExtension", "minutes")
    assert score["maximum"] == limits.MAX_SCORE
    assert games["maxItems"] == limits.MAX_GAMES
    assert games["items"]["items"]["maximum"] == limits.MAX_SCORE
    assert minutes["maximum"] == limits.MAX_EXTENSION_MINUTES
    assert _property(doc, "ResultReport", "game_scores")["maxItems"] == limits.MAX_GAMES

    _, token = user_with_token("org@example.com", Role.ORGANIZER)
    t, _ = started(pg_api, token)
    m = pg_api.get(f"/tournaments/{t['id']}/matches", query_string={"state": "open"}).get_json()["matches"][0]
    resolve, reopen = f"/matches/{m['id']}/resolve", f"/matches/{m['id']}/reopen"
    top = limits.MAX_SCORE

    for field, body in (
        ("player1_score", {"player1_score": top + 1, "player2_score": 0}),
        (
            "game_scores",
            {"player1_score": 1, "player2_score": 0, "game_scores": [[1, 0]] * (limits.MAX_GAMES + 1)},
        ),
        ("game_scores", {"player1_score": 1, "player2_score": 0, "game_scores": [[top + 1, 0]]}),
    ):
        r = pg_api.post(resolve, token, body)
        assert r.status_code == 422 and field in error_of(r)["fields"], (field, r.get_json())
    r = pg_api.post(f"/matches/{m['id']}/deadline", token, {"minutes": limits.MAX_EXTENSION_MINUTES + 1})
    assert r.status_code == 422 and "minutes" in error_of(r)["fields"]
    r = pg_api.post(f"/matches/{m['id']}/deadline", token, {"minutes": limits.MAX_EXTENSION_MINUTES})
    assert r.status_code == 200, r.get_json()

    r = pg_api.post(resolve, token, {"player1_score": top, "player2_score": 0})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["match"]["player1_score"] == top
    assert pg_api.post(reopen, token).status_code == 200
    full = [[top, 0]] * limits.MAX_GAMES
    r = pg_api.post(
        resolve, token, {"player1_score": limits.MAX_GAMES, "player2_score": 0, "game_scores": full}
    )
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["match"]["game_scores"] == full

    # The service itself, as a job or the CLI calls it, on another open match.
    organizer = User.get_by_id(t["organizer_id"])
    other = Match.get(Match.tournament == t["id"], Match.state == MatchState.OPEN, Match.id != m["id"])

    def resolve_other(**result: Any) -> Match:
        return services.resolve_match(
            other.id, organizer, **{"player1_score": 1, "player2_score": 0, **result}
        )

    def extend_other(minutes: int) -> Match:
        return services.extend_deadline(other.id, organizer, minutes=minutes)

    _refused_by_the_service("player1_score", resolve_other, player1_score=top + 1)
    _refused_by_the_service("game_scores", resolve_other, game_scores=[[1, 0]] * (limits.MAX_GAMES + 1))
    _refused_by_the_service("game_scores", resolve_other, game_scores=[[top + 1, 0]])
    _refused_by_the_service("minutes", extend_other, minutes=limits.MAX_EXTENSION_MINUTES + 1)
    assert extend_other(limits.MAX_EXTENSION_MINUTES).deadline_at is not None
    decided = resolve_other(player1_score=top, game_scores=[[top, 0]] * limits.MAX_GAMES)
    assert (decided.player1_score, len(decided.game_scores)) == (top, limits.MAX_GAMES)
