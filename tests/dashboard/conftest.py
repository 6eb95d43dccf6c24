"""The dashboard's fixtures: the API app with a secret key on a real
PostgreSQL test database, users of each role with real tokens, and failed
jobs made by running a real worker."""

from __future__ import annotations

import dataclasses
import re
import uuid

import pytest

import tourno
from tests.conftest import run_worker
from tests.support.jobs import Flaky
from tourno.accounts.models import Role
from tourno.api import create_app
from tourno.api.auth import issue_token
from tourno.tournaments import services

SECRET = "dashboard-test-secret-" + "x" * 20
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "the page has no CSRF field"
    return found.group(1)


@pytest.fixture
def app(pg):
    # The scheduler's task table names the application's periodic jobs.
    tourno.import_modules(["tourno.jobs"])
    settings = dataclasses.replace(pg.settings, secret_key=SECRET)
    flask_app = create_app(settings, init_database=False)
    flask_app.config["TESTING"] = True
    return flask_app


@pytest.fixture
def tokens(pg) -> dict[str, str]:
    """One real API token per role."""
    out = {}
    for role in Role:
        user = services.create_user(f"{role.value}@example.com", role.value.title(), role=role)
        out[role.value] = issue_token(user)
    return out


def log_in(client, token: str):
    page = client.get("/admin/login")
    assert page.status_code == 200
    return client.post(
        "/admin/login", data={"token": token, "csrf_token": csrf_of(page.get_data(as_text=True))}
    )


@pytest.fixture
def admin_client(app, tokens):
    client = app.test_client()
    response = log_in(client, tokens["admin"])
    assert response.status_code == 302, response.get_data(as_text=True)
    assert response.headers["Location"] == "/admin"
    return client


def make_failed_job(key: str | None = None) -> str:
    """A job that fails once (a real worker run, a real traceback) and
    succeeds when retried; returns its key."""
    key = key or f"flaky-{uuid.uuid4().hex[:8]}"
    Flaky(key=key).dispatch()
    code, _ = run_worker(max_jobs=1, tries=1)
    assert code == 0
    return key
