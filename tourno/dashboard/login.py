"""Logging in with an admin's API token, and out.

A token rather than a password: admins already have one (``tourno users
token``), it is checked by the API's own lookup (one indexed equality on its
hash), and no second credential has to be stored, rotated or reset.
"""

from __future__ import annotations

from typing import Any

from flask import current_app, redirect, render_template, request, url_for

from tourno.accounts.models import Role
from tourno.dashboard import security
from tourno.dashboard.blueprint import bp, now


@bp.get("/login")
def login() -> Any:
    if security.session_admin(now()) is not None:
        return redirect(security.safe_next(request.args.get("next")))
    return render_template("dashboard/login.html", next=security.safe_next(request.args.get("next")))


@bp.post("/login")
def login_post() -> Any:
    token = request.form.get("token", "").strip()
    target = security.safe_next(request.form.get("next"))
    problem: tuple[str, int] | None = None
    if not token:
        problem = ("Paste an admin's API token.", 400)
    elif len(token) > security.MAX_TOKEN_LENGTH:
        problem = ("That is not a Tourno API token.", 401)
    else:
        user = current_app.config["TOURNO_USER_FOR_TOKEN"](token)
        if user is None:
            problem = ("Unknown token.", 401)
        elif user.role != Role.ADMIN:
            problem = ("Only admins may use the dashboard; this token is a " + user.role.value + "'s.", 403)
        else:
            security.log_in(user, now())
            return redirect(target)
    text, status = problem
    return render_template("dashboard/login.html", next=target, error=text), status


@bp.post("/logout")
def logout() -> Any:
    security.log_out()
    return redirect(url_for("dashboard.login"))
