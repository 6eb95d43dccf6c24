"""The input models (``tourno.tournaments.inputs``) without a database: strict
bodies, text-parsing queries, and one message per field worded from the
field's JSON Schema (the one the OpenAPI document publishes)."""

from __future__ import annotations

import datetime as dt

import pytest

from tourno.tournaments import inputs, limits
from tourno.tournaments.errors import ValidationError
from tourno.tournaments.models import TournamentFormat


def problems_of(model: type[inputs.Input], data: dict) -> dict[str, str]:
    with pytest.raises(ValidationError) as caught:
        model.check(data)
    return caught.value.errors


@pytest.mark.parametrize(
    ("value", "why"),
    [(True, "a bool is not a number"), ("8", "text is not a number"), (8.0, "a float is not a whole number")],
)
def test_bodies_are_strict(value, why):
    body = {"name": "Cup", "game": "Chess", "format": "swiss", "capacity": value}
    assert problems_of(inputs.TournamentInput, body) == {
        "capacity": f"must be a whole number from {limits.MIN_CAPACITY} to {limits.MAX_CAPACITY}"
    }, why


def test_queries_parse_text_and_ignore_unknown_and_empty_parameters():
    asked = inputs.MyMatchesQuery.check({"page": "3", "per_page": "", "colour": "red", "state": "open"})
    assert (asked.page, asked.per_page, asked.state) == (3, limits.DEFAULT_PER_PAGE, "open")
    assert problems_of(inputs.MatchListQuery, {"round": "1.5", "participant_id": "0"}) == {
        "round": f"must be a whole number from 1 to {limits.MAX_ROUND}",
        "participant_id": f"must be a whole number from 1 to {limits.MAX_ID}",
    }


def test_only_given_fields_are_values_and_text_is_normalized():
    given = inputs.TournamentUpdate.check({"name": "  Renamed ", "starts_at": "2026-12-01T19:00:00+01:00"})
    assert given.values() == {"name": "Renamed", "starts_at": dt.datetime(2026, 12, 1, 18, 0, tzinfo=dt.UTC)}
    created = inputs.TournamentInput.check({"name": "A", "game": "B", "format": "swiss", "capacity": 2})
    assert created.values() == {"name": "A", "game": "B", "format": TournamentFormat.SWISS, "capacity": 2}
    user = inputs.UserInput.check({"email": " Ann@Example.COM ", "display_name": " Ann "})
    assert (user.email, user.display_name) == ("ann@example.com", "Ann")


def test_a_service_may_pass_python_values_too():
    # What a job or the CLI would hand over: an aware datetime, an enum member.
    at = dt.datetime(2026, 12, 1, 18, 0, tzinfo=dt.UTC)
    body = {"name": "A", "game": "B", "format": TournamentFormat.SWISS, "capacity": 4, "starts_at": at}
    assert inputs.TournamentInput.check(body).values()["starts_at"] == at
    naive = {**body, "starts_at": at.replace(tzinfo=None)}
    assert problems_of(inputs.TournamentInput, naive) == {"starts_at": f"must be {inputs.INSTANT_RULE}"}


def test_messages_name_items_of_plain_lists_and_whole_structured_fields():
    assert problems_of(inputs.EntrantsInput, {"names": ["A", "", 3]}) == {
        "names[1]": f"must be 1 to {limits.DISPLAY_NAME_MAX_LENGTH} characters",
        "names[2]": f"must be 1 to {limits.DISPLAY_NAME_MAX_LENGTH} characters",
    }
    too_many = [[1, 0]] * (limits.MAX_GAMES + 1)
    found = problems_of(inputs.MatchScores, {"player1_score": 1, "player2_score": 0, "game_scores": too_many})
    assert found == {"game_scores": f"must be {inputs.GAME_SCORES_RULE}"}
    assert problems_of(inputs.ForfeitClaim, {"forfeit_claim": True, "winner_id": 1}) == {
        "winner_id": "is not a known field"
    }
    assert problems_of(inputs.DeadlineExtension, {}) == {"minutes": "is required"}


def test_query_text_that_postgresql_cannot_store_is_refused():
    assert problems_of(inputs.TournamentListQuery, {"game": "a\x00b"}) == {"game": inputs.UNSTORABLE}
