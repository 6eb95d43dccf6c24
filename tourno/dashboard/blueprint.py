"""The dashboard's one blueprint and the guard every request passes.

Order of the guard: static files are public (the login page needs its
stylesheet); without a signing key the dashboard refuses to serve; an
anonymous request goes to the login page (a JSON poll hears 401); then every
POST must carry the session's CSRF token, before any view runs.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, redirect, render_template, request, url_for
from markupsafe import Markup, escape

from tourno.accounts.models import User
from tourno.dashboard import security, timefmt
from tourno.db import parse_timestamp

bp = Blueprint(
    "dashboard",
    __name__,
    url_prefix="/admin",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

#: Endpoints an anonymous visitor may reach.
PUBLIC = {"dashboard.static", "dashboard.login", "dashboard.login_post"}
#: Endpoints that answer JSON: they hear 401, not a redirect to a page.
JSON_ENDPOINTS = {"dashboard.overview_json"}


def now() -> dt.datetime:
    """The app's clock (tests inject a fixed one)."""
    clock = current_app.config["TOURNO_CLOCK"]
    result: dt.datetime = clock()
    return result


def admin() -> User:
    """The logged-in admin (the guard has set it for every non-public view)."""
    user: User = g.dashboard_admin
    return user


def message(title: str, text: str, status: int) -> tuple[str, int]:
    """A page that says one thing (a refusal, a missing row)."""
    return render_template("dashboard/message.html", title=title, text=text), status


def confirmed() -> bool:
    """Whether a destructive POST has been confirmed (see :func:`confirm`)."""
    return request.form.get("confirmed") == "yes"


def confirm(title: str, text: str, action: str, button: str, fields: dict[str, str], back: str) -> str:
    """The question a destructive action asks first: a page whose form posts
    ``fields`` again with ``confirmed=yes``. Asked by the server, it works
    with or without JavaScript, and nothing changes until it is answered."""
    return render_template(
        "dashboard/confirm.html",
        title=title,
        text=text,
        action=action,
        button=button,
        fields=fields,
        back=back,
    )


@bp.before_request
def guard() -> Any:
    if request.endpoint == "dashboard.static":
        return None
    if not security.signing_key(current_app):
        return message(
            "Dashboard disabled",
            "The dashboard needs TOURNO_SECRET_KEY to sign its session cookie "
            "(try: openssl rand -hex 32). It is unset, so /admin serves nothing.",
            503,
        )
    if request.endpoint not in PUBLIC:
        user = security.session_admin(now())
        if user is None:
            if request.endpoint in JSON_ENDPOINTS:
                return jsonify({"error": "not logged in"}), 401
            target = request.full_path.rstrip("?") if request.method == "GET" else None
            return redirect(url_for("dashboard.login", next=target))
        g.dashboard_admin = user
    if request.method == "POST":
        problem = security.csrf_problem(request)
        if problem is not None:
            status, text = problem
            return message("Request refused", text, status)
    return None


@bp.app_template_filter("when")
def _when(value: Any) -> Markup:
    """A time in UTC and relative to now; the script keeps the relative part
    current. A filter, not a macro: the lists show hundreds of times."""
    when = parse_timestamp(value)
    if when is None:
        return Markup('<span class="none">never</span>')
    # Markup.format is several times slower; the parts are escaped by hand.
    iso = escape(timefmt.iso(when))
    return Markup(
        f'<time datetime="{iso}">{escape(timefmt.utc_text(when))}</time> '
        f'<span class="rel" data-since="{iso}">{escape(timefmt.relative(when, now()))}</span>'
    )


@bp.app_template_filter("utc")
def _utc(value: Any) -> str:
    return timefmt.utc_text(value)


@bp.app_template_filter("iso")
def _iso(value: Any) -> str:
    return timefmt.iso(value)


@bp.app_template_filter("ago")
def _ago(value: Any) -> str:
    return timefmt.relative(value, now())


@bp.app_template_filter("duration")
def _duration(value: Any) -> str:
    return "" if value is None else timefmt.duration_text(float(value))


@bp.context_processor
def _template_globals() -> dict[str, Any]:
    return {
        "csrf_token": security.csrf_token,
        "csrf_field": security.CSRF_FIELD,
        "current_admin": g.get("dashboard_admin"),
    }


def add_headers(response: Response) -> Response:
    """The security headers on every /admin response, 404s included."""
    if request.path == "/admin" or request.path.startswith("/admin/"):
        security.add_headers(response)
    return response
