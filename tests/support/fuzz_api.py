"""Fuzz the API from its own OpenAPI document with schemathesis, in process
(WSGI), on a real PostgreSQL holding an underway and a pending tournament:
no input may produce a 5xx, and every response must match the document
(status, content type, body schema). Examples are bounded per operation so
the run stays short.

Not collected by the main test run (the name does not start with
``test_``): ``tests/api/test_api_fuzz.py`` runs it in its own pytest process,
so schemathesis and its dependencies never load into the main one (several
tests run in-process workers with a 128 MB memory limit).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.test_api import NOW, user_with_token
from tests.conftest import QueueDB, drop_pg, fresh_pg_url
from tourno.accounts.models import Role
from tourno.api import create_app
from tourno.tournaments import services

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_world(pg_template):
    """One database for every operation (cloning one per operation costs more
    than the fuzzing): the rows the fuzzed requests meet (ids 1 and 2 are
    real), and the admin's token."""
    url = fresh_pg_url(pg_template)
    db = QueueDB("postgres", url)
    try:
        yield _populate()
    finally:
        db.close()
        drop_pg(url)


def _populate() -> str:
    admin, token = user_with_token("admin@example.com", Role.ADMIN)
    values = dict(name="Cup", game="Chess", format="single_elimination", capacity=8)
    # Tournament 1 is underway (its matches are reachable by the examples), 2 is pending.
    underway = services.publish(services.create_tournament(admin, **values), admin, now=NOW)
    pending = services.publish(services.create_tournament(admin, **values), admin, now=NOW)
    players = [user_with_token(f"p{i}@example.com")[0] for i in range(4)]
    for user in players:
        services.register(pending, user, now=NOW)
        services.register(underway, user, now=NOW)
    services.start_tournament(underway, admin, now=NOW)
    return token


# The app binds no database of its own: each test's fresh database (the `pg`
# fixture) is the one it serves.
schema = schemathesis.openapi.from_wsgi(
    "/api/v1/openapi.json", create_app(init_database=False, clock=lambda: NOW)
)


@schema.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    database=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_no_input_breaks_the_api(case, fuzz_world):
    token = fuzz_world
    # As an admin, so authorization passes and the input reaches the services.
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)
