"""Who may see the dashboard, and the guards on every request.

An operator logs in once with an admin's API token; the dashboard then keeps
a Flask session (a cookie signed with ``TOURNO_SECRET_KEY``) holding the
user's id, a fingerprint of their token hash and a CSRF token. The
fingerprint makes a session end when the admin's token is reissued, and the
role is read from the database on every request, so a demoted admin loses
access at once instead of when the cookie expires.

CSRF: every POST carries the session's token in a form field (or the
``X-CSRF-Token`` header); it is compared in constant time. SameSite=Strict
already keeps other sites' forms from sending the cookie; the token is the
second wall, for browsers or proxies that do not honour it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from typing import Any

from flask import Flask, Request, Response, request, session
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer

from tourno.accounts.models import Role, User

#: A session lasts this long from login, however active it is.
SESSION_LIFETIME = dt.timedelta(hours=12)
COOKIE_NAME = "tourno_admin"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
#: Longer input is no token of ours (they are 43 characters); refused unread.
MAX_TOKEN_LENGTH = 200

#: On every /admin response: no inline script or style, no framing, no
#: form posting elsewhere, nothing cached by a shared proxy.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def signing_key(app: Flask) -> str | None:
    """TOURNO_SECRET_KEY; under debug mode (``tourno serve --dev``) without
    one, a key made for this process; otherwise None (the dashboard refuses)."""
    key = app.secret_key
    if key:
        return str(key)
    if app.debug:
        return str(app.config["TOURNO_DASHBOARD_DEV_KEY"])
    return None


class DashboardSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, signed with :func:`signing_key`, the
    cookie marked Secure when the request came over HTTPS as well as when
    TOURNO_APP_URL is https (behind a proxy that terminates TLS)."""

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        key = signing_key(app)
        if not key:
            return None
        return URLSafeTimedSerializer(
            key,
            salt=self.salt,
            serializer=self.serializer,
            signer_kwargs={"key_derivation": self.key_derivation, "digest_method": self.digest_method},
        )

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure


def configure_session(app: Flask, secret_key: str | None, *, https: bool) -> None:
    app.secret_key = secret_key
    app.session_interface = DashboardSessionInterface()
    app.config.update(
        TOURNO_DASHBOARD_DEV_KEY=secrets.token_hex(32),
        SESSION_COOKIE_NAME=COOKIE_NAME,
        SESSION_COOKIE_PATH="/admin",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=https,
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
        # The cookie's expiry stays the login's: no sliding renewal.
        SESSION_REFRESH_EACH_REQUEST=False,
    )


def token_fingerprint(user: User) -> str:
    """A short digest of the user's stored token hash: it changes when the
    token is reissued, and reveals nothing usable (the cookie is readable)."""
    return hashlib.sha256(f"dashboard:{user.api_token_hash}".encode()).hexdigest()[:24]


def csrf_token() -> str:
    """This session's CSRF token, made on first use."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def csrf_problem(req: Request) -> tuple[int, str] | None:
    """(status, message) when a POST lacks the session's CSRF token, else None."""
    sent = req.form.get(CSRF_FIELD) or req.headers.get(CSRF_HEADER)
    if not sent:
        return 400, "the form carried no CSRF token; reload the page and try again"
    expected = session.get("csrf")
    if not isinstance(expected, str) or not hmac.compare_digest(sent.encode(), expected.encode()):
        return 403, "the CSRF token is wrong or expired; reload the page and try again"
    return None


def log_in(user: User, now: dt.datetime) -> None:
    """A fresh session for ``user`` (a new CSRF token: nothing survives from
    the anonymous session, so a planted cookie cannot be fixated)."""
    session.clear()
    session.permanent = True
    session["uid"] = user.id
    session["fp"] = token_fingerprint(user)
    session["at"] = int(now.timestamp())
    session["csrf"] = secrets.token_urlsafe(32)


def log_out() -> None:
    session.clear()


def session_admin(now: dt.datetime) -> User | None:
    """The admin this session belongs to, or None (anonymous, expired, the
    token reissued, the role taken away, the user gone)."""
    uid, fp, at = session.get("uid"), session.get("fp"), session.get("at")
    if not isinstance(uid, int) or not isinstance(fp, str) or not isinstance(at, int):
        return None
    if now.timestamp() - at > SESSION_LIFETIME.total_seconds():
        return None
    user = User.get_or_none(User.id == uid)
    if user is None or user.role != Role.ADMIN or user.api_token_hash is None:
        return None
    if not hmac.compare_digest(token_fingerprint(user), fp):
        return None
    return user


def add_headers(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers[name] = value
    return response


def safe_next(target: Any) -> str:
    """Where to go after login: a dashboard path only, never another host."""
    if isinstance(target, str) and target.startswith("/admin") and "//" not in target and "\\" not in target:
        return target
    return "/admin"
