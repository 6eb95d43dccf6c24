"""The operator's dashboard at ``/admin``: server-rendered pages over the
same snapshots as the JSON admin API and the CLI, served by ``tourno serve``.

Only admins get in (:mod:`tourno.dashboard.security`). The API's app factory
calls :func:`register`, handing in its token lookup, so the dashboard never
imports the API and the token check stays in one place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Flask

from tourno.accounts.models import User
from tourno.config import Settings

log = logging.getLogger(__name__)


def register(app: Flask, settings: Settings, user_for_token: Callable[[str], User | None]) -> None:
    """Mount the dashboard on ``app``.

    Without TOURNO_SECRET_KEY every /admin page answers 503 saying so, except
    under Flask's debug mode (``tourno serve --dev``), where a key made for
    this process signs the sessions (they end when it restarts)."""
    # Each view module adds its views to the blueprint as it is imported.
    from tourno.dashboard import blueprint, failed, jobs, login, pages, queues, security, tournaments  # noqa: F401

    security.configure_session(
        app,
        settings.secret_key,
        https=settings.app_url.startswith("https://"),
    )
    app.config["TOURNO_USER_FOR_TOKEN"] = user_for_token
    if not settings.secret_key:
        log.warning(
            "TOURNO_SECRET_KEY is not set: the dashboard at /admin is disabled "
            "(tourno serve --dev uses a key of its own)"
        )
    app.register_blueprint(blueprint.bp)
    app.after_request(blueprint.add_headers)
