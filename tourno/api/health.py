"""``/healthz`` (the process answers) and ``/readyz`` (it can do its work: the
database is reachable and migrated, the queue is reachable), for load
balancers and supervisord checks. Neither needs a token."""

from __future__ import annotations

import logging

import peewee
from flask import Blueprint, Response, jsonify

from tourno import migrations
from tourno.api import schemas
from tourno.api.openapi import documented
from tourno.db import DatabaseUnavailable, database, open_connection
from tourno.errors import first_line

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__)


@bp.get("/healthz")
@documented("The process is up", response=schemas.Health)
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
@documented(
    "Database reachable and migrated, queue reachable (503 otherwise)",
    response=schemas.Readiness,
    # Not ready is a 503 with the same body, naming the failed check.
    also={503: "Not ready"},
)
def readyz() -> Response:
    from tourno.queue import backends

    checks: dict[str, str] = {}
    opened = database.is_closed()
    try:
        open_connection()
        database.execute_sql("SELECT 1")
        checks["database"] = "ok"
        waiting = migrations.pending(database.obj)
        checks["migrations"] = "ok" if not waiting else f"{len(waiting)} pending: {', '.join(waiting)}"
    except (DatabaseUnavailable, peewee.OperationalError, peewee.InterfaceError) as exc:
        checks["database"] = f"unreachable: {first_line(exc, with_type=False)}"
        checks["migrations"] = "unknown"
    finally:
        if opened and not database.is_closed():
            try:
                database.close()
            except (peewee.OperationalError, peewee.InterfaceError):
                pass
    backend = backends.current()
    try:
        backend.ping()
        checks["queue"] = "ok"
    except backend.connection_errors as exc:
        checks["queue"] = f"unreachable: {exc}"
    ready = all(value == "ok" for value in checks.values())
    response = jsonify({"status": "ready" if ready else "unavailable", "checks": checks})
    response.status_code = 200 if ready else 503
    return response
