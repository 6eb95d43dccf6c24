"""The HTTP API (``tourno serve``): a Flask application factory.

The app only reads rows and calls :mod:`tourno.tournaments.services`; slow
work (mail, brackets of later rounds) happens in jobs that the services
enqueue in the same transaction.

Connections: the database is bound once per process (``tourno.setup``), and
each request opens this thread's connection in ``before_request`` and closes
it at teardown (back to the pool with ``+pool`` URLs). Nothing is opened at
import or in the factory, so gunicorn's master forks workers that share no
connection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, g, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.routing import IntegerConverter, Map

from tourno.config import Settings
from tourno.db import utcnow

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
MAX_BODY_BYTES = 1024 * 1024

#: Endpoints that run without a database connection of the request's own.
NO_DATABASE = {
    "health.healthz",
    "health.readyz",
    "openapi.document_view",
    "static",
    "index.index",
    "index.tournament_link",
    "index.match_link",
}


class IdConverter(IntegerConverter):
    """Positive ids that fit a bigint: larger numbers are a 404, not a driver error."""

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:
        super().__init__(map, min=1, max=2**63 - 1)


def create_app(
    settings: Settings | None = None,
    *,
    init_database: bool = True,
    clock: Callable | None = None,
    pool: bool = True,
) -> Flask:
    """The API application. ``init_database=False`` keeps the database binding
    the caller already made (tests bind a fresh database per test). A
    PostgreSQL database's connections are pooled whatever the URL's scheme
    (``pool``): connecting anew for every request held the cached bracket
    GET to 302 req/s against 1,845 pooled, as measured for issue 16."""
    import tourno
    from tourno import dashboard
    from tourno.api import (
        admin,
        auth,
        errors,
        health,
        index,
        matches,
        metrics,
        openapi,
        participants,
        tournaments,
        unsubscribe,
        users,
    )

    if init_database:
        settings = tourno.setup(settings, pool=pool)
    app = Flask("tourno.api")
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        TOURNO_CLOCK=clock or utcnow,
        TOURNO_SETTINGS=settings or Settings(),
    )
    if isinstance(app.json, DefaultJSONProvider):
        app.json.sort_keys = False
    app.url_map.converters["id"] = IdConverter
    app.url_map.strict_slashes = True

    errors.register(app)
    app.before_request(_open_connection)
    app.teardown_request(_close_connection)

    app.register_blueprint(health.bp)
    # "/" and the paths mail links use, when no front-end answers them.
    app.register_blueprint(index.bp)
    # At the root, where Prometheus looks by default.
    app.register_blueprint(metrics.bp)
    # At the site's root, where TOURNO_APP_URL's links in bulk mail point.
    app.register_blueprint(unsubscribe.bp)
    app.register_blueprint(openapi.bp, url_prefix=API_PREFIX)
    for module in (users, tournaments, participants, matches, admin):
        app.register_blueprint(module.bp, url_prefix=API_PREFIX)
    # The operator's pages at /admin; the API's token lookup is the one its login uses.
    dashboard.register(app, app.config["TOURNO_SETTINGS"], auth.user_for_token)
    return app


def _open_connection() -> None:
    from tourno.db import database, open_connection

    if request.endpoint in NO_DATABASE or request.endpoint is None:
        return
    # A connection the caller already holds (a test, a script) is left as it is.
    g._tourno_owns_connection = database.is_closed()
    open_connection()


def _close_connection(exc: BaseException | None) -> None:
    import peewee

    from tourno.db import database

    if not g.pop("_tourno_owns_connection", False):
        return
    try:
        if not database.is_closed():
            database.close()
    except (peewee.OperationalError, peewee.InterfaceError) as err:
        log.warning("closing the request's connection failed: %s", err)
